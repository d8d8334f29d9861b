// kvserve-bench's command line: the flags, what they set, and the checks that need more than
// one flag. Kept out of main() so tests can parse real argument lists. Thread-compatible.
#ifndef KVSERVE_CLIENT_BENCH_OPTIONS_H_
#define KVSERVE_CLIENT_BENCH_OPTIONS_H_

#include <cstdint>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "client/load_generator.h"

namespace kvserve::client {

inline constexpr char kDefaultServer[] = "127.0.0.1:50051";

struct BenchOptions {
  // --server: "HOST:PORT" of a running kvserve server to load over gRPC.
  std::string server = kDefaultServer;
  // --model: run an engine in this process on this model file instead (no gRPC).
  std::string model;
  // --allow-remote: permit a non-loopback --server (load goes to loopback only by default).
  bool allow_remote = false;
  // --threads: compute threads of the in-process engine; ignored with --server. 0 = all cores.
  int threads = 0;
  // --weight-type (--model only): how the engine stores its matrices, a name
  // engine::ParseWeightType accepts ("auto", "f32", "bf16", "int8"); "" = the engine's default.
  std::string weight_type;
  // --kv-cache-mb (--model only): KV cache size in MiB; 0 = the engine sizes it.
  int64_t kv_cache_mb = 0;
  // --max-batch-tokens (--model only): token budget of one engine step.
  int max_batch_tokens = 512;
  // --max-running (--model only): sequences holding KV at once.
  int max_running = 64;
  // --scalekv-budgets (--model only): the budget file `kvserve-eval --calibrate-scalekv`
  // wrote for this model, which scalekv policies need (a server loads its own).
  std::string scalekv_budgets_path;
  // --json: print the report as one JSON object instead of a table.
  bool json = false;
  // The workload (--concurrency, --rate, --requests, ...).
  LoadGenOptions load;
};

// Registers every kvserve-bench flag on `app`, each writing into `options`. Mutually
// exclusive pairs (--server/--model, --concurrency/--rate) and the flags that only mean
// something with --model (--weight-type, --kv-cache-mb, ...) are enforced by CLI11 at parse.
void AddBenchFlags(CLI::App& app, BenchOptions& options);

// Checks parsed options: INVALID_ARGUMENT for a bad server address (without --model), a
// non-loopback server without --allow-remote, an out-of-range engine flag, or a bad workload
// (ValidateLoadGenOptions). The --weight-type name is checked where the engine is configured
// (MakeEngineTargetOptions), which knows the engine's weight types.
absl::Status ValidateBenchOptions(const BenchOptions& options);

}  // namespace kvserve::client

#endif  // KVSERVE_CLIENT_BENCH_OPTIONS_H_
