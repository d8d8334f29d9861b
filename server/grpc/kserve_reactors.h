// Reactors of the KServe v2 front end: KServeInferReactor answers a unary ModelInfer with
// the whole generation; KServeStreamReactor runs the ModelStreamInfer bidirectional stream,
// where every request read starts a generation and its chunks are written back as they come
// (several generations may run at once on one stream; their responses interleave and carry
// the request's id).
//
// Like GenerateReactor, neither ever blocks a gRPC thread: the engine thread's stream
// notifications and gRPC's reactions meet under one mutex shared through a ReactorLink, and at
// most one write is in flight.
//
// Lifetime: gRPC owns a reactor from the moment a handler returns it; OnDone deletes it.
#ifndef KVSERVE_SERVER_GRPC_KSERVE_REACTORS_H_
#define KVSERVE_SERVER_GRPC_KSERVE_REACTORS_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "grpcpp/grpcpp.h"
#include "inference/grpc_service.grpc.pb.h"
#include "server/grpc/kserve_tensors.h"
#include "server/grpc/reactor_link.h"
#include "server/grpc/unary_generation_reactor.h"
#include "server/serving/generation_stream.h"
#include "server/serving/request_queue.h"

namespace kvserve::server {

// A validated ModelInferRequest, ready to enqueue.
struct KServeGeneration {
  KServeRequest request;                  // Output layout and streaming options.
  std::unique_ptr<PendingRequest> pending;  // Its stream is set by the reactor.
  bool streaming = true;                  // One response per chunk (else one per request).
};

// Validates one request read from a stream (the service's rules and the call's deadline).
using KServeBuilder =
    std::function<absl::StatusOr<KServeGeneration>(const inference::ModelInferRequest&)>;

class KServeInferReactor final : public UnaryGenerationReactor {
 public:
  // Enqueues `generation` and fills `response` (owned by gRPC, valid until OnDone) when its
  // stream ends; if the queue refuses it the RPC ends with that status.
  static grpc::ServerUnaryReactor* Start(KServeGeneration generation, std::string model_name,
                                         RequestQueue* queue,
                                         inference::ModelInferResponse* response);

 private:
  KServeInferReactor(KServeRequest request, std::string model_name, RequestQueue* queue,
                     inference::ModelInferResponse* response);

  // UnaryGenerationReactor
  void Append(const StreamEvent& event) override;
  void Complete(const StreamEvent& final_event) override;

  const KServeRequest request_;
  const std::string model_name_;
  // Written under the reactor's lock until finished.
  inference::ModelInferResponse* const response_;
  std::string text_;
  std::vector<TokenId> token_ids_;
};

struct KServeStreamOptions {
  RequestQueue* queue = nullptr;  // Must outlive the RPC.
  std::string model_name;         // Reported in every response.
  // The client sent "triton_grpc_error: true": the first failed request ends the whole
  // stream with its gRPC status instead of an in-stream error_message.
  bool grpc_errors = false;
  KServeBuilder build;            // Validates each request read.
};

class KServeStreamReactor final
    : public grpc::ServerBidiReactor<inference::ModelInferRequest,
                                     inference::ModelStreamInferResponse> {
 public:
  // Starts reading requests. gRPC owns the returned reactor.
  static KServeStreamReactor* Start(KServeStreamOptions options);

  // grpc::ServerBidiReactor
  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  using Link = ReactorLink<KServeStreamReactor>;

  // One generation started by a request on this stream.
  struct Active {
    KServeRequest request;
    std::shared_ptr<GenerationStream> stream;
    bool streaming = true;
    // Output gathered so far when not streaming.
    std::string text;
    std::vector<TokenId> token_ids;
  };

  explicit KServeStreamReactor(KServeStreamOptions options);

  // The writer: collects output of the running generations into the outbox when it is
  // empty, starts the next write, or finishes the RPC when nothing is left to do.
  void PumpLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(link_->mu);
  // Turns one event of `active` into responses; true when it was the generation's last.
  bool HandleEventLocked(Active& active, StreamEvent event)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(link_->mu);
  void EmitLocked(const KServeRequest& request, std::string_view text,
                  absl::Span<const TokenId> token_ids, bool final)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(link_->mu);
  void EmitFinalLocked(const KServeRequest& request, std::string_view text,
                       absl::Span<const TokenId> token_ids, const StreamEvent& event)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(link_->mu);
  // An in-stream error response for the request `id`, or (grpc_errors) the stream's end.
  void ReportErrorLocked(const std::string& id, const absl::Status& status)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(link_->mu);
  void CancelAllLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(link_->mu);
  void FinishLocked(const grpc::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(link_->mu);

  // Constant after construction.
  const std::shared_ptr<Link> link_;
  const KServeStreamOptions options_;

  // Owned by the read in flight; ours between OnReadDone and the next StartRead.
  inference::ModelInferRequest read_request_;

  // State below is protected by link_->mu.
  std::map<uint64_t, Active> active_;  // By arrival: earlier requests are served first.
  uint64_t next_key_ = 0;
  std::deque<inference::ModelStreamInferResponse> outbox_;  // front() is being written.
  bool writing_ = false;
  bool reads_done_ = false;   // The client half-closed (or we stopped reading).
  bool cancelled_ = false;    // The client went away or a write failed.
  std::optional<grpc::Status> error_;  // grpc_errors: the status to end the stream with.
  bool finished_ = false;
};

}  // namespace kvserve::server

#endif  // KVSERVE_SERVER_GRPC_KSERVE_REACTORS_H_
