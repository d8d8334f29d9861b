// kvserve-cli and kvserve-bench against a real kvserve serving models/stories260K.gguf on
// 127.0.0.1:0. Greedy outputs are compared with tests/testdata/stories260K_reference.json
// (llama.cpp's output for the same model and prompt).
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/e2e/subprocess.h"

namespace kvserve::testing {
namespace {

const std::string kServerBinary = KVSERVE_BINARY_DIR "/kvserve";
const std::string kCliBinary = KVSERVE_BINARY_DIR "/kvserve-cli";
const std::string kBenchBinary = KVSERVE_BINARY_DIR "/kvserve-bench";
const std::string kModel = KVSERVE_SOURCE_DIR "/models/stories260K.gguf";
const std::string kReference = KVSERVE_SOURCE_DIR "/tests/testdata/stories260K_reference.json";
constexpr double kCommandTimeoutS = 120;

struct Reference {
  std::string prompt;
  std::vector<int> prompt_ids;
  std::vector<int> generated_ids;
  std::string generated_text;
};

Reference LoadReference() {
  std::ifstream file(kReference);
  const nlohmann::json json = nlohmann::json::parse(file);
  const nlohmann::json& first = json.at("results").at(0);
  return Reference{first.at("prompt").get<std::string>(),
                   first.at("prompt_ids").get<std::vector<int>>(),
                   first.at("generated_ids").get<std::vector<int>>(),
                   first.at("generated_text").get<std::string>()};
}

std::vector<nlohmann::json> ParseJsonLines(const std::string& text) {
  std::vector<nlohmann::json> lines;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    lines.push_back(nlohmann::json::parse(line));
  }
  return lines;
}

// A loopback port nobody listens on (bound, then released).
int UnusedPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

class CliE2eTest : public ::testing::Test {
 protected:
  // One server per test process (ctest runs each case in its own process).
  static void SetUpTestSuite() {
    SubprocessServerOptions options;
    options.argv = {kServerBinary, "--model", kModel, "--listen", "127.0.0.1:0",
                    "--metrics-listen", "127.0.0.1:0"};
    absl::StatusOr<std::unique_ptr<SubprocessServer>> server = SubprocessServer::Start(options);
    if (server.ok()) {
      server_ = std::move(*server);
    } else {
      start_error_ = server.status().ToString();
    }
  }

  static void TearDownTestSuite() {
    if (server_ == nullptr) return;
    const SubprocessServer::StopResult stopped = server_->Stop(30);
    if (stopped.killed) {
      ADD_FAILURE() << "kvserve did not exit within 30 s of SIGTERM; output:\n"
                    << server_->output();
    } else if (stopped.exit_code != 0) {
      ADD_FAILURE() << "kvserve exited with code " << stopped.exit_code
                    << " after SIGTERM; output:\n" << server_->output();
    }
    server_.reset();
  }

  void SetUp() override {
    ASSERT_NE(server_, nullptr) << "could not start kvserve: " << start_error_;
  }

  // Runs kvserve-cli `subcommand` against the server with `args` after --server.
  CommandResult Cli(const std::string& subcommand, std::vector<std::string> args) {
    std::vector<std::string> argv = {kCliBinary, subcommand, "--server", server_->address()};
    argv.insert(argv.end(), args.begin(), args.end());
    return Run(argv);
  }

  CommandResult Run(const std::vector<std::string>& argv) {
    absl::StatusOr<CommandResult> result = RunCommand(argv, kCommandTimeoutS);
    EXPECT_TRUE(result.ok()) << result.status();
    if (!result.ok()) return CommandResult{};
    EXPECT_FALSE(result->timed_out) << argv[0] << " " << argv[1] << " timed out";
    return *result;
  }

  std::string ServerOutput() { return server_->output(); }

