// GenerationTarget: what kvserve-bench sends load to. The workload driver (load_generator.h)
// only sees this interface, so the same driver can measure a server over gRPC
// (GrpcGenerationTarget) or an engine in this process (EngineGenerationTarget, `--model`).
//
// Contract for implementations:
//   - StartGenerate() returns without waiting for the generation; it may be called from any
//     thread, concurrently, and must be cheap (the open-loop driver calls it on schedule).
//   - For each started generation, callbacks.on_tokens is called once per arriving chunk that
//     carries tokens, then callbacks.on_done exactly once, also when the request could not
//     even be started (with the error). Calls for one generation never overlap and come in
//     that order; they may run on any thread, including inside StartGenerate().
//   - Callbacks must return quickly: they run on the target's I/O threads.
//   - Destroying the target waits for every started generation to have called on_done.
#ifndef KVSERVE_CLIENT_GENERATION_TARGET_H_
#define KVSERVE_CLIENT_GENERATION_TARGET_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kvserve::client {

// One generation request of the workload.
struct WorkItem {
  int64_t index = 0;                      // Issue order within its phase, from 0.
  std::vector<int32_t> prompt_token_ids;  // Sent as-is (no BOS is added).
  int max_tokens = 16;                    // Tokens to generate at most.
  float temperature = 0;                  // 0 = greedy.
  uint64_t seed = 0;                      // Sampler seed.
  double timeout_s = 60;                  // Deadline of the whole request, from its start.
  std::string kv_policy;                  // KV policy spec; empty = the target's default.
};

// How one generation ended.
struct GenerationOutcome {
  absl::Status status;        // OK if it finished normally.
  int prompt_tokens = 0;      // As reported by the target (usage); 0 if unknown.
  int completion_tokens = 0;  // As reported by the target (usage); 0 if unknown.
};

// Per-generation callbacks; see the contract above.
struct GenerationCallbacks {
  std::function<void(int num_tokens)> on_tokens;          // A chunk with num_tokens > 0 arrived.
  std::function<void(const GenerationOutcome&)> on_done;  // The generation ended.
};

// What the driver needs to know about the model behind a target.
struct TargetInfo {
  std::string model_name;    // For the report.
  int vocab_size = 0;        // Prompt token ids are drawn below this.
  int max_tokens_limit = 0;  // Largest max_tokens a request may ask for; 0 if unknown.
};

class GenerationTarget {
 public:
  virtual ~GenerationTarget() = default;

  // Short description for reports, e.g. "grpc 127.0.0.1:50051".
  virtual std::string Describe() const = 0;

  // Fetches the model's description. Blocks; call before starting load.
  virtual absl::StatusOr<TargetInfo> GetInfo(double timeout_s) = 0;

  // Starts one generation; see the contract above.
  virtual void StartGenerate(const WorkItem& item, GenerationCallbacks callbacks) = 0;
};

}  // namespace kvserve::client

#endif  // KVSERVE_CLIENT_GENERATION_TARGET_H_
