// KV-cache policy quality evaluation (the library behind kvserve-eval): a corpus sampled from
// the model itself, teacher-forced decoding with a policy applied online compared with the full
// cache on identical text (ΔPPL, KL, top-1 agreement), greedy continuations compared token by
// token, KV bytes and time to first token, with bootstrap confidence intervals.
//
// Thread-safety: the functions taking an Engine use it from the calling thread only (the
// engine's own rule: one engine thread); everything else is pure.
#ifndef KVSERVE_TOOLS_KV_EVAL_H_
#define KVSERVE_TOOLS_KV_EVAL_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/model/vocab.h"
#include "engine/runtime/engine.h"
#include "nlohmann/json.hpp"

namespace kvserve::tools {

// One corpus line: the sampling seed and the tokens (BOS first).
struct CorpusSequence {
  uint64_t seed = 0;
  std::vector<engine::TokenId> tokens;
};

struct CorpusOptions {
  int32_t sequences = 200;     // Number of sequences; sequence i (0-based) uses seed first_seed+i.
  uint64_t first_seed = 1;     // Seed of the first sequence.
  int32_t tokens = 416;        // Tokens per sequence, BOS included (< the context length).
  float temperature = 1.0f;    // Sampling temperature.
  float top_p = 0.95f;         // Nucleus sampling threshold.
  int32_t batch = 32;          // Sequences sampled together (no effect on the output).
};

// Engine options for the evaluation: one engine thread (the machine is shared and the model is
// tiny), no prefix cache, f32 weights, KV room for `batch` corpus sequences at once (four
// engine sequences each: teacher-forced and greedy, policy and full).
engine::EngineOptions EvalEngineOptions(const std::string& model_path, int32_t batch);

// Samples a corpus from the engine's model, each sequence from BOS alone.
absl::StatusOr<std::vector<CorpusSequence>> MakeCorpus(engine::Engine& engine,
                                                       const CorpusOptions& options);

// JSON lines: {"seed":S,"tokens":[...]} per sequence.
std::string CorpusToJsonLines(absl::Span<const CorpusSequence> corpus);
// Parses CorpusToJsonLines output; INVALID_ARGUMENT naming the line on malformed input.
absl::StatusOr<std::vector<CorpusSequence>> ParseCorpus(std::string_view text);
// Reads and parses a corpus file (NOT_FOUND if it cannot be read).
absl::StatusOr<std::vector<CorpusSequence>> ReadCorpus(const std::string& path);

// KV storage types the evaluation accepts: "f32", "bf16", "int8"; anything else
// INVALID_ARGUMENT naming the choices.
absl::Status CheckKvDtype(std::string_view kv_dtype);

struct EvalOptions {
  std::string policy_spec = "full";  // KV policy spec (engine/policy/kv_policy.h).
  engine::KvPolicyContext policy_context;  // ScaleKV's layer roles, if any.
  std::string kv_dtype = "f32";      // KV storage type of the policy sequences.
  int32_t sequences = 200;           // Corpus sequences used (the first N).
  int32_t prompt_tokens = 16;        // Corpus tokens prefilled; the rest are teacher forced.
  int32_t greedy_tokens = -1;        // Greedy continuation length; -1 = as many as forced.
  uint64_t policy_seed = 1;          // Keyformer noise seed = policy_seed * 1e6 + corpus seed.
  int32_t batch = 32;                // Corpus sequences evaluated together (no effect on output).
  int32_t bootstrap_samples = 1000;  // Resamples for the 95% CIs; 0 = no CIs.
  uint64_t bootstrap_seed = 12345;   // Seed of the bootstrap resampling.
};

// A point estimate with its percentile-bootstrap 95% interval (lo == hi == value without CIs).
struct Estimate {
  double value = 0;
  double lo = 0;
  double hi = 0;
};

struct EvalResult {
  std::string policy;             // Canonical spec.
  std::string policy_name;        // "keyformer", ...
  double keep = 1.0;              // The policy's keep fraction (1 for full).
  std::string kv_dtype;
  int32_t sequences = 0;
  int32_t prompt_tokens = 0;
  uint64_t policy_seed = 0;
  int64_t scored_tokens = 0;      // Teacher-forced positions compared, over all sequences.
  double ppl_full = 0;
  double ppl_policy = 0;
  Estimate delta_ppl;             // PPL_policy / PPL_full - 1, in percent.
  Estimate mean_kl;               // Mean KL(p_full || p_policy) per token, nats.
  Estimate top1_agreement;        // Fraction of positions with the same argmax.
  // Mean over positions and layers of the share of the full cache's last-query attention in
  // that layer (mean over heads) that falls on the tokens the policy's cache held there when
  // it attended.
  double retained_attention_mass = 0;
  // Share of sequences whose first scored token (predicted from the prefill alone: what
  // LazyLLM changes) has the full cache's argmax.
  double first_token_agreement = 0;
  double first_divergence = 0;    // Mean greedy tokens before the first difference.
  double diverged_fraction = 0;   // Greedy pairs that differed within greedy_tokens.
  int32_t greedy_tokens = 0;
  double kv_bytes_per_sequence = 0;       // Policy sequence at the end, mean.
  double kv_bytes_full_per_sequence = 0;  // Full-cache sequence at the end, mean.
  double kv_slots_per_sequence = 0;       // Live slots of the policy sequence at the end.
  double ttft_s = 0;              // Mean prefill wall time of the policy sequence alone.
  double ttft_full_s = 0;         // Same for the full cache.
  double wall_s = 0;              // Wall time of the whole evaluation.
};

// Evaluates one policy over the first options.sequences of `corpus`. The full-cache reference
// runs on `engine` (f32 KV with EvalEngineOptions); the policy sequences run with KV stored as
// options.kv_dtype, on `engine` when its KV already has that type, else on a second engine
// created with `engine`'s options and that type. INVALID_ARGUMENT for a bad spec or storage
// type, a corpus too short for the prompt, or too few sequences.
absl::StatusOr<EvalResult> EvaluatePolicy(engine::Engine& engine,
                                          absl::Span<const CorpusSequence> corpus,
                                          const EvalOptions& options);

// The fixed grid: full, then {window, h2o, keyformer, snapkv} x keep {1, 0.5, 0.3, 0.2, 0.1}.
std::vector<std::string> GridSpecs();

// The share of `full_attention` (one query's attention over positions 0..n-1) on the `kept`
// positions (distinct, each < n).
double RetainedAttentionMass(absl::Span<const float> full_attention,
                             absl::Span<const int32_t> kept);

nlohmann::json ToJson(const EvalResult& result);
// One markdown table row per result, with a header.
std::string MarkdownTable(absl::Span<const EvalResult> results);

// Mean and sample standard deviation (sd 0 for fewer than 2 values).
struct MeanSd {
  double mean = 0;
  double sd = 0;
};
MeanSd MeanAndSd(absl::Span<const double> values);

}  // namespace kvserve::tools

#endif  // KVSERVE_TOOLS_KV_EVAL_H_