  // Static because gtest's suite hooks are; TearDownTestSuite stops and resets the server
  // explicitly, so nothing is left for static destruction.
  static inline std::unique_ptr<SubprocessServer> server_;
  static inline std::string start_error_;
};

TEST_F(CliE2eTest, GenerateJsonMatchesReference) {
  const Reference ref = LoadReference();
  const CommandResult result = Cli(
      "generate", {"--max-tokens", "64", "--temperature", "0", "--json", ref.prompt});
  ASSERT_EQ(result.exit_code, 0) << result.stderr_text << ServerOutput();
  const std::vector<nlohmann::json> lines = ParseJsonLines(result.stdout_text);
  ASSERT_FALSE(lines.empty());
  std::vector<int> ids;
  std::string text;
  for (size_t i = 0; i < lines.size(); ++i) {
    const nlohmann::json& line = lines[i];
    ASSERT_TRUE(line.contains("text")) << line;
    ASSERT_TRUE(line.contains("token_ids")) << line;
    text += line["text"].get<std::string>();
    for (int id : line["token_ids"]) ids.push_back(id);
    EXPECT_EQ(line.contains("finish_reason"), i + 1 == lines.size()) << line;
  }
  EXPECT_EQ(ids, ref.generated_ids);
  EXPECT_EQ(text, ref.generated_text);
  const nlohmann::json& last = lines.back();
  EXPECT_EQ(last["finish_reason"], "length");
  EXPECT_EQ(last["usage"]["prompt_tokens"], 5);
  EXPECT_EQ(last["usage"]["completion_tokens"], 64);
  EXPECT_TRUE(last["usage"].contains("cached_prompt_tokens"));
}

TEST_F(CliE2eTest, GeneratePlainPrintsTextAndSummary) {
  const Reference ref = LoadReference();
  const CommandResult result =
      Cli("generate", {"--max-tokens", "64", "--temperature", "0", ref.prompt});
  ASSERT_EQ(result.exit_code, 0) << result.stderr_text;
  EXPECT_EQ(result.stdout_text, ref.generated_text + "\n");
  EXPECT_NE(result.stderr_text.find("finish_reason=length prompt_tokens=5 completion_tokens=64"),
            std::string::npos)
      << result.stderr_text;
}

TEST_F(CliE2eTest, StreamFalseAndCompleteUseTheUnaryRpc) {
  const Reference ref = LoadReference();
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"generate", "--stream=false"}, {"complete"}}) {
    const CommandResult result =
        Cli(args[0], {args.size() > 1 ? args[1] : "--json", "--json", "--max-tokens", "64",
                      "--temperature", "0", ref.prompt});
    ASSERT_EQ(result.exit_code, 0) << result.stderr_text;
    const std::vector<nlohmann::json> lines = ParseJsonLines(result.stdout_text);
    ASSERT_EQ(lines.size(), 1u) << result.stdout_text;  // One response, not a stream.
    EXPECT_EQ(lines[0]["token_ids"].get<std::vector<int>>(), ref.generated_ids);
    EXPECT_EQ(lines[0]["text"], ref.generated_text);
    EXPECT_EQ(lines[0]["finish_reason"], "length");
    EXPECT_EQ(lines[0]["usage"]["completion_tokens"], 64);
  }
}

TEST_F(CliE2eTest, StopStringEndsGenerationBeforeIt) {
  const Reference ref = LoadReference();
  const CommandResult result = Cli("generate", {"--max-tokens", "64", "--temperature", "0",
                                                "--stop", "Lily", "--json", ref.prompt});
  ASSERT_EQ(result.exit_code, 0) << result.stderr_text;
  const std::vector<nlohmann::json> lines = ParseJsonLines(result.stdout_text);
  ASSERT_FALSE(lines.empty());
  std::string text;
  for (const nlohmann::json& line : lines) text += line["text"].get<std::string>();
  EXPECT_EQ(text, ref.generated_text.substr(0, ref.generated_text.find("Lily")));
  EXPECT_EQ(lines.back()["finish_reason"], "stop_string");
}

TEST_F(CliE2eTest, TokenizePrintsIds) {
  const Reference ref = LoadReference();
  const CommandResult plain = Cli("tokenize", {ref.prompt});
  ASSERT_EQ(plain.exit_code, 0) << plain.stderr_text;
  EXPECT_EQ(plain.stdout_text.substr(0, plain.stdout_text.find('\n')), "[1, 403, 407, 261, 378]");

  const CommandResult json = Cli("tokenize", {"--json", ref.prompt});
  ASSERT_EQ(json.exit_code, 0) << json.stderr_text;
  const nlohmann::json parsed = nlohmann::json::parse(json.stdout_text);
  EXPECT_EQ(parsed["token_ids"].get<std::vector<int>>(), ref.prompt_ids);
  EXPECT_EQ(parsed["pieces"].size(), ref.prompt_ids.size());

  const CommandResult no_bos = Cli("tokenize", {"--no-bos", "--json", ref.prompt});
  ASSERT_EQ(no_bos.exit_code, 0) << no_bos.stderr_text;
  EXPECT_EQ(nlohmann::json::parse(no_bos.stdout_text)["token_ids"].get<std::vector<int>>(),
            std::vector<int>(ref.prompt_ids.begin() + 1, ref.prompt_ids.end()));
}

