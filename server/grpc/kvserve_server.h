// KvServer: one serving process in a box. Owns the Engine, the RequestQueue, the EngineLoop,
// the Inference service and the grpc::Server (with the standard health service and
// reflection), and shuts them down in order.
//
// Thread-safety: Create from any thread; address() from any; Shutdown and Wait may be called
// from different threads (a signal thread shuts down while the main thread waits). Shutdown
// is idempotent.
#ifndef KVSERVE_SERVER_GRPC_KVSERVE_SERVER_H_
#define KVSERVE_SERVER_GRPC_KVSERVE_SERVER_H_

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/runtime/engine.h"
#include "grpcpp/grpcpp.h"
#include "server/grpc/inference_service.h"
#include "server/grpc/kserve_service.h"
#include "server/grpc/server_options.h"
#include "server/serving/engine_loop.h"
#include "server/metrics/prometheus_metrics.h"
#include "server/serving/health_monitor.h"
#include "server/serving/request_queue.h"

namespace kvserve::server {

// The service name the health service reports besides "" (the whole server).
inline constexpr char kInferenceServiceName[] = "kvserve.v1.Inference";

class KvServer {
 public:
  // Loads the model, starts the engine thread and the gRPC server; health is SERVING when
  // this returns. Errors: the options' (INVALID_ARGUMENT), the model's (NOT_FOUND for a
  // missing file, INVALID_ARGUMENT for a corrupt one), UNAVAILABLE when the listen address
  // cannot be bound (in use, or no such interface).
  static absl::StatusOr<std::unique_ptr<KvServer>> Create(const ServerOptions& options);
  ~KvServer();  // Shutdown(zero drain) if not shut down yet.

  KvServer(const KvServer&) = delete;
  KvServer& operator=(const KvServer&) = delete;

  // The bound address, HOST:PORT with the port actually selected.
  std::string address() const { return address_; }
  const RequestLimits& limits() const { return limits_; }
  const engine::Engine& engine() const { return *engine_; }
  EngineLoopStats stats() const { return loop_->stats(); }
  // Port of the Prometheus /metrics listener, or 0 when it is off.
  int metrics_port() const { return metrics_ != nullptr ? metrics_->port() : 0; }

  // Graceful drain: health -> NOT_SERVING, the queue stops admitting (new requests get
  // UNAVAILABLE "server is shutting down"), running and queued requests get up to
  // `drain_timeout` to finish (the rest fail with UNAVAILABLE), then the gRPC server stops.
  void Shutdown(absl::Duration drain_timeout);
  // Blocks until Shutdown has completed.
  void Wait();

 private:
  struct PrivateKey {};

 public:
  KvServer(PrivateKey, std::unique_ptr<engine::Engine> engine,
           std::unique_ptr<RequestQueue> queue, std::unique_ptr<EngineLoop> loop,
           std::unique_ptr<InferenceService> service, RequestLimits limits);

 private:
  // Starts the gRPC server on `options.listen_address` with `credentials` and the
  // options' message-size and stream limits.
  absl::Status StartGrpc(const ServerOptions& options,
                         std::shared_ptr<grpc::ServerCredentials> credentials);

  // Constant after Create. Destroyed in reverse: server, service, loop, queue, engine.
  // Declared first so it outlives everything that reports to it.
  std::unique_ptr<PrometheusMetrics> metrics_;
  const std::unique_ptr<engine::Engine> engine_;
  const std::unique_ptr<RequestQueue> queue_;
  const std::unique_ptr<EngineLoop> loop_;
  const std::unique_ptr<InferenceService> service_;
  const RequestLimits limits_;
  // The KServe v2 (Open Inference Protocol) service on the same port; set in Create.
  std::unique_ptr<KServeService> kserve_service_;
  std::unique_ptr<grpc::Server> server_;
  // Keeps health in step with the engine loop while serving; stopped first on shutdown.
  std::unique_ptr<HealthMonitor> health_monitor_;
  std::string address_;

  absl::Mutex mu_;
  bool shutdown_started_ ABSL_GUARDED_BY(mu_) = false;
  bool shutdown_done_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace kvserve::server

#endif  // KVSERVE_SERVER_GRPC_KVSERVE_SERVER_H_
