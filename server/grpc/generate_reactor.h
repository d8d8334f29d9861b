// GenerateReactor: delivers one request's GenerationStream to a Generate client as a server
// stream, and CompleteReactor: the same for Complete, as one unary response.
//
// Neither ever blocks a gRPC thread. The engine thread's notify callback and gRPC's
// reactions meet under one mutex that also lets the callback find out whether gRPC already
// deleted the reactor (OnDone can run while the engine is about to notify). At most one write
// is in flight.
//
// Lifetime: gRPC owns a reactor from the moment a handler returns it; OnDone deletes it.
#ifndef KVSERVE_SERVER_GRPC_GENERATE_REACTOR_H_
#define KVSERVE_SERVER_GRPC_GENERATE_REACTOR_H_

#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/grpcpp.h"
#include "kvserve/v1/kvserve.grpc.pb.h"
#include "server/serving/generation_stream.h"
#include "server/serving/request_queue.h"

namespace kvserve::server {

// The engine side's way to a reactor that may be gone: shared by the reactor and its
// stream's notify callback. `reactor` is null once gRPC is done with the reactor.
template <typename Reactor>
struct ReactorLink {
  absl::Mutex mu;
  Reactor* reactor ABSL_GUARDED_BY(mu) = nullptr;
};

class GenerateReactor final : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  // Enqueues `request` (its stream is created here) and returns the reactor streaming its
  // output; if the queue refuses it the RPC ends with that status. `queue` must outlive
  // every RPC (the server shuts down before the queue is destroyed).
  static grpc::ServerWriteReactor<v1::GenerateResponse>* Start(
      std::unique_ptr<PendingRequest> request, RequestQueue* queue);
  // An RPC that ends at once with `status` (a request that failed validation).
  static grpc::ServerWriteReactor<v1::GenerateResponse>* Reject(const grpc::Status& status);

  // grpc::ServerWriteReactor
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  using Link = ReactorLink<GenerateReactor>;

  GenerateReactor(std::shared_ptr<GenerationStream> stream, RequestQueue* queue);

  // Takes what the stream has and starts the next write or the finish, unless a write is
  // in flight or the RPC already finished.
  void PumpLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(link_->mu);
  void FinishLocked(const grpc::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(link_->mu);

  // Constant after construction.
  const std::shared_ptr<Link> link_;
  const std::shared_ptr<GenerationStream> stream_;  // Null for a rejected request.
  RequestQueue* const queue_;                       // Null for a rejected request.

  // State below is protected by link_->mu.
  v1::GenerateResponse response_;  // The message being written; untouched while in flight.
  bool writing_ = false;
  bool finished_ = false;  // Finish (or StartWriteAndFinish) was called.
  bool cancelled_ = false; // The client went away or a write failed.
};

class CompleteReactor final : public grpc::ServerUnaryReactor {
 public:
  // Enqueues `request` and fills `response` (owned by gRPC, valid until OnDone) when its
  // stream ends; if the queue refuses it the RPC ends with that status.
  static grpc::ServerUnaryReactor* Start(std::unique_ptr<PendingRequest> request,
                                         RequestQueue* queue, v1::CompleteResponse* response);

  // grpc::ServerUnaryReactor
  void OnCancel() override;
  void OnDone() override;

 private:
  using Link = ReactorLink<CompleteReactor>;

  CompleteReactor(std::shared_ptr<GenerationStream> stream, RequestQueue* queue,
                  v1::CompleteResponse* response);

  // Moves what the stream has into the response; finishes on the final event.
  void PumpLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(link_->mu);
  void FinishLocked(const grpc::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(link_->mu);

  // Constant after construction.
  const std::shared_ptr<Link> link_;
  const std::shared_ptr<GenerationStream> stream_;
  RequestQueue* const queue_;
  v1::CompleteResponse* const response_;  // Protected by link_->mu until finished.

  // State below is protected by link_->mu.
  bool finished_ = false;
};

}  // namespace kvserve::server

#endif  // KVSERVE_SERVER_GRPC_GENERATE_REACTOR_H_
