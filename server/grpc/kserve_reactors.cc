#include "server/grpc/kserve_reactors.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "server/grpc/status_util.h"

namespace kvserve::server {

// ---------------------------------------------------------------------------------------
// KServeInferReactor

KServeInferReactor::KServeInferReactor(KServeRequest request, std::string model_name,
                                       RequestQueue* queue,
                                       inference::ModelInferResponse* response)
    : UnaryGenerationReactor(queue),
      request_(std::move(request)),
      model_name_(std::move(model_name)),
      response_(response) {}

grpc::ServerUnaryReactor* KServeInferReactor::Start(KServeGeneration generation,
                                                    std::string model_name,
                                                    RequestQueue* queue,
                                                    inference::ModelInferResponse* response) {
  // gRPC owns the reactor from here on; OnDone deletes it.
  auto* reactor =
      new KServeInferReactor(std::move(generation.request), std::move(model_name), queue, response);
  Enqueue(reactor, std::move(generation.pending));
  return reactor;
}

void KServeInferReactor::Append(const StreamEvent& event) {
  text_.append(event.text);
  token_ids_.insert(token_ids_.end(), event.token_ids.begin(), event.token_ids.end());
}

void KServeInferReactor::Complete(const StreamEvent& final_event) {
  FillKServeOutputs(request_, model_name_, text_, token_ids_, response_);
  AddKServeFinishParameters(final_event.finish_reason, final_event.usage, response_);
}

// ---------------------------------------------------------------------------------------
// KServeStreamReactor

KServeStreamReactor::KServeStreamReactor(KServeStreamOptions options)
    : link_(std::make_shared<Link>()), options_(std::move(options)) {
  absl::MutexLock lock(&link_->mu);
  link_->reactor = this;
}

KServeStreamReactor* KServeStreamReactor::Start(KServeStreamOptions options) {
  // gRPC owns the reactor from here on; OnDone deletes it.
  auto* reactor = new KServeStreamReactor(std::move(options));
  reactor->StartRead(&reactor->read_request_);
  return reactor;
}

void KServeStreamReactor::OnReadDone(bool ok) {
  if (!ok) {
    // The client half-closed (or the call ended): finish once the running work is written.
    absl::MutexLock lock(&link_->mu);
    reads_done_ = true;
    PumpLocked();
    return;
  }
  // Validate and enqueue outside the lock: tokenizing is the costly part of a request and
  // the engine thread's notifications must not wait for it.
  absl::StatusOr<KServeGeneration> built = options_.build(read_request_);
  absl::Status status = built.status();
  bool registered = false;
  uint64_t key = 0;
  if (built.ok()) {
    auto stream = std::make_shared<GenerationStream>();
    stream->SetNotify([link = link_] {
      absl::MutexLock lock(&link->mu);
      if (link->reactor != nullptr) link->reactor->PumpLocked();
    });
    built->pending->stream = stream;
    {
      // Registered before it is enqueued, so the engine's first notification finds it.
      absl::MutexLock lock(&link_->mu);
      if (!finished_ && !cancelled_ && !error_.has_value()) {
        key = next_key_++;
        Active active;
        active.request = std::move(built->request);
        active.streaming = built->streaming;
        active.stream = std::move(stream);
        active_.emplace(key, std::move(active));
        registered = true;
      }
    }
    // A request read as the stream ends is dropped: the RPC's status says why.
    if (registered) status = options_.queue->Push(std::move(built->pending));
  }

  absl::MutexLock lock(&link_->mu);
  if (!status.ok()) {
    if (registered) active_.erase(key);
    ReportErrorLocked(read_request_.id(), status);
  }
  if (finished_ || cancelled_ || error_.has_value()) {
    reads_done_ = true;  // Read no more: the stream is ending.
    CancelAllLocked();
  } else {
    StartRead(&read_request_);
  }
  PumpLocked();
}

void KServeStreamReactor::PumpLocked() {
  if (finished_ || writing_) return;
  if (cancelled_) {
    FinishLocked(CancelledStatus());
    return;
  }
  if (outbox_.empty() && !error_.has_value()) {
    for (auto it = active_.begin(); it != active_.end() && !error_.has_value();) {
      bool done = false;
      StreamEvent event;
      while (!done && it->second.stream->TryTake(&event)) {
        done = HandleEventLocked(it->second, std::move(event));
        event = StreamEvent();
      }
      it = done ? active_.erase(it) : std::next(it);
    }
  }
  if (error_.has_value()) {
    FinishLocked(*error_);
    return;
  }
  if (!outbox_.empty()) {
    writing_ = true;
    StartWrite(&outbox_.front());
    return;
  }
  if (reads_done_ && active_.empty()) FinishLocked(grpc::Status::OK);
}

bool KServeStreamReactor::HandleEventLocked(Active& active, StreamEvent event) {
  if (event.final && !event.status.ok()) {
    ReportErrorLocked(active.request.id, event.status);
    return true;
  }
  if (!active.streaming) {
    active.text.append(event.text);
    active.token_ids.insert(active.token_ids.end(), event.token_ids.begin(),
                            event.token_ids.end());
    if (!event.final) return false;
    EmitFinalLocked(active.request, active.text, active.token_ids, event);
    return true;
  }
  if (!event.final) {
    if (!event.text.empty() || !event.token_ids.empty()) {
      EmitLocked(active.request, event.text, event.token_ids, /*final=*/false);
    }
    return false;
  }
  EmitFinalLocked(active.request, event.text, event.token_ids, event);
  return true;
}

void KServeStreamReactor::EmitLocked(const KServeRequest& request, std::string_view text,
                                     absl::Span<const TokenId> token_ids, bool final) {
  inference::ModelInferResponse* response = outbox_.emplace_back().mutable_infer_response();
  FillKServeOutputs(request, options_.model_name, text, token_ids, response);
  SetKServeBoolParameter(kFinalResponseParameter, final, response);
}

void KServeStreamReactor::EmitFinalLocked(const KServeRequest& request, std::string_view text,
                                          absl::Span<const TokenId> token_ids,
                                          const StreamEvent& event) {
  if (!request.empty_final_response) {
    // The last chunk carries the final flag.
    EmitLocked(request, text, token_ids, /*final=*/true);
  } else {
    // Triton's opt-in convention: data responses all say "not final", then one response
    // with no outputs says "final".
    if (!text.empty() || !token_ids.empty()) {
      EmitLocked(request, text, token_ids, /*final=*/false);
    }
    inference::ModelInferResponse* response = outbox_.emplace_back().mutable_infer_response();
    FillKServeIdentity(request, options_.model_name, response);
    SetKServeBoolParameter(kFinalResponseParameter, true, response);
  }
  AddKServeFinishParameters(event.finish_reason, event.usage,
                            outbox_.back().mutable_infer_response());
}

void KServeStreamReactor::ReportErrorLocked(const std::string& id, const absl::Status& status) {
  const grpc::Status grpc_status = ToGrpcStatus(status);
  if (options_.grpc_errors) {
    // The stream ends (FinishLocked stops the other requests on it).
    if (!error_.has_value()) error_ = grpc_status;
    return;
  }
  inference::ModelStreamInferResponse& response = outbox_.emplace_back();
  // The code's name first, so a client can tell a retryable UNAVAILABLE from a bad request.
  response.set_error_message(absl::StrCat(absl::StatusCodeToString(status.code()), ": ",
                                          grpc_status.error_message()));
  inference::ModelInferResponse* identity = response.mutable_infer_response();
  identity->set_model_name(options_.model_name);
  identity->set_model_version(kKServeModelVersion);
  identity->set_id(id);
  SetKServeBoolParameter(kFinalResponseParameter, true, identity);
}

void KServeStreamReactor::CancelAllLocked() {
  if (active_.empty()) return;
  for (auto& [key, active] : active_) active.stream->Cancel();
  active_.clear();
  options_.queue->Wake();  // The engine drops the requests at its next step.
}

void KServeStreamReactor::FinishLocked(const grpc::Status& status) {
  if (finished_) return;
  finished_ = true;
  CancelAllLocked();
  outbox_.clear();
  Finish(status);
}

void KServeStreamReactor::OnWriteDone(bool ok) {
  absl::MutexLock lock(&link_->mu);
  writing_ = false;
  if (!outbox_.empty()) outbox_.pop_front();
  if (!ok) {
    // The call is broken (client gone): stop generating.
    cancelled_ = true;
    CancelAllLocked();
  }
  PumpLocked();
}

void KServeStreamReactor::OnCancel() {
  absl::MutexLock lock(&link_->mu);
  cancelled_ = true;
  CancelAllLocked();
  PumpLocked();
}

void KServeStreamReactor::OnDone() {
  {
    absl::MutexLock lock(&link_->mu);
    link_->reactor = nullptr;
    CancelAllLocked();
  }
  delete this;  // gRPC is done with the reactor: the one sanctioned delete.
}

}  // namespace kvserve::server
