// kvserve-engine-bench: prefill and lockstep-decode throughput of kvserve's engine, driven
// in-process through engine::Engine::Step with no server, queue or sampling policy in the way
// (the same measurement llama_peer.mjs makes of llama.cpp). Prints JSON with --json.
//
//   kvserve-engine-bench --model FILE --weight-type auto --prompt-tokens 512
//       --max-tokens 64 --concurrency 1,16 --threads 2 --reps 3 --json
//
// Prefill: one sequence of --prompt-tokens random tokens in a single step (timed).
// Decode at concurrency C: C sequences with a 32-token prompt each (prefilled untimed), one
// untimed warm-up step, then --max-tokens steps of all C sequences in lockstep (timed);
// tokens/s counts every generated token. Each figure is measured --reps times after one
// untimed warm-up; the JSON has every sample, the median and the best.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "engine/common/status_macros.h"
#include "engine/compute/linear.h"
#include "engine/runtime/engine.h"
#include "nlohmann/json.hpp"

namespace kvserve::engine {
namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::string model;
  std::string weight_type = "auto";
  int prompt_tokens = 512;
  int max_tokens = 64;
  std::vector<int> concurrency = {1, 16};
  int decode_prompt_tokens = 32;
  int threads = 2;
  int reps = 3;
  bool json = false;
};

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

nlohmann::json Summary(std::vector<double> samples) {
  std::sort(samples.begin(), samples.end());
  return {{"median", samples[samples.size() / 2]},
          {"best", samples.back()},
          {"samples", samples}};
}

// Bytes of matrix weights one forward pass streams (every Linear, the output projection
// included; the embedding is a row lookup), in the packed type.
double WeightBytesPerToken(const ModelConfig& c, WeightType type) {
  const double q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;
  const double per_layer = c.dim * (q_dim + 2 * kv_dim) + q_dim * c.dim + 3.0 * c.dim * c.ffn_dim;
  const double params = per_layer * c.n_layers + static_cast<double>(c.vocab_size) * c.dim;
  switch (type) {
    case WeightType::kF32:
      return params * 4;
    case WeightType::kBf16:
      return params * 2;
    default:
      return params * 1;  // int8 (the per-channel scales add < 0.1%).
  }
}

class Bench {
 public:
  Bench(Engine& engine, const Options& options) : engine_(engine), options_(options) {}

  std::vector<TokenId> RandomPrompt(int n) {
    std::vector<TokenId> p = {engine_.vocab().bos_id};
    std::uniform_int_distribution<int> token(3, static_cast<int>(engine_.config().vocab_size) - 1);
    while (static_cast<int>(p.size()) < n) p.push_back(token(rng_));
    return p;
  }

  // Seconds of one prefill step of n tokens.
  absl::StatusOr<double> Prefill(int n) {
    const SequenceId id = next_id_++;
    KV_RETURN_IF_ERROR(engine_.AddSequence(id, {.prompt = RandomPrompt(n), .sampling = {}}));
    StepPlan plan;
    plan.entries.push_back({.sequence = id, .num_tokens = n});
    const Clock::time_point start = Clock::now();
    absl::StatusOr<StepResult> r = engine_.Step(plan);
    const Clock::time_point end = Clock::now();
    engine_.RemoveSequence(id);
    if (!r.ok()) return r.status();
    return Seconds(start, end);
  }

  // Generated tokens per second of `c` sequences decoding `steps` tokens in lockstep.
  absl::StatusOr<double> Decode(int c, int steps) {
    std::vector<SequenceId> ids;
    for (int i = 0; i < c; ++i) {
      ids.push_back(next_id_++);
      KV_RETURN_IF_ERROR(engine_.AddSequence(
          ids.back(), {.prompt = RandomPrompt(options_.decode_prompt_tokens), .sampling = {}}));
    }
    // Prefill (untimed), in steps that fit the engine's token budget.
    while (true) {
      StepPlan plan;
      int budget = engine_.options().max_batch_tokens;
      for (SequenceId id : ids) {
        const int take = std::min(engine_.PendingTokens(id), budget);
        if (take <= 0 || engine_.PendingTokens(id) == 1) continue;
        plan.entries.push_back({.sequence = id, .num_tokens = take});
        budget -= take;
      }
      if (plan.empty()) break;
      KV_RETURN_IF_ERROR(engine_.Step(plan).status());
    }
    StepPlan plan;
    for (SequenceId id : ids) plan.entries.push_back({.sequence = id, .num_tokens = 1});
    KV_RETURN_IF_ERROR(engine_.Step(plan).status());  // Warm-up.
    const Clock::time_point start = Clock::now();
    for (int s = 0; s < steps; ++s) KV_RETURN_IF_ERROR(engine_.Step(plan).status());
    const Clock::time_point end = Clock::now();
    for (SequenceId id : ids) engine_.RemoveSequence(id);
    return static_cast<double>(c) * steps / Seconds(start, end);
  }

