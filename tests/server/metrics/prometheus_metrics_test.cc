// PrometheusMetrics with a known sequence of observer calls: exact counter values and
// histogram counts/sums read back from the text exposition, the /metrics listener, bind
// errors, and `promtool check metrics` on the output.
#include "server/metrics/prometheus_metrics.h"

#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/metrics/metrics_test_support.h"

namespace kvserve::server {
namespace {

using ::kvserve::server::testing::Exposition;
using ::kvserve::server::testing::Labels;
using ::kvserve::server::testing::ParseExposition;
using ::testing::DoubleNear;
using ::testing::HasSubstr;
using ::testing::Optional;

constexpr char kPromtool[] = "/usr/bin/promtool";

MetricsOptions RegistryOnly() {
  MetricsOptions options;
  options.listen = "";
  options.model = "stories260K";
  options.device = "cpu";
  options.version = "0.1.0";
  options.kv_dtype = "f32";
  return options;
}

std::unique_ptr<PrometheusMetrics> MakeMetrics(const MetricsOptions& options) {
  absl::StatusOr<std::unique_ptr<PrometheusMetrics>> metrics = PrometheusMetrics::Create(options);
  EXPECT_TRUE(metrics.ok()) << metrics.status();
  return metrics.ok() ? std::move(*metrics) : nullptr;
}

Exposition Parse(const PrometheusMetrics& metrics) {
  absl::StatusOr<Exposition> parsed = ParseExposition(metrics.Scrape());
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  return parsed.ok() ? *parsed : Exposition{};
}

RequestObservation Request(absl::Status status, FinishReason reason, int prompt, int completion,
                           absl::Duration queue, absl::Duration prefill, absl::Duration decode,
                           absl::Duration e2e) {
  RequestObservation r;
  r.status = std::move(status);
  r.finish_reason = reason;
  r.prompt_tokens = prompt;
  r.completion_tokens = completion;
  r.queue_time = queue;
  r.prefill_time = prefill;
  r.decode_time = decode;
  r.e2e_time = e2e;
  return r;
}

GaugeObservation Gauges(int64_t running, int64_t waiting, int64_t used, int64_t total,
                        std::string_view dtype, int64_t query, int64_t hit) {
  GaugeObservation g;
  g.running = running;
  g.waiting = waiting;
  g.kv_blocks_used = used;
  g.kv_blocks_total = total;
  g.kv_block_bytes = 4096;
  g.kv_dtype = dtype;
  g.prefix_cache_query_tokens = query;
  g.prefix_cache_hit_tokens = hit;
  return g;
}

// The workload every value test below checks against.
void FeedKnownWorkload(PrometheusMetrics& m) {
  m.OnRejected(RejectReason::kQueueFull);
  m.OnRejected(RejectReason::kQueueFull);
  m.OnRejected(RejectReason::kDraining);

  m.OnFirstToken(absl::Milliseconds(7));
  m.OnFirstToken(absl::Milliseconds(20));
  m.OnFirstToken(absl::Milliseconds(1500));
  for (int i = 0; i < 4; ++i) m.OnInterTokenLatency(absl::Milliseconds(5));

  m.OnRequestFinished(Request(absl::OkStatus(), FinishReason::kStop, 10, 5, absl::Milliseconds(1),
                              absl::Milliseconds(9), absl::Milliseconds(40),
                              absl::Milliseconds(50)));
  m.OnRequestFinished(Request(absl::OkStatus(), FinishReason::kLength, 20, 16,
                              absl::Milliseconds(2), absl::Milliseconds(18),
                              absl::Milliseconds(180), absl::Milliseconds(200)));
  m.OnRequestFinished(Request(absl::DeadlineExceededError("late"), FinishReason::kUnspecified, 7, 3,
                              absl::Milliseconds(3), absl::Milliseconds(27),
                              absl::Milliseconds(970), absl::Seconds(1)));
  // Cancelled while waiting: never admitted, so no queue/prefill/decode observation.
  m.OnRequestFinished(Request(absl::CancelledError("gone"), FinishReason::kUnspecified, 4, 0,
                              absl::ZeroDuration(), absl::ZeroDuration(), absl::ZeroDuration(),
                              absl::Seconds(2)));

  StepObservation step;
  step.duration = absl::Milliseconds(5);
  step.sequences = 1;
  step.tokens = 10;
  step.prefill_tokens = 10;
  step.decode_tokens = 0;
  m.OnStep(step);
  step.duration = absl::Milliseconds(3);
  step.sequences = 2;
  step.tokens = 2;
  step.prefill_tokens = 0;
  step.decode_tokens = 2;
  m.OnStep(step);
  step.duration = absl::Milliseconds(4);
  step.sequences = 3;
  step.tokens = 13;
  step.prefill_tokens = 11;
  step.decode_tokens = 2;
  m.OnStep(step);

  m.OnPreemption();
  m.OnPreemption();

  m.OnGauges(Gauges(2, 5, 25, 100, "f32", 100, 40));
  m.OnGauges(Gauges(1, 0, 30, 100, "f32", 150, 70));

  m.OnTokensEvicted("h2o", 12);
  m.OnTokensEvicted("h2o", 3);
  m.OnTokensEvicted("snapkv", 7);
  m.OnTokensEvicted("h2o", 0);
  m.OnTokensEvicted("h2o", -5);
}

TEST(PrometheusMetricsTest, CountersMatchTheWorkloadExactly) {
  auto metrics = MakeMetrics(RegistryOnly());
  ASSERT_NE(metrics, nullptr);
  FeedKnownWorkload(*metrics);
  const Exposition e = Parse(*metrics);

  EXPECT_EQ(e.Value("kvserve_rejections_total", {{"reason", "queue_full"}}), 2);
  EXPECT_EQ(e.Value("kvserve_rejections_total", {{"reason", "draining"}}), 1);
  EXPECT_EQ(e.Value("kvserve_rejections_total", {{"reason", "invalid"}}), 0);
  EXPECT_EQ(e.Value("kvserve_rejections_total", {{"reason", "unauthenticated"}}), 0);

  EXPECT_EQ(e.Value("kvserve_requests_total", {{"status", "ok"}, {"finish_reason", "stop"}}), 1);
  EXPECT_EQ(e.Value("kvserve_requests_total", {{"status", "ok"}, {"finish_reason", "length"}}), 1);
  EXPECT_EQ(e.Value("kvserve_requests_total", {{"status", "ok"}, {"finish_reason", "stop_string"}}),
            0);
  EXPECT_EQ(e.Value("kvserve_requests_total",
                    {{"status", "deadline_exceeded"}, {"finish_reason", "none"}}),
            1);
  EXPECT_EQ(e.Value("kvserve_requests_total", {{"status", "cancelled"}, {"finish_reason", "none"}}),
            1);

  EXPECT_EQ(e.Value("kvserve_prompt_tokens_total"), 41);
  EXPECT_EQ(e.Value("kvserve_generated_tokens_total"), 24);
  EXPECT_EQ(e.Value("kvserve_processed_tokens_total", {{"phase", "prefill"}}), 21);
  EXPECT_EQ(e.Value("kvserve_processed_tokens_total", {{"phase", "decode"}}), 4);
  EXPECT_EQ(e.Value("kvserve_preemptions_total"), 2);
  EXPECT_EQ(e.Value("kvserve_prefix_cache_query_tokens_total"), 150);
  EXPECT_EQ(e.Value("kvserve_prefix_cache_hit_tokens_total"), 70);
  EXPECT_EQ(e.Value("kvserve_kv_evicted_tokens_total", {{"policy", "h2o"}}), 15);
  EXPECT_EQ(e.Value("kvserve_kv_evicted_tokens_total", {{"policy", "snapkv"}}), 7);
  EXPECT_EQ(e.Value("kvserve_build_info",
                    {{"version", "0.1.0"}, {"model", "stories260K"}, {"device", "cpu"}}),
            1);
}

TEST(PrometheusMetricsTest, GaugesHoldTheLastObservation) {
  auto metrics = MakeMetrics(RegistryOnly());
  ASSERT_NE(metrics, nullptr);
  FeedKnownWorkload(*metrics);
  const Exposition e = Parse(*metrics);
  EXPECT_EQ(e.Value("kvserve_requests_running"), 1);
  EXPECT_EQ(e.Value("kvserve_requests_waiting"), 0);
  EXPECT_EQ(e.Value("kvserve_kv_blocks_used"), 30);
  EXPECT_EQ(e.Value("kvserve_kv_blocks_capacity"), 100);
  EXPECT_THAT(e.Value("kvserve_kv_usage_ratio"), Optional(DoubleNear(0.3, 1e-12)));
  EXPECT_EQ(e.Value("kvserve_kv_bytes", {{"dtype", "f32"}}), 30 * 4096);
}

struct HistogramCase {
  std::string test_name;
  std::string metric;
  double count;
  double sum;
  Labels bucket;        // One bucket to check ({"le", ...})...
  double bucket_value;  // ...and its cumulative count.
};

class HistogramTest : public ::testing::TestWithParam<HistogramCase> {};

TEST_P(HistogramTest, CountSumAndBucketMatchTheWorkload) {
  const HistogramCase& c = GetParam();
  auto metrics = MakeMetrics(RegistryOnly());
  ASSERT_NE(metrics, nullptr);
  FeedKnownWorkload(*metrics);
  const Exposition e = Parse(*metrics);
  EXPECT_EQ(e.types.at(c.metric), "histogram");
  EXPECT_EQ(e.Value(c.metric + "_count"), c.count);
  EXPECT_THAT(e.Value(c.metric + "_sum"), Optional(DoubleNear(c.sum, 1e-9)));
  EXPECT_EQ(e.Value(c.metric + "_bucket", c.bucket), c.bucket_value);
  EXPECT_EQ(e.Value(c.metric + "_bucket", {{"le", "+Inf"}}), c.count);
}

INSTANTIATE_TEST_SUITE_P(
    Workload, HistogramTest,
    ::testing::Values(
        HistogramCase{"TimeToFirstToken",
                      "kvserve_time_to_first_token_seconds",
                      3,
                      1.527,
                      {{"le", "0.025"}},
                      2},
        HistogramCase{"InterTokenLatency",
                      "kvserve_inter_token_latency_seconds",
                      4,
                      0.02,
                      {{"le", "0.0025"}},
                      0},
        // Every finished request, admitted or not.
        HistogramCase{
            "RequestDuration", "kvserve_request_duration_seconds", 4, 3.25, {{"le", "1"}}, 3},
        // Only the three admitted requests.
        HistogramCase{"QueueTime", "kvserve_queue_time_seconds", 3, 0.006, {{"le", "0.0025"}}, 2},
        HistogramCase{"PrefillTime", "kvserve_prefill_time_seconds", 3, 0.054, {{"le", "0.01"}}, 1},
        HistogramCase{"DecodeTime", "kvserve_decode_time_seconds", 3, 1.19, {{"le", "0.25"}}, 2},
        HistogramCase{
            "StepDuration", "kvserve_step_duration_seconds", 3, 0.012, {{"le", "0.0025"}}, 0},
        HistogramCase{"BatchSize", "kvserve_batch_size", 3, 6, {{"le", "2"}}, 2},
        HistogramCase{"BatchTokens", "kvserve_batch_tokens", 3, 25, {{"le", "8"}}, 1}),
    [](const ::testing::TestParamInfo<HistogramCase>& info) { return info.param.test_name; });

TEST(PrometheusMetricsTest, PrefixCacheCountersFollowTheCumulativeGaugeAcrossARestart) {
  auto metrics = MakeMetrics(RegistryOnly());
  ASSERT_NE(metrics, nullptr);
  metrics->OnGauges(Gauges(0, 0, 0, 10, "f32", 100, 40));
  metrics->OnGauges(Gauges(0, 0, 0, 10, "f32", 100, 40));  // No change: no increase.
  metrics->OnGauges(Gauges(0, 0, 0, 10, "f32", 20, 5));    // Source restarted from 0.
  const Exposition e = Parse(*metrics);
  EXPECT_EQ(e.Value("kvserve_prefix_cache_query_tokens_total"), 120);
  EXPECT_EQ(e.Value("kvserve_prefix_cache_hit_tokens_total"), 45);
}

TEST(PrometheusMetricsTest, TokenLayerCountersFollowTheCumulativeGauges) {
  auto metrics = MakeMetrics(RegistryOnly());
  ASSERT_NE(metrics, nullptr);
  GaugeObservation g = Gauges(0, 0, 0, 10, "f32", 0, 0);
  g.computed_token_layers = 500;
  g.pruned_token_layers = 120;
  metrics->OnGauges(g);
  g.computed_token_layers = 650;
  metrics->OnGauges(g);
  const Exposition e = Parse(*metrics);
  EXPECT_EQ(e.Value("kvserve_computed_token_layers_total"), 650);
  EXPECT_EQ(e.Value("kvserve_pruned_token_layers_total"), 120);
}

TEST(PrometheusMetricsTest, KvBytesMoveToTheLiveDtype) {
  auto metrics = MakeMetrics(RegistryOnly());
  ASSERT_NE(metrics, nullptr);
  Exposition e = Parse(*metrics);
  EXPECT_EQ(e.Value("kvserve_kv_bytes", {{"dtype", "f32"}}), 0);  // Present from the start.
  metrics->OnGauges(Gauges(1, 0, 4, 10, "f32", 0, 0));
  metrics->OnGauges(Gauges(1, 0, 3, 10, "q8_0", 0, 0));
  e = Parse(*metrics);
  EXPECT_EQ(e.Value("kvserve_kv_bytes", {{"dtype", "f32"}}), 0);
  EXPECT_EQ(e.Value("kvserve_kv_bytes", {{"dtype", "q8_0"}}), 3 * 4096);
}

TEST(PrometheusMetricsTest, UsageRatioIsZeroWithoutAPool) {
  auto metrics = MakeMetrics(RegistryOnly());
  ASSERT_NE(metrics, nullptr);
  metrics->OnGauges(Gauges(0, 0, 0, 0, "f32", 0, 0));
  EXPECT_EQ(Parse(*metrics).Value("kvserve_kv_usage_ratio"), 0);
}

TEST(PrometheusMetricsTest, EmptyBuildInfoLabelsSayUnknown) {
  MetricsOptions options = RegistryOnly();
  options.model = "";
  options.version = "";
  auto metrics = MakeMetrics(options);
  ASSERT_NE(metrics, nullptr);
  EXPECT_EQ(
      Parse(*metrics).Value("kvserve_build_info",
                            {{"version", "unknown"}, {"model", "unknown"}, {"device", "cpu"}}),
      1);
}

TEST(PrometheusMetricsTest, ConcurrentHooksAndScrapesLoseNothing) {
  auto metrics = MakeMetrics(RegistryOnly());
  ASSERT_NE(metrics, nullptr);
  constexpr int kThreads = 4;
  constexpr int kPerThread = 2000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&metrics, t] {
      for (int i = 0; i < kPerThread; ++i) {
        metrics->OnFirstToken(absl::Milliseconds(1));
        metrics->OnRejected(RejectReason::kQueueFull);
        metrics->OnTokensEvicted(t % 2 == 0 ? "h2o" : "tova", 1);
        metrics->OnGauges(Gauges(t, i, i, 100, "f32", 0, 0));
      }
    });
  }
  for (int i = 0; i < 20; ++i) EXPECT_FALSE(metrics->Scrape().empty());
  for (std::thread& t : threads) t.join();
  const Exposition e = Parse(*metrics);
  EXPECT_EQ(e.Value("kvserve_time_to_first_token_seconds_count"), kThreads * kPerThread);
  EXPECT_EQ(e.Value("kvserve_rejections_total", {{"reason", "queue_full"}}), kThreads * kPerThread);
  EXPECT_EQ(e.Value("kvserve_kv_evicted_tokens_total", {{"policy", "h2o"}}),
            kThreads / 2 * kPerThread);
  EXPECT_EQ(e.Value("kvserve_kv_evicted_tokens_total", {{"policy", "tova"}}),
            kThreads / 2 * kPerThread);
}

