// A real Prometheus server (Debian's /usr/bin/prometheus) on loopback for tests, and the
// shipped scrape config (deploy/prometheus/prometheus.yml) pointed at a given port.
// Test-only; thread-compatible.
#ifndef KVSERVE_TESTS_SERVER_METRICS_PROMETHEUS_SERVER_H_
#define KVSERVE_TESTS_SERVER_METRICS_PROMETHEUS_SERVER_H_

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/server/metrics/metrics_test_support.h"

extern char** environ;

namespace kvserve::server::testing {

inline std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// The shipped scrape config with its kvserve:9090 target replaced by 127.0.0.1:`port` and
// a 1 s interval; empty if the shipped file lost its target.
inline std::string ShippedScrapeConfigFor(int port) {
  std::string config =
      ReadFile(std::filesystem::path(KVSERVE_SOURCE_DIR) / "deploy/prometheus/prometheus.yml");
  const std::regex kShippedTarget(R"(targets:\s*\[\s*"kvserve:9090"\s*\])");
  if (!std::regex_search(config, kShippedTarget)) return "";
  config = std::regex_replace(config, kShippedTarget,
                              absl::StrCat(R"(targets: ["127.0.0.1:)", port, R"("])"));
  config =
      std::regex_replace(config, std::regex(R"(scrape_interval:\s*\w+)"), "scrape_interval: 1s");
  return std::regex_replace(config, std::regex(R"(scrape_timeout:\s*\w+)"), "scrape_timeout: 1s");
}

inline constexpr char kPrometheus[] = "/usr/bin/prometheus";


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
    absl::StatusOr<HttpResponse> targets =
        HttpGet(absl::StrCat("http://127.0.0.1:", port_, "/api/v1/targets"), 2000);
    return absl::StrCat("prometheus log:\n", ReadFile(dir_ / "prometheus.log"),
                        "\ntargets: ", targets.ok() ? targets->body : targets.status().ToString());
  }

  // The single value of an instant query, or nullopt (no result yet, not up, error).
  std::optional<double> Query(const std::string& promql) const {
    absl::StatusOr<HttpResponse> response =
        HttpGet(absl::StrCat("http://127.0.0.1:", port_,
                                      "/api/v1/query?query=", UrlEncode(promql)),
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

}  // namespace kvserve::server::testing

#endif  // KVSERVE_TESTS_SERVER_METRICS_PROMETHEUS_SERVER_H_
