// deploy/: every YAML passes yamllint (deploy/.yamllint), every JSON parses, every metric
// the Grafana dashboards and the HPA / Prometheus-adapter rule query is one that
// PrometheusMetrics exports, and the manifests' shutdown timing lets a drain finish.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/metrics/prometheus_metrics.h"
#include "tests/server/metrics/metrics_test_support.h"

namespace kvserve::server {
namespace {

namespace fs = std::filesystem;

constexpr char kYamllint[] = "/usr/bin/yamllint";
constexpr char kPromtool[] = "/usr/bin/promtool";

fs::path DeployDir() { return fs::path(KVSERVE_SOURCE_DIR) / "deploy"; }

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// deploy/-relative paths of the files whose name ends in one of `extensions`, sorted.
std::vector<std::string> DeployFiles(const std::vector<std::string>& extensions) {
  std::vector<std::string> files;
  std::error_code error;
  for (const fs::directory_entry& entry : fs::recursive_directory_iterator(DeployDir(), error)) {
    if (!entry.is_regular_file()) continue;
    const std::string name = entry.path().filename().string();
    for (const std::string& ext : extensions) {
      if (name.size() > ext.size() &&
          name.compare(name.size() - ext.size(), ext.size(), ext) == 0) {
        files.push_back(fs::relative(entry.path(), DeployDir()).string());
      }
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::vector<std::string> YamlFiles() { return DeployFiles({".yaml", ".yml"}); }
std::vector<std::string> JsonFiles() { return DeployFiles({".json"}); }

std::string TestName(const ::testing::TestParamInfo<std::string>& info) {
  std::string name = info.param;
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name;
}

// Every kvserve_* identifier in `text`.
std::set<std::string> MetricNames(const std::string& text) {
  static const std::regex kName(R"(\bkvserve_[a-z0-9_]*[a-z0-9])");
  std::set<std::string> names;
  for (std::sregex_iterator it(text.begin(), text.end(), kName), end; it != end; ++it) {
    names.insert(it->str());
  }
  return names;
}

// Family name -> type, from a fresh PrometheusMetrics.
std::map<std::string, std::string> ExportedFamilies() {
  MetricsOptions options;
  options.listen = "";
  absl::StatusOr<std::unique_ptr<PrometheusMetrics>> metrics = PrometheusMetrics::Create(options);
  EXPECT_TRUE(metrics.ok()) << metrics.status();
  if (!metrics.ok()) return {};
  absl::StatusOr<testing::Exposition> exposition = testing::ParseExposition((*metrics)->Scrape());
  EXPECT_TRUE(exposition.ok()) << exposition.status();
  return exposition.ok() ? exposition->types : std::map<std::string, std::string>{};
}

// True when PromQL may use `name`: a family, or a histogram's _bucket/_sum/_count series.
bool IsExported(const std::string& name, const std::map<std::string, std::string>& families) {
  if (families.count(name) > 0) return true;
  for (const char* suffix : {"_bucket", "_sum", "_count"}) {
    const std::string s(suffix);
    if (name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0) {
      auto it = families.find(name.substr(0, name.size() - s.size()));
      if (it != families.end() && it->second == "histogram") return true;
    }
  }
  return false;
}

// The PromQL of a Grafana dashboard: panel targets' "expr" and templating queries.
void CollectQueries(const nlohmann::json& json, std::vector<std::string>* queries) {
  if (json.is_object()) {
    for (const auto& [key, value] : json.items()) {
      if ((key == "expr" || key == "query" || key == "definition") && value.is_string()) {
        queries->push_back(value.get<std::string>());
      } else {
        CollectQueries(value, queries);
      }
    }
  } else if (json.is_array()) {
    for (const nlohmann::json& item : json) CollectQueries(item, queries);
  }
}

TEST(DeployFilesTest, TheShippedFilesAreThere) {
  const std::vector<std::string> yaml = YamlFiles();
  for (const char* expected :
       {"compose.yaml", "prometheus/prometheus.yml",
        "grafana/provisioning/datasources/prometheus.yaml",
        "grafana/provisioning/dashboards/kvserve.yaml", "k8s/deployment.yaml", "k8s/service.yaml",
        "k8s/hpa.yaml", "k8s/prometheus-adapter-rules.yaml", "k8s/pdb.yaml",
        "k8s/configmap.yaml"}) {
    EXPECT_THAT(yaml, ::testing::Contains(expected));
  }
  EXPECT_THAT(JsonFiles(), ::testing::Contains("grafana/dashboards/kvserve.json"));
}

class YamlFileTest : public ::testing::TestWithParam<std::string> {};

TEST_P(YamlFileTest, PassesYamllint) {
  absl::StatusOr<testing::CommandResult> result = testing::RunCommand(
      {kYamllint, "--strict", "--format", "parsable", "-c", (DeployDir() / ".yamllint").string(),
       (DeployDir() / GetParam()).string()});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 0) << result->output;
  EXPECT_EQ(result->output, "");
}

INSTANTIATE_TEST_SUITE_P(Deploy, YamlFileTest, ::testing::ValuesIn(YamlFiles()), TestName);

TEST(PrometheusConfigTest, PassesPromtoolCheckConfig) {
  absl::StatusOr<testing::CommandResult> result = testing::RunCommand(
      {kPromtool, "check", "config", (DeployDir() / "prometheus/prometheus.yml").string()});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 0) << result->output;
}

class JsonFileTest : public ::testing::TestWithParam<std::string> {};

TEST_P(JsonFileTest, Parses) {
  const nlohmann::json json = nlohmann::json::parse(ReadFile(DeployDir() / GetParam()), nullptr,
                                                    /*allow_exceptions=*/false);
  EXPECT_FALSE(json.is_discarded()) << GetParam() << " is not valid JSON";
}

INSTANTIATE_TEST_SUITE_P(Deploy, JsonFileTest, ::testing::ValuesIn(JsonFiles()), TestName);

class DashboardTest : public ::testing::TestWithParam<std::string> {};

TEST_P(DashboardTest, QueriesOnlyExportedMetrics) {
  const nlohmann::json dashboard = nlohmann::json::parse(ReadFile(DeployDir() / GetParam()),
                                                         nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(dashboard.is_discarded());
  std::vector<std::string> queries;
  CollectQueries(dashboard, &queries);
  ASSERT_FALSE(queries.empty());
  const std::map<std::string, std::string> families = ExportedFamilies();
  ASSERT_FALSE(families.empty());
  std::set<std::string> used;
  for (const std::string& query : queries) {
    for (const std::string& name : MetricNames(query)) {
      EXPECT_TRUE(IsExported(name, families)) << name << " in: " << query;
      used.insert(name);
    }
  }
  // The issue's panels: traffic, TTFT/ITL/e2e percentiles, queue, rejections, KV usage,
  // evictions by policy, batch size, LazyLLM's skipped prefill work.
  for (const char* needed :
       {"kvserve_requests_total", "kvserve_generated_tokens_total",
        "kvserve_time_to_first_token_seconds_bucket", "kvserve_inter_token_latency_seconds_bucket",
        "kvserve_request_duration_seconds_bucket", "kvserve_requests_waiting",
        "kvserve_rejections_total", "kvserve_kv_usage_ratio", "kvserve_kv_evicted_tokens_total",
        "kvserve_batch_size_bucket", "kvserve_preemptions_total",
        "kvserve_prefix_cache_hit_tokens_total", "kvserve_pruned_token_layers_total"}) {
    EXPECT_THAT(used, ::testing::Contains(needed));
  }
}

TEST_P(DashboardTest, UsesTheProvisionedDatasource) {
  const std::string provisioned =
      ReadFile(DeployDir() / "grafana/provisioning/datasources/prometheus.yaml");
  std::smatch uid;
  ASSERT_TRUE(std::regex_search(provisioned, uid, std::regex(R"(\buid:\s*(\S+))")));
  const nlohmann::json dashboard = nlohmann::json::parse(ReadFile(DeployDir() / GetParam()),
                                                         nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(dashboard.is_discarded());
  int panels = 0;
  for (const nlohmann::json& panel : dashboard.at("panels")) {
    if (panel.value("type", "") == "row") continue;
    ++panels;
    EXPECT_EQ(panel.at("datasource").value("uid", ""), uid[1].str()) << panel.value("title", "");
  }
  EXPECT_GT(panels, 0);
}

INSTANTIATE_TEST_SUITE_P(Deploy, DashboardTest, ::testing::ValuesIn(DeployFiles({".json"})),
                         TestName);

class PromqlYamlTest : public ::testing::TestWithParam<std::string> {};

// The HPA's metric, the adapter's rules and the scrape config name real metrics.
TEST_P(PromqlYamlTest, NamesOnlyExportedMetrics) {
  const std::string text = ReadFile(DeployDir() / GetParam());
  const std::set<std::string> names = MetricNames(text);
  const std::map<std::string, std::string> families = ExportedFamilies();
  for (const std::string& name : names) {
    EXPECT_TRUE(IsExported(name, families)) << name << " in " << GetParam();
  }
}

INSTANTIATE_TEST_SUITE_P(Deploy, PromqlYamlTest,
                         ::testing::Values("k8s/hpa.yaml", "k8s/prometheus-adapter-rules.yaml",
                                           "prometheus/prometheus.yml"),
                         TestName);

TEST(HpaTest, ScalesOnTheQueueThroughAnAdapterRule) {
  const std::set<std::string> hpa = MetricNames(ReadFile(DeployDir() / "k8s/hpa.yaml"));
  EXPECT_THAT(hpa, ::testing::Contains("kvserve_requests_waiting"));
  const std::string rules = ReadFile(DeployDir() / "k8s/prometheus-adapter-rules.yaml");
  for (const std::string& name : hpa) {
    // The adapter serves the metric under this name ("as:").
    EXPECT_NE(rules.find("as: \"" + name + "\""), std::string::npos) << name;
  }
}

int FirstInt(const std::string& text, const std::string& pattern) {
  std::smatch match;
  if (!std::regex_search(text, match, std::regex(pattern))) return -1;
  return std::stoi(match[1].str());
}

// kvserve drains for --drain-timeout seconds, then needs ~2 s for final writes (see
// server/grpc/kvserve_server.cc kFinalWriteGrace); the orchestrator must wait longer.
constexpr int kFinalWriteGraceSeconds = 2;

TEST(ShutdownTimingTest, KubernetesGracePeriodCoversTheDrain) {
  const int drain = FirstInt(ReadFile(DeployDir() / "k8s/configmap.yaml"),
                             R"re(KVSERVE_DRAIN_TIMEOUT:\s*"(\d+)")re");
  const int grace = FirstInt(ReadFile(DeployDir() / "k8s/deployment.yaml"),
                             R"(terminationGracePeriodSeconds:\s*(\d+))");
  ASSERT_GT(drain, 0);
  EXPECT_GT(grace, drain + kFinalWriteGraceSeconds);
}

TEST(ShutdownTimingTest, ComposeStopGracePeriodCoversTheDrain) {
  const std::string compose = ReadFile(DeployDir() / "compose.yaml");
  const int drain = FirstInt(compose, R"(--drain-timeout=(\d+))");
  const int grace = FirstInt(compose, R"(stop_grace_period:\s*(\d+)s)");
  ASSERT_GT(drain, 0);
  EXPECT_GT(grace, drain + kFinalWriteGraceSeconds);
}

// The flags the manifests pass are kvserve's (server/grpc/server_options.cc plus
// --metrics-listen); a typo would crash-loop the pods.
TEST(ServerFlagsTest, ManifestsPassOnlyServerFlags) {
  const std::set<std::string> kServerFlags = {"--model",
                                              "--tokenizer",
                                              "--listen",
                                              "--metrics-listen",
                                              "--threads",
                                              "--device",
                                              "--max-queued-requests",
                                              "--max-queued-prompt-tokens",
                                              "--max-batch-tokens",
                                              "--max-running",
                                              "--kv-cache-mb",
                                              "--default-max-tokens",
                                              "--max-tokens-limit",
                                              "--drain-timeout"};
  const std::regex kFlag(R"(^\s*- (--[a-z-]+)=)");
  for (const char* file : {"compose.yaml", "k8s/deployment.yaml"}) {
    const std::string text = ReadFile(DeployDir() / file);
    std::istringstream lines(text);
    int flags = 0;
    for (std::string line; std::getline(lines, line);) {
      std::smatch match;
      if (!std::regex_search(line, match, kFlag)) continue;
      if (match[1].str().rfind("--config", 0) == 0 || match[1].str().rfind("--storage", 0) == 0) {
        continue;  // Prometheus' own flags in compose.yaml.
      }
      ++flags;
      EXPECT_THAT(kServerFlags, ::testing::Contains(match[1].str())) << file << ": " << line;
    }
    EXPECT_GE(flags, 5) << file;
  }
}

}  // namespace
}  // namespace kvserve::server