TEST(PrometheusMetricsTest, EveryFamilyFollowsTheNamingConventions) {
  auto metrics = MakeMetrics(RegistryOnly());
  ASSERT_NE(metrics, nullptr);
  const Exposition e = Parse(*metrics);
  EXPECT_GE(e.types.size(), 25u);
  for (const auto& [name, type] : e.types) {
    SCOPED_TRACE(name);
    EXPECT_THAT(name, ::testing::StartsWith("kvserve_"));
    EXPECT_FALSE(e.helps.at(name).empty());
    const bool total = absl::EndsWith(name, "_total");
    EXPECT_EQ(total, type == "counter");
  }
}

TEST(PrometheusMetricsTest, PromtoolFindsNothingToLint) {
  auto metrics = MakeMetrics(RegistryOnly());
  ASSERT_NE(metrics, nullptr);
  FeedKnownWorkload(*metrics);  // Every labelled series present, error statuses included.
  absl::StatusOr<testing::CommandResult> result =
      testing::RunCommand({kPromtool, "check", "metrics"}, metrics->Scrape());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 0) << result->output;
  EXPECT_EQ(result->output, "");
}

// --- The HTTP listener ------------------------------------------------------------------

TEST(PrometheusMetricsListenerTest, ServesMetricsOnAPickedPort) {
  MetricsOptions options = RegistryOnly();
  options.listen = "127.0.0.1:0";
  auto metrics = MakeMetrics(options);
  ASSERT_NE(metrics, nullptr);
  ASSERT_GT(metrics->port(), 0);
  metrics->OnFirstToken(absl::Milliseconds(30));
  absl::StatusOr<testing::HttpResponse> response =
      testing::HttpGet("http://127.0.0.1:" + std::to_string(metrics->port()) + "/metrics");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 200);
  absl::StatusOr<Exposition> e = ParseExposition(response->body);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->Value("kvserve_time_to_first_token_seconds_count"), 1);
  EXPECT_EQ(e->Value("kvserve_build_info",
                     {{"version", "0.1.0"}, {"model", "stories260K"}, {"device", "cpu"}}),
            1);
  // What is served includes the exposer's own series: promtool must accept those too.
  absl::StatusOr<testing::CommandResult> lint =
      testing::RunCommand({kPromtool, "check", "metrics"}, response->body);
  ASSERT_TRUE(lint.ok()) << lint.status();
  EXPECT_EQ(lint->exit_code, 0) << lint->output;
  EXPECT_EQ(lint->output, "");
}