TEST_F(CliE2eTest, InfoDescribesTheModel) {
  const CommandResult json = Cli("info", {"--json"});
  ASSERT_EQ(json.exit_code, 0) << json.stderr_text;
  const nlohmann::json info = nlohmann::json::parse(json.stdout_text);
  EXPECT_EQ(info["vocab_size"], 512);
  EXPECT_EQ(info["bos_token_id"], 1);
  EXPECT_GT(info["max_tokens_limit"].get<int>(), 0);

  const CommandResult plain = Cli("info", {});
  ASSERT_EQ(plain.exit_code, 0) << plain.stderr_text;
  EXPECT_NE(plain.stdout_text.find("vocab_size: 512\n"), std::string::npos) << plain.stdout_text;
}

TEST_F(CliE2eTest, HealthIsServing) {
  const CommandResult result = Cli("health", {});
  EXPECT_EQ(result.exit_code, 0) << result.stderr_text;
  EXPECT_EQ(result.stdout_text, "SERVING\n");
}

TEST_F(CliE2eTest, HealthOfUnknownServiceIsNotSuccess) {
  const CommandResult result = Cli("health", {"--service", "no.such.Service"});
  EXPECT_NE(result.exit_code, 0) << result.stdout_text;
}

// --kv-policy reaches the server per request: full (keep 1) is the reference output itself;
// a tight window changes the 64-token continuation of the 5-token prompt once it evicts; a
// malformed spec is the server's INVALID_ARGUMENT.
TEST_F(CliE2eTest, KvPolicyIsSentPerRequest) {
  const Reference ref = LoadReference();
  CommandResult result = Cli("generate", {"--max-tokens", "64", "--temperature", "0",
                                          "--kv-policy", "h2o:keep=1", ref.prompt});
  ASSERT_EQ(result.exit_code, 0) << result.stderr_text;
  EXPECT_EQ(result.stdout_text, ref.generated_text + "\n");
  result = Cli("generate", {"--max-tokens", "64", "--temperature", "0", "--kv-policy",
                            "window:keep=1,max=8,sinks=1", ref.prompt});
  ASSERT_EQ(result.exit_code, 0) << result.stderr_text;
  EXPECT_NE(result.stdout_text, ref.generated_text + "\n");
  result = Cli("generate", {"--kv-policy", "h2o:keep=7", "Once upon a time"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.stderr_text.find("error: INVALID_ARGUMENT: "), std::string::npos)
      << result.stderr_text;
  EXPECT_NE(result.stderr_text.find("h2o"), std::string::npos) << result.stderr_text;
}

TEST_F(CliE2eTest, BadRequestFailsWithInvalidArgument) {
  const CommandResult result = Cli("generate", {"--top-p", "2", "Once upon a time"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.stderr_text.find("error: INVALID_ARGUMENT: "), std::string::npos)
      << result.stderr_text;
  EXPECT_EQ(result.stdout_text, "");
}

TEST_F(CliE2eTest, UnreachableServerFailsWithUnavailable) {
  const std::string address = "127.0.0.1:" + std::to_string(UnusedPort());
  const CommandResult result =
      Run({kCliBinary, "generate", "--server", address, "--timeout", "10", "hello"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.stderr_text.find("error: UNAVAILABLE: "), std::string::npos)
      << result.stderr_text;
}

TEST_F(CliE2eTest, BenchCompletesEveryRequest) {
  const CommandResult result =
      Run({kBenchBinary, "--server", server_->address(), "--concurrency", "4", "--requests",
           "16", "--prompt-tokens", "16", "--max-tokens", "16", "--json"});
  ASSERT_EQ(result.exit_code, 0) << result.stderr_text << ServerOutput();
  const nlohmann::json report = nlohmann::json::parse(result.stdout_text);
  EXPECT_EQ(report["completed"], 16) << report;
  EXPECT_EQ(report["lost"], 0);
  EXPECT_EQ(report["errored"], 0);
  EXPECT_TRUE(report["errors"].empty()) << report["errors"];
  EXPECT_EQ(report["total_prompt_tokens"], 16 * 16);
  EXPECT_GT(report["ttft_s"]["p50"].get<double>(), 0);
  EXPECT_GE(report["e2e_s"]["p99"].get<double>(), report["ttft_s"]["p99"].get<double>());
  EXPECT_GT(report["requests_per_s"].get<double>(), 0);
}

// scalekv needs the server's budget file: kvserve-bench leaves that to the server (this one
// has none), which refuses every request with FAILED_PRECONDITION; the report says so.
TEST_F(CliE2eTest, BenchReportsTheServersRefusalOfScaleKv) {
  const CommandResult result =
      Run({kBenchBinary, "--server", server_->address(), "--concurrency", "2", "--requests",
           "4", "--prompt-tokens", "8", "--max-tokens", "4", "--kv-policy", "scalekv:keep=0.3",
           "--json"});
  ASSERT_EQ(result.exit_code, 0) << result.stderr_text;
  const nlohmann::json report = nlohmann::json::parse(result.stdout_text);
  EXPECT_EQ(report["completed"], 0) << report;
  EXPECT_EQ(report["lost"], 0);
  EXPECT_EQ(report["errors"], (nlohmann::json{{"FAILED_PRECONDITION", 4}})) << report;
}

// In process, --scalekv-budgets gives the engine the bundled model's budget file.
TEST(BenchModelE2eTest, InProcessScaleKvWithTheBudgetFile) {
  absl::StatusOr<CommandResult> result = RunCommand(
      {kBenchBinary, "--model", kModel, "--threads", "1", "--scalekv-budgets",
       KVSERVE_SOURCE_DIR "/models/stories260K.scalekv.json", "--kv-policy", "scalekv:keep=0.3",
       "--concurrency", "2", "--requests", "4", "--prompt-tokens", "64", "--max-tokens", "16",
       "--json"},
      kCommandTimeoutS);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->exit_code, 0) << result->stderr_text;
  const nlohmann::json report = nlohmann::json::parse(result->stdout_text);
  EXPECT_EQ(report["completed"], 4) << report;
  EXPECT_EQ(report["kv_policy"], "scalekv:keep=0.3");
}

TEST_F(CliE2eTest, BenchOpenLoopCompletesEveryRequest) {
  const CommandResult result =
      Run({kBenchBinary, "--server", server_->address(), "--rate", "50", "--requests", "10",
           "--prompt-tokens", "8", "--max-tokens", "8", "--warmup", "2", "--json"});
  ASSERT_EQ(result.exit_code, 0) << result.stderr_text;
  const nlohmann::json report = nlohmann::json::parse(result.stdout_text);
  EXPECT_EQ(report["mode"], "open");
  EXPECT_EQ(report["issued"], 10);
  EXPECT_EQ(report["completed"].get<int>() + report["errored"].get<int>(), 10);
  EXPECT_EQ(report["lost"], 0);
}

// kvserve-bench --model: the same workload on the serving core in-process (no server).
TEST(BenchModelE2eTest, InProcessRunPrintsOnlyTheJsonReport) {
  absl::StatusOr<CommandResult> result = RunCommand(
      {kBenchBinary, "--model", kModel, "--threads", "1", "--weight-type", "bf16",
       "--max-running", "8", "--concurrency", "4", "--requests", "12", "--prompt-tokens", "40",
       "--shared-prefix-tokens", "32", "--max-tokens", "8", "--warmup", "1", "--json"},
      kCommandTimeoutS);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->exit_code, 0) << result->stderr_text;
  // The engine's log lines go to stderr: stdout parses as one JSON object.
  const nlohmann::json report = nlohmann::json::parse(result->stdout_text);
  EXPECT_EQ(report["completed"], 12) << report;
  EXPECT_EQ(report["lost"], 0);
  EXPECT_EQ(report["errored"], 0);
  EXPECT_EQ(report["shared_prefix_tokens"], 32);
  EXPECT_EQ(report["total_prompt_tokens"], 12 * 40);
  EXPECT_NE(report["target"].get<std::string>().find("bf16"), std::string::npos) << report;
  EXPECT_GT(report["output_tokens_per_s"].get<double>(), 0);
}

TEST(BenchModelE2eTest, UnknownWeightTypeCannotStart) {
  absl::StatusOr<CommandResult> result =
      RunCommand({kBenchBinary, "--model", kModel, "--weight-type", "f13", "--requests", "1"},
                 kCommandTimeoutS);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 2);
  EXPECT_NE(result->stderr_text.find("f13"), std::string::npos) << result->stderr_text;
  EXPECT_TRUE(result->stdout_text.empty()) << result->stdout_text;
}

TEST(BenchModelE2eTest, EngineFlagsNeedModel) {
  absl::StatusOr<CommandResult> result =
      RunCommand({kBenchBinary, "--weight-type", "f32", "--requests", "1"}, kCommandTimeoutS);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_NE(result->exit_code, 0);
  EXPECT_NE(result->stderr_text.find("--model"), std::string::npos) << result->stderr_text;
}

}  // namespace
}  // namespace kvserve::testing
