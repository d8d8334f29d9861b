#include "server/grpc/inference_service.h"

#include <chrono>
#include <utility>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "engine/common/status_macros.h"
#include "server/grpc/generate_reactor.h"
#include "server/grpc/status_util.h"

namespace kvserve::server {
namespace {

// The call's deadline on absl's clock; InfiniteFuture when the client set none.
absl::Time CallDeadline(const grpc::CallbackServerContext& context) {
  const std::chrono::system_clock::time_point deadline = context.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(deadline);
}

}  // namespace

InferenceService::InferenceService(const engine::BpeTokenizer* tokenizer, RequestQueue* queue,
                                   RequestLimits limits, ModelDescription model,
                                   ServingObserver* observer, absl::Duration write_timeout)
    : tokenizer_(tokenizer),
      queue_(queue),
      limits_(std::move(limits)),
      model_(std::move(model)),
      observer_(observer),
      write_timeout_(write_timeout) {}

absl::StatusOr<std::unique_ptr<PendingRequest>> InferenceService::BuildRequest(
    const grpc::CallbackServerContext& context, const v1::GenerationParams& params) const {
  absl::StatusOr<std::unique_ptr<PendingRequest>> built =
      ToPendingRequest(params, limits_, *tokenizer_);
  if (!built.ok()) {
    if (observer_ != nullptr) observer_->OnRejected(RejectReason::kInvalid);
    return built.status();
  }
  std::unique_ptr<PendingRequest> request = *std::move(built);
  request->deadline = CallDeadline(context);
  return request;
}

grpc::ServerWriteReactor<v1::GenerateResponse>* InferenceService::Generate(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  absl::StatusOr<std::unique_ptr<PendingRequest>> pending =
      BuildRequest(*context, request->params());
  if (!pending.ok()) return GenerateReactor::Reject(ToGrpcStatus(pending.status()));
  return GenerateReactor::Start(*std::move(pending), queue_,
                                {.context = context, .write_timeout = write_timeout_});
}

grpc::ServerUnaryReactor* InferenceService::Complete(grpc::CallbackServerContext* context,
                                                     const v1::CompleteRequest* request,
                                                     v1::CompleteResponse* response) {
  absl::StatusOr<std::unique_ptr<PendingRequest>> pending =
      BuildRequest(*context, request->params());
  if (!pending.ok()) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(ToGrpcStatus(pending.status()));
    return reactor;
  }
  return CompleteReactor::Start(*std::move(pending), queue_, response);
}

grpc::ServerUnaryReactor* InferenceService::Tokenize(grpc::CallbackServerContext* context,
                                                     const v1::TokenizeRequest* request,
                                                     v1::TokenizeResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(server::Tokenize(*request, limits_, *tokenizer_, response)));
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::GetModelInfo(grpc::CallbackServerContext* context,
                                                         const v1::GetModelInfoRequest* request,
                                                         v1::GetModelInfoResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const absl::Status status = CheckModelName(request->model(), limits_.model_name);
  if (status.ok()) ToProto(model_, response);
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

}  // namespace kvserve::server
