// LazyTokens: the per-sequence state of a LazyLLM sequence (engine/policy/lazyllm_policy.h).
//
// What is implemented (and why). During a prefill step the model runner prunes the step's
// prompt rows at each stage boundary (after layer s of a LazyStage): it ranks them by the
// attention of the step's last prompt row in layer s (softmax over the visible slots, mean
// over heads), keeps the best ceil(keep * rows) (the ranking row always; ties go to the
// earlier position), saves the hidden state (output of layer s) of every dropped row here and
// runs the next layers on the kept rows only. A dropped token's KV therefore exists for
// layers < depth only, and attention in layer l ignores every slot whose depth <= l.
// Generated tokens are never pruned. Pruned tokens stay pruned: there is no revival at
// decode steps yet (the paper's Aux-Cache revival); the hidden states are kept so it can be
// added without recomputation, and the free list lets revived entries be reused. Keeping the
// result a function of the prompt alone (not of the decode history) is what makes
// recomputation after preemption reproduce the sequence exactly.
//
// Pruning is per prefill step: a prompt split into chunks is pruned chunk by chunk, each
// chunk ranked by its own last prompt row, so a chunked prefill may prune differently from an
// unchunked one (it computes at least as much).
//
//   slot:   0    1    2    3    4    5    ...      depth = layers whose KV the slot has
//   depth:  L    1    L    2    3    L             (L = every layer; 1 = pruned after layer 0)
//
// Thread-compatible; engine thread only.
#ifndef KVSERVE_ENGINE_RUNTIME_LAZY_TOKENS_H_
#define KVSERVE_ENGINE_RUNTIME_LAZY_TOKENS_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "engine/policy/kv_policy.h"

namespace kvserve::engine {

class LazyTokens {
 public:
  // REQUIRES: stages ascending by after_layer, each < n_layers - 1; n_layers < 32768.
  LazyTokens(int32_t n_layers, int64_t d_model, int32_t prompt_length,
             std::vector<LazyStage> stages);

  int32_t n_layers() const { return n_layers_; }
  int64_t d_model() const { return d_model_; }
  int32_t prompt_length() const { return prompt_length_; }
  const std::vector<LazyStage>& stages() const { return stages_; }

  // Makes room for `slots` slots; new slots start at full depth (n_layers).
  void EnsureSlots(int32_t slots);
  int32_t num_slots() const { return static_cast<int32_t>(depth_.size()); }
  // Layers whose KV slot `slot` has; attention in layer l sees the slot iff depth > l.
  int16_t depth(int32_t slot) const { return depth_[slot]; }
  // Per slot, for the attention kernel. Valid until the next EnsureSlots or Reset.
  const int16_t* depth_data() const { return depth_.data(); }

  // Records that `slot` was pruned after layer depth - 1 with hidden state `hidden`
  // (d_model floats, the output of that layer). Reuses a freed aux entry if there is one.
  // REQUIRES: slot < num_slots().
  void Prune(int32_t slot, int16_t depth, const float* hidden);
  // The saved hidden state of a pruned slot, or nullptr.
  const float* Hidden(int32_t slot) const;
  // Revival: the slot is back at full depth and its aux entry goes to the free list.
  void Revive(int32_t slot);

  int32_t pruned_tokens() const { return live_entries_; }
  // Bytes of this state: depths plus the aux store (including freed entries kept for reuse).
  int64_t bytes() const;
  // Forgets everything (preemption by recomputation).
  void Reset();

 private:
  const int32_t n_layers_;
  const int64_t d_model_;
  const int32_t prompt_length_;
  const std::vector<LazyStage> stages_;
  std::vector<int16_t> depth_;       // Per slot.
  std::vector<int32_t> entry_;       // Per slot: its aux entry, or -1.
  std::vector<float> aux_;           // d_model floats per aux entry.
  std::vector<int32_t> free_;        // Aux entries free for reuse.
  int32_t live_entries_ = 0;
};

// The smoothing of a stage's ranking scores (LazyStage::pool): out[j] is the mean of
// scores[t] over the slots t within pool / 2 of j that attention in `layer` sees
// (depth[t] > layer); 0 where it sees none. A lazy sequence never evicts, so its slots are in
// position order and the window is one over positions: a token next to important ones ranks
// higher, which keeps phrases together. REQUIRES: out.size() == scores.size(), pool odd >= 1.
void PoolLazyScores(absl::Span<const float> scores, const int16_t* depth, int64_t layer,
                    int32_t pool, absl::Span<float> out);

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_RUNTIME_LAZY_TOKENS_H_
