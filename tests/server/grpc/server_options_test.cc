#include "server/grpc/server_options.h"

#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvserve::server {
namespace {

using ::testing::HasSubstr;

ParsedCommandLine Parse(std::vector<std::string> args) {
  args.insert(args.begin(), "kvserve");
  std::vector<const char*> argv;
  for (const std::string& arg : args) argv.push_back(arg.c_str());
  return ParseCommandLine(static_cast<int>(argv.size()), argv.data());
}

TEST(ServerOptionsTest, DefaultsWithOnlyModel) {
  const ParsedCommandLine parsed = Parse({"--model", "m.gguf"});
  ASSERT_EQ(parsed.action, ParsedCommandLine::Action::kRun) << parsed.message;
  const ServerOptions& o = parsed.options;
  EXPECT_EQ(o.model_path, "m.gguf");
  EXPECT_EQ(o.tokenizer_path, "");
  EXPECT_EQ(o.listen_address, "127.0.0.1:50051");
  EXPECT_EQ(o.threads, 0);
  EXPECT_EQ(o.device, engine::DeviceKind::kCpu);
  EXPECT_EQ(o.default_max_tokens, 256);
  EXPECT_EQ(o.max_tokens_limit, 0);
  EXPECT_EQ(o.kv_cache_mb, 0);
  EXPECT_EQ(o.kv_dtype, engine::KvDtype::kF32);
  EXPECT_EQ(o.weight_type, engine::WeightType::kAuto);
  EXPECT_EQ(o.drain_timeout, absl::Seconds(30));
}

TEST(ServerOptionsTest, KvDtypeFlag) {
  for (const auto& [name, dtype] : {std::pair{"f32", engine::KvDtype::kF32},
                                     std::pair{"bf16", engine::KvDtype::kBf16},
                                     std::pair{"int8", engine::KvDtype::kInt8}}) {
    const ParsedCommandLine parsed = Parse({"--model", "m.gguf", "--kv-dtype", name});
    ASSERT_EQ(parsed.action, ParsedCommandLine::Action::kRun) << parsed.message;
    EXPECT_EQ(parsed.options.kv_dtype, dtype) << name;
  }
  EXPECT_THAT(Parse({"--help"}).message, HasSubstr("--kv-dtype"));
}

TEST(ServerOptionsTest, WeightTypeFlag) {
  for (const auto& [name, type] : {std::pair{"auto", engine::WeightType::kAuto},
                                   std::pair{"f32", engine::WeightType::kF32},
                                   std::pair{"bf16", engine::WeightType::kBf16},
                                   std::pair{"int8", engine::WeightType::kInt8}}) {
    const ParsedCommandLine parsed = Parse({"--model", "m.gguf", "--weight-type", name});
    ASSERT_EQ(parsed.action, ParsedCommandLine::Action::kRun) << parsed.message;
    EXPECT_EQ(parsed.options.weight_type, type) << name;
  }
  EXPECT_THAT(Parse({"--help"}).message, HasSubstr("--weight-type"));
}

TEST(ServerOptionsTest, ScaleKvBudgetsFlag) {
  const std::string model = std::string(KVSERVE_SOURCE_DIR) + "/models/stories260K.gguf";
  const std::string budgets = std::string(KVSERVE_SOURCE_DIR) + "/models/stories260K.scalekv.json";
  ParsedCommandLine parsed =
      Parse({"--model", model, "--scalekv-budgets", budgets, "--kv-policy", "scalekv:keep=0.3"});
  ASSERT_EQ(parsed.action, ParsedCommandLine::Action::kRun) << parsed.message;
  EXPECT_EQ(parsed.options.scalekv_budgets_path, budgets);
  EXPECT_TRUE(ValidateServerOptions(parsed.options).ok());
  // scalekv without a budget file, and a missing file, are refused naming the flag.
  parsed = Parse({"--model", model, "--kv-policy", "scalekv"});
  EXPECT_EQ(parsed.action, ParsedCommandLine::Action::kExit);
  EXPECT_NE(parsed.exit_code, 0);
  EXPECT_THAT(parsed.message, HasSubstr("--scalekv-budgets"));
  parsed = Parse({"--model", model, "--scalekv-budgets", "/nonexistent.json"});
  EXPECT_EQ(parsed.action, ParsedCommandLine::Action::kExit);
  EXPECT_THAT(parsed.message, HasSubstr("--scalekv-budgets: cannot open"));
  EXPECT_THAT(Parse({"--help"}).message, HasSubstr("--scalekv-budgets"));
}

TEST(ServerOptionsTest, EveryFlag) {
  const ParsedCommandLine parsed = Parse(
      {"--model", "a.bin", "--tokenizer", "tok.bin", "--listen", "0.0.0.0:0", "--threads", "2",
       "--device", "gpu", "--max-queued-requests", "7", "--max-queued-prompt-tokens", "900",
       "--max-batch-tokens", "128", "--max-running", "3", "--kv-cache-mb", "64",
       "--default-max-tokens", "16", "--max-tokens-limit", "200", "--drain-timeout", "2.5"});
  ASSERT_EQ(parsed.action, ParsedCommandLine::Action::kRun) << parsed.message;
  const ServerOptions& o = parsed.options;
  EXPECT_EQ(o.tokenizer_path, "tok.bin");
  EXPECT_EQ(o.listen_address, "0.0.0.0:0");
  EXPECT_EQ(o.threads, 2);
  EXPECT_EQ(o.device, engine::DeviceKind::kGpu);
  EXPECT_EQ(o.max_queued_requests, 7);
  EXPECT_EQ(o.max_queued_prompt_tokens, 900);
  EXPECT_EQ(o.max_batch_tokens, 128);
  EXPECT_EQ(o.max_running, 3);
  EXPECT_EQ(o.kv_cache_mb, 64);
  EXPECT_EQ(o.default_max_tokens, 16);
  EXPECT_EQ(o.max_tokens_limit, 200);
  EXPECT_EQ(o.drain_timeout, absl::Milliseconds(2500));
}

TEST(ServerOptionsTest, HelpExitsZeroWithUsage) {
  const ParsedCommandLine parsed = Parse({"--help"});
  EXPECT_EQ(parsed.action, ParsedCommandLine::Action::kExit);
  EXPECT_EQ(parsed.exit_code, 0);
  EXPECT_THAT(parsed.message, HasSubstr("--model"));
  EXPECT_THAT(parsed.message, HasSubstr("--drain-timeout"));
}

struct BadFlagsCase {
  std::string name;
  std::vector<std::string> args;
  std::string message_part;
};

// Test names print the row name, not the struct's bytes.
void PrintTo(const BadFlagsCase& c, std::ostream* os) { *os << c.name; }

class BadFlagsTest : public ::testing::TestWithParam<BadFlagsCase> {};

TEST_P(BadFlagsTest, ExitsNonzeroNamingTheFlag) {
  const ParsedCommandLine parsed = Parse(GetParam().args);
  EXPECT_EQ(parsed.action, ParsedCommandLine::Action::kExit);
  EXPECT_NE(parsed.exit_code, 0);
  EXPECT_THAT(parsed.message, HasSubstr(GetParam().message_part));
}

INSTANTIATE_TEST_SUITE_P(
    Rows, BadFlagsTest,
    ::testing::Values(
        BadFlagsCase{"missing_model", {}, "--model"},
        BadFlagsCase{"unknown_flag", {"--model", "m", "--bogus", "1"}, "--bogus"},
        BadFlagsCase{"non_numeric_threads", {"--model", "m", "--threads", "many"}, "--threads"},
        BadFlagsCase{"negative_threads", {"--model", "m", "--threads", "-1"}, "--threads"},
        BadFlagsCase{"bad_device", {"--model", "m", "--device", "tpu"}, "--device"},
        BadFlagsCase{"listen_without_port", {"--model", "m", "--listen", "localhost"},
                     "--listen"},
        BadFlagsCase{"listen_port_too_big", {"--model", "m", "--listen", "127.0.0.1:70000"},
                     "70000"},
        BadFlagsCase{"zero_queue", {"--model", "m", "--max-queued-requests", "0"},
                     "--max-queued-requests"},
        BadFlagsCase{"zero_queue_tokens", {"--model", "m", "--max-queued-prompt-tokens", "0"},
                     "--max-queued-prompt-tokens"},
        BadFlagsCase{"zero_batch", {"--model", "m", "--max-batch-tokens", "0"},
                     "--max-batch-tokens"},
        BadFlagsCase{"zero_running", {"--model", "m", "--max-running", "0"}, "--max-running"},
        BadFlagsCase{"negative_kv", {"--model", "m", "--kv-cache-mb", "-5"}, "--kv-cache-mb"},
        BadFlagsCase{"bad_kv_dtype", {"--model", "m", "--kv-dtype", "fp8"},
                     "--kv-dtype: unknown KV storage type \"fp8\"; choose f32, bf16 or int8"},
        BadFlagsCase{"bad_weight_type", {"--model", "m", "--weight-type", "fp4"},
                     "--weight-type: unknown weight type \"fp4\"; choose one of: auto, f32, "
                     "bf16, int8"},
        BadFlagsCase{"zero_default_max_tokens", {"--model", "m", "--default-max-tokens", "0"},
                     "--default-max-tokens"},
        BadFlagsCase{"default_over_limit",
                     {"--model", "m", "--default-max-tokens", "300", "--max-tokens-limit",
                      "100"},
                     "--max-tokens-limit"},
        BadFlagsCase{"negative_drain", {"--model", "m", "--drain-timeout", "-1"},
                     "--drain-timeout"},
        BadFlagsCase{"tls_cert_without_key", {"--model", "m", "--tls-cert", "c.pem"},
                     "--tls-cert and --tls-key"},
        BadFlagsCase{"client_ca_without_cert", {"--model", "m", "--tls-client-ca", "ca.pem"},
                     "--tls-client-ca"},
        BadFlagsCase{"tiny_message_limit", {"--model", "m", "--max-message-bytes", "10"},
                     "--max-message-bytes"},
        BadFlagsCase{"zero_streams", {"--model", "m", "--max-concurrent-streams", "0"},
                     "--max-concurrent-streams"},
        BadFlagsCase{"negative_write_timeout", {"--model", "m", "--write-timeout", "-1"},
                     "--write-timeout"}),
    [](const ::testing::TestParamInfo<BadFlagsCase>& info) { return info.param.name; });

TEST(ServerOptionsTest, SecurityFlags) {
  const ParsedCommandLine defaults = Parse({"--model", "m"});
  ASSERT_EQ(defaults.action, ParsedCommandLine::Action::kRun) << defaults.message;
  EXPECT_EQ(defaults.options.tls_cert_path, "");
  EXPECT_EQ(defaults.options.auth_token_file, "");
  EXPECT_EQ(defaults.options.max_message_bytes, 4 << 20);
  EXPECT_EQ(defaults.options.max_concurrent_streams, 256);
  EXPECT_EQ(defaults.options.write_timeout, absl::Seconds(30));

  const ParsedCommandLine parsed =
      Parse({"--model", "m", "--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-client-ca",
             "ca.pem", "--auth-token-file", "tokens", "--max-message-bytes", "65536",
             "--max-concurrent-streams", "8", "--write-timeout", "2.5"});
  ASSERT_EQ(parsed.action, ParsedCommandLine::Action::kRun) << parsed.message;
  const ServerOptions& o = parsed.options;
  EXPECT_EQ(o.tls_cert_path, "c.pem");
  EXPECT_EQ(o.tls_key_path, "k.pem");
  EXPECT_EQ(o.tls_client_ca_path, "ca.pem");
  EXPECT_EQ(o.auth_token_file, "tokens");
  EXPECT_EQ(o.max_message_bytes, 65536);
  EXPECT_EQ(o.max_concurrent_streams, 8);
  EXPECT_EQ(o.write_timeout, absl::Milliseconds(2500));

  const ParsedCommandLine off = Parse({"--model", "m", "--write-timeout", "0"});
  ASSERT_EQ(off.action, ParsedCommandLine::Action::kRun) << off.message;
  EXPECT_EQ(off.options.write_timeout, absl::InfiniteDuration());
}

TEST(SplitHostPortTest, Forms) {
  std::string host;
  int port = -1;
  ASSERT_TRUE(SplitHostPort("127.0.0.1:0", &host, &port).ok());
  EXPECT_EQ(host, "127.0.0.1");
  EXPECT_EQ(port, 0);
  ASSERT_TRUE(SplitHostPort("[::1]:8080", &host, &port).ok());
  EXPECT_EQ(host, "[::1]");
  EXPECT_EQ(port, 8080);
  EXPECT_FALSE(SplitHostPort(":80", &host, &port).ok());
  EXPECT_FALSE(SplitHostPort("host:", &host, &port).ok());
  EXPECT_FALSE(SplitHostPort("host:-1", &host, &port).ok());
}

}  // namespace
}  // namespace kvserve::server
