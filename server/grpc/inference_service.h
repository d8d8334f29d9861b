// InferenceService: the kvserve.v1.Inference gRPC service (callback API).
//
// Handlers validate, tokenize (bounded input) and enqueue; they never compute or block.
// Generate and Complete hand the request to a reactor that the engine thread's stream
// notifications drive; Tokenize and GetModelInfo answer at once (cheap).
//
// Thread-safe: handlers run concurrently on gRPC's threads; the service itself is immutable
// after construction.
#ifndef KVSERVE_SERVER_GRPC_INFERENCE_SERVICE_H_
#define KVSERVE_SERVER_GRPC_INFERENCE_SERVICE_H_

#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "kvserve/v1/kvserve.grpc.pb.h"
#include "server/grpc/proto_convert.h"
#include "server/serving/request_queue.h"

namespace kvserve::server {

class InferenceService final : public v1::Inference::CallbackService {
 public:
  // `tokenizer` and `queue` must outlive the service (and every RPC).
  // `observer` (may be null) hears of requests refused as invalid. A Generate stream whose
  // client has not accepted a write for `write_timeout` is cancelled (generate_reactor.h).
  InferenceService(const engine::BpeTokenizer* tokenizer, RequestQueue* queue,
                   RequestLimits limits, ModelDescription model,
                   ServingObserver* observer = nullptr,
                   absl::Duration write_timeout = absl::InfiniteDuration());

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Complete(grpc::CallbackServerContext* context,
                                     const v1::CompleteRequest* request,
                                     v1::CompleteResponse* response) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const v1::GetModelInfoRequest* request,
                                         v1::GetModelInfoResponse* response) override;

 private:
  // Validates and tokenizes `params`; sets the deadline from the call's.
  absl::StatusOr<std::unique_ptr<PendingRequest>> BuildRequest(
      const grpc::CallbackServerContext& context, const v1::GenerationParams& params) const;

  // Constant after construction.
  const engine::BpeTokenizer* const tokenizer_;
  RequestQueue* const queue_;
  const RequestLimits limits_;
  const ModelDescription model_;
  ServingObserver* const observer_;
  const absl::Duration write_timeout_;
};

}  // namespace kvserve::server

#endif  // KVSERVE_SERVER_GRPC_INFERENCE_SERVICE_H_
