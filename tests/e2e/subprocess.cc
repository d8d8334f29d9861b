#include "tests/e2e/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"

namespace kvserve::testing {
namespace {

using Clock = std::chrono::steady_clock;

struct Spawned {
  pid_t pid = -1;
  int stdout_fd = -1;
  int stderr_fd = -1;
};

int DecodeWaitStatus(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// fork + exec rather than posix_spawn so the child can ask to be killed if this test process
// dies first (PR_SET_PDEATHSIG): a crashed or timed-out test must not leave a server behind.
absl::StatusOr<Spawned> Spawn(const std::vector<std::string>& argv) {
  if (argv.empty()) return absl::InvalidArgumentError("empty command line");
  // Everything the child needs is prepared before fork: after it only async-signal-safe calls.
  std::vector<char*> args;
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  int out[2];
  int err[2];
  int exec_error[2];  // The child writes errno here if exec fails; CLOEXEC closes it if not.
  if (pipe2(out, O_CLOEXEC) != 0) return absl::InternalError("pipe2 failed");
  if (pipe2(err, O_CLOEXEC) != 0) {
    close(out[0]);
    close(out[1]);
    return absl::InternalError("pipe2 failed");
  }
  if (pipe2(exec_error, O_CLOEXEC) != 0) {
    for (int fd : {out[0], out[1], err[0], err[1]}) close(fd);
    return absl::InternalError("pipe2 failed");
  }
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);  // The parent died before prctl took effect.
    const int null_fd = open("/dev/null", O_RDONLY);
    if (null_fd >= 0) dup2(null_fd, STDIN_FILENO);
    dup2(out[1], STDOUT_FILENO);
    dup2(err[1], STDERR_FILENO);
    execv(args[0], args.data());
    const int error = errno;
    [[maybe_unused]] ssize_t ignored = write(exec_error[1], &error, sizeof(error));
    _exit(127);
  }
  close(out[1]);
  close(err[1]);
  close(exec_error[1]);
  if (pid < 0) {
    for (int fd : {out[0], err[0], exec_error[0]}) close(fd);
    return absl::InternalError(absl::StrCat("fork failed: ", std::strerror(errno)));
  }
  int child_errno = 0;
  ssize_t n;
  do {
    n = read(exec_error[0], &child_errno, sizeof(child_errno));
  } while (n < 0 && errno == EINTR);
  close(exec_error[0]);
  if (n == static_cast<ssize_t>(sizeof(child_errno))) {
    close(out[0]);
    close(err[0]);
    waitpid(pid, nullptr, 0);
    return absl::NotFoundError(
        absl::StrCat("cannot run ", argv[0], ": ", std::strerror(child_errno)));
  }
  return Spawned{pid, out[0], err[0]};
}

// Reads whatever is available on the open fds of `fds` into `sinks`, waiting at most
// `timeout_ms`. Closes and marks (-1) fds that reach EOF.
void PumpOnce(int (&fds)[2], std::string* (&sinks)[2], int timeout_ms) {
  pollfd polls[2];
  nfds_t count = 0;
  int index_of[2];
  for (int i = 0; i < 2; ++i) {
    if (fds[i] < 0) continue;
    polls[count] = pollfd{fds[i], POLLIN, 0};
    index_of[count++] = i;
  }
  if (count == 0) return;
  if (poll(polls, count, timeout_ms) <= 0) return;
  char buffer[4096];
  for (nfds_t p = 0; p < count; ++p) {
    if (polls[p].revents == 0) continue;
    const int i = index_of[p];
    const ssize_t n = read(fds[i], buffer, sizeof(buffer));
    if (n > 0) {
      sinks[i]->append(buffer, static_cast<size_t>(n));
    } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
      close(fds[i]);
      fds[i] = -1;
    }
  }
}

std::optional<std::string> FindReadyLine(const std::string& text, const std::string& prefix) {
  size_t line_start = 0;
  while (line_start < text.size()) {
    const size_t line_end = text.find('\n', line_start);
    if (line_end == std::string::npos) return std::nullopt;  // Wait for the whole line.
    absl::string_view line(text.data() + line_start, line_end - line_start);
    if (absl::ConsumePrefix(&line, prefix)) {
      return std::string(absl::StripAsciiWhitespace(line));
    }
    line_start = line_end + 1;
  }
  return std::nullopt;
}

}  // namespace

absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                         double timeout_s) {
  absl::StatusOr<Spawned> spawned = Spawn(argv);
  if (!spawned.ok()) return spawned.status();
  CommandResult result;
  int fds[2] = {spawned->stdout_fd, spawned->stderr_fd};
  std::string* sinks[2] = {&result.stdout_text, &result.stderr_text};
  const Clock::time_point deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(
                         std::chrono::duration<double>(timeout_s));
  while (fds[0] >= 0 || fds[1] >= 0) {
    if (!result.timed_out && Clock::now() >= deadline) {
      result.timed_out = true;
      kill(spawned->pid, SIGKILL);  // Pipes then reach EOF.
    }
    PumpOnce(fds, sinks, 50);
  }
  int status = 0;
  while (waitpid(spawned->pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.exit_code = DecodeWaitStatus(status);
  return result;
}

absl::StatusOr<std::unique_ptr<SubprocessServer>> SubprocessServer::Start(
    const SubprocessServerOptions& options) {
  absl::StatusOr<Spawned> spawned = Spawn(options.argv);
  if (!spawned.ok()) return spawned.status();
  auto server = std::make_unique<SubprocessServer>(PrivateKey(), spawned->pid,
                                                   spawned->stdout_fd, spawned->stderr_fd);
  std::optional<std::string> address;
  bool closed = false;
  {
    absl::MutexLock lock(&server->mu_);
    auto ready_or_closed = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(server->mu_) {
      address = FindReadyLine(server->stdout_, options.ready_prefix);
      closed = server->output_closed_;
      return address.has_value() || closed;
    };
    server->mu_.AwaitWithTimeout(absl::Condition(&ready_or_closed),
                                 absl::Seconds(options.startup_timeout_s));
  }
  if (!address.has_value()) {
    server->Stop(5);
    const std::string why =
        closed ? "exited before announcing its address"
               : absl::StrCat("did not print \"", options.ready_prefix, "...\" within ",
                              options.startup_timeout_s, " s");
    const std::string message = absl::StrCat(options.argv[0], " ", why, " (exit code ",
                                             server->stop_result_.exit_code, "); output:\n",
                                             server->output());
    return closed ? absl::FailedPreconditionError(message)
                  : absl::DeadlineExceededError(message);
  }
  server->address_ = *address;
  return server;
}

SubprocessServer::SubprocessServer(PrivateKey, pid_t pid, int stdout_fd, int stderr_fd)
    : pid_(pid) {
  reader_ = std::thread([this, stdout_fd, stderr_fd] { ReadOutput(stdout_fd, stderr_fd); });
}

SubprocessServer::~SubprocessServer() {
  Stop(10);
  if (reader_.joinable()) reader_.join();
}

void SubprocessServer::ReadOutput(int stdout_fd, int stderr_fd) {
  int fds[2] = {stdout_fd, stderr_fd};
  std::string chunks[2];
  std::string* sinks[2] = {&chunks[0], &chunks[1]};
  while (fds[0] >= 0 || fds[1] >= 0) {
    PumpOnce(fds, sinks, 100);
    if (chunks[0].empty() && chunks[1].empty()) continue;
    absl::MutexLock lock(&mu_);
    stdout_ += chunks[0];
    stderr_ += chunks[1];
    chunks[0].clear();
    chunks[1].clear();
  }
  absl::MutexLock lock(&mu_);
  output_closed_ = true;
}

SubprocessServer::StopResult SubprocessServer::Stop(double timeout_s) {
  if (stopped_) return stop_result_;
  stopped_ = true;
  kill(pid_, SIGTERM);
  const Clock::time_point deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(
                         std::chrono::duration<double>(timeout_s));
  int status = 0;
  pid_t waited = 0;
  while ((waited = waitpid(pid_, &status, WNOHANG)) == 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (waited == 0) {
    kill(pid_, SIGKILL);
    stop_result_.killed = true;
    while ((waited = waitpid(pid_, &status, 0)) < 0 && errno == EINTR) {
    }
  }
  stop_result_.exit_code = waited == pid_ ? DecodeWaitStatus(status) : -1;
  if (reader_.joinable()) reader_.join();
  return stop_result_;
}

std::string SubprocessServer::output() {
  absl::MutexLock lock(&mu_);
  return absl::StrCat("--- stdout ---\n", stdout_, "--- stderr ---\n", stderr_);
}

}  // namespace kvserve::testing
