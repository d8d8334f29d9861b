// PrometheusMetrics: the ServingObserver that turns what the serving core reports into
// Prometheus series (prefix `kvserve_`, base units, `_total` counters) and serves them on
// an HTTP listener at /metrics. This folder is the only place prometheus-cpp is included;
// this header only forward-declares its types.
//
// Thread-safety: thread-safe. Every hook may be called from any thread at once (the
// engine thread, gRPC threads, the KV-policy code); the hooks never block on I/O, they
// update prometheus-cpp's atomic metrics and take a short internal lock only for the
// cumulative prefix-cache counters and the KV dtype label. Scrape() may run concurrently.
#ifndef KVSERVE_SERVER_METRICS_PROMETHEUS_METRICS_H_
#define KVSERVE_SERVER_METRICS_PROMETHEUS_METRICS_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/serving/serving_observer.h"

namespace prometheus {
class Counter;
class Exposer;
class Gauge;
class Histogram;
class Registry;
template <typename T>
class Family;
}  // namespace prometheus

namespace kvserve::server {

struct MetricsOptions {
  // HOST:PORT of the HTTP listener serving /metrics; port 0 picks a free port. An empty
  // string means no listener (the registry still works: Scrape()). IPv4 or a host name
  // only: Debian's civetweb does not bind "[::1]:port".
  std::string listen = "127.0.0.1:9090";
  // Labels of kvserve_build_info.
  std::string model;           // Model name (e.g. the GGUF file's stem).
  std::string device = "cpu";  // Compute device.
  std::string version;         // kvserve version.
  // Storage dtype of the KV cache; kvserve_kv_bytes{dtype} starts at 0 under it (later
  // OnGauges calls carry the live dtype).
  std::string kv_dtype = "f32";
  // The configured KV eviction policy: kvserve_kv_evicted_tokens_total{policy} starts at 0
  // under it, so rate() works from the first scrape ("" = create series only on eviction).
  std::string kv_policy = "full";
  // civetweb worker threads for the listener; one is plenty for scrapes.
  int listener_threads = 1;
};

class PrometheusMetrics : public ServingObserver {
 public:
  // Registers every series and, unless `options.listen` is empty, starts the listener.
  // INVALID_ARGUMENT for a malformed listen address; UNAVAILABLE when it cannot bind
  // (port in use, address not local), with the address in the message.
  static absl::StatusOr<std::unique_ptr<PrometheusMetrics>> Create(const MetricsOptions& options);

  ~PrometheusMetrics() override;  // Stops the listener first.
  PrometheusMetrics(const PrometheusMetrics&) = delete;
  PrometheusMetrics& operator=(const PrometheusMetrics&) = delete;

  // The bound port of the listener (the real one when asked for port 0); 0 when there is
  // no listener.
  int port() const { return port_; }

  // The registry in Prometheus' text exposition format (what /metrics serves, without
  // the listener's own exposer_* series).
  std::string Scrape() const;

  // --- ServingObserver ----------------------------------------------------------------
  void OnRejected(RejectReason reason) override;
  void OnFirstToken(absl::Duration ttft) override;
  void OnInterTokenLatency(absl::Duration itl) override;
  // Counts the request by status and finish reason and adds its tokens. Queue time is
  // observed when the request was admitted (any of queue/prefill time or tokens is
  // non-zero); prefill and decode times when it produced a first token.
  void OnRequestFinished(const RequestObservation& request) override;
  void OnStep(const StepObservation& step) override;
  void OnPreemption() override;
  // Sets the gauges; the cumulative prefix-cache figures feed counters by their increase
  // since the previous call (a decrease means the source restarted: its value is added).
  void OnGauges(const GaugeObservation& gauges) override;

  // --- Fed by the KV-policy work --------------------------------------------------------
  // `n` tokens' KV entries were evicted by `policy` (e.g. "h2o", "snapkv"). n <= 0 is
  // ignored.
  void OnTokensEvicted(std::string_view policy, int64_t n) override;

 private:
  struct PrivateKey {};

 public:
  explicit PrometheusMetrics(PrivateKey, const MetricsOptions& options);

 private:
  static constexpr int kNumFinishReasons = 5;
  static constexpr int kNumRejectReasons = 4;

  prometheus::Counter& RequestCounter(const absl::Status& status, FinishReason reason);

  // Constant after construction. The registry owns the families and metrics; the
  // references below stay valid for its lifetime.
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* requests_family_;
  std::array<prometheus::Counter*, kNumFinishReasons> ok_requests_;  // By FinishReason.
  std::array<prometheus::Counter*, kNumRejectReasons> rejections_;   // By RejectReason.
  prometheus::Counter* prompt_tokens_;
  prometheus::Counter* generated_tokens_;
  prometheus::Family<prometheus::Counter>* processed_tokens_family_;
  prometheus::Counter* processed_prefill_tokens_;
  prometheus::Counter* processed_decode_tokens_;
  prometheus::Histogram* ttft_;
  prometheus::Histogram* itl_;
  prometheus::Histogram* e2e_;
  prometheus::Histogram* queue_time_;
  prometheus::Histogram* prefill_time_;
  prometheus::Histogram* decode_time_;
  prometheus::Histogram* step_duration_;
  prometheus::Histogram* batch_size_;
  prometheus::Histogram* batch_tokens_;
  prometheus::Gauge* running_;
  prometheus::Gauge* waiting_;
  prometheus::Gauge* kv_blocks_used_;
  prometheus::Gauge* kv_blocks_capacity_;
  prometheus::Gauge* kv_usage_ratio_;
  prometheus::Family<prometheus::Gauge>* kv_bytes_family_;
  prometheus::Counter* preemptions_;
  prometheus::Counter* prefix_query_tokens_;
  prometheus::Counter* prefix_hit_tokens_;
  prometheus::Counter* computed_token_layers_;
  prometheus::Counter* pruned_token_layers_;
  prometheus::Family<prometheus::Counter>* evicted_tokens_family_;
  prometheus::Gauge* build_info_;

  // Cumulative-gauge bookkeeping and the live KV dtype series.
  absl::Mutex mutex_;
  int64_t last_prefix_query_tokens_ ABSL_GUARDED_BY(mutex_) = 0;
  int64_t last_prefix_hit_tokens_ ABSL_GUARDED_BY(mutex_) = 0;
  int64_t last_computed_token_layers_ ABSL_GUARDED_BY(mutex_) = 0;
  int64_t last_pruned_token_layers_ ABSL_GUARDED_BY(mutex_) = 0;
  std::string kv_dtype_ ABSL_GUARDED_BY(mutex_);
  prometheus::Gauge* kv_bytes_ ABSL_GUARDED_BY(mutex_);

  // Set once by Create; declared last so the listener stops before the metrics go.
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;
  std::string wake_host_;  // Where the destructor connects to stop the listener promptly.
};

}  // namespace kvserve::server

#endif  // KVSERVE_SERVER_METRICS_PROMETHEUS_METRICS_H_
