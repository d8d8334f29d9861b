// Engine: the facade of kvserve's engine. Loads a model, owns the compute device, the paged
// KV cache and every live sequence, and runs one ragged batch per Step().
//
// Thread-safety: Create() and the const accessors (config, tokenizer, model) are safe from
// any thread once Create returned. Everything else is engine-thread-only (the single thread
// that also calls oneDNN): no locks inside.
#ifndef KVSERVE_ENGINE_RUNTIME_ENGINE_H_
#define KVSERVE_ENGINE_RUNTIME_ENGINE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/compute/device.h"
#include "engine/compute/linear.h"
#include "engine/model/model_file.h"
#include "engine/policy/kv_policy.h"
#include "engine/runtime/kv_dtype.h"
#include "engine/runtime/model_runner.h"
#include "engine/runtime/step.h"
#include "engine/sampling/sampler.h"
#include "engine/tokenizer/bpe_tokenizer.h"

namespace kvserve::engine {

struct EngineOptions {
  std::string model_path;          // GGUF file or llama2.c checkpoint.
  std::string tokenizer_path;      // llama2.c only: tokenizer .bin (default: beside the model).
  DeviceKind device = DeviceKind::kCpu;
  int num_threads = 0;             // oneDNN/OpenMP threads of the engine thread; 0 = all cores.
  WeightType weight_type = WeightType::kF32;  // Storage of the matrices on the device.
  int kv_block_size = 16;          // Tokens per KV block.
  KvDtype kv_dtype = KvDtype::kF32;  // Storage type of the KV cache (engine/runtime/kv_dtype.h).
  // KV cache capacity in bytes; 0 = room for `default_kv_sequences` full contexts.
  int64_t kv_cache_bytes = 0;
  int default_kv_sequences = 8;
  int max_batch_tokens = 512;      // Largest number of tokens one Step may process.
  bool enable_prefix_cache = true; // Share KV blocks of identical prompt prefixes.
};

// Cumulative counters of the engine (for metrics).
struct EngineStats {
  int64_t prefix_cache_query_tokens = 0;  // Prompt tokens looked up in the prefix cache.
  int64_t prefix_cache_hit_tokens = 0;    // Of those, tokens whose KV was reused.
  int64_t computed_tokens = 0;            // Tokens run through the model.
  // Token x layer units actually computed: computed_tokens x layers, less what LazyLLM pruned.
  int64_t computed_token_layers = 0;
  // Tokens evicted by KV policies, by policy name.
  absl::flat_hash_map<std::string, int64_t> evicted_tokens_by_policy;
};

// What a new sequence asks for.
struct SequenceSpec {
  std::vector<TokenId> prompt;     // Non-empty, shorter than the context length.
  SamplingParams sampling;         // Validated.
  // KV compression policy (see engine/policy/kv_policy.h); null or "full" = keep everything.
  std::shared_ptr<const KvPolicy> kv_policy;
  int32_t max_new_tokens = 256;    // The request's generation budget (policy schedules).
  // Evaluation only (costs one extra pass over the keys per step): track each live slot's
  // original position and the last query's attention (SlotPositions, LastQueryAttention).
  bool record_attention = false;
};

class Engine {
 public:
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const EngineOptions& options);
  ~Engine();

  const ModelConfig& config() const;
  const Vocab& vocab() const;
  const BpeTokenizer& tokenizer() const;
  const ModelFile& model() const;
  const Device& device() const;
  const EngineOptions& options() const;
  int64_t parameter_count() const;
  // The weight type the matrices were packed in (EngineOptions::weight_type, kAuto resolved).
  WeightType weight_type() const;

  // --- Engine thread only ------------------------------------------------------------------
  // Registers a sequence. KV blocks are allocated when it is stepped, except that full blocks
  // of its prompt prefix found in the prefix cache are shared at once (their tokens do not
  // become pending).
  // INVALID_ARGUMENT for an empty or too long prompt or out-of-range token ids.
  absl::Status AddSequence(SequenceId id, SequenceSpec spec);
  // Forgets a sequence and frees its KV blocks. Unknown ids are ignored.
  void RemoveSequence(SequenceId id);
  // Frees a sequence's KV but keeps its tokens (prompt + generated so far); the next steps
  // recompute them (preemption by recomputation). Its sampler state is kept, so it continues
  // exactly as it would have. Policy and LazyLLM state restart (a lazy sequence prunes its
  // prompt again the same way when its prompt is recomputed in the same chunks).
  void Preempt(SequenceId id);

