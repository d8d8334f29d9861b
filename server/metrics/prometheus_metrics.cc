#include "server/metrics/prometheus_metrics.h"

#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <exception>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace kvserve::server {
namespace {

// Latencies of an LLM server span a millisecond (a decode step of a small model) to
// minutes (a long generation behind a queue): roughly 1-2.5-5 per decade up to 10 min.
const prometheus::Histogram::BucketBoundaries& RequestLatencyBuckets() {
  static const auto* const kBuckets = new prometheus::Histogram::BucketBoundaries{
      0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,   0.25,  0.5,  1.0,
      2.5,   5.0,    10.0,  20.0, 30.0,  60.0, 120.0, 300.0, 600.0};
  return *kBuckets;
}

// Per-token and per-step times: finer, from 0.5 ms up to 10 s (a stalled step).
const prometheus::Histogram::BucketBoundaries& TokenLatencyBuckets() {
  static const auto* const kBuckets = new prometheus::Histogram::BucketBoundaries{
      0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05,
      0.075,  0.1,   0.15,   0.2,   0.3,    0.5,  0.75,  1.0,  2.5,  5.0,  10.0};
  return *kBuckets;
}

// Sequences per step: powers of two up to well past any sane --max-running.
const prometheus::Histogram::BucketBoundaries& BatchSizeBuckets() {
  static const auto* const kBuckets =
      new prometheus::Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64, 128, 256, 512};
  return *kBuckets;
}

// Tokens per step: powers of two up to a large --max-batch-tokens.
const prometheus::Histogram::BucketBoundaries& BatchTokenBuckets() {
  static const auto* const kBuckets = new prometheus::Histogram::BucketBoundaries{
      1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384};
  return *kBuckets;
}

std::string_view FinishReasonLabel(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kStopString:
      return "stop_string";
    case FinishReason::kContextLength:
      return "context_length";
    case FinishReason::kUnspecified:
      break;
  }
  return "unspecified";
}

std::string_view RejectReasonLabel(RejectReason reason) {
  switch (reason) {
    case RejectReason::kQueueFull:
      return "queue_full";
    case RejectReason::kDraining:
      return "draining";
    case RejectReason::kInvalid:
      return "invalid";
    case RejectReason::kUnauthenticated:
      return "unauthenticated";
  }
  return "unknown";
}

// "ok", "deadline_exceeded", ...: the gRPC code names in Prometheus' lower-case style.
std::string StatusLabel(const absl::Status& status) {
  return absl::AsciiStrToLower(absl::StatusCodeToString(status.code()));
}

// Prometheus treats an empty label value as a missing label: say "unknown" instead.
std::string OrUnknown(const std::string& value) { return value.empty() ? "unknown" : value; }

double Seconds(absl::Duration d) { return absl::ToDoubleSeconds(d); }

// "host:port" with a non-empty host and a port 0..65535. Port-only strings are refused
// because civetweb binds them on every interface.
absl::Status ValidateListen(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(absl::string_view(listen).substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics listen address \"", listen, "\" is not HOST:PORT (port 0..65535)"));
  }
  return absl::OkStatus();
}

// The address to connect to for reaching a listener bound to `listen` (HOST:PORT): the
// wildcard addresses are reached through loopback.
std::string WakeHost(const std::string& listen) {
  std::string host = listen.substr(0, listen.rfind(':'));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host.empty() || host == "0.0.0.0" || host == "*") return "127.0.0.1";
  if (host == "::") return "::1";
  return host;
}

// Opens and closes one TCP connection to host:port; errors are ignored (best effort).
void Poke(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0) return;
  for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {
    const int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    const bool connected = connect(fd, a->ai_addr, a->ai_addrlen) == 0;
    close(fd);
    if (connected) break;
  }
  freeaddrinfo(found);
}

}  // namespace

