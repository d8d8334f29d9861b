#include "client/engine_generation_target.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/common/status_macros.h"

namespace kvserve::client {

absl::StatusOr<std::unique_ptr<EngineGenerationTarget>> EngineGenerationTarget::Create(
    const EngineTargetOptions& options) {
  KV_ASSIGN_OR_RETURN(std::unique_ptr<engine::Engine> engine,
                      engine::Engine::Create(options.engine));
  auto target = std::make_unique<EngineGenerationTarget>(
      PrivateKey{}, std::move(engine), std::make_unique<server::RequestQueue>(options.queue));
  KV_ASSIGN_OR_RETURN(target->loop_, server::EngineLoop::Create(target->engine_.get(),
                                                                target->queue_.get(),
                                                                options.loop));
  target->loop_->Start();
  return target;
}

EngineGenerationTarget::EngineGenerationTarget(PrivateKey, std::unique_ptr<engine::Engine> engine,
                                               std::unique_ptr<server::RequestQueue> queue)
    : engine_(std::move(engine)), queue_(std::move(queue)) {}

EngineGenerationTarget::~EngineGenerationTarget() {
  if (loop_ == nullptr) return;
  queue_->Close();
  loop_->Drain(absl::InfiniteFuture());
}

std::string EngineGenerationTarget::Describe() const {
  return absl::StrCat("in-process engine ", engine_->options().model_path);
}

absl::StatusOr<TargetInfo> EngineGenerationTarget::GetInfo(double /*timeout_s*/) {
  const engine::ModelConfig& c = engine_->config();
  return TargetInfo{.model_name = c.name,
                    .vocab_size = static_cast<int>(c.vocab_size),
                    .max_tokens_limit = static_cast<int>(c.context_length)};
}

void EngineGenerationTarget::StartGenerate(const WorkItem& item, GenerationCallbacks callbacks) {
  auto request = std::make_unique<server::PendingRequest>();
  request->prompt_ids.assign(item.prompt_token_ids.begin(), item.prompt_token_ids.end());
  request->sampling = {.temperature = item.temperature, .seed = item.seed};
  request->max_tokens = item.max_tokens;
  request->deadline = absl::Now() + absl::Seconds(item.timeout_s);
  request->stream = std::make_shared<server::GenerationStream>();
  // The notify callback runs on the engine thread after each engine-side call; it delivers
  // what is pending. The stream keeps the callbacks alive until the final event.
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
    // Not admitted: end the stream here so the callbacks see the refusal.
    stream->Fail(pushed, {});
  }
}

}  // namespace kvserve::client
