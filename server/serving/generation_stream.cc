#include "server/serving/generation_stream.h"

#include <utility>

namespace kvserve::server {

void GenerationStream::Append(absl::Span<const TokenId> token_ids, std::string_view text) {
  if (token_ids.empty() && text.empty()) return;
  {
    absl::MutexLock lock(&mu_);
    if (finished_) return;
    pending_.token_ids.insert(pending_.token_ids.end(), token_ids.begin(), token_ids.end());
    pending_.text.append(text);
    if (!any_token_ && !token_ids.empty()) {
      any_token_ = true;
      pending_.first_token_time = absl::Now();
    }
    has_pending_ = true;
  }
  // Outside the lock: the reader's callback typically takes the event right away.
  if (notify_) notify_();
}

void GenerationStream::Finish(FinishReason reason, const Usage& usage) {
  {
    absl::MutexLock lock(&mu_);
    if (finished_) return;
    finished_ = true;
    pending_.final = true;
    pending_.status = absl::OkStatus();
    pending_.finish_reason = reason;
    pending_.usage = usage;
    has_pending_ = true;
  }
  if (notify_) notify_();
}

void GenerationStream::Fail(absl::Status status, const Usage& usage) {
  if (status.ok()) {
    // A caller bug, not the client's: report it rather than pretend success.
    status = absl::InternalError("generation failed without an error status");
  }
  {
    absl::MutexLock lock(&mu_);
    if (finished_) return;
    finished_ = true;
    pending_.final = true;
    pending_.status = std::move(status);
    pending_.finish_reason = FinishReason::kUnspecified;
    pending_.usage = usage;
    has_pending_ = true;
  }
  if (notify_) notify_();
}

bool GenerationStream::cancelled() const {
  absl::MutexLock lock(&mu_);
  return cancelled_;
}

bool GenerationStream::finished() const {
  absl::MutexLock lock(&mu_);
  return finished_;
}

void GenerationStream::SetNotify(absl::AnyInvocable<void()> notify) {
  notify_ = std::move(notify);
}

bool GenerationStream::TryTake(StreamEvent* event) {
  absl::MutexLock lock(&mu_);
  if (final_taken_ || !has_pending_) return false;
  *event = std::move(pending_);
  pending_ = StreamEvent();
  has_pending_ = false;
  if (event->final) final_taken_ = true;
  return true;
}

bool GenerationStream::WaitTake(StreamEvent* event, absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return has_pending_ && !final_taken_;
  };
  mu_.AwaitWithDeadline(absl::Condition(&ready), deadline);
  if (!ready()) return false;
  *event = std::move(pending_);
  pending_ = StreamEvent();
  has_pending_ = false;
  if (event->final) final_taken_ = true;
  return true;
}

void GenerationStream::Cancel() {
  absl::MutexLock lock(&mu_);
  cancelled_ = true;
}

}  // namespace kvserve::server