absl::StatusOr<std::unique_ptr<PrometheusMetrics>> PrometheusMetrics::Create(
    const MetricsOptions& options) {
  if (!options.listen.empty()) {
    if (absl::Status status = ValidateListen(options.listen); !status.ok()) return status;
    if (options.listener_threads < 1) {
      return absl::InvalidArgumentError("metrics listener_threads must be >= 1");
    }
  }
  auto metrics = std::make_unique<PrometheusMetrics>(PrivateKey{}, options);
  if (options.listen.empty()) return metrics;

  // prometheus-cpp reports a failed bind by throwing from the constructor (civetweb):
  // keep the exception inside this module.
  try {
    auto exposer = std::make_unique<prometheus::Exposer>(
        options.listen, static_cast<size_t>(options.listener_threads));
    exposer->RegisterCollectable(metrics->registry_);
    const std::vector<int> ports = exposer->GetListeningPorts();
    if (ports.empty()) {
      return absl::UnavailableError(
          absl::StrCat("metrics listener on ", options.listen, " has no bound port"));
    }
    metrics->port_ = ports.front();
    metrics->wake_host_ = WakeHost(options.listen);
    metrics->exposer_ = std::move(exposer);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot listen for metrics on ", options.listen,
                                               " (port in use or address not local): ", e.what()));
  }
  return metrics;
}

PrometheusMetrics::PrometheusMetrics(PrivateKey, const MetricsOptions& options)
    : registry_(std::make_shared<prometheus::Registry>()) {
  prometheus::Registry& r = *registry_;

  requests_family_ = &prometheus::BuildCounter()
                          .Name("kvserve_requests_total")
                          .Help(
                              "Requests that reached the engine queue, by final status "
                              "(gRPC code name) and finish reason (\"none\" on error).")
                          .Register(r);
  for (int i = 0; i < kNumFinishReasons; ++i) {
    const auto reason = static_cast<FinishReason>(i);
    // Unspecified only appears if the serving core forgets a reason: created on demand.
    ok_requests_[i] =
        reason == FinishReason::kUnspecified
            ? nullptr
            : &requests_family_->Add(
                  {{"status", "ok"}, {"finish_reason", std::string(FinishReasonLabel(reason))}});
  }

  auto& rejections = prometheus::BuildCounter()
                         .Name("kvserve_rejections_total")
                         .Help("Requests refused before reaching the engine, by reason.")
                         .Register(r);
  for (int i = 0; i < kNumRejectReasons; ++i) {
    rejections_[i] =
        &rejections.Add({{"reason", std::string(RejectReasonLabel(static_cast<RejectReason>(i)))}});
  }

  prompt_tokens_ = &prometheus::BuildCounter()
                        .Name("kvserve_prompt_tokens_total")
                        .Help("Prompt tokens of finished requests.")
                        .Register(r)
                        .Add({});
  generated_tokens_ = &prometheus::BuildCounter()
                           .Name("kvserve_generated_tokens_total")
                           .Help("Tokens generated for finished requests.")
                           .Register(r)
                           .Add({});
  processed_tokens_family_ =
      &prometheus::BuildCounter()
           .Name("kvserve_processed_tokens_total")
           .Help(
               "Tokens run through the model by engine steps, by phase (prefill includes "
               "recomputation after preemption).")
           .Register(r);
  processed_prefill_tokens_ = &processed_tokens_family_->Add({{"phase", "prefill"}});
  processed_decode_tokens_ = &processed_tokens_family_->Add({{"phase", "decode"}});

  auto histogram = [&r](const char* name, const char* help,
                        const prometheus::Histogram::BucketBoundaries& buckets) {
    return &prometheus::BuildHistogram().Name(name).Help(help).Register(r).Add({}, buckets);
  };
  ttft_ =
      histogram("kvserve_time_to_first_token_seconds",
                "Time from enqueue to a request's first generated token.", RequestLatencyBuckets());
  itl_ = histogram("kvserve_inter_token_latency_seconds",
                   "Gap between consecutive generated tokens of a request.", TokenLatencyBuckets());
  e2e_ =
      histogram("kvserve_request_duration_seconds",
                "End-to-end time of a request, from enqueue to its end.", RequestLatencyBuckets());
  queue_time_ =
      histogram("kvserve_queue_time_seconds",
                "Time a request waited in the queue before admission.", RequestLatencyBuckets());
  prefill_time_ =
      histogram("kvserve_prefill_time_seconds", "Time from admission to a request's first token.",
                RequestLatencyBuckets());
  decode_time_ =
      histogram("kvserve_decode_time_seconds", "Time from a request's first token to its end.",
                RequestLatencyBuckets());
  step_duration_ =
      histogram("kvserve_step_duration_seconds",
                "Wall time of one engine step (one batched forward pass).", TokenLatencyBuckets());
  batch_size_ =
      histogram("kvserve_batch_size", "Sequences in one engine step.", BatchSizeBuckets());
  batch_tokens_ = histogram("kvserve_batch_tokens",
                            "Tokens processed by one engine step (prefill chunks + decodes).",
                            BatchTokenBuckets());

  auto gauge = [&r](const char* name, const char* help) {
    return &prometheus::BuildGauge().Name(name).Help(help).Register(r).Add({});
  };
  running_ = gauge("kvserve_requests_running", "Requests admitted to the engine (holding KV).");
  waiting_ = gauge("kvserve_requests_waiting", "Requests waiting in the queue for admission.");
  kv_blocks_used_ = gauge("kvserve_kv_blocks_used", "KV cache blocks in use.");
  kv_blocks_capacity_ = gauge("kvserve_kv_blocks_capacity", "KV cache blocks in the pool.");
  kv_usage_ratio_ = gauge("kvserve_kv_usage_ratio", "KV cache blocks in use / blocks in the pool.");
  kv_bytes_family_ = &prometheus::BuildGauge()
                          .Name("kvserve_kv_bytes")
                          .Help("KV cache bytes in use, by storage dtype.")
                          .Register(r);

  auto counter = [&r](const char* name, const char* help) {
    return &prometheus::BuildCounter().Name(name).Help(help).Register(r).Add({});
  };
  preemptions_ = counter("kvserve_preemptions_total",
                         "Running sequences preempted (KV freed, recomputed later).");
  prefix_query_tokens_ = counter("kvserve_prefix_cache_query_tokens_total",
                                 "Prompt tokens looked up in the prefix cache.");
  prefix_hit_tokens_ = counter("kvserve_prefix_cache_hit_tokens_total",
                               "Prompt tokens served from the prefix cache.");
  computed_token_layers_ = counter("kvserve_computed_token_layers_total",
                                   "Token x layer units run through the model.");
  pruned_token_layers_ = counter(
      "kvserve_pruned_token_layers_total",
      "Token x layer units LazyLLM skipped (prompt rows pruned before the later layers).");
  evicted_tokens_family_ = &prometheus::BuildCounter()
                                .Name("kvserve_kv_evicted_tokens_total")
                                .Help("Tokens whose KV entries a KV policy evicted, by policy.")
                                .Register(r);
  if (!options.kv_policy.empty()) evicted_tokens_family_->Add({{"policy", options.kv_policy}});

  build_info_ = &prometheus::BuildGauge()
                     .Name("kvserve_build_info")
                     .Help("Always 1; labels name the kvserve version, model and device.")
                     .Register(r)
                     .Add({{"version", OrUnknown(options.version)},
                           {"model", OrUnknown(options.model)},
                           {"device", OrUnknown(options.device)}});
  build_info_->Set(1);

  absl::MutexLock lock(&mutex_);
  kv_dtype_ = options.kv_dtype;
  kv_bytes_ = &kv_bytes_family_->Add({{"dtype", kv_dtype_}});
}

