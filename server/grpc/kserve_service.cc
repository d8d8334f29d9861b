#include "server/grpc/kserve_service.h"

#include <chrono>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "engine/common/status_macros.h"
#include "server/grpc/status_util.h"

// The project version (CMake's PROJECT_VERSION), set by server/grpc/CMakeLists.txt.
#ifndef KVSERVE_VERSION
#define KVSERVE_VERSION "unknown"
#endif

namespace kvserve::server {
namespace {

// The call's deadline on absl's clock; InfiniteFuture when the client set none.
absl::Time CallDeadline(const grpc::CallbackServerContext& context) {
  const std::chrono::system_clock::time_point deadline = context.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(deadline);
}

// Triton's opt-in: with metadata "triton_grpc_error: true" a stream's first error ends it
// with a real gRPC status.
bool WantsGrpcErrors(const grpc::CallbackServerContext& context) {
  const auto& metadata = context.client_metadata();
  const auto it = metadata.find("triton_grpc_error");
  if (it == metadata.end()) return false;
  const absl::string_view value(it->second.data(), it->second.size());
  return absl::EqualsIgnoreCase(value, "true") || value == "1";
}

grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* context,
                                    const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

}  // namespace

KServeService::KServeService(KServeServiceOptions options) : options_(std::move(options)) {}

bool KServeService::Ready() const {
  return options_.loop->alive() && !options_.queue->closed();
}

absl::StatusOr<KServeGeneration> KServeService::Build(
    const inference::ModelInferRequest& request, absl::Time deadline, bool stream_rpc) const {
  absl::StatusOr<KServeGeneration> built = [&]() -> absl::StatusOr<KServeGeneration> {
    KV_RETURN_IF_ERROR(CheckKServeModel(request.model_name(), request.model_version(),
                                        options_.limits.model_name));
    KServeGeneration generation;
    KV_ASSIGN_OR_RETURN(generation.request, ParseKServeRequest(request));
    generation.streaming = generation.request.stream.value_or(stream_rpc);
    if (generation.streaming && !stream_rpc) {
      return absl::InvalidArgumentError(
          "stream is true, but ModelInfer returns one response; call ModelStreamInfer to "
          "stream the output");
    }
    KV_ASSIGN_OR_RETURN(generation.pending,
                        ToPendingRequest(generation.request.params, options_.limits,
                                         *options_.tokenizer));
    generation.pending->deadline = deadline;
    return generation;
  }();
  if (!built.ok() && options_.observer != nullptr) {
    options_.observer->OnRejected(RejectReason::kInvalid);
  }
  return built;
}

grpc::ServerUnaryReactor* KServeService::ServerLive(grpc::CallbackServerContext* context,
                                                    const inference::ServerLiveRequest*,
                                                    inference::ServerLiveResponse* response) {
  response->set_live(options_.loop->alive());
  return FinishNow(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* KServeService::ServerReady(grpc::CallbackServerContext* context,
                                                     const inference::ServerReadyRequest*,
                                                     inference::ServerReadyResponse* response) {
  response->set_ready(Ready());
  return FinishNow(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* KServeService::ModelReady(grpc::CallbackServerContext* context,
                                                    const inference::ModelReadyRequest* request,
                                                    inference::ModelReadyResponse* response) {
  const absl::Status status =
      CheckKServeModel(request->name(), request->version(), options_.limits.model_name);
  if (status.ok()) response->set_ready(Ready());
  return FinishNow(context, status);
}

grpc::ServerUnaryReactor* KServeService::ServerMetadata(
    grpc::CallbackServerContext* context, const inference::ServerMetadataRequest*,
    inference::ServerMetadataResponse* response) {
  response->set_name(kKServeServerName);
  response->set_version(KVSERVE_VERSION);
  // "parameters": request/response parameters carry options and usage;
  // "model_stream_infer": the streaming RPC with Triton's decoupled conventions.
  response->add_extensions("parameters");
  response->add_extensions("model_stream_infer");
  return FinishNow(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* KServeService::ModelMetadata(
    grpc::CallbackServerContext* context, const inference::ModelMetadataRequest* request,
    inference::ModelMetadataResponse* response) {
  const absl::Status status =
      CheckKServeModel(request->name(), request->version(), options_.limits.model_name);
  if (status.ok()) FillKServeModelMetadata(options_.model, options_.limits, response);
  return FinishNow(context, status);
}

grpc::ServerUnaryReactor* KServeService::ModelInfer(grpc::CallbackServerContext* context,
                                                    const inference::ModelInferRequest* request,
                                                    inference::ModelInferResponse* response) {
  absl::StatusOr<KServeGeneration> generation =
      Build(*request, CallDeadline(*context), /*stream_rpc=*/false);
  if (!generation.ok()) return FinishNow(context, generation.status());
  return KServeInferReactor::Start(*std::move(generation), options_.limits.model_name,
                                   options_.queue, response);
}

grpc::ServerBidiReactor<inference::ModelInferRequest, inference::ModelStreamInferResponse>*
KServeService::ModelStreamInfer(grpc::CallbackServerContext* context) {
  KServeStreamOptions stream_options;
  stream_options.queue = options_.queue;
  stream_options.model_name = options_.limits.model_name;
  stream_options.grpc_errors = WantsGrpcErrors(*context);
  stream_options.build = [this, deadline = CallDeadline(*context)](
                             const inference::ModelInferRequest& request) {
    return Build(request, deadline, /*stream_rpc=*/true);
  };
  return KServeStreamReactor::Start(std::move(stream_options));
}

}  // namespace kvserve::server
