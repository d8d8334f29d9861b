// Test helpers that run real binaries: RunCommand() runs a program to completion and captures
// its output; SubprocessServer starts a long-running server, waits for the stdout line that
// announces its address, and stops it with SIGTERM (SIGKILL if it does not exit in time).
//
// Both spawn with posix_spawn (no shell), give the child /dev/null as stdin and pipes as
// stdout/stderr, and always reap the child. Thread-compatible: use each object from one
// thread (SubprocessServer's internal reader thread is private to it).
#ifndef KVSERVE_TESTS_E2E_SUBPROCESS_H_
#define KVSERVE_TESTS_E2E_SUBPROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace kvserve::testing {

struct CommandResult {
  int exit_code = -1;       // Exit status, or 128 + signal number if killed by a signal.
  bool timed_out = false;   // The command was killed for running past its timeout.
  std::string stdout_text;  // Everything written to stdout.
  std::string stderr_text;  // Everything written to stderr.
};

// Runs argv[0] (a path, not searched in PATH) with argv[1..] and waits for it, killing it with
// SIGKILL after `timeout_s`. Fails only if the process cannot be started.
absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv, double timeout_s);

struct SubprocessServerOptions {
  // Program path and arguments.
  std::vector<std::string> argv;
  // Start-up is complete when stdout has a line starting with this; the rest of the line is
  // the server's address.
  std::string ready_prefix = "kvserve listening on ";
  // Give up (and kill the child) if the line has not appeared after this many seconds.
  double startup_timeout_s = 60;
};

class SubprocessServer {
 public:
  // Starts the server and waits for its ready line. DEADLINE_EXCEEDED if it does not come in
  // time, FAILED_PRECONDITION if the child exits first; both messages include its output.
  static absl::StatusOr<std::unique_ptr<SubprocessServer>> Start(
      const SubprocessServerOptions& options);

  // Stops the server (as Stop(10)) if it is still running.
  ~SubprocessServer();
  SubprocessServer(const SubprocessServer&) = delete;
  SubprocessServer& operator=(const SubprocessServer&) = delete;

  // The address from the ready line, e.g. "127.0.0.1:40123".
  const std::string& address() const { return address_; }
  pid_t pid() const { return pid_; }

  // Sends SIGTERM, waits up to `timeout_s` for the exit, then SIGKILLs. Returns the exit code
  // (128 + signal if killed by one) and whether SIGKILL was needed. Idempotent: later calls
  // return the first result.
  struct StopResult {
    int exit_code = -1;
    bool killed = false;
  };
  StopResult Stop(double timeout_s);

  // Everything the server wrote to stdout and stderr so far (for failure messages).
  std::string output();

  // Use Start(); public only for std::make_unique.
  class PrivateKey {
    friend class SubprocessServer;
    PrivateKey() = default;
  };
  SubprocessServer(PrivateKey, pid_t pid, int stdout_fd, int stderr_fd);

 private:
  void ReadOutput(int stdout_fd, int stderr_fd);

  const pid_t pid_;
  std::string address_;
  bool stopped_ = false;
  StopResult stop_result_;
  std::thread reader_;

  absl::Mutex mu_;
  std::string stdout_ ABSL_GUARDED_BY(mu_);
  std::string stderr_ ABSL_GUARDED_BY(mu_);
  bool output_closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace kvserve::testing

#endif  // KVSERVE_TESTS_E2E_SUBPROCESS_H_
