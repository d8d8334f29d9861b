#include "server/grpc/generate_reactor.h"

#include <utility>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "engine/common/logging.h"
#include "server/grpc/proto_convert.h"
#include "server/grpc/status_util.h"

namespace kvserve::server {

// ---------------------------------------------------------------------------------------
// GenerateReactor

GenerateReactor::GenerateReactor(std::shared_ptr<GenerationStream> stream, RequestQueue* queue,
                                 const StreamOptions& options)
    : link_(std::make_shared<Link>()),
      stream_(std::move(stream)),
      queue_(queue),
      context_(options.write_timeout == absl::InfiniteDuration() ? nullptr : options.context),
      write_timeout_(options.write_timeout) {
  absl::MutexLock lock(&link_->mu);
  link_->reactor = this;
}

grpc::ServerWriteReactor<v1::GenerateResponse>* GenerateReactor::Start(
    std::unique_ptr<PendingRequest> request, RequestQueue* queue,
    const StreamOptions& options) {
  auto stream = std::make_shared<GenerationStream>();
  // gRPC owns the reactor from here on; OnDone deletes it.
  auto* reactor = new GenerateReactor(stream, queue, options);
  stream->SetNotify([link = reactor->link_] {
    absl::MutexLock lock(&link->mu);
    if (link->reactor != nullptr) link->reactor->PumpLocked();
  });
  request->stream = std::move(stream);
  const absl::Status pushed = queue->Push(std::move(request));
  if (!pushed.ok()) {
    absl::MutexLock lock(&reactor->link_->mu);
    reactor->FinishLocked(ToGrpcStatus(pushed));
  }
  return reactor;
}

grpc::ServerWriteReactor<v1::GenerateResponse>* GenerateReactor::Reject(
    const grpc::Status& status) {
  auto* reactor = new GenerateReactor(nullptr, nullptr, StreamOptions{});
  absl::MutexLock lock(&reactor->link_->mu);
  reactor->FinishLocked(status);
  return reactor;
}

void GenerateReactor::PumpLocked() {
  if (finished_ || writing_ || cancelling_) return;
  if (cancelled_) {
    FinishLocked(cancel_status_.value_or(CancelledStatus()));
    return;
  }
  if (final_written_) {
    FinishLocked(grpc::Status::OK);
    return;
  }
  StreamEvent event;
  while (stream_->TryTake(&event)) {
    if (event.final && !event.status.ok()) {
      // Output not yet sent is dropped: the client gets the error instead.
      FinishLocked(ToGrpcStatus(event.status));
      return;
    }
    if (!event.final && event.token_ids.empty() && event.text.empty()) continue;
    response_.Clear();
    response_.set_text(std::move(event.text));
    response_.mutable_token_ids()->Add(event.token_ids.begin(), event.token_ids.end());
    if (event.final) {
      response_.set_finish_reason(ToProto(event.finish_reason));
      ToProto(event.usage, response_.mutable_usage());
      // Written like any other message and finished in OnWriteDone (not
      // StartWriteAndFinish), so the write timeout also covers the last one.
      final_written_ = true;
    }
    StartWriteLocked();
    return;
  }
}

void GenerateReactor::StartWriteLocked() {
  writing_ = true;
  StartWrite(&response_);
  if (context_ == nullptr) return;
  write_started_ = absl::Now();
  if (!watchdog_armed_) ArmWatchdogLocked(write_started_ + write_timeout_);
}

void GenerateReactor::ArmWatchdogLocked(absl::Time when) {
  watchdog_armed_ = true;
  auto alarm = std::make_unique<grpc::Alarm>();
  alarm->Set(absl::ToChronoTime(when), [link = link_](bool fired) {
    if (fired) OnWatchdog(link);
  });
  alarms_.push_back(std::move(alarm));
}

void GenerateReactor::OnWatchdog(const std::shared_ptr<Link>& link) {
  GenerateReactor* self = nullptr;
  {
    absl::MutexLock lock(&link->mu);
    self = link->reactor;
    if (self == nullptr) return;
    self->watchdog_armed_ = false;
    if (self->finished_ || !self->writing_ || self->cancelled_ || self->cancelling_) return;
    const absl::Time due = self->write_started_ + self->write_timeout_;
    if (absl::Now() < due) {
      self->ArmWatchdogLocked(due);  // A later write; check again when it is due.
      return;
    }
    self->cancelling_ = true;
    self->cancel_status_ = grpc::Status(
        grpc::StatusCode::CANCELLED,
        absl::StrFormat("the client did not read its stream for %s (write timeout); the "
                        "request was cancelled",
                        absl::FormatDuration(self->write_timeout_)));
  }
  KV_LOG_WARN("a Generate client has not read its stream for {}; cancelling the request",
              absl::FormatDuration(self->write_timeout_));
  // Outside the lock: cancelling may run OnCancel/OnWriteDone on this thread. The reactor
  // and its context stay alive because nothing finishes the call while cancelling_.
  self->stream_->Cancel();
  self->queue_->Wake();  // The engine drops the request (and frees its KV) at its next step.
  self->context_->TryCancel();
  absl::MutexLock lock(&link->mu);
  self->cancelling_ = false;
  self->cancelled_ = true;
  self->PumpLocked();  // Finishes once the failed write has come back.
}

void GenerateReactor::FinishLocked(const grpc::Status& status) {
  if (finished_) return;
  finished_ = true;
  Finish(status);
}

void GenerateReactor::OnWriteDone(bool ok) {
  absl::MutexLock lock(&link_->mu);
  writing_ = false;
  if (!ok && !finished_ && !cancelled_) {
    // The call is broken (client gone): stop generating.
    cancelled_ = true;
    stream_->Cancel();
    queue_->Wake();
  }
  PumpLocked();
}

void GenerateReactor::OnCancel() {
  if (stream_ != nullptr) {
    stream_->Cancel();
    queue_->Wake();  // The engine drops the request at its next step.
  }
  absl::MutexLock lock(&link_->mu);
  cancelled_ = true;
  if (stream_ != nullptr) PumpLocked();
}

void GenerateReactor::OnDone() {
  {
    absl::MutexLock lock(&link_->mu);
    link_->reactor = nullptr;
  }
  delete this;  // gRPC is done with the reactor: the one sanctioned delete.
}

// ---------------------------------------------------------------------------------------
// CompleteReactor

grpc::ServerUnaryReactor* CompleteReactor::Start(std::unique_ptr<PendingRequest> request,
                                                 RequestQueue* queue,
                                                 v1::CompleteResponse* response) {
  // gRPC owns the reactor from here on; OnDone deletes it.
  auto* reactor = new CompleteReactor(queue, response);
  Enqueue(reactor, std::move(request));
  return reactor;
}

void CompleteReactor::Append(const StreamEvent& event) {
  response_->mutable_text()->append(event.text);
  response_->mutable_token_ids()->Add(event.token_ids.begin(), event.token_ids.end());
}

void CompleteReactor::Complete(const StreamEvent& final_event) {
  response_->set_finish_reason(ToProto(final_event.finish_reason));
  ToProto(final_event.usage, response_->mutable_usage());
}

}  // namespace kvserve::server
