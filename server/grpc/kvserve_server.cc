#include "server/grpc/kvserve_server.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "engine/common/logging.h"
#include "engine/common/status_macros.h"
#include "engine/policy/scalekv_budgets.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "server/grpc/tls_credentials.h"

namespace kvserve::server {
namespace {

// How long the gRPC server lets finished requests' last writes reach their clients after the
// engine drained, before it cancels what is left. gRPC also waits this long for clients
// that keep an idle connection open after its GOAWAY.
constexpr absl::Duration kFinalWriteGrace = absl::Seconds(2);

void SetHealth(grpc::Server& server, bool serving) {
  grpc::HealthCheckServiceInterface* health = server.GetHealthCheckService();
  if (health == nullptr) return;
  health->SetServingStatus("", serving);
  health->SetServingStatus(kInferenceServiceName, serving);
  health->SetServingStatus(kKServeServiceName, serving);
}

}  // namespace

KvServer::KvServer(PrivateKey, std::unique_ptr<engine::Engine> engine,
                   std::unique_ptr<RequestQueue> queue, std::unique_ptr<EngineLoop> loop,
                   std::unique_ptr<InferenceService> service, RequestLimits limits)
    : engine_(std::move(engine)),
      queue_(std::move(queue)),
      loop_(std::move(loop)),
      service_(std::move(service)),
      limits_(std::move(limits)) {}

absl::StatusOr<std::unique_ptr<KvServer>> KvServer::Create(const ServerOptions& options) {
  KV_RETURN_IF_ERROR(ValidateServerOptions(options));
  // TLS and token files are read before the model loads, so a bad one fails fast.
  KV_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials,
                      BuildServerCredentials({.cert_path = options.tls_cert_path,
                                              .key_path = options.tls_key_path,
                                              .client_ca_path = options.tls_client_ca_path},
                                             options.auth_token_file));

  engine::EngineOptions engine_options;
  engine_options.model_path = options.model_path;
  engine_options.tokenizer_path = options.tokenizer_path;
  engine_options.device = options.device;
  engine_options.num_threads = options.threads;
  engine_options.kv_cache_bytes = options.kv_cache_mb * (int64_t{1} << 20);
  engine_options.max_batch_tokens = options.max_batch_tokens;
  engine_options.kv_dtype = options.kv_dtype;
  engine_options.weight_type = options.weight_type;
  KV_ASSIGN_OR_RETURN(const engine::KvPolicyContext policy_context,
                      engine::LoadKvPolicyContext(options.scalekv_budgets_path));
  KV_ASSIGN_OR_RETURN(std::shared_ptr<const engine::KvPolicy> default_policy,
                      engine::CreateKvPolicy(options.kv_policy, policy_context));
  KV_ASSIGN_OR_RETURN(std::unique_ptr<engine::Engine> engine,
                      engine::Engine::Create(engine_options));
  if (policy_context.scalekv_budgets != nullptr) {
    KV_RETURN_IF_ERROR(engine::CheckScaleKvBudgetsFit(
        *policy_context.scalekv_budgets, options.scalekv_budgets_path, engine->config().name,
        engine->config().n_layers));
  }
  KV_ASSIGN_OR_RETURN(
      std::unique_ptr<PrometheusMetrics> metrics,
      PrometheusMetrics::Create({.listen = options.metrics_listen,
                                 .model = engine->config().name,
                                 .device = std::string(
                                     engine::DeviceKindName(engine->device().kind())),
                                 .version = "0.1.0",
                                 .kv_dtype = std::string(
                                     engine::KvDtypeName(engine_options.kv_dtype)),
                                 .kv_policy = std::string(default_policy->name())}));

  const engine::ModelConfig& config = engine->config();
  const int32_t max_tokens_limit = options.max_tokens_limit > 0
                                       ? options.max_tokens_limit
                                       : static_cast<int32_t>(config.context_length);
  RequestLimits limits;
  limits.model_name = config.name;
  limits.vocab_size = config.vocab_size;
  limits.context_length = config.context_length;
  limits.max_tokens_limit = max_tokens_limit;
  limits.default_kv_policy = default_policy;
  limits.kv_policy_context = policy_context;
  if (options.default_max_tokens > max_tokens_limit) {
    KV_LOG_WARN("--default-max-tokens {} exceeds the max_tokens limit {}; using {}",
                options.default_max_tokens, max_tokens_limit, max_tokens_limit);
  }
  limits.default_max_tokens = std::min(options.default_max_tokens, max_tokens_limit);

  ModelDescription model;
  model.config = config;
  model.format = engine->model().format;
  model.device = std::string(engine::DeviceKindName(engine->device().kind()));
  model.bos_id = engine->vocab().bos_id;
  model.eos_id = engine->vocab().eos_id;
  model.parameters = engine->parameter_count();
  model.max_tokens_limit = max_tokens_limit;
  model.weight_type = std::string(engine::WeightTypeName(engine->weight_type()));
  model.kv_dtype = std::string(engine::KvDtypeName(engine_options.kv_dtype));
  model.default_kv_policy = default_policy->spec().ToString();