 private:
  Engine& engine_;
  const Options& options_;
  std::mt19937 rng_{1234};
  SequenceId next_id_ = 1;
};

int Run(const Options& options) {
  absl::StatusOr<WeightType> type = ParseWeightType(options.weight_type);
  if (!type.ok()) {
    std::fprintf(stderr, "%s\n", std::string(type.status().message()).c_str());
    return 2;
  }
  EngineOptions eo;
  eo.model_path = options.model;
  eo.num_threads = options.threads;
  eo.weight_type = *type;
  eo.enable_prefix_cache = false;
  eo.max_batch_tokens = std::max(512, options.prompt_tokens);
  const int max_c = *std::max_element(options.concurrency.begin(), options.concurrency.end());
  eo.default_kv_sequences = std::max(2, 1 + max_c / 8);
  const Clock::time_point load_start = Clock::now();
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(eo);
  if (!engine.ok()) {
    std::fprintf(stderr, "%s\n", std::string(engine.status().message()).c_str());
    return 1;
  }
  const double load_s = Seconds(load_start, Clock::now());
  const ModelConfig& config = (*engine)->config();
  const WeightType resolved =
      ResolveWeightType(*type, (*engine)->model().weights.layers.front().wq.type);

  Bench bench(**engine, options);
  nlohmann::json out = {{"engine", "kvserve"},
                        {"model", options.model},
                        {"weight_type", std::string(WeightTypeName(resolved))},
                        {"threads", options.threads},
                        {"load_seconds", load_s},
                        {"weight_bytes_per_token", WeightBytesPerToken(config, resolved)}};
  if (options.prompt_tokens > 0) {
    std::vector<double> samples;
    for (int r = 0; r <= options.reps; ++r) {
      absl::StatusOr<double> s = bench.Prefill(options.prompt_tokens);
      if (!s.ok()) {
        std::fprintf(stderr, "prefill: %s\n", std::string(s.status().message()).c_str());
        return 1;
      }
      if (r > 0) samples.push_back(options.prompt_tokens / *s);  // r == 0 warms up.
    }
    out["prefill"] = {{"prompt_tokens", options.prompt_tokens}, {"tok_s", Summary(samples)}};
  }
  nlohmann::json decode = nlohmann::json::array();
  for (int c : options.concurrency) {
    std::vector<double> samples;
    for (int r = 0; r <= options.reps; ++r) {
      absl::StatusOr<double> s = bench.Decode(c, r == 0 ? 4 : options.max_tokens);
      if (!s.ok()) {
        std::fprintf(stderr, "decode: %s\n", std::string(s.status().message()).c_str());
        return 1;
      }
      if (r > 0) samples.push_back(*s);
    }
    decode.push_back({{"concurrency", c}, {"steps", options.max_tokens}, {"tok_s", Summary(samples)}});
  }
  out["decode"] = decode;
  if (options.json) {
    std::printf("%s\n", out.dump().c_str());
  } else {
    std::printf("%s\n", out.dump(2).c_str());
  }
  return 0;
}

}  // namespace
}  // namespace kvserve::engine

int main(int argc, char** argv) {
  kvserve::engine::Options o;
  CLI::App app("kvserve-engine-bench: in-process prefill and lockstep decode throughput");
  app.add_option("--model", o.model, "GGUF or llama2.c model file")->required();
  app.add_option("--weight-type", o.weight_type, "auto|f32|bf16|int8");
  app.add_option("--prompt-tokens", o.prompt_tokens, "prefill length (0 skips prefill)");
  app.add_option("--max-tokens", o.max_tokens, "timed decode steps per run");
  app.add_option("--concurrency", o.concurrency, "sequences decoding in lockstep")->delimiter(',');
  app.add_option("--decode-prompt-tokens", o.decode_prompt_tokens, "prompt of each decode sequence");
  app.add_option("--threads", o.threads, "compute threads (0 = all cores)");
  app.add_option("--reps", o.reps, "timed repetitions of each figure");
  app.add_flag("--json", o.json, "one-line JSON");
  CLI11_PARSE(app, argc, argv);
  return kvserve::engine::Run(o);
}
