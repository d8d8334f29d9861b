// EngineGenerationTarget: kvserve-bench's in-process target (`--model FILE`). Runs the same
// serving core as the server (Engine + RequestQueue + EngineLoop) in this process, with no
// gRPC, so the cost of the network layer can be measured by comparing the two targets.
//
// Thread-safe as GenerationTarget requires; callbacks run on the engine thread.
#ifndef KVSERVE_CLIENT_ENGINE_GENERATION_TARGET_H_
#define KVSERVE_CLIENT_ENGINE_GENERATION_TARGET_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "client/bench_options.h"
#include "client/generation_target.h"
#include "engine/runtime/engine.h"
#include "server/serving/engine_loop.h"
#include "server/serving/request_queue.h"

namespace kvserve::client {

struct EngineTargetOptions {
  engine::EngineOptions engine;       // Model path, threads, KV size, batch tokens...
  server::EngineLoopOptions loop;     // Scheduler limits.
  server::RequestQueueOptions queue;  // Admission limits.
  engine::KvPolicyContext kv_policy;  // What per-request policies are built with.
  std::string scalekv_budgets_path;   // Where kv_policy.scalekv_budgets came from (messages).
};

// kvserve-bench's --model flags as engine options: --model, --threads, --weight-type,
// --kv-cache-mb, --max-batch-tokens (engine and loop alike), --max-running, --scalekv-budgets
// (loaded here); queue limits stay at the server's defaults. INVALID_ARGUMENT for an empty
// --model, a --weight-type name the engine does not know (the message lists the known ones),
// a budget file that cannot be loaded, or a --kv-policy these options cannot build.
absl::StatusOr<EngineTargetOptions> MakeEngineTargetOptions(const BenchOptions& options);

class EngineGenerationTarget : public GenerationTarget {
 public:
  // Loads the model and starts the engine thread. INVALID_ARGUMENT for budgets that do not
  // fit the model.
  static absl::StatusOr<std::unique_ptr<EngineGenerationTarget>> Create(
      const EngineTargetOptions& options);
  ~EngineGenerationTarget() override;  // Drains every started generation, then stops.

  std::string Describe() const override;
  absl::StatusOr<TargetInfo> GetInfo(double timeout_s) override;
  void StartGenerate(const WorkItem& item, GenerationCallbacks callbacks) override;

  struct PrivateKey {
   private:
    friend class EngineGenerationTarget;
    PrivateKey() = default;
  };
  EngineGenerationTarget(PrivateKey, std::unique_ptr<engine::Engine> engine,
                         std::unique_ptr<server::RequestQueue> queue,
                         engine::KvPolicyContext kv_policy);

 private:
  std::unique_ptr<engine::Engine> engine_;
  std::unique_ptr<server::RequestQueue> queue_;
  const engine::KvPolicyContext kv_policy_;
  std::unique_ptr<server::EngineLoop> loop_;
};

}  // namespace kvserve::client

#endif  // KVSERVE_CLIENT_ENGINE_GENERATION_TARGET_H_
