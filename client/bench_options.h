// kvserve-bench's command line: the flags, what they set, and the checks that need more than
// one flag. Kept out of main() so tests can parse real argument lists. Thread-compatible.
#ifndef KVSERVE_CLIENT_BENCH_OPTIONS_H_
#define KVSERVE_CLIENT_BENCH_OPTIONS_H_

#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "client/load_generator.h"

namespace kvserve::client {

inline constexpr char kDefaultServer[] = "127.0.0.1:50051";

struct BenchOptions {
  // --server: "HOST:PORT" of a running kvserve server to load over gRPC.
  std::string server = kDefaultServer;
  // --model: run an engine in this process on this model file instead (not yet available).
  std::string model;
  // --allow-remote: permit a non-loopback --server (load goes to loopback only by default).
  bool allow_remote = false;
  // --threads: compute threads of the in-process engine; ignored with --server. 0 = default.
  int threads = 0;
  // --json: print the report as one JSON object instead of a table.
  bool json = false;
  // The workload (--concurrency, --rate, --requests, ...).
  LoadGenOptions load;
};

// Registers every kvserve-bench flag on `app`, each writing into `options`. Mutually
// exclusive pairs (--server/--model, --concurrency/--rate) are enforced by CLI11 at parse.
void AddBenchFlags(CLI::App& app, BenchOptions& options);

// Checks parsed options: UNIMPLEMENTED for --model (the in-process target is not written yet),
// INVALID_ARGUMENT for a bad server address, a non-loopback server without --allow-remote,
// or a bad workload (ValidateLoadGenOptions).
absl::Status ValidateBenchOptions(const BenchOptions& options);

}  // namespace kvserve::client

#endif  // KVSERVE_CLIENT_BENCH_OPTIONS_H_
