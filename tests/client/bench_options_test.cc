#include "client/bench_options.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace kvserve::client {
namespace {

struct Parsed {
  bool parse_ok = false;
  BenchOptions options;
};

// Parses `args` as kvserve-bench would (args exclude the program name).
Parsed Parse(std::vector<std::string> args) {
  Parsed parsed;
  CLI::App app;
  AddBenchFlags(app, parsed.options);
  std::vector<std::string> reversed(args.rbegin(), args.rend());  // CLI11 pops from the back.
  try {
    app.parse(reversed);
    parsed.parse_ok = true;
  } catch (const CLI::ParseError&) {
    parsed.parse_ok = false;
  }
  return parsed;
}

TEST(BenchOptionsTest, FlagsReachTheirFields) {
  const Parsed parsed =
      Parse({"--server", "127.0.0.1:5000", "--concurrency", "4", "--requests", "16",
             "--prompt-tokens", "32", "--max-tokens", "8", "--temperature", "0.5", "--seed", "9",
             "--warmup", "2", "--timeout", "7.5", "--threads", "3", "--json",
             "--kv-policy", "lazyllm:keep=0.2"});
  ASSERT_TRUE(parsed.parse_ok);
  const BenchOptions& o = parsed.options;
  EXPECT_EQ(o.server, "127.0.0.1:5000");
  EXPECT_EQ(o.load.concurrency, 4);
  EXPECT_EQ(o.load.requests, 16);
  EXPECT_EQ(o.load.prompt_tokens, 32);
  EXPECT_EQ(o.load.max_tokens, 8);
  EXPECT_FLOAT_EQ(o.load.temperature, 0.5f);
  EXPECT_EQ(o.load.seed, 9u);
  EXPECT_EQ(o.load.warmup_requests, 2);
  EXPECT_DOUBLE_EQ(o.load.timeout_s, 7.5);
  EXPECT_EQ(o.load.kv_policy, "lazyllm:keep=0.2");
  EXPECT_EQ(o.threads, 3);
  EXPECT_TRUE(o.json);
  EXPECT_TRUE(ValidateBenchOptions(o).ok()) << ValidateBenchOptions(o);
}

// A scalekv policy needs the target's budget file: --scalekv-budgets for --model runs; with
// --server the server has its own, so the client lets the spec through.
TEST(BenchOptionsTest, ScaleKvBudgetsOnlyWithAModel) {
  Parsed parsed = Parse({"--model", "m.gguf", "--scalekv-budgets", "m.scalekv.json",
                         "--kv-policy", "scalekv:keep=0.3", "--requests", "1"});
  ASSERT_TRUE(parsed.parse_ok);
  EXPECT_EQ(parsed.options.scalekv_budgets_path, "m.scalekv.json");
  EXPECT_TRUE(ValidateBenchOptions(parsed.options).ok());
  EXPECT_FALSE(Parse({"--scalekv-budgets", "m.scalekv.json", "--requests", "1"}).parse_ok);
  parsed = Parse({"--kv-policy", "scalekv:keep=0.3", "--requests", "1"});
  ASSERT_TRUE(parsed.parse_ok);
  EXPECT_TRUE(ValidateBenchOptions(parsed.options).ok()) << ValidateBenchOptions(parsed.options);
  parsed = Parse({"--kv-policy", "scalekv:keep=3", "--requests", "1"});
  ASSERT_TRUE(parsed.parse_ok);
  EXPECT_FALSE(ValidateBenchOptions(parsed.options).ok());
}

TEST(BenchOptionsTest, DefaultServerIsLocal) {
  const Parsed parsed = Parse({"--requests", "1"});
  ASSERT_TRUE(parsed.parse_ok);
  EXPECT_EQ(parsed.options.server, kDefaultServer);
  EXPECT_TRUE(ValidateBenchOptions(parsed.options).ok());
}

TEST(BenchOptionsTest, ExclusiveFlagsFailToParse) {
  EXPECT_FALSE(Parse({"--concurrency", "2", "--rate", "5", "--requests", "1"}).parse_ok);
  EXPECT_FALSE(Parse({"--server", "127.0.0.1:1", "--model", "m.gguf"}).parse_ok);
  EXPECT_FALSE(Parse({"--requests", "many"}).parse_ok);
}

TEST(BenchOptionsTest, EngineFlagsReachTheirFields) {
  const Parsed parsed =
      Parse({"--model", "m.gguf", "--threads", "2", "--weight-type", "bf16", "--kv-cache-mb",
             "64", "--max-batch-tokens", "256", "--max-running", "16", "--prompt-tokens", "300",
             "--shared-prefix-tokens", "256", "--requests", "4"});
  ASSERT_TRUE(parsed.parse_ok);
  const BenchOptions& o = parsed.options;
  EXPECT_EQ(o.model, "m.gguf");
  EXPECT_EQ(o.threads, 2);
  EXPECT_EQ(o.weight_type, "bf16");
  EXPECT_EQ(o.kv_cache_mb, 64);
  EXPECT_EQ(o.max_batch_tokens, 256);
  EXPECT_EQ(o.max_running, 16);
  EXPECT_EQ(o.load.shared_prefix_tokens, 256);
  EXPECT_TRUE(ValidateBenchOptions(o).ok()) << ValidateBenchOptions(o);
}

TEST(BenchOptionsTest, EngineFlagsNeedModel) {
  for (const char* flag : {"--weight-type", "--kv-cache-mb", "--max-batch-tokens",
                           "--max-running"}) {
    const std::string value = std::string(flag) == "--weight-type" ? "f32" : "8";
    EXPECT_FALSE(Parse({flag, value, "--requests", "1"}).parse_ok) << flag;
    EXPECT_TRUE(Parse({"--model", "m.gguf", flag, value, "--requests", "1"}).parse_ok) << flag;
  }
}

struct ValidationCase {
  std::string name;
  std::vector<std::string> args;
  absl::StatusCode code;
  std::string message_part;  // Expected in the message when code is not OK.
};

class BenchValidationTest : public ::testing::TestWithParam<ValidationCase> {};

TEST_P(BenchValidationTest, Validates) {
  const ValidationCase& c = GetParam();
  const Parsed parsed = Parse(c.args);
  ASSERT_TRUE(parsed.parse_ok);
  const absl::Status status = ValidateBenchOptions(parsed.options);
  EXPECT_EQ(status.code(), c.code) << status;
  EXPECT_NE(status.message().find(c.message_part), absl::string_view::npos) << status;
}

// 192.0.2.0/24 is a documentation range: these cases only validate, nothing is sent.
INSTANTIATE_TEST_SUITE_P(
    Cases, BenchValidationTest,
    ::testing::Values(
        ValidationCase{"model", {"--model", "models/stories260K.gguf", "--requests", "1"},
                       absl::StatusCode::kOk, ""},
        ValidationCase{"model_ignores_server_checks",
                       {"--model", "m.gguf", "--allow-remote", "--requests", "1"},
                       absl::StatusCode::kOk, ""},
        ValidationCase{"negative_kv_cache",
                       {"--model", "m.gguf", "--kv-cache-mb", "-1", "--requests", "1"},
                       absl::StatusCode::kInvalidArgument, "--kv-cache-mb"},
        ValidationCase{"zero_batch_tokens",
                       {"--model", "m.gguf", "--max-batch-tokens", "0", "--requests", "1"},
                       absl::StatusCode::kInvalidArgument, "--max-batch-tokens"},
        ValidationCase{"zero_running",
                       {"--model", "m.gguf", "--max-running", "0", "--requests", "1"},
                       absl::StatusCode::kInvalidArgument, "--max-running"},
        ValidationCase{"shared_prefix_too_long",
                       {"--prompt-tokens", "8", "--shared-prefix-tokens", "9", "--requests", "1"},
                       absl::StatusCode::kInvalidArgument, "--shared-prefix-tokens"},
        ValidationCase{"remote_refused",
                       {"--server", "192.0.2.1:50051", "--requests", "1"},
                       absl::StatusCode::kInvalidArgument, "--allow-remote"},
        ValidationCase{"remote_allowed",
                       {"--server", "192.0.2.1:50051", "--allow-remote", "--requests", "1"},
                       absl::StatusCode::kOk, ""},
        ValidationCase{"localhost", {"--server", "localhost:1", "--requests", "1"},
                       absl::StatusCode::kOk, ""},
        ValidationCase{"ipv6_loopback", {"--server", "[::1]:1", "--duration", "3"},
                       absl::StatusCode::kOk, ""},
        ValidationCase{"open_loop", {"--rate", "5", "--requests", "10"}, absl::StatusCode::kOk,
                       ""},
        ValidationCase{"bad_address", {"--server", "nowhere", "--requests", "1"},
                       absl::StatusCode::kInvalidArgument, "HOST:PORT"},
        ValidationCase{"unbounded", {"--concurrency", "2"}, absl::StatusCode::kInvalidArgument,
                       "--requests"},
        ValidationCase{"negative_threads", {"--threads", "-1", "--requests", "1"},
                       absl::StatusCode::kInvalidArgument, "--threads"},
        ValidationCase{"zero_concurrency", {"--concurrency", "0", "--requests", "1"},
                       absl::StatusCode::kInvalidArgument, "--concurrency"}),
    [](const ::testing::TestParamInfo<ValidationCase>& info) { return info.param.name; });

}  // namespace
}  // namespace kvserve::client
