// Integration: the `kvserve` binary itself (server/main.cc) as an operator runs it: the
// "listening" line on stdout, serving over loopback, graceful exit 0 on SIGTERM/SIGINT, and
// exit codes and messages for bad flags and startup failures.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvserve/v1/kvserve.grpc.pb.h"
#include "tests/integration/test_client.h"

namespace kvserve {
namespace {

using ::testing::HasSubstr;

const std::string kBinary = std::string(KVSERVE_BINARY_DIR) + "/kvserve";
const std::string kModel = std::string(KVSERVE_SOURCE_DIR) + "/models/stories260K.gguf";

std::string ReadFileForTest(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A kvserve child process with its stdout and stderr on pipes. Killed if still running when
// destroyed.
class Child {
 public:
  explicit Child(const std::vector<std::string>& args) {
    int out[2], err[2];
    if (pipe(out) != 0 || pipe(err) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], STDOUT_FILENO);
      dup2(err[1], STDERR_FILENO);
      close(out[0]);
      close(err[0]);
      std::vector<char*> argv;
      argv.push_back(const_cast<char*>(kBinary.c_str()));
      for (const std::string& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
      argv.push_back(nullptr);
      execv(kBinary.c_str(), argv.data());
      _exit(127);
    }
    close(out[1]);
    close(err[1]);
    stdout_fd_ = out[0];
    stderr_fd_ = err[0];
  }
  ~Child() {
    if (pid_ > 0 && !exit_status_.has_value()) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (stdout_fd_ >= 0) close(stdout_fd_);
    if (stderr_fd_ >= 0) close(stderr_fd_);
  }

  bool started() const { return pid_ > 0; }
  void Signal(int signal_number) { kill(pid_, signal_number); }

  // The first line on stdout, waiting up to `timeout`.
  std::optional<std::string> ReadStdoutLine(absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (true) {
      const size_t newline = stdout_.find('\n');
      if (newline != std::string::npos) return stdout_.substr(0, newline);
      if (!ReadSome(stdout_fd_, &stdout_, deadline)) return std::nullopt;
    }
  }

  // Waits for exit (up to `timeout`) and collects the rest of stdout and stderr. The exit
  // code, or nullopt if it did not exit normally in time.
  std::optional<int> WaitExit(absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (ReadSome(stdout_fd_, &stdout_, deadline)) {
    }
    while (ReadSome(stderr_fd_, &stderr_, deadline)) {
    }
    while (absl::Now() < deadline) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        exit_status_ = status;
        if (WIFEXITED(status)) return WEXITSTATUS(status);
        return std::nullopt;
      }
      absl::SleepFor(absl::Milliseconds(10));
    }
    return std::nullopt;
  }

  const std::string& stdout_text() const { return stdout_; }
  const std::string& stderr_text() const { return stderr_; }

 private:
  // Appends what `fd` has; false at end of file or when `deadline` passed.
  static bool ReadSome(int fd, std::string* into, absl::Time deadline) {
    const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (ms <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(ms)) <= 0) return false;
    char buffer[4096];
    const ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n <= 0) return false;
    into->append(buffer, static_cast<size_t>(n));
    return true;
  }

  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  int stderr_fd_ = -1;
  std::string stdout_;
  std::string stderr_;
  std::optional<int> exit_status_;
};

class KvserveBinaryTest : public ::testing::TestWithParam<int> {};

