// GenerateReactor: delivers one request's GenerationStream to a Generate client as a server
// stream, and CompleteReactor: the same for Complete, as one unary response.
//
// Neither ever blocks a gRPC thread. The engine thread's notify callback and gRPC's
// reactions meet under one mutex that also lets the callback find out whether gRPC already
// deleted the reactor (OnDone can run while the engine is about to notify). At most one write
// is in flight.
//
// A client that stops reading cannot make the server hold a stream forever: its pending
// output is bounded by max_tokens, and with a write timeout a write the client has not
// accepted for that long cancels the call (the engine frees its KV at its next step).
//
// Lifetime: gRPC owns a reactor from the moment a handler returns it; OnDone deletes it.
#ifndef KVSERVE_SERVER_GRPC_GENERATE_REACTOR_H_
#define KVSERVE_SERVER_GRPC_GENERATE_REACTOR_H_

#include <memory>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/alarm.h"
#include "grpcpp/grpcpp.h"
#include "kvserve/v1/kvserve.grpc.pb.h"
#include "server/grpc/reactor_link.h"
#include "server/grpc/unary_generation_reactor.h"
#include "server/serving/generation_stream.h"
#include "server/serving/request_queue.h"

namespace kvserve::server {

// How a Generate stream treats a client that stops reading.
struct StreamOptions {
  // The call being served; needed to cancel it when stalled. Null = no write timeout.
  grpc::CallbackServerContext* context = nullptr;
  // A write the client has not accepted for this long cancels the call with CANCELLED.
  // InfiniteDuration = never.
  absl::Duration write_timeout = absl::InfiniteDuration();
};

class GenerateReactor final : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  // Enqueues `request` (its stream is created here) and returns the reactor streaming its
  // output; if the queue refuses it the RPC ends with that status. `queue` must outlive
  // every RPC (the server shuts down before the queue is destroyed).
  static grpc::ServerWriteReactor<v1::GenerateResponse>* Start(
      std::unique_ptr<PendingRequest> request, RequestQueue* queue,
      const StreamOptions& options = {});
  // An RPC that ends at once with `status` (a request that failed validation).
  static grpc::ServerWriteReactor<v1::GenerateResponse>* Reject(const grpc::Status& status);

  // grpc::ServerWriteReactor
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  using Link = ReactorLink<GenerateReactor>;

  GenerateReactor(std::shared_ptr<GenerationStream> stream, RequestQueue* queue,
                  const StreamOptions& options);

  // Takes what the stream has and starts the next write or the finish, unless a write is
  // in flight, a stall cancellation is under way, or the RPC already finished.
  void PumpLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(link_->mu);
  void StartWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(link_->mu);
  void FinishLocked(const grpc::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(link_->mu);
  void ArmWatchdogLocked(absl::Time when) ABSL_EXCLUSIVE_LOCKS_REQUIRED(link_->mu);
  // The write-timeout alarm: cancels the call if the write in flight is overdue.
  static void OnWatchdog(const std::shared_ptr<Link>& link);

  // Constant after construction.
  const std::shared_ptr<Link> link_;
  const std::shared_ptr<GenerationStream> stream_;  // Null for a rejected request.
  RequestQueue* const queue_;                       // Null for a rejected request.
  grpc::CallbackServerContext* const context_;      // Null = no write timeout.
  const absl::Duration write_timeout_;

  // State below is protected by link_->mu.
  v1::GenerateResponse response_;  // The message being written; untouched while in flight.
  bool writing_ = false;
  bool finished_ = false;  // Finish (or StartWriteAndFinish) was called.
  bool cancelled_ = false; // The client went away, a write failed, or it timed out.
  bool final_written_ = false;  // The last response is written (or being written).
  absl::Time write_started_;    // When the write in flight started.
  bool watchdog_armed_ = false;
  // The watchdog is cancelling the call outside the lock; nothing may finish it meanwhile
  // (the context must outlive TryCancel).
  bool cancelling_ = false;
  std::optional<grpc::Status> cancel_status_;  // Status for a cancelled call, if not the default.
  std::vector<std::unique_ptr<grpc::Alarm>> alarms_;  // Fired ones are kept until OnDone.
};

class CompleteReactor final : public UnaryGenerationReactor {
 public:
  // Enqueues `request` and fills `response` (owned by gRPC, valid until OnDone) when its
  // stream ends; if the queue refuses it the RPC ends with that status.
  static grpc::ServerUnaryReactor* Start(std::unique_ptr<PendingRequest> request,
                                         RequestQueue* queue, v1::CompleteResponse* response);

 private:
  CompleteReactor(RequestQueue* queue, v1::CompleteResponse* response)
      : UnaryGenerationReactor(queue), response_(response) {}

  // UnaryGenerationReactor
  void Append(const StreamEvent& event) override;
  void Complete(const StreamEvent& final_event) override;

  v1::CompleteResponse* const response_;  // Written under the reactor's lock until finished.
};

}  // namespace kvserve::server

#endif  // KVSERVE_SERVER_GRPC_GENERATE_REACTOR_H_
