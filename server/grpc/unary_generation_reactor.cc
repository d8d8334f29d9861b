#include "server/grpc/unary_generation_reactor.h"

#include <utility>

#include "server/grpc/status_util.h"

namespace kvserve::server {

UnaryGenerationReactor::UnaryGenerationReactor(RequestQueue* queue)
    : link_(std::make_shared<Link>()), queue_(queue) {
  absl::MutexLock lock(&link_->mu);
  link_->reactor = this;
}

void UnaryGenerationReactor::Enqueue(UnaryGenerationReactor* reactor,
                                     std::unique_ptr<PendingRequest> request) {
  auto stream = std::make_shared<GenerationStream>();
  stream->SetNotify([link = reactor->link_] {
    absl::MutexLock lock(&link->mu);
    if (link->reactor != nullptr) link->reactor->PumpLocked();
  });
  reactor->stream_ = stream;
  request->stream = std::move(stream);
  const absl::Status pushed = reactor->queue_->Push(std::move(request));
  if (!pushed.ok()) {
    absl::MutexLock lock(&reactor->link_->mu);
    reactor->FinishLocked(ToGrpcStatus(pushed));
  }
}

void UnaryGenerationReactor::PumpLocked() {
  if (finished_) return;
  StreamEvent event;
  while (stream_->TryTake(&event)) {
    if (event.final && !event.status.ok()) {
      FinishLocked(ToGrpcStatus(event.status));
      return;
    }
    Append(event);
    if (event.final) {
      Complete(event);
      FinishLocked(grpc::Status::OK);
      return;
    }
  }
}

void UnaryGenerationReactor::FinishLocked(const grpc::Status& status) {
  if (finished_) return;
  finished_ = true;
  Finish(status);
}

void UnaryGenerationReactor::OnCancel() {
  if (stream_ != nullptr) stream_->Cancel();
  queue_->Wake();  // The engine drops the request at its next step.
  absl::MutexLock lock(&link_->mu);
  FinishLocked(CancelledStatus());
}

void UnaryGenerationReactor::OnDone() {
  {
    absl::MutexLock lock(&link_->mu);
    link_->reactor = nullptr;
  }
  delete this;  // gRPC is done with the reactor: the one sanctioned delete.
}

}  // namespace kvserve::server