TEST_P(KvserveBinaryTest, ServesThenExitsZeroOnSignal) {
  Child child({"--model", kModel, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--threads", "1"});
  ASSERT_TRUE(child.started());
  const std::optional<std::string> line = child.ReadStdoutLine(absl::Seconds(60));
  ASSERT_TRUE(line.has_value()) << "no listening line; stderr: " << child.stderr_text();
  std::smatch match;
  ASSERT_TRUE(std::regex_match(*line, match, std::regex("kvserve listening on (127\\.0\\.0\\.1:[0-9]+)")))
      << *line;
  const std::string address = match[1];

  {
    auto stub = v1::Inference::NewStub(testing::Connect(address));
    v1::GenerationParams params;
    params.set_prompt("Once upon a time");
    params.set_max_tokens(8);
    const testing::CompleteResult result = testing::Complete(*stub, params);
    ASSERT_TRUE(result.status.ok()) << result.status.error_message();
    EXPECT_EQ(result.response.token_ids_size(), 8);
  }

  child.Signal(GetParam());
  const std::optional<int> code = child.WaitExit(absl::Seconds(60));
  ASSERT_TRUE(code.has_value()) << child.stderr_text();
  EXPECT_EQ(*code, 0) << child.stderr_text();
  // stdout has exactly the one line; logs went to stderr.
  EXPECT_EQ(child.stdout_text(), *line + "\n");
  EXPECT_THAT(child.stderr_text(), HasSubstr("shutting down"));
}

INSTANTIATE_TEST_SUITE_P(Signals, KvserveBinaryTest, ::testing::Values(SIGTERM, SIGINT),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return info.param == SIGTERM ? std::string("sigterm")
                                                        : std::string("sigint");
                         });

TEST(KvserveBinaryExitTest, HelpExitsZero) {
  Child child({"--help"});
  ASSERT_TRUE(child.started());
  EXPECT_EQ(child.WaitExit(absl::Seconds(30)), 0);
  EXPECT_THAT(child.stdout_text(), HasSubstr("--model"));
}

TEST(KvserveBinaryExitTest, BadFlagExitsNonzeroNamingIt) {
  Child child({"--model", kModel, "--threads", "lots"});
  ASSERT_TRUE(child.started());
  const std::optional<int> code = child.WaitExit(absl::Seconds(30));
  ASSERT_TRUE(code.has_value());
  EXPECT_NE(*code, 0);
  EXPECT_THAT(child.stderr_text(), HasSubstr("--threads"));
  EXPECT_EQ(child.stdout_text(), "");
}

TEST(KvserveBinaryExitTest, MissingModelExitsOneNamingThePath) {
  Child child({"--model", "/no/such/model.gguf", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"});
  ASSERT_TRUE(child.started());
  EXPECT_EQ(child.WaitExit(absl::Seconds(30)), 1);
  EXPECT_THAT(child.stderr_text(), HasSubstr("/no/such/model.gguf"));
  EXPECT_EQ(child.stdout_text(), "");
}

TEST(KvserveBinaryExitTest, TruncatedModelExitsOneNamingThePath) {
  // The first 40% of the real model: a valid header whose tensors run past the end.
  const std::string truncated = ::testing::TempDir() + "/truncated_" + std::to_string(getpid()) +
                                ".gguf";
  {
    const std::string model = ReadFileForTest(kModel);
    ASSERT_GT(model.size(), 1000u);
    std::ofstream(truncated, std::ios::binary) << model.substr(0, model.size() * 2 / 5);
  }
  Child child({"--model", truncated, "--listen", "127.0.0.1:0", "--metrics-listen", ""});
  ASSERT_TRUE(child.started());
  EXPECT_EQ(child.WaitExit(absl::Seconds(30)), 1) << child.stderr_text();
  EXPECT_THAT(child.stderr_text(), HasSubstr(truncated));
  EXPECT_EQ(child.stdout_text(), "");
}

TEST(KvserveBinaryExitTest, CorruptModelExitsOneNamingThePath) {
  // The real model with its GGUF magic and version intact but the tensor and metadata counts
  // (bytes 8-23) overwritten with 0xFF: a header that promises far more than the file holds.
  const std::string corrupt = ::testing::TempDir() + "/corrupt_" + std::to_string(getpid()) +
                              ".gguf";
  {
    std::string model = ReadFileForTest(kModel);
    ASSERT_GT(model.size(), 1000u);
    ASSERT_EQ(model.substr(0, 4), "GGUF");
    for (size_t i = 8; i < 24; ++i) model[i] = '\xff';
    std::ofstream(corrupt, std::ios::binary) << model;
  }
  Child child({"--model", corrupt, "--listen", "127.0.0.1:0", "--metrics-listen", ""});
  ASSERT_TRUE(child.started());
  EXPECT_EQ(child.WaitExit(absl::Seconds(30)), 1) << child.stderr_text();
  EXPECT_THAT(child.stderr_text(), HasSubstr(corrupt));
  EXPECT_EQ(child.stdout_text(), "");
  std::remove(corrupt.c_str());
}

TEST(KvserveBinaryExitTest, PortInUseExitsOneNamingTheAddress) {
  const int holder = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(holder, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(holder, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(listen(holder, 1), 0);
  socklen_t length = sizeof(address);
  ASSERT_EQ(getsockname(holder, reinterpret_cast<sockaddr*>(&address), &length), 0);
  const std::string listen_address = "127.0.0.1:" + std::to_string(ntohs(address.sin_port));
  Child child({"--model", kModel, "--listen", listen_address, "--metrics-listen", ""});
  ASSERT_TRUE(child.started());
  EXPECT_EQ(child.WaitExit(absl::Seconds(60)), 1) << child.stderr_text();
  EXPECT_THAT(child.stderr_text(), HasSubstr("cannot listen on " + listen_address));
  close(holder);
}

TEST(KvserveBinaryExitTest, UnreadableTlsCertificateExitsOneNamingIt) {
  Child child({"--model", kModel, "--listen", "127.0.0.1:0", "--metrics-listen", "",
               "--tls-cert", "/no/such/cert.pem", "--tls-key", "/no/such/key.pem"});
  ASSERT_TRUE(child.started());
  EXPECT_EQ(child.WaitExit(absl::Seconds(30)), 1) << child.stderr_text();
  EXPECT_THAT(child.stderr_text(), HasSubstr("--tls-cert: cannot read '/no/such/cert.pem'"));
}

TEST(KvserveBinaryTest, SigtermDrainsARequestInFlight) {
  Child child({"--model", kModel, "--listen", "127.0.0.1:0", "--metrics-listen", "",
               "--threads", "1", "--drain-timeout", "60"});
  ASSERT_TRUE(child.started());
  const std::optional<std::string> line = child.ReadStdoutLine(absl::Seconds(60));
  ASSERT_TRUE(line.has_value()) << child.stderr_text();
  const std::string address = line->substr(line->rfind(' ') + 1);
  auto stub = v1::Inference::NewStub(testing::Connect(address));

  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  v1::GenerateRequest request;
  request.mutable_params()->set_prompt("Once upon a time");
  request.mutable_params()->set_max_tokens(400);
  auto reader = stub->Generate(&context, request);
  v1::GenerateResponse chunk;
  ASSERT_TRUE(reader->Read(&chunk));  // In flight now.
  int tokens = chunk.token_ids_size();
  child.Signal(SIGTERM);
  while (reader->Read(&chunk)) tokens += chunk.token_ids_size();
  const grpc::Status status = reader->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(tokens, 400);
  EXPECT_EQ(child.WaitExit(absl::Seconds(60)), 0) << child.stderr_text();
}

}  // namespace
}  // namespace kvserve
