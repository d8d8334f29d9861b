// ServingObserver: what the serving core reports as it works, for metrics. The serving core
// (engine loop, request admission) calls these hooks; an implementation turns them into
// Prometheus series (server/metrics/) or anything else. Keeping this interface here keeps
// prometheus-cpp out of the serving core.
//
// Thread-safety: implementations must be thread-safe. Engine-loop hooks are called from the
// engine thread and must be cheap (no I/O, no blocking); OnRejected is called from gRPC
// threads.
#ifndef KVSERVE_SERVER_SERVING_SERVING_OBSERVER_H_
#define KVSERVE_SERVER_SERVING_SERVING_OBSERVER_H_

#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/serving/generation_stream.h"

namespace kvserve::server {

// Why a request was refused before it reached the engine.
enum class RejectReason {
  kQueueFull,     // UNAVAILABLE: admission limits.
  kDraining,      // UNAVAILABLE: shutting down.
  kInvalid,       // INVALID_ARGUMENT / NOT_FOUND: bad request.
  kUnauthenticated,
};

// One engine step.
struct StepObservation {
  absl::Duration duration;     // Wall time of Engine::Step.
  int32_t sequences = 0;       // Entries in the batch.
  int32_t tokens = 0;          // Tokens processed (prefill chunks + decodes).
  int32_t prefill_tokens = 0;  // Of which prompt (or recomputed) tokens.
  int32_t decode_tokens = 0;   // Of which single-token decodes.
};

// A snapshot of the serving core's gauges, taken after each step.
struct GaugeObservation {
  int64_t running = 0;
  int64_t waiting = 0;
  int64_t kv_blocks_used = 0;
  int64_t kv_blocks_total = 0;
  int64_t kv_block_bytes = 0;
  std::string_view kv_dtype = "f32";
  int64_t prefix_cache_query_tokens = 0;  // Cumulative.
  int64_t prefix_cache_hit_tokens = 0;    // Cumulative.
  // Token x layer units run through the model, and those LazyLLM skipped (pruned prompt
  // rows x the layers after their pruning): cumulative.
  int64_t computed_token_layers = 0;
  int64_t pruned_token_layers = 0;
};

// How a request that reached the engine queue ended.
struct RequestObservation {
  absl::Status status;                 // OK or the error it ended with.
  FinishReason finish_reason = FinishReason::kUnspecified;  // When OK.
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  absl::Duration queue_time;           // Enqueue -> admitted (zero if never admitted).
  absl::Duration prefill_time;         // Admitted -> first token (zero if none).
  absl::Duration decode_time;          // First token -> end (zero if none).
  absl::Duration e2e_time;             // Enqueue -> end.
};

class ServingObserver {
 public:
  virtual ~ServingObserver() = default;

  virtual void OnRejected(RejectReason reason) = 0;
  // First token of a request: time to first token, from enqueue.
  virtual void OnFirstToken(absl::Duration ttft) = 0;
  // Every later token: the gap since the request's previous token.
  virtual void OnInterTokenLatency(absl::Duration itl) = 0;
  virtual void OnRequestFinished(const RequestObservation& request) = 0;
  virtual void OnStep(const StepObservation& step) = 0;
  virtual void OnPreemption() = 0;
  virtual void OnGauges(const GaugeObservation& gauges) = 0;
  // Tokens a KV policy evicted since the last call, by policy name.
  virtual void OnTokensEvicted(std::string_view policy, int64_t tokens) = 0;
};

}  // namespace kvserve::server

#endif  // KVSERVE_SERVER_SERVING_SERVING_OBSERVER_H_
