// PrometheusMetrics scraped by a REAL Prometheus server (Debian's /usr/bin/prometheus) run
// with the shipped deploy/prometheus/prometheus.yml (target rewritten to our port, interval
// 1s): the time-to-first-token histogram and the KV usage gauge come back through
// Prometheus' HTTP query API with the values recorded, and follow later updates.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/metrics/prometheus_metrics.h"
#include "tests/server/metrics/metrics_test_support.h"
#include "tests/server/metrics/prometheus_server.h"


namespace kvserve::server {
namespace {

using testing::kPrometheus;
using testing::PrometheusServer;
using testing::ReadFile;

GaugeObservation KvUsage(int64_t used, int64_t total) {
  GaugeObservation g;
  g.running = 1;
  g.kv_blocks_used = used;
  g.kv_blocks_total = total;
  g.kv_block_bytes = 4096;
  return g;
}

TEST(PrometheusScrapeTest, RealPrometheusReadsTtftHistogramAndKvUsage) {
  ASSERT_EQ(access(kPrometheus, X_OK), 0)
      << kPrometheus << " is missing: run scripts/install_deps.sh (Debian package prometheus)";

  MetricsOptions options;
  options.listen = "127.0.0.1:0";
  options.model = "stories260K";
  absl::StatusOr<std::unique_ptr<PrometheusMetrics>> created = PrometheusMetrics::Create(options);
  ASSERT_TRUE(created.ok()) << created.status();
  PrometheusMetrics& metrics = **created;
  metrics.OnFirstToken(absl::Milliseconds(7));
  metrics.OnFirstToken(absl::Milliseconds(12));
  metrics.OnFirstToken(absl::Milliseconds(1500));
  metrics.OnGauges(KvUsage(25, 100));

  // The shipped scrape config, pointed at us and scraping every second.
  std::string config =
      ReadFile(std::filesystem::path(KVSERVE_SOURCE_DIR) / "deploy/prometheus/prometheus.yml");
  const std::regex kShippedTarget(R"(targets:\s*\[\s*"kvserve:9090"\s*\])");
  ASSERT_TRUE(std::regex_search(config, kShippedTarget))
      << "deploy/prometheus/prometheus.yml lost its kvserve:9090 target";
  config = std::regex_replace(config, kShippedTarget,
                              absl::StrCat(R"(targets: ["127.0.0.1:)", metrics.port(), R"("])"));
  config =
      std::regex_replace(config, std::regex(R"(scrape_interval:\s*\w+)"), "scrape_interval: 1s");
  config = std::regex_replace(config, std::regex(R"(scrape_timeout:\s*\w+)"), "scrape_timeout: 1s");

  absl::StatusOr<int> port = testing::PickFreePort();
  ASSERT_TRUE(port.ok()) << port.status();
  PrometheusServer prometheus;
  ASSERT_TRUE(prometheus.Start(config, *port));

  auto equals = [](double want) { return [want](double v) { return v == want; }; };
  ASSERT_EQ(prometheus.WaitFor(R"(up{job="kvserve"})", equals(1)), 1) << prometheus.log();
  EXPECT_EQ(prometheus.WaitFor("kvserve_time_to_first_token_seconds_count", equals(3)), 3)
      << prometheus.log();
  EXPECT_EQ(prometheus.Query("kvserve_kv_usage_ratio"), 0.25);
  EXPECT_EQ(prometheus.Query("kvserve_kv_blocks_used"), 25);
  // The dashboards' percentile query works on our buckets: the median TTFT (12 ms) lies in
  // the (10 ms, 25 ms] bucket.
  const std::optional<double> median = prometheus.Query(
      "histogram_quantile(0.5, sum by (le) (kvserve_time_to_first_token_seconds_bucket))");
  ASSERT_TRUE(median.has_value());
  EXPECT_GT(*median, 0.01);
  EXPECT_LE(*median, 0.025);

  // Later observations arrive with the next scrapes.
  metrics.OnFirstToken(absl::Milliseconds(30));
  metrics.OnFirstToken(absl::Milliseconds(40));
  metrics.OnGauges(KvUsage(50, 100));
  EXPECT_EQ(prometheus.WaitFor("kvserve_time_to_first_token_seconds_count", equals(5)), 5)
      << prometheus.log();
  EXPECT_EQ(prometheus.WaitFor("kvserve_kv_usage_ratio", equals(0.5)), 0.5);
  EXPECT_FALSE(prometheus.exited()) << prometheus.log();
}

}  // namespace
}  // namespace kvserve::server
