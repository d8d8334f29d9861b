// ModelRunner: the LLaMA forward pass over one ragged, padding-free batch of tokens from
// any number of sequences (prefill chunks and decodes alike), reading and writing the paged
// KV cache. Matrix products run on oneDNN (Linear); the rest are fused CPU loops.
//
// Thread-compatible; engine thread only. Buffers are sized once for `max_batch_tokens`:
// Forward does not allocate (except that a LazyLLM sequence's own state, lazy_tokens.h, grows
// with the sequence).
//
// LazyLLM entries (ForwardBatch::Entry::lazy) lose prompt rows between layers: after each
// stage layer the runner ranks the entry's prompt rows by its last prompt row's attention,
// saves the dropped rows' hidden states in the entry's LazyTokens and compacts the rest.
#ifndef KVSERVE_ENGINE_RUNTIME_MODEL_RUNNER_H_
#define KVSERVE_ENGINE_RUNTIME_MODEL_RUNNER_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/compute/device.h"
#include "engine/compute/linear.h"
#include "engine/model/model_file.h"
#include "engine/runtime/kv_cache.h"
#include "engine/runtime/lazy_tokens.h"
#include "engine/runtime/paged_attention.h"

namespace kvserve::engine {

// Sees every layer's queries right after that layer's attention, for KV-policy statistics.
// Engine thread only.
class LayerQueryObserver {
 public:
  virtual ~LayerQueryObserver() = default;
  // `q`: one row of n_heads * head_dim post-RoPE queries per batch row; the layer's keys of
  // every visible slot are in `cache`. Rows are the batch's tokens in order, except that
  // LazyLLM entries lose pruned rows as layers go: `last_rows[e]` is the current row of entry
  // e's last token (the only row of a lazy entry worth reading).
  virtual void OnLayerQueries(int64_t layer, const float* q, const KvCache& cache,
                              absl::Span<const int32_t> last_rows) = 0;
};

// The tokens of one step, packed: entry e covers tokens [first, first + count).
struct ForwardBatch {
  struct Entry {
    int32_t first = 0;
    int32_t count = 0;
    int32_t start_position = 0;                // Position (RoPE) of the entry's first token.
    // KV slot of the entry's first token. Equals start_position unless a KV policy evicted
    // tokens: slots are then compacted while positions stay original.
    int32_t start_slot = 0;
    // Per-layer policies (ScaleKV) keep different tokens per layer: then the first token's
    // slot in layer l is layer_start_slots[l] (null: start_slot in every layer).
    const int32_t* layer_start_slots = nullptr;
    // The sequence's block table of each layer; each covers the entry's last slot.
    const std::vector<std::vector<BlockId>>* tables = nullptr;
    bool want_logits = false;                  // Logits of the entry's last token.
    // LazyLLM state of the entry's sequence (lazy_tokens.h), or null. The runner prunes the
    // entry's prompt rows at the state's stages and updates its depths and aux store.
    // REQUIRES: lazy entries come after every other entry (their rows are compacted in place
    // between layers), their slots equal their positions (nothing evicted) and they have no
    // layer_start_slots.
    LazyTokens* lazy = nullptr;
  };
  std::vector<TokenId> tokens;
  std::vector<Entry> entries;
  LayerQueryObserver* observer = nullptr;  // Optional.
};

struct ModelRunnerOptions {
  // kAuto picks by how the file stores its matrices (see ResolveWeightType).
  WeightType weight_type = WeightType::kF32;
  int32_t max_batch_tokens = 512;  // Largest ForwardBatch this runner accepts.
};

class ModelRunner {
 public:
  static absl::StatusOr<std::unique_ptr<ModelRunner>> Create(const ModelFile& model,
                                                             Device& device,
                                                             const ModelRunnerOptions& options);

  // Runs the batch; writes every token's keys and values into `cache`. Returns the logits of
  // the entries that want them, one row of vocab_size per such entry in entry order; valid
  // until the next call.
  absl::StatusOr<absl::Span<const float>> Forward(const ForwardBatch& batch, KvCache& cache);

  // The weight type the matrices were packed in (options.weight_type with kAuto resolved by
  // the file's storage type).
  WeightType weight_type() const { return weight_type_; }

  // Token-layers the last Forward computed: the sum over layers of the rows each layer ran
  // (batch tokens x layers without LazyLLM pruning).
  int64_t last_token_layers() const { return last_token_layers_; }

  struct Layer {
    std::vector<float> attn_norm, ffn_norm;
    // Q, K and V stacked into one matmul (outputs [q | k | v] per token), and gate and up
    // likewise ([gate | up]): fewer, larger products that read the activations once.
    std::unique_ptr<Linear> wqkv, wo, gate_up, down;
  };
  struct PrivateKey {
   private:
    friend class ModelRunner;
    PrivateKey() = default;
  };
  ModelRunner(PrivateKey, const ModelFile& model, const ModelRunnerOptions& options);

 private:
  // A LazyLLM entry's rows during Forward.
  struct LazyRows {
    int32_t entry = 0;         // Index in the batch.
    int32_t first = 0;         // Current rows [first, first + count).
    int32_t count = 0;
    int32_t prompt_rows = 0;   // Prompt rows the step started with (the keep base).
    int32_t rank_row = -1;     // Current row of the step's last prompt row; -1: none.
    size_t next_stage = 0;     // First stage not yet reached.
  };
  // After `layer`: prunes the lazy entries' rows whose stage ends there and compacts the
  // rows of every lazy entry to follow the non-lazy ones. Returns the new row count.
  int64_t PruneLazyRows(int64_t layer, const KvCache& cache, const ForwardBatch& batch);
  // slot_score_[j] = attention of the query in row `row` to slot j in `layer` (softmax over
  // the slots it sees, mean over heads), for j <= its slot, then averaged over `pool` slots
  // (PoolLazyScores) when pool > 1.
  void ScoreSlots(int64_t layer, const KvCache& cache, const ForwardBatch::Entry& entry,
                  int32_t row, int32_t pool);

  const ModelFile& model_;
  const ModelConfig& config_;
  const ModelRunnerOptions options_;
  WeightType weight_type_ = WeightType::kF32;
  std::vector<Layer> layers_;
  std::vector<float> output_norm_;
  std::unique_ptr<Linear> output_;
  PagedAttention attention_;

  // Scratch, sized for max_batch_tokens rows.
  std::vector<float> x_, xn_, qkv_, q_, att_, proj_, gate_up_, ffn_, logits_in_, logits_;
  // RoPE cos/sin per position (context_length rows of rope_dim / 2): no transcendentals per
  // token.
  std::vector<float> rope_cos_, rope_sin_;
  std::vector<AttentionQuery> queries_;
  std::vector<int32_t> positions_;
  std::vector<int32_t> slots_;
  std::vector<int32_t> row_entry_;  // Per row: its batch entry.
  std::vector<int32_t> last_rows_;  // Per entry: current row of its last token.
  int64_t last_token_layers_ = 0;
  // LazyLLM scratch: entries, per-slot scores, one head's logits over the slots, a decoded key
  // row, candidate rows and their keep marks (sized at construction: no allocation).
  std::vector<LazyRows> lazy_rows_;
  std::vector<float> slot_score_, head_logits_, key_row_;
  std::vector<int32_t> candidates_;
  std::vector<uint8_t> keep_row_;
};

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_RUNTIME_MODEL_RUNNER_H_
