#include "client/engine_generation_target.h"

#include <cstdint>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/common/status_macros.h"
#include "engine/compute/linear.h"
#include "engine/policy/scalekv_budgets.h"
#include "engine/sampling/sampler.h"

namespace kvserve::client {

absl::StatusOr<EngineTargetOptions> MakeEngineTargetOptions(const BenchOptions& options) {
  if (options.model.empty()) {
    return absl::InvalidArgumentError("the in-process engine needs --model FILE");
  }
  EngineTargetOptions target;
  target.engine.model_path = options.model;
  target.engine.num_threads = options.threads;
  if (!options.weight_type.empty()) {
    KV_ASSIGN_OR_RETURN(target.engine.weight_type, engine::ParseWeightType(options.weight_type));
  }
  target.engine.kv_cache_bytes = options.kv_cache_mb * (int64_t{1} << 20);
  // The loop's budget may not exceed the engine's, so both get the flag.
  target.engine.max_batch_tokens = options.max_batch_tokens;
  target.loop.max_batch_tokens = options.max_batch_tokens;
  target.loop.max_running = options.max_running;
  KV_ASSIGN_OR_RETURN(target.kv_policy, engine::LoadKvPolicyContext(options.scalekv_budgets_path));
  target.scalekv_budgets_path = options.scalekv_budgets_path;
  if (!options.load.kv_policy.empty()) {
    if (absl::StatusOr<std::shared_ptr<const engine::KvPolicy>> policy =
            engine::CreateKvPolicy(options.load.kv_policy, target.kv_policy);
        !policy.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--kv-policy: ", policy.status().message()));
    }
  }
  return target;
}

absl::StatusOr<std::unique_ptr<EngineGenerationTarget>> EngineGenerationTarget::Create(
    const EngineTargetOptions& options) {
  KV_ASSIGN_OR_RETURN(std::unique_ptr<engine::Engine> engine,
                      engine::Engine::Create(options.engine));
  if (options.kv_policy.scalekv_budgets != nullptr) {
    KV_RETURN_IF_ERROR(engine::CheckScaleKvBudgetsFit(
        *options.kv_policy.scalekv_budgets, options.scalekv_budgets_path,
        engine->config().name, engine->config().n_layers));
  }
  auto target = std::make_unique<EngineGenerationTarget>(
      PrivateKey{}, std::move(engine), std::make_unique<server::RequestQueue>(options.queue),
      options.kv_policy);
  // On failure `target` is destroyed with no loop, which its destructor allows.
  KV_ASSIGN_OR_RETURN(target->loop_, server::EngineLoop::Create(target->engine_.get(),
                                                                target->queue_.get(),
                                                                options.loop));
  target->loop_->Start();
  return target;
}

EngineGenerationTarget::EngineGenerationTarget(PrivateKey, std::unique_ptr<engine::Engine> engine,
                                               std::unique_ptr<server::RequestQueue> queue,
                                               engine::KvPolicyContext kv_policy)
    : engine_(std::move(engine)), queue_(std::move(queue)), kv_policy_(std::move(kv_policy)) {}

EngineGenerationTarget::~EngineGenerationTarget() {
  if (loop_ == nullptr) return;
  // Every started generation ends (and calls on_done) before the loop joins, as the
  // GenerationTarget contract requires; the loop is destroyed before the queue and engine.
  queue_->Close();
  loop_->Drain(absl::InfiniteFuture());
}

std::string EngineGenerationTarget::Describe() const {
  const engine::EngineOptions& o = engine_->options();
  return absl::StrCat("in-process engine ", o.model_path, " (",
                      std::string(engine::WeightTypeName(o.weight_type)), " weights, ",
                      o.num_threads == 0 ? std::string("all") : absl::StrCat(o.num_threads),
                      " threads)");
}

absl::StatusOr<TargetInfo> EngineGenerationTarget::GetInfo(double /*timeout_s*/) {
  const engine::ModelConfig& c = engine_->config();
  return TargetInfo{.model_name = c.name,
                    .vocab_size = static_cast<int>(c.vocab_size),
                    .max_tokens_limit = static_cast<int>(c.context_length)};
}

void EngineGenerationTarget::StartGenerate(const WorkItem& item, GenerationCallbacks callbacks) {
  const engine::SamplingParams sampling{.temperature = item.temperature, .seed = item.seed};
  // The server validates requests before they reach the queue; do the same here, so a bad
  // work item ends with the status the server would give rather than reaching the engine.
  absl::Status valid = engine::ValidateSamplingParams(sampling);
  if (valid.ok() && item.max_tokens < 1) {
    valid = absl::InvalidArgumentError(
        absl::StrCat("max_tokens must be >= 1, got ", item.max_tokens));
  }
  std::shared_ptr<const engine::KvPolicy> kv_policy;
  if (valid.ok() && !item.kv_policy.empty()) {
    absl::StatusOr<std::shared_ptr<const engine::KvPolicy>> policy =
        engine::CreateKvPolicy(item.kv_policy, kv_policy_);
    if (policy.ok()) {
      kv_policy = *std::move(policy);
    } else {
      valid = policy.status();
    }
  }
  if (!valid.ok()) {
    callbacks.on_done({.status = std::move(valid)});
    return;
  }

  auto request = std::make_unique<server::PendingRequest>();
  request->prompt_ids.assign(item.prompt_token_ids.begin(), item.prompt_token_ids.end());
  request->sampling = sampling;
  request->max_tokens = item.max_tokens;
  request->kv_policy = std::move(kv_policy);  // Null: keep the whole KV cache.
  request->deadline = absl::Now() + absl::Seconds(item.timeout_s);
  request->stream = std::make_shared<server::GenerationStream>();
  // The notify callback runs after each engine-side call (on the engine thread, or here for
  // a refused request, never both) and delivers what is pending, so the callbacks of one
  // generation never overlap. It holds the stream weakly: the stream owns the callback, and
  // the request (engine side) owns the stream until the final event.
  std::weak_ptr<server::GenerationStream> weak = request->stream;
  request->stream->SetNotify([weak, callbacks = std::move(callbacks)]() {
    std::shared_ptr<server::GenerationStream> stream = weak.lock();
    if (stream == nullptr) return;
    server::StreamEvent event;
    while (stream->TryTake(&event)) {
      if (!event.token_ids.empty()) callbacks.on_tokens(static_cast<int>(event.token_ids.size()));
      if (event.final) {
        callbacks.on_done({.status = event.status,
                           .prompt_tokens = event.usage.prompt_tokens,
                           .completion_tokens = event.usage.completion_tokens});
      }
    }
  });
  std::shared_ptr<server::GenerationStream> stream = request->stream;
  const absl::Status pushed = queue_->Push(std::move(request));
  if (!pushed.ok()) {
    // Not admitted (queue full or closed): end the stream here so the callbacks see the
    // refusal. `stream` keeps it alive for this call.
    stream->Fail(pushed, {});
  }
}

}  // namespace kvserve::client