PrometheusMetrics::~PrometheusMetrics() {
  if (exposer_ == nullptr) return;
  // civetweb (1.15) looks at its stop flag only between 2-second poll() slices on the
  // listening socket (SOCKET_TIMEOUT_QUANTUM), so stopping took up to 2 s and every server
  // shutdown (drain, tests) waited for it. A connection ends the slice: poke the port until
  // the listener is gone.
  std::atomic<bool> stopped = false;
  std::thread waker([this, &stopped] {
    while (!stopped.load()) {
      Poke(wake_host_, port_);
      absl::SleepFor(absl::Milliseconds(5));
    }
  });
  exposer_.reset();
  stopped = true;
  waker.join();
}

std::string PrometheusMetrics::Scrape() const {
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

prometheus::Counter& PrometheusMetrics::RequestCounter(const absl::Status& status,
                                                       FinishReason reason) {
  const int r = static_cast<int>(reason);
  if (status.ok() && r >= 0 && r < kNumFinishReasons && ok_requests_[r] != nullptr) {
    return *ok_requests_[r];
  }
  // Rare paths (errors): Family::Add is thread-safe and returns the existing series.
  return requests_family_->Add(
      {{"status", StatusLabel(status)},
       {"finish_reason", status.ok() ? std::string(FinishReasonLabel(reason)) : "none"}});
}

void PrometheusMetrics::OnRejected(RejectReason reason) {
  const int i = static_cast<int>(reason);
  if (i >= 0 && i < kNumRejectReasons) rejections_[i]->Increment();
}

void PrometheusMetrics::OnFirstToken(absl::Duration ttft) { ttft_->Observe(Seconds(ttft)); }

void PrometheusMetrics::OnInterTokenLatency(absl::Duration itl) { itl_->Observe(Seconds(itl)); }

void PrometheusMetrics::OnRequestFinished(const RequestObservation& request) {
  RequestCounter(request.status, request.finish_reason).Increment();
  if (request.prompt_tokens > 0) prompt_tokens_->Increment(request.prompt_tokens);
  if (request.completion_tokens > 0) generated_tokens_->Increment(request.completion_tokens);
  e2e_->Observe(Seconds(request.e2e_time));
  const bool got_first_token =
      request.completion_tokens > 0 || request.prefill_time > absl::ZeroDuration();
  if (got_first_token || request.queue_time > absl::ZeroDuration()) {
    queue_time_->Observe(Seconds(request.queue_time));
  }
  if (got_first_token) {
    prefill_time_->Observe(Seconds(request.prefill_time));
    decode_time_->Observe(Seconds(request.decode_time));
  }
}

void PrometheusMetrics::OnStep(const StepObservation& step) {
  step_duration_->Observe(Seconds(step.duration));
  batch_size_->Observe(step.sequences);
  batch_tokens_->Observe(step.tokens);
  if (step.prefill_tokens > 0) processed_prefill_tokens_->Increment(step.prefill_tokens);
  if (step.decode_tokens > 0) processed_decode_tokens_->Increment(step.decode_tokens);
}

void PrometheusMetrics::OnPreemption() { preemptions_->Increment(); }

void PrometheusMetrics::OnGauges(const GaugeObservation& gauges) {
  running_->Set(static_cast<double>(gauges.running));
  waiting_->Set(static_cast<double>(gauges.waiting));
  kv_blocks_used_->Set(static_cast<double>(gauges.kv_blocks_used));
  kv_blocks_capacity_->Set(static_cast<double>(gauges.kv_blocks_total));
  kv_usage_ratio_->Set(gauges.kv_blocks_total > 0 ? static_cast<double>(gauges.kv_blocks_used) /
                                                        static_cast<double>(gauges.kv_blocks_total)
                                                  : 0.0);
  const double kv_bytes =
      static_cast<double>(gauges.kv_blocks_used) * static_cast<double>(gauges.kv_block_bytes);

  absl::MutexLock lock(&mutex_);
  if (gauges.kv_dtype != kv_dtype_ && !gauges.kv_dtype.empty()) {
    // The cache's storage type changed (or differs from the configured one): the old
    // series drops to 0 rather than keeping a stale value.
    kv_bytes_->Set(0);
    kv_dtype_ = std::string(gauges.kv_dtype);
    kv_bytes_ = &kv_bytes_family_->Add({{"dtype", kv_dtype_}});
  }
  kv_bytes_->Set(kv_bytes);

  auto feed = [](int64_t now, int64_t& last, prometheus::Counter* counter) {
    const int64_t delta = now >= last ? now - last : now;
    if (delta > 0) counter->Increment(static_cast<double>(delta));
    last = now;
  };
  feed(gauges.prefix_cache_query_tokens, last_prefix_query_tokens_, prefix_query_tokens_);
  feed(gauges.prefix_cache_hit_tokens, last_prefix_hit_tokens_, prefix_hit_tokens_);
  feed(gauges.computed_token_layers, last_computed_token_layers_, computed_token_layers_);
  feed(gauges.pruned_token_layers, last_pruned_token_layers_, pruned_token_layers_);
}

void PrometheusMetrics::OnTokensEvicted(std::string_view policy, int64_t n) {
  if (n <= 0) return;
  evicted_tokens_family_->Add({{"policy", std::string(policy)}}).Increment(static_cast<double>(n));
}

}  // namespace kvserve::server
