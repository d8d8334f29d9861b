// kvserve: the gRPC inference server binary.
//
//   kvserve --model models/stories260K.gguf --listen 127.0.0.1:0
//
// Prints exactly "kvserve listening on HOST:PORT" on stdout once serving (logs go to
// stderr). SIGTERM or SIGINT drains gracefully (--drain-timeout) and exits 0. Bad flags exit
// 2, a startup failure (model, address) exits 1, each with a message on stderr.
#include <signal.h>

#include <cstdio>
#include <iostream>
#include <memory>

#include "absl/status/statusor.h"
#include "engine/common/logging.h"
#include "server/grpc/kvserve_server.h"
#include "server/grpc/server_options.h"
#include "spdlog/sinks/stdout_color_sinks.h"

namespace {

// Blocks SIGINT and SIGTERM in the calling thread and every thread it starts later, so the
// main thread can take them with sigwait (no work inside a signal handler).
sigset_t BlockShutdownSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return signals;
}

}  // namespace

int main(int argc, char** argv) {
  spdlog::set_default_logger(spdlog::stderr_color_mt("kvserve"));

  const kvserve::server::ParsedCommandLine command_line =
      kvserve::server::ParseCommandLine(argc, argv);
  if (command_line.action == kvserve::server::ParsedCommandLine::Action::kExit) {
    if (command_line.exit_code == 0) {
      std::cout << command_line.message << std::flush;
    } else {
      std::cerr << command_line.message << std::endl;
    }
    return command_line.exit_code;
  }
  const kvserve::server::ServerOptions& options = command_line.options;

  // Before any thread exists (the engine and gRPC start threads), so they inherit the mask.
  const sigset_t signals = BlockShutdownSignals();

  absl::StatusOr<std::unique_ptr<kvserve::server::KvServer>> server =
      kvserve::server::KvServer::Create(options);
  if (!server.ok()) {
    std::cerr << "kvserve: " << server.status().message() << std::endl;
    return 1;
  }
  std::cout << "kvserve listening on " << (*server)->address() << std::endl;  // Flushes.

  int signal_number = 0;
  while (sigwait(&signals, &signal_number) != 0) {
  }
  KV_LOG_INFO("received {}; shutting down", signal_number == SIGTERM ? "SIGTERM" : "SIGINT");
  (*server)->Shutdown(options.drain_timeout);
  (*server)->Wait();
  return 0;
}
