// KServeService: the Open Inference Protocol (KServe v2) gRPC service,
// inference.GRPCInferenceService, over the same request queue, engine loop, limits and
// metrics as kvserve.v1.Inference (KvServer registers both on one port).
//
// ServerLive/ServerReady/ModelReady report the engine loop (alive, and not draining);
// ServerMetadata/ModelMetadata describe the server and the LLM tensor layout of
// server/grpc/kserve_tensors.h; ModelInfer runs one generation and returns it whole;
// ModelStreamInfer streams each request's chunks (Triton's decoupled conventions:
// triton_final_response, triton_enable_empty_final_response, triton_grpc_error).
// Handlers validate, tokenize (bounded input) and enqueue; they never compute or block.
//
// Thread-safe: handlers run concurrently on gRPC's threads; the service is immutable after
// construction.
#ifndef KVSERVE_SERVER_GRPC_KSERVE_SERVICE_H_
#define KVSERVE_SERVER_GRPC_KSERVE_SERVICE_H_

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/tokenizer/bpe_tokenizer.h"
#include "grpcpp/grpcpp.h"
#include "inference/grpc_service.grpc.pb.h"
#include "server/grpc/kserve_reactors.h"
#include "server/grpc/proto_convert.h"
#include "server/serving/engine_loop.h"
#include "server/serving/request_queue.h"
#include "server/serving/serving_observer.h"

namespace kvserve::server {

// The name ServerMetadata reports.
inline constexpr char kKServeServerName[] = "kvserve";
// The service name for the standard health service, besides kvserve.v1.Inference.
inline constexpr char kKServeServiceName[] = "inference.GRPCInferenceService";

struct KServeServiceOptions {
  const engine::BpeTokenizer* tokenizer = nullptr;  // Required; must outlive every RPC.
  RequestQueue* queue = nullptr;        // Required; shared with kvserve.v1; must outlive.
  const EngineLoop* loop = nullptr;     // Required; readiness comes from it; must outlive.
  RequestLimits limits;                 // Same limits as kvserve.v1.
  ModelDescription model;               // For ModelMetadata's properties.
  ServingObserver* observer = nullptr;  // Hears of invalid requests; may be null.
};

class KServeService final : public inference::GRPCInferenceService::CallbackService {
 public:
  explicit KServeService(KServeServiceOptions options);

  grpc::ServerUnaryReactor* ServerLive(grpc::CallbackServerContext* context,
                                       const inference::ServerLiveRequest* request,
                                       inference::ServerLiveResponse* response) override;
  grpc::ServerUnaryReactor* ServerReady(grpc::CallbackServerContext* context,
                                        const inference::ServerReadyRequest* request,
                                        inference::ServerReadyResponse* response) override;
  grpc::ServerUnaryReactor* ModelReady(grpc::CallbackServerContext* context,
                                       const inference::ModelReadyRequest* request,
                                       inference::ModelReadyResponse* response) override;
  grpc::ServerUnaryReactor* ServerMetadata(grpc::CallbackServerContext* context,
                                           const inference::ServerMetadataRequest* request,
                                           inference::ServerMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelMetadata(grpc::CallbackServerContext* context,
                                          const inference::ModelMetadataRequest* request,
                                          inference::ModelMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelInfer(grpc::CallbackServerContext* context,
                                       const inference::ModelInferRequest* request,
                                       inference::ModelInferResponse* response) override;
  grpc::ServerBidiReactor<inference::ModelInferRequest, inference::ModelStreamInferResponse>*
  ModelStreamInfer(grpc::CallbackServerContext* context) override;

 private:
  // True while the engine loop runs and the queue admits requests.
  bool Ready() const;
  // Validates `request` (model, tensors, parameters, limits), tokenizes it and builds the
  // generation to enqueue with `deadline`. `stream_rpc` selects the streaming default and
  // allows stream=true. Counts refusals with the observer.
  absl::StatusOr<KServeGeneration> Build(const inference::ModelInferRequest& request,
                                         absl::Time deadline, bool stream_rpc) const;

  // Constant after construction.
  const KServeServiceOptions options_;
};

}  // namespace kvserve::server

#endif  // KVSERVE_SERVER_GRPC_KSERVE_SERVICE_H_
