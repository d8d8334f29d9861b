// RequestQueue: admission control between the gRPC threads (producers) and the engine
// thread (the only consumer).
//
// Bounded by the number of queued requests and by their total prompt tokens. Ordered by
// priority (higher first), then arrival (FCFS). Thread-safe.
#ifndef KVSERVE_SERVER_SERVING_REQUEST_QUEUE_H_
#define KVSERVE_SERVER_SERVING_REQUEST_QUEUE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/model/vocab.h"
#include "engine/policy/kv_policy.h"
#include "engine/sampling/sampler.h"
#include "server/serving/generation_stream.h"
#include "server/serving/serving_observer.h"

namespace kvserve::server {

// A validated, tokenized request waiting for the engine.
struct PendingRequest {
  uint64_t id = 0;                     // Assigned by RequestQueue::Push, unique per process.
  std::vector<engine::TokenId> prompt_ids;
  engine::SamplingParams sampling;     // Already validated.
  int32_t max_tokens = 0;              // >= 1.
  std::vector<std::string> stop_strings;
  std::shared_ptr<const engine::KvPolicy> kv_policy;  // Null = keep the whole KV cache.
  int32_t priority = 0;                // Higher runs first.
  absl::Time deadline = absl::InfiniteFuture();
  absl::Time enqueue_time;             // Set by Push.
  std::shared_ptr<GenerationStream> stream;  // Shared with the reader.
};

struct RequestQueueOptions {
  int64_t max_queued_requests = 1024;          // Waiting requests beyond this are refused.
  int64_t max_queued_prompt_tokens = 1 << 20;  // Total prompt tokens waiting, likewise.
  ServingObserver* observer = nullptr;         // Told of refusals; may be null; must outlive.
};

class RequestQueue {
 public:
  explicit RequestQueue(const RequestQueueOptions& options);

  // Takes ownership of `request` iff the result is OK. UNAVAILABLE when full ("queue full:
  // N requests / T prompt tokens waiting; retry later") or closed ("server is shutting down").
  absl::Status Push(std::unique_ptr<PendingRequest> request);
  // Puts a preempted request back at the front of its priority class (never refused).
  void PushFront(std::unique_ptr<PendingRequest> request);

  // Engine thread: removes and returns the best waiting request, or nullptr if none.
  std::unique_ptr<PendingRequest> Pop();
  // Engine thread: the best waiting request without removing it, or nullptr. The pointer is
  // valid until the next Pop/Push on this queue from the engine thread.
  const PendingRequest* Peek() const;
  // Engine thread: removes and returns requests that are cancelled or past their deadline at
  // `now`, so the loop can end their streams.
  std::vector<std::unique_ptr<PendingRequest>> TakeExpired(absl::Time now);
  // Blocks until a request is waiting, Wake() is called, or `timeout` passes.
  void WaitForWork(absl::Duration timeout);
  // Wakes a WaitForWork caller (cancellation, shutdown).
  void Wake();

  // Stops admitting: later Push calls return UNAVAILABLE. Waiting requests stay queued.
  void Close();
  bool closed() const;
  int64_t size() const;
  int64_t queued_prompt_tokens() const;

 private:
  // Orders waiting requests: priority descending, then sequence ascending. Push takes
  // sequences counting up from 0, PushFront counting down from -1, so a preempted request
  // goes before everything of its priority that arrived normally.
  struct Key {
    int32_t priority;
    int64_t sequence;
    bool operator<(const Key& other) const {
      if (priority != other.priority) return priority > other.priority;
      return sequence < other.sequence;
    }
  };

  // Constant after construction.
  const RequestQueueOptions options_;

  // State below is protected by mu_.
  mutable absl::Mutex mu_;
  std::map<Key, std::unique_ptr<PendingRequest>> waiting_ ABSL_GUARDED_BY(mu_);
  int64_t queued_prompt_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t next_back_sequence_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t next_front_sequence_ ABSL_GUARDED_BY(mu_) = -1;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  bool wake_pending_ ABSL_GUARDED_BY(mu_) = false;  // Wake() called since the last wait.
};

}  // namespace kvserve::server

#endif  // KVSERVE_SERVER_SERVING_REQUEST_QUEUE_H_
