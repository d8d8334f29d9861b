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

extern char** environ;

namespace kvserve::server {
namespace {

constexpr char kPrometheus[] = "/usr/bin/prometheus";

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// A Prometheus server process on loopback; SIGTERM (then SIGKILL) and reaped on
// destruction, its temp dir removed.
class PrometheusServer {
 public:
  ~PrometheusServer() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int status = 0;
      const absl::Time deadline = absl::Now() + absl::Seconds(10);
      while (waitpid(pid_, &status, WNOHANG) == 0) {
        if (absl::Now() > deadline) {
          kill(pid_, SIGKILL);
          waitpid(pid_, &status, 0);
          break;
        }
        absl::SleepFor(absl::Milliseconds(50));
      }
    }
    if (!dir_.empty()) {
      std::error_code ignored;
      std::filesystem::remove_all(dir_, ignored);
    }
  }

  // Writes `config` and starts Prometheus on 127.0.0.1:`port`.
  ::testing::AssertionResult Start(const std::string& config, int port) {
    char dir_template[] = "/tmp/kvserve_prometheus_XXXXXX";
    if (mkdtemp(dir_template) == nullptr) return ::testing::AssertionFailure() << "mkdtemp";
    dir_ = dir_template;
    std::ofstream(dir_ / "prometheus.yml") << config;
    port_ = port;
    const std::vector<std::string> argv = {
        kPrometheus,
        "--config.file=" + (dir_ / "prometheus.yml").string(),
        "--storage.tsdb.path=" + (dir_ / "data").string(),
        absl::StrCat("--web.listen-address=127.0.0.1:", port),
        "--log.level=warn",
    };
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    const std::string log = (dir_ / "prometheus.log").string();
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    const int rc = posix_spawn(&pid_, kPrometheus, &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
      pid_ = 0;
      return ::testing::AssertionFailure() << "cannot start " << kPrometheus << ": " << rc;
    }
    return ::testing::AssertionSuccess();
  }

  bool exited() {
    int status = 0;
    if (pid_ > 0 && waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = 0;
      return true;
    }
    return pid_ == 0;
  }

  // Prometheus' log and its view of the scrape targets (lastError says why a scrape failed).
  std::string log() const {
    absl::StatusOr<testing::HttpResponse> targets =
        testing::HttpGet(absl::StrCat("http://127.0.0.1:", port_, "/api/v1/targets"), 2000);
    return absl::StrCat("prometheus log:\n", ReadFile(dir_ / "prometheus.log"),
                        "\ntargets: ", targets.ok() ? targets->body : targets.status().ToString());
  }

  // The single value of an instant query, or nullopt (no result yet, not up, error).
  std::optional<double> Query(const std::string& promql) const {
    absl::StatusOr<testing::HttpResponse> response =
        testing::HttpGet(absl::StrCat("http://127.0.0.1:", port_,
                                      "/api/v1/query?query=", testing::UrlEncode(promql)),
                         2000);
    if (!response.ok() || response->status != 200) return std::nullopt;
    const nlohmann::json json = nlohmann::json::parse(response->body, nullptr,
                                                      /*allow_exceptions=*/false);
    if (json.is_discarded() || json.value("status", "") != "success") return std::nullopt;
    const nlohmann::json& result = json["data"]["result"];
    if (!result.is_array() || result.size() != 1) return std::nullopt;
    const nlohmann::json& value = result[0]["value"];
    if (!value.is_array() || value.size() != 2 || !value[1].is_string()) return std::nullopt;
    return std::strtod(value[1].get<std::string>().c_str(), nullptr);
  }

  // Polls `promql` until `accept` holds for its value or `timeout` passes; returns the last
  // value seen.
  template <typename Pred>
  std::optional<double> WaitFor(const std::string& promql, Pred accept,
                                absl::Duration timeout = absl::Seconds(30)) {
    const absl::Time deadline = absl::Now() + timeout;
    std::optional<double> value;
    while (absl::Now() < deadline && !exited()) {
      value = Query(promql);
      if (value.has_value() && accept(*value)) return value;
      absl::SleepFor(absl::Milliseconds(200));
    }
    return value;
  }

 private:
  std::filesystem::path dir_;
  pid_t pid_ = 0;
  int port_ = 0;
};

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