  RequestQueueOptions queue_options;
  queue_options.max_queued_requests = options.max_queued_requests;
  queue_options.max_queued_prompt_tokens = options.max_queued_prompt_tokens;
  queue_options.observer = metrics.get();
  auto queue = std::make_unique<RequestQueue>(queue_options);

  EngineLoopOptions loop_options;
  loop_options.max_batch_tokens = options.max_batch_tokens;
  loop_options.max_running = options.max_running;
  loop_options.max_tokens_limit = max_tokens_limit;
  loop_options.observer = metrics.get();
  KV_ASSIGN_OR_RETURN(std::unique_ptr<EngineLoop> loop,
                      EngineLoop::Create(engine.get(), queue.get(), loop_options));

  // The Open Inference Protocol (KServe v2) front end: same queue, loop, limits, metrics.
  auto kserve_service = std::make_unique<KServeService>(
      KServeServiceOptions{.tokenizer = &engine->tokenizer(),
                           .queue = queue.get(),
                           .loop = loop.get(),
                           .limits = limits,
                           .model = model,
                           .observer = metrics.get()});
  auto service = std::make_unique<InferenceService>(&engine->tokenizer(), queue.get(), limits,
                                                    std::move(model), metrics.get(),
                                                    options.write_timeout);
  auto server = std::make_unique<KvServer>(PrivateKey{}, std::move(engine), std::move(queue),
                                           std::move(loop), std::move(service),
                                           std::move(limits));
  server->metrics_ = std::move(metrics);
  server->kserve_service_ = std::move(kserve_service);
  server->loop_->Start();
  // On failure the destructor stops the loop.
  KV_RETURN_IF_ERROR(server->StartGrpc(options, std::move(credentials)));
  KV_LOG_INFO("serving model '{}' ({}, {} parameters, context {}) on {} at {}",
              server->limits_.model_name, server->engine_->model().format,
              server->engine_->parameter_count(), server->limits_.context_length,
              engine::DeviceKindName(server->engine_->device().kind()), server->address_);
  return server;
}

absl::Status KvServer::StartGrpc(const ServerOptions& options,
                                 std::shared_ptr<grpc::ServerCredentials> credentials) {
  const std::string& listen_address = options.listen_address;
  std::string host;
  int requested_port = 0;
  KV_RETURN_IF_ERROR(SplitHostPort(listen_address, &host, &requested_port));

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int selected_port = 0;
  builder.AddListeningPort(listen_address, std::move(credentials), &selected_port);
  // Larger requests fail with RESOURCE_EXHAUSTED before any handler sees them.
  builder.SetMaxReceiveMessageSize(static_cast<int>(options.max_message_bytes));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options.max_concurrent_streams);
  // Without this a second server on the same port would silently share its traffic.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.RegisterService(service_.get());
  builder.RegisterService(kserve_service_.get());
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || selected_port == 0) {
    server_.reset();
    return absl::UnavailableError(absl::StrFormat(
        "cannot listen on %s: the address is in use or not an address of this machine%s",
        listen_address,
        options.tls_cert_path.empty() ? "" : ", or gRPC rejected the TLS certificate/key"));
  }
  address_ = absl::StrCat(host, ":", selected_port);
  SetHealth(*server_, /*serving=*/true);
  grpc::Server* server = server_.get();
  health_monitor_ = std::make_unique<HealthMonitor>(
      loop_.get(), HealthMonitorOptions{},
      [server](bool serving) { SetHealth(*server, serving); });
  health_monitor_->Start();
  return absl::OkStatus();
}

KvServer::~KvServer() { Shutdown(absl::ZeroDuration()); }

void KvServer::Shutdown(absl::Duration drain_timeout) {
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_started_) {
      mu_.Await(absl::Condition(&shutdown_done_));
      return;
    }
    shutdown_started_ = true;
  }
  KV_LOG_INFO("draining (up to {})", absl::FormatDuration(drain_timeout));
  if (health_monitor_ != nullptr) health_monitor_->Stop();
  if (server_ != nullptr) SetHealth(*server_, /*serving=*/false);
  queue_->Close();  // New requests now get UNAVAILABLE "server is shutting down".
  queue_->Wake();
  loop_->Drain(absl::Now() + drain_timeout);
  KV_LOG_INFO("engine drained; stopping the gRPC server");
  if (server_ != nullptr) {
    server_->Shutdown(absl::ToChronoTime(absl::Now() + kFinalWriteGrace));
    server_->Wait();
  }
  KV_LOG_INFO("shut down");
  absl::MutexLock lock(&mu_);
  shutdown_done_ = true;
}

void KvServer::Wait() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(&shutdown_done_));
}

}  // namespace kvserve::server
