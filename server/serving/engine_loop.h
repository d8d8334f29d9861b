// EngineLoop: the engine thread. Admits waiting requests from the RequestQueue, schedules
// one ragged batch per step (continuous batching: prefill chunks and decodes together),
// runs Engine::Step, detokenizes, applies stop conditions and publishes to each request's
// GenerationStream; cancelled and expired requests are dropped at the next step.
//
// Thread-safety: Start/Drain/Stop from one controlling thread; alive()/stats() from any.
#ifndef KVSERVE_SERVER_SERVING_ENGINE_LOOP_H_
#define KVSERVE_SERVER_SERVING_ENGINE_LOOP_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/runtime/engine.h"
#include "server/serving/request_queue.h"
#include "server/serving/serving_observer.h"

namespace kvserve::server {

struct EngineLoopOptions {
  int max_batch_tokens = 512;  // Token budget of one step (prefill chunks + decodes).
  int max_running = 64;        // Sequences that may be running (hold KV) at once.
  int max_tokens_limit = 4096; // Largest max_tokens a request may ask for (checked upstream).
  ServingObserver* observer = nullptr;  // Metrics sink; may be null. Must outlive the loop.
};

// Counters and gauges the loop maintains; a consistent snapshot.
struct EngineLoopStats {
  int64_t running = 0;
  int64_t waiting = 0;
  int64_t kv_blocks_used = 0;
  int64_t kv_blocks_total = 0;
  int64_t steps = 0;
  int64_t preemptions = 0;
  int64_t completed = 0;
  absl::Time last_step_time = absl::InfinitePast();
  // Last time the loop went round (idle or not): a liveness heartbeat.
  absl::Time heartbeat = absl::InfinitePast();
};

class EngineLoop {
 public:
  // `engine` and `queue` must outlive the loop.
  static absl::StatusOr<std::unique_ptr<EngineLoop>> Create(engine::Engine* engine,
                                                            RequestQueue* queue,
                                                            const EngineLoopOptions& options);
  ~EngineLoop();  // Stops (cancelling what runs) if still running.

  // Starts the engine thread.
  void Start();
  // Graceful drain: the caller has closed the queue; waits until every admitted and queued
  // request finished or `deadline` passed, then fails the rest with UNAVAILABLE and joins.
  void Drain(absl::Time deadline);
  // Stops now: fails every request with UNAVAILABLE and joins.
  void Stop();

  // True while the thread runs and has not hit an internal error.
  bool alive() const;
  EngineLoopStats stats() const;

 private:
  struct PrivateKey {};

 public:
  EngineLoop(PrivateKey, engine::Engine* engine, RequestQueue* queue,
             const EngineLoopOptions& options);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvserve::server

#endif  // KVSERVE_SERVER_SERVING_ENGINE_LOOP_H_