TEST(PrometheusMetricsListenerTest, NoListenerWhenListenIsEmpty) {
  auto metrics = MakeMetrics(RegistryOnly());
  ASSERT_NE(metrics, nullptr);
  EXPECT_EQ(metrics->port(), 0);
}

TEST(PrometheusMetricsListenerTest, PortInUseIsAClearError) {
  MetricsOptions options = RegistryOnly();
  options.listen = "127.0.0.1:0";
  auto first = MakeMetrics(options);
  ASSERT_NE(first, nullptr);
  options.listen = "127.0.0.1:" + std::to_string(first->port());
  absl::StatusOr<std::unique_ptr<PrometheusMetrics>> second = PrometheusMetrics::Create(options);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(second.status().message()), HasSubstr(options.listen));
}

struct BadListenCase {
  std::string test_name;
  std::string listen;
};

class BadListenTest : public ::testing::TestWithParam<BadListenCase> {};

TEST_P(BadListenTest, IsInvalidArgument) {
  MetricsOptions options = RegistryOnly();
  options.listen = GetParam().listen;
  absl::StatusOr<std::unique_ptr<PrometheusMetrics>> metrics = PrometheusMetrics::Create(options);
  ASSERT_FALSE(metrics.ok());
  EXPECT_EQ(metrics.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(metrics.status().message()), HasSubstr(options.listen));
}

INSTANTIATE_TEST_SUITE_P(Addresses, BadListenTest,
                         ::testing::Values(BadListenCase{"PortOnly", "9090"},
                                           BadListenCase{"NoHost", ":9090"},
                                           BadListenCase{"PortTooLarge", "127.0.0.1:65536"},
                                           BadListenCase{"NegativePort", "127.0.0.1:-1"},
                                           BadListenCase{"PortNotANumber", "127.0.0.1:http"},
                                           BadListenCase{"NoPort", "127.0.0.1:"}),
                         [](const ::testing::TestParamInfo<BadListenCase>& info) {
                           return info.param.test_name;
                         });

}  // namespace
}  // namespace kvserve::server
