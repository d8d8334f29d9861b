// The whole server under a known workload: kvserve's own /metrics (scraped over HTTP) counts
// it exactly, `promtool check metrics` accepts the output, and requests with different KV
// policies run in the same batch.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "server/grpc/kvserve_server.h"
#include "tests/integration/test_client.h"
#include "tests/server/metrics/metrics_test_support.h"
#include "tests/server/metrics/prometheus_server.h"

namespace kvserve::server {
namespace {

using ::kvserve::server::testing::Exposition;
using ::kvserve::server::testing::HttpGet;
using ::kvserve::server::testing::ParseExposition;

ServerOptions TestOptions() {
  ServerOptions options;
  options.model_path = std::string(KVSERVE_SOURCE_DIR) + "/models/stories260K.gguf";
  options.listen_address = "127.0.0.1:0";
  options.metrics_listen = "127.0.0.1:0";
  options.threads = 1;
  return options;
}

v1::GenerationParams Params(const std::string& prompt, int32_t max_tokens,
                            const std::string& policy = "") {
  v1::GenerationParams params;
  params.set_prompt(prompt);
  params.set_max_tokens(max_tokens);
  params.set_kv_policy(policy);
  return params;
}

Exposition Scrape(const KvServer& server) {
  auto response = HttpGet("http://127.0.0.1:" + std::to_string(server.metrics_port()) + "/metrics");
  EXPECT_TRUE(response.ok()) << response.status();
  auto parsed = ParseExposition(response->body);
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  return *parsed;
}

TEST(ServingMetricsTest, KnownWorkloadIsCountedExactly) {
  auto server = KvServer::Create(TestOptions());
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_GT((*server)->metrics_port(), 0);
  auto stub = v1::Inference::NewStub(kvserve::testing::Connect((*server)->address()));

  constexpr int kRequests = 6;
  constexpr int kTokens = 20;
  std::vector<std::thread> clients;
  std::vector<kvserve::testing::GenerateResult> results(kRequests);
  for (int i = 0; i < kRequests; ++i) {
    clients.emplace_back([&, i] {
      results[i] = kvserve::testing::Generate(*stub, Params("Once upon a time", kTokens));
    });
  }
  for (auto& c : clients) c.join();
  for (const auto& r : results) ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  // Two invalid requests: refused, counted as rejections.
  EXPECT_EQ(kvserve::testing::Generate(*stub, Params("", 5)).status.error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(kvserve::testing::Generate(*stub, Params("hi", 5, "nosuch")).status.error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  // Gauges are published after the step that finished the streams.
  Exposition m;
  for (int i = 0; i < 100; ++i) {
    m = Scrape(**server);
    if (m.Value("kvserve_requests_running").value_or(-1) == 0) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_EQ(m.Value("kvserve_requests_total", {{"status", "ok"}, {"finish_reason", "length"}}),
            kRequests);
  EXPECT_EQ(m.Value("kvserve_generated_tokens_total"), kRequests * kTokens);
  EXPECT_EQ(m.Value("kvserve_prompt_tokens_total"), kRequests * 5);
  EXPECT_EQ(m.Value("kvserve_time_to_first_token_seconds_count"), kRequests);
  EXPECT_EQ(m.Value("kvserve_inter_token_latency_seconds_count"), kRequests * (kTokens - 1));
  EXPECT_EQ(m.Value("kvserve_request_duration_seconds_count"), kRequests);
  EXPECT_EQ(m.Value("kvserve_rejections_total", {{"reason", "invalid"}}), 2);
  EXPECT_EQ(m.Value("kvserve_requests_running"), 0);
  EXPECT_EQ(m.Value("kvserve_kv_blocks_used"), 0);
  EXPECT_GT(m.Value("kvserve_kv_blocks_capacity").value_or(0), 0);
  // The 5-token prompt is shorter than one KV block, so nothing can come from the prefix
  // cache, and the counters say so.
  EXPECT_EQ(m.Value("kvserve_prefix_cache_hit_tokens_total"), 0);
  EXPECT_EQ(m.Value("kvserve_prefix_cache_query_tokens_total"), kRequests * 5);

  // promtool accepts the real exposition.
  auto body = HttpGet("http://127.0.0.1:" + std::to_string((*server)->metrics_port()) + "/metrics");
  ASSERT_TRUE(body.ok());
  auto promtool = kvserve::server::testing::RunCommand({"/usr/bin/promtool", "check", "metrics"},
                                                       body->body);
  ASSERT_TRUE(promtool.ok()) << promtool.status();
  EXPECT_EQ(promtool->exit_code, 0) << promtool->output;
  EXPECT_EQ(promtool->output, "") << promtool->output;
}

TEST(ServingMetricsTest, RequestsWithDifferentPoliciesShareABatch) {
  ServerOptions options = TestOptions();
  options.scalekv_budgets_path =
      std::string(KVSERVE_SOURCE_DIR) + "/models/stories260K.scalekv.json";
  auto server = KvServer::Create(options);
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = v1::Inference::NewStub(kvserve::testing::Connect((*server)->address()));
  const std::string prompt =
      "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
      "park with her friends and her dog. One day, she saw a big red ball";
  const std::vector<std::string> policies = {"", "full", "window:keep=0.3", "h2o:keep=0.3",
                                             "keyformer:keep=0.3", "snapkv:keep=0.3",
                                             "lazyllm", "lazyllm:first=1,keep=1",
                                             "scalekv:keep=0.3", "scalekv:keep=1"};
  std::vector<kvserve::testing::GenerateResult> results(policies.size());
  std::vector<std::thread> clients;
  for (size_t i = 0; i < policies.size(); ++i) {
    clients.emplace_back([&, i] {
      results[i] = kvserve::testing::Generate(*stub, Params(prompt, 120, policies[i]));
    });
  }
  for (auto& c : clients) c.join();
  for (size_t i = 0; i < policies.size(); ++i) {
    ASSERT_TRUE(results[i].status.ok()) << policies[i] << ": " << results[i].status.error_message();
    EXPECT_EQ(results[i].token_ids.size(), 120u) << policies[i];
  }
  // "full", the server default (full) and LazyLLM pruning nothing are identical.
  EXPECT_EQ(results[0].token_ids, results[1].token_ids);
  EXPECT_EQ(results[0].token_ids, results[7].token_ids);
  EXPECT_EQ(results[0].token_ids, results[9].token_ids);  // ScaleKV keeping everything.
  Exposition m;
  for (int i = 0; i < 100; ++i) {
    m = Scrape(**server);
    if (m.Value("kvserve_kv_evicted_tokens_total", {{"policy", "h2o"}}).value_or(0) > 0) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  for (const char* policy : {"window", "h2o", "keyformer", "snapkv", "scalekv"}) {
    EXPECT_GT(m.Value("kvserve_kv_evicted_tokens_total", {{"policy", policy}}).value_or(0), 0)
        << policy;
  }
  // LazyLLM's saving: prompt rows it kept out of the later layers.
  EXPECT_GT(m.Value("kvserve_pruned_token_layers_total").value_or(0), 0);
  EXPECT_GT(m.Value("kvserve_computed_token_layers_total").value_or(0),
            m.Value("kvserve_pruned_token_layers_total").value_or(0));
}

// ScaleKV needs the server to have its budget file: without one a scalekv request is refused
// (FAILED_PRECONDITION saying how to get one); a file for another model refuses to start.
TEST(ServingMetricsTest, ScaleKvNeedsABudgetFileForThisModel) {
  auto server = KvServer::Create(TestOptions());
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = v1::Inference::NewStub(kvserve::testing::Connect((*server)->address()));
  const auto refused = kvserve::testing::Generate(*stub, Params("Once upon", 5, "scalekv"));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(refused.status.error_message().find("--scalekv-budgets"), std::string::npos)
      << refused.status.error_message();
  EXPECT_TRUE(kvserve::testing::Generate(*stub, Params("Once upon", 5)).status.ok());

  const std::string path = ::testing::TempDir() + "/three_layers.scalekv.json";
  std::ofstream(path) << R"({"format": "kvserve-scalekv-budgets/1", "layers": [
      {"layer": 0, "asi": 0.5, "role": "drafter"}, {"layer": 1, "asi": 0.9, "role": "refiner"},
      {"layer": 2, "asi": 0.9, "role": "refiner"}]})";
  ServerOptions options = TestOptions();
  options.scalekv_budgets_path = path;
  auto wrong = KvServer::Create(options);
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(wrong.status().message().find("has 3 layers"), std::string::npos) << wrong.status();
  std::remove(path.c_str());
}

}  // namespace
}  // namespace kvserve::server

namespace kvserve::server {
namespace {

// A real Prometheus with the shipped scrape config, pointed at a running kvserve that served
// requests: the time-to-first-token histogram and the KV gauges come back through Prometheus'
// HTTP query API.
TEST(ServingMetricsTest, RealPrometheusScrapesARunningServer) {
  ASSERT_EQ(access(testing::kPrometheus, X_OK), 0)
      << "run scripts/install_deps.sh (Debian package prometheus)";
  auto server = KvServer::Create(TestOptions());
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = v1::Inference::NewStub(kvserve::testing::Connect((*server)->address()));
  constexpr int kRequests = 4;
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_TRUE(kvserve::testing::Generate(*stub, Params("Once upon a time", 16)).status.ok());
  }
  const std::string config = testing::ShippedScrapeConfigFor((*server)->metrics_port());
  ASSERT_FALSE(config.empty()) << "deploy/prometheus/prometheus.yml lost its kvserve:9090 target";
  absl::StatusOr<int> port = testing::PickFreePort();
  ASSERT_TRUE(port.ok()) << port.status();
  testing::PrometheusServer prometheus;
  ASSERT_TRUE(prometheus.Start(config, *port));
  auto equals = [](double want) { return [want](double v) { return v == want; }; };
  ASSERT_EQ(prometheus.WaitFor(R"(up{job="kvserve"})", equals(1)), 1) << prometheus.log();
  EXPECT_EQ(prometheus.WaitFor("kvserve_time_to_first_token_seconds_count", equals(kRequests)),
            kRequests)
      << prometheus.log();
  const double capacity = (*server)->engine().total_kv_blocks();
  EXPECT_EQ(prometheus.WaitFor("kvserve_kv_blocks_capacity", equals(capacity)), capacity);
  EXPECT_EQ(prometheus.WaitFor("kvserve_kv_usage_ratio", equals(0)), 0);
  EXPECT_EQ(prometheus.WaitFor("sum(kvserve_generated_tokens_total)", equals(kRequests * 16)),
            kRequests * 16);
}

}  // namespace
}  // namespace kvserve::server
