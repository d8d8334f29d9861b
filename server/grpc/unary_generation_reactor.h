// UnaryGenerationReactor: the shared half of every unary RPC that runs one generation and
// answers once (kvserve.v1 Complete, KServe ModelInfer). It enqueues the request, gathers
// the stream's events as the engine produces them, and finishes on the final one; the
// subclass only says how events become its response message.
//
// Never blocks a gRPC thread. The engine thread's notify callback and gRPC's reactions meet
// under one mutex shared through a ReactorLink, which also tells the callback whether gRPC
// already deleted the reactor (OnDone can run while the engine is about to notify).
//
// Lifetime: gRPC owns a reactor from the moment a handler returns it; OnDone deletes it.
#ifndef KVSERVE_SERVER_GRPC_UNARY_GENERATION_REACTOR_H_
#define KVSERVE_SERVER_GRPC_UNARY_GENERATION_REACTOR_H_

#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/grpcpp.h"
#include "server/grpc/reactor_link.h"
#include "server/serving/generation_stream.h"
#include "server/serving/request_queue.h"

namespace kvserve::server {

class UnaryGenerationReactor : public grpc::ServerUnaryReactor {
 public:
  // grpc::ServerUnaryReactor
  void OnCancel() final;
  void OnDone() final;

 protected:
  // `queue` must outlive every RPC (the server shuts down before the queue is destroyed).
  explicit UnaryGenerationReactor(RequestQueue* queue);
  ~UnaryGenerationReactor() override = default;

  // Gives `request` a stream wired to `reactor` and hands it to the queue; if the queue
  // refuses it the RPC ends with that status. Call once, right after constructing the
  // reactor with new, before returning it to gRPC.
  static void Enqueue(UnaryGenerationReactor* reactor, std::unique_ptr<PendingRequest> request);

  // Each event the stream delivers before a successful end, the final one included, in
  // order; called with the reactor's lock held (never concurrently).
  virtual void Append(const StreamEvent& event) = 0;
  // The stream ended successfully with `final_event` (already passed to Append): fill the
  // response. Called once, with the lock held.
  virtual void Complete(const StreamEvent& final_event) = 0;

 private:
  using Link = ReactorLink<UnaryGenerationReactor>;

  // Takes what the stream has; finishes on the final event.
  void PumpLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(link_->mu);
  void FinishLocked(const grpc::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(link_->mu);

  // Constant after construction (stream_ is set by Enqueue before anything can pump).
  const std::shared_ptr<Link> link_;
  RequestQueue* const queue_;
  std::shared_ptr<GenerationStream> stream_;

  // State below is protected by link_->mu.
  bool finished_ = false;
};

}  // namespace kvserve::server

#endif  // KVSERVE_SERVER_GRPC_UNARY_GENERATION_REACTOR_H_
