// KV-cache compression policies: small deciders that see attention statistics produced during
// the forward pass and return eviction plans the engine executes (compacting the sequence's
// KV slots and freeing whole blocks; every kept slot keeps its token's original position, so
// keys are never re-rotated).
//
// Policies are stateless and shared by all sequences (thread-safe const use); per-sequence
// data lives in PolicyState, owned by the sequence. Most policies are "layer-shared": one set
// of tokens is kept per sequence, for all layers and heads, ranked by scores summed over
// layers and heads (TOVA/OpenVINO-style aggregation). Per-layer policies (ScaleKV,
// num_layers() > 0) get one PolicyState per layer, see only that layer's rows in it, and plan
// each layer on its own (PlanLayer); the KV cache keeps a block table per layer, so a layer
// that keeps fewer tokens holds fewer blocks.
//
// Layout of one sequence's slots under a budget B (sinks + recent are protected):
//   | sinks |<-------- evictable: lowest scores go -------->|<--- recent --->|
#ifndef KVSERVE_ENGINE_POLICY_KV_POLICY_H_
#define KVSERVE_ENGINE_POLICY_KV_POLICY_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/policy/policy_spec.h"

namespace kvserve::engine {

// Per-sequence policy data; the engine keeps `scores` aligned with the sequence's live slots
// (appending zeros for new slots and compacting with every eviction).
struct PolicyState {
  std::vector<float> scores;     // Accumulated importance of each live slot.
  int32_t budget = -1;           // Slots to keep; fixed when the prompt is done (-1 = not yet).
  int32_t decode_step = 0;       // Generated tokens so far (Keyformer's temperature schedule).
  bool one_shot_done = false;    // SnapKV-style policies compress once.
  uint64_t seed = 0;             // Keyformer's Gumbel noise is keyed by this.
  int32_t max_new_tokens = 256;  // The request's generation budget (temperature schedules).
  int64_t evicted_tokens = 0;    // Tokens this sequence has lost to eviction (accounting).
  // Per-layer policies: this layer's budget relative to the policy's keep fraction.
  double budget_scale = 1.0;
};

// One attention row the policy may accumulate: the raw logits (q.k / sqrt(d)) of one query
// token of one head in one layer over the visible slots [0, logits.size()).
struct AttentionRow {
  int64_t layer = 0;
  int64_t head = 0;
  int32_t query_slot = 0;            // Slot of the query token itself (the last visible).
  bool prefill = false;              // The query is a prompt token.
  absl::Span<const float> logits;
};

// What the policy knows about the sequence when it plans.
struct SequenceKvView {
  int32_t num_slots = 0;             // Live slots.
  int32_t prompt_length = 0;
  int32_t max_new_tokens = 0;        // Generation budget of the request (for schedules).
  bool prompt_done = false;          // All prompt tokens are in the cache.
};

// One LazyLLM pruning stage: after layer `after_layer`, a prefill step keeps the best `keep`
// fraction of its prompt rows for the layers that follow (engine/runtime/lazy_tokens.h),
// ranked by their scores averaged over `pool` neighbouring positions (1: no smoothing).
struct LazyStage {
  int32_t after_layer = 0;
  float keep = 1.0f;
  int32_t pool = 1;
};

class KvPolicy {
 public:
  virtual ~KvPolicy() = default;

  // Stable name: used in specs and metric labels.
  virtual std::string_view name() const = 0;
  // The spec this policy was built from, canonical.
  virtual const PolicySpec& spec() const = 0;

  // Which attention rows the policy wants: kNone (no statistics), kDecode (only single-token
  // decode queries), kAll (every query, prompt rows included), kLastPromptRows (the last
  // `ObservationWindow()` prompt rows and decode rows).
  enum class Needs { kNone, kDecode, kAll, kLastPromptRows };
  virtual Needs needs() const { return Needs::kNone; }
  virtual int32_t ObservationWindow() const { return 0; }

  // Accumulates one attention row into `state.scores` (already sized to the live slots).
  virtual void Observe(const AttentionRow& row, PolicyState& state) const {}

  // Returns the slots to keep, ascending, or an empty vector to keep everything. Called after
  // every step in which the sequence computed tokens.
  virtual std::vector<int32_t> Plan(const SequenceKvView& view, PolicyState& state) const = 0;

  // Computation-deferring policies (LazyLLM): the pruning stages for a model of `n_layers`
  // layers, ascending by layer. Empty (the default) = every token runs through every layer.
  virtual std::vector<LazyStage> LazyStages(int32_t n_layers) const { return {}; }

  // Per-layer policies: the number of layers they have budgets for (the model's layer
  // count); 0 (the default) = layer-shared. A per-layer policy plans with PlanLayer, once per
  // layer, with that layer's state and slot count in `view`.
  virtual int32_t num_layers() const { return 0; }
  virtual std::vector<int32_t> PlanLayer(const SequenceKvView& view, int64_t layer,
                                         PolicyState& state) const {
    return Plan(view, state);
  }
};

struct ScaleKvBudgets;  // engine/policy/scalekv_budgets.h

// What some policies need beyond their spec: ScaleKV's per-layer roles from a calibration.
struct KvPolicyContext {
  std::shared_ptr<const ScaleKvBudgets> scalekv_budgets;  // Null: scalekv is unavailable.
};

// Builds a policy from a spec string. Known names: full, window, h2o, keyformer, snapkv,
// lazyllm, scalekv (needs context.scalekv_budgets).
// INVALID_ARGUMENT for an unknown name, an unknown parameter or an out-of-range value; the
// message lists what is accepted.
absl::StatusOr<std::shared_ptr<const KvPolicy>> CreateKvPolicy(
    std::string_view spec, const KvPolicyContext& context = {});

// The names CreateKvPolicy accepts, for help texts and tests.
std::vector<std::string> RegisteredKvPolicyNames();

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_POLICY_KV_POLICY_H_
