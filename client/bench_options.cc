#include "client/bench_options.h"

#include "absl/strings/str_cat.h"
#include "client/server_address.h"

namespace kvserve::client {

void AddBenchFlags(CLI::App& app, BenchOptions& options) {
  LoadGenOptions& load = options.load;
  CLI::Option* server =
      app.add_option("--server", options.server, "HOST:PORT of a running kvserve server")
          ->capture_default_str();
  CLI::Option* model = app.add_option(
      "--model", options.model,
      "Model file (GGUF or llama2.c) for an in-process engine instead of --server: the same "
      "serving core with no gRPC");
  server->excludes(model);
  model->excludes(server);
  app.add_flag("--allow-remote", options.allow_remote,
               "Allow a --server that is not a loopback address");
  app.add_option("--threads", options.threads,
                 "Compute threads of the in-process engine, 0 = all cores (--model only; "
                 "ignored with --server)");
  app.add_option("--weight-type", options.weight_type,
                 "--model: weight storage of the engine: auto|f32|bf16|int8 (default: the "
                 "engine's)")
      ->needs(model);
  app.add_option("--kv-cache-mb", options.kv_cache_mb,
                 "--model: KV cache size in MiB (0 = sized by the engine)")
      ->capture_default_str()
      ->needs(model);
  app.add_option("--max-batch-tokens", options.max_batch_tokens,
                 "--model: token budget of one engine step")
      ->capture_default_str()
      ->needs(model);
  app.add_option("--max-running", options.max_running,
                 "--model: sequences holding KV at once")
      ->capture_default_str()
      ->needs(model);
  app.add_option("--scalekv-budgets", options.scalekv_budgets_path,
                 "--model: ScaleKV budget file of this model (kvserve-eval --calibrate-scalekv), "
                 "needed by --kv-policy scalekv")
      ->needs(model);
  app.add_flag("--json", options.json, "Print the report as one JSON object");

  CLI::Option* concurrency =
      app.add_option("--concurrency,-c", load.concurrency,
                     "Closed loop: requests kept in flight, each worker issuing its next "
                     "request when the previous finishes")
          ->capture_default_str();
  CLI::Option* rate = app.add_option(
      "--rate", load.rate, "Open loop: Poisson arrivals per second (instead of --concurrency)");
  concurrency->excludes(rate);
  rate->excludes(concurrency);
  app.add_option("--max-in-flight", load.max_in_flight,
                 "Open loop: cap on requests in flight; later arrivals wait")
      ->capture_default_str();
  app.add_option("--requests,-n", load.requests, "Measured requests to issue (0 = no bound)");
  app.add_option("--duration", load.duration_s,
                 "Seconds to keep issuing measured requests (0 = no bound)");
  app.add_option("--prompt-tokens", load.prompt_tokens,
                 "Exact prompt length: random token ids in [3, vocab)")
      ->capture_default_str();
  app.add_option("--shared-prefix-tokens", load.shared_prefix_tokens,
                 "The first N prompt ids are the same in every request (a shared system "
                 "prompt, for prefix caching); the rest stay random. <= --prompt-tokens")
      ->capture_default_str();
  app.add_option("--max-tokens", load.max_tokens, "max_tokens of every request")
      ->capture_default_str();
  app.add_option("--temperature", load.temperature, "Sampling temperature (0 = greedy)")
      ->capture_default_str();
  app.add_option("--seed", load.seed, "Seed of prompts, sampling and arrivals")
      ->capture_default_str();
  app.add_option("--warmup", load.warmup_requests, "Unmeasured requests to run first")
      ->capture_default_str();
  app.add_option("--timeout", load.timeout_s, "Deadline of each request in seconds")
      ->capture_default_str();
  app.add_option("--kv-policy", load.kv_policy,
                 "KV policy spec of every request, e.g. lazyllm or h2o:keep=0.5 (default: the "
                 "server's / engine's default)");
}

absl::Status ValidateBenchOptions(const BenchOptions& options) {
  if (options.model.empty()) {
    absl::StatusOr<ServerAddress> address = ParseServerAddress(options.server);
    if (!address.ok()) return address.status();
    if (!options.allow_remote && !IsLoopbackHost(address->host)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--server ", options.server,
          " is not a loopback address; kvserve-bench loads only local servers unless "
          "--allow-remote is given"));
    }
  }
  if (options.threads < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--threads must be >= 0, got ", options.threads));
  }
  if (options.kv_cache_mb < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--kv-cache-mb must be >= 0, got ", options.kv_cache_mb));
  }
  if (options.max_batch_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max-batch-tokens must be >= 1, got ", options.max_batch_tokens));
  }
  if (options.max_running < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max-running must be >= 1, got ", options.max_running));
  }
  return ValidateLoadGenOptions(options.load);
}

}  // namespace kvserve::client