  // Teacher forcing: replaces the token just sampled for `id` (not yet computed) by `token`,
  // so the next step feeds `token` instead. FAILED_PRECONDITION unless exactly the last
  // sampled token is pending; INVALID_ARGUMENT for an id outside the vocabulary.
  absl::Status ForceNextToken(SequenceId id, TokenId token);

  // Tokens of `id` not yet in the KV cache (prompt chunks left, or the last sampled token).
  int32_t PendingTokens(SequenceId id) const;
  // Tokens (prompt + generated) of the sequence so far.
  int32_t TotalTokens(SequenceId id) const;
  // KV blocks (one layer each, kv_cache.h) that processing `n` more tokens of `id` needs
  // beyond what it holds.
  int64_t BlocksNeeded(SequenceId id, int32_t n) const;
  // Live KV slots of `id` (its tokens in the cache after any eviction), averaged over layers
  // and rounded up; and in one layer (per-layer policies keep different counts).
  int32_t KvSlots(SequenceId id) const;
  int32_t KvSlots(SequenceId id, int64_t layer) const;
  // Bytes `id` holds: its KV blocks plus its policy's per-slot scores and LazyLLM state
  // (depths and the aux store of pruned tokens' hidden states).
  int64_t SequenceKvBytes(SequenceId id) const;
  // With SequenceSpec::record_attention (else empty): the original position of each live slot,
  // and the attention of the last query of the latest step that sampled for `id` (softmax
  // over the slots it saw, averaged over heads and layers, so it sums to 1), one per slot.
  // Without a layer: layer 0's slots and the layer average by slot, which is meaningful only
  // for layer-shared policies; per-layer policies need the per-layer forms (each layer's
  // own slots, its attention averaged over heads).
  absl::Span<const int32_t> SlotPositions(SequenceId id) const;
  absl::Span<const float> LastQueryAttention(SequenceId id) const;
  absl::Span<const int32_t> SlotPositions(SequenceId id, int64_t layer) const;
  absl::Span<const float> LastQueryAttention(SequenceId id, int64_t layer) const;
  // Prompt tokens of `id` whose KV came from the prefix cache.
  int32_t CachedPromptTokens(SequenceId id) const;
  const EngineStats& stats() const { return stats_; }
  int64_t free_kv_blocks() const;
  int64_t total_kv_blocks() const;
  int64_t kv_block_bytes() const;

  // Runs one forward pass over `plan` (each entry's next `num_tokens` pending tokens, packed
  // into one ragged batch) and samples a token for each entry whose pending tokens are all
  // computed. RESOURCE_EXHAUSTED if the KV cache cannot hold the plan (nothing changed then);
  // INVALID_ARGUMENT for a malformed plan.
  absl::StatusOr<StepResult> Step(const StepPlan& plan);

 private:
  struct PrivateKey {};

 public:
  Engine(PrivateKey, EngineOptions options, std::unique_ptr<ModelFile> model,
         std::unique_ptr<BpeTokenizer> tokenizer, std::unique_ptr<Device> device,
         std::unique_ptr<ModelRunner> runner, std::unique_ptr<KvCache> kv_cache);

 private:
  struct SequenceState;
  class PolicyObserver;
  void MatchCachedPrefix(SequenceState& s);
  void RegisterFullBlocks(SequenceState& s);
  // Keeps only the slots `keep` (ascending) of layer `layer` of `s`, compacting its K/V and
  // freeing its blocks; returns the slots evicted.
  int32_t CompactLayer(SequenceState& s, int64_t layer, const std::vector<int32_t>& keep);
  // Asks the sequence's policy for its plan(s) and executes them.
  void ApplyPolicy(SequenceState& s);
  // The sequence `id` if it records attention and `layer` is a layer, else null.
  const SequenceState* RecordingSequence(SequenceId id, int64_t layer) const;

  const EngineOptions options_;
  std::unique_ptr<ModelFile> model_;
  std::unique_ptr<BpeTokenizer> tokenizer_;
  std::unique_ptr<Device> device_;
  std::unique_ptr<ModelRunner> runner_;
  std::unique_ptr<KvCache> kv_cache_;
  absl::flat_hash_map<SequenceId, std::unique_ptr<SequenceState>> sequences_;
  ForwardBatch batch_;  // Reused every step.
  std::vector<int32_t> batch_order_;  // Plan entry indices in batch order (Step scratch).
  std::vector<int32_t> batch_entry_;  // Per plan entry: its batch entry (Step scratch).
  std::vector<int64_t> logit_row_;    // Per batch entry: its logits row or -1 (Step scratch).
  EngineStats stats_;
  std::unique_ptr<PolicyObserver> policy_observer_;
};

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_RUNTIME_ENGINE_H_
