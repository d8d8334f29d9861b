#include "tests/e2e/subprocess.h"

#include <signal.h>

#include <chrono>
#include <string>

#include "gtest/gtest.h"

namespace kvserve::testing {
namespace {

constexpr char kShell[] = "/bin/sh";

TEST(RunCommandTest, CapturesOutputAndExitCode) {
  absl::StatusOr<CommandResult> result =
      RunCommand({kShell, "-c", "echo out; echo err >&2; exit 3"}, 30);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 3);
  EXPECT_FALSE(result->timed_out);
  EXPECT_EQ(result->stdout_text, "out\n");
  EXPECT_EQ(result->stderr_text, "err\n");
}

TEST(RunCommandTest, KillsACommandPastItsTimeout) {
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<CommandResult> result = RunCommand({kShell, "-c", "exec sleep 30"}, 0.2);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->timed_out);
  EXPECT_EQ(result->exit_code, 128 + SIGKILL);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
}

TEST(RunCommandTest, MissingProgramIsNotFound) {
  EXPECT_EQ(RunCommand({"/nonexistent/program"}, 5).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(SubprocessServerTest, ReadsTheAddressAndStopsWithSigterm) {
  SubprocessServerOptions options;
  options.argv = {kShell, "-c",
                  "echo starting; echo 'kvserve listening on 127.0.0.1:4321'; exec sleep 30"};
  absl::StatusOr<std::unique_ptr<SubprocessServer>> server = SubprocessServer::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_EQ((*server)->address(), "127.0.0.1:4321");
  const SubprocessServer::StopResult stopped = (*server)->Stop(10);
  EXPECT_FALSE(stopped.killed);
  EXPECT_EQ(stopped.exit_code, 128 + SIGTERM);
  EXPECT_NE((*server)->output().find("starting"), std::string::npos);
}

TEST(SubprocessServerTest, ChildExitingEarlyIsReportedWithItsOutput) {
  SubprocessServerOptions options;
  options.argv = {kShell, "-c", "echo 'model not found' >&2; exit 1"};
  absl::StatusOr<std::unique_ptr<SubprocessServer>> server = SubprocessServer::Start(options);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(server.status().message().find("model not found"), absl::string_view::npos)
      << server.status();
}

TEST(SubprocessServerTest, SilentChildTimesOut) {
  SubprocessServerOptions options;
  options.argv = {kShell, "-c", "exec sleep 30"};
  options.startup_timeout_s = 0.2;
  absl::StatusOr<std::unique_ptr<SubprocessServer>> server = SubprocessServer::Start(options);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kDeadlineExceeded);
}

}  // namespace
}  // namespace kvserve::testing
