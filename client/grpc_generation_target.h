// GrpcGenerationTarget: a GenerationTarget that sends each WorkItem to a kvserve server as one
// streaming Generate RPC (gRPC callback API, so any number of requests can be in flight
// without a thread each). Thread-safe.
#ifndef KVSERVE_CLIENT_GRPC_GENERATION_TARGET_H_
#define KVSERVE_CLIENT_GRPC_GENERATION_TARGET_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "client/generation_target.h"
#include "grpcpp/channel.h"
#include "kvserve/v1/kvserve.grpc.pb.h"

namespace kvserve::client {

struct GrpcTargetOptions {
  std::string server;  // "HOST:PORT" of the kvserve server; plaintext (no TLS).
};

class GrpcGenerationTarget final : public GenerationTarget {
 public:
  // Creates the channel (connects lazily). INVALID_ARGUMENT if `server` is not HOST:PORT.
  static absl::StatusOr<std::unique_ptr<GrpcGenerationTarget>> Create(
      const GrpcTargetOptions& options);

  // Waits until every started generation has finished.
  ~GrpcGenerationTarget() override;
  GrpcGenerationTarget(const GrpcGenerationTarget&) = delete;
  GrpcGenerationTarget& operator=(const GrpcGenerationTarget&) = delete;

  std::string Describe() const override;
  absl::StatusOr<TargetInfo> GetInfo(double timeout_s) override;
  void StartGenerate(const WorkItem& item, GenerationCallbacks callbacks) override;

  // Use Create(); public only for std::make_unique.
  class PrivateKey {
    friend class GrpcGenerationTarget;
    PrivateKey() = default;
  };
  GrpcGenerationTarget(PrivateKey, std::string server, std::shared_ptr<grpc::Channel> channel);

 private:
  class GenerateCall;
  void CallFinished();

  // Constant after construction.
  const std::string server_;
  const std::shared_ptr<grpc::Channel> channel_;
  const std::unique_ptr<kvserve::v1::Inference::Stub> stub_;

  // State below is protected by mu_.
  absl::Mutex mu_;
  int64_t calls_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace kvserve::client

#endif  // KVSERVE_CLIENT_GRPC_GENERATION_TARGET_H_
