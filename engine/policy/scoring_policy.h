// ScoringPolicy: the shared machinery of score-based policies (kvpress's ScorerPress): a
// budget from the keep fraction, protected sinks and recent tokens, and top-k selection of the
// rest by score with ties broken by position. Subclasses decide how rows become scores.
//
// Parameters every scoring policy takes (spec keys):
//   keep    fraction of the tokens seen that stays cached, in (0, 1]; 1 = never evict.
//   max     optional absolute cap on cached tokens (StreamingLLM-style fixed budget); 0 = none.
//   recent  fraction of the budget reserved for the most recent tokens, in [0, 1].
//   sinks   first tokens that are never evicted (attention sinks), >= 0.
#ifndef KVSERVE_ENGINE_POLICY_SCORING_POLICY_H_
#define KVSERVE_ENGINE_POLICY_SCORING_POLICY_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/policy/kv_policy.h"

namespace kvserve::engine {

struct ScoringParams {
  double keep = 1.0;
  int32_t max_tokens = 0;
  double recent = 0.0;
  int32_t sinks = 0;
};

class ScoringPolicy : public KvPolicy {
 public:
  ScoringPolicy(PolicySpec spec, ScoringParams params)
      : spec_(std::move(spec)), params_(params) {}

  const PolicySpec& spec() const override { return spec_; }
  const ScoringParams& params() const { return params_; }

  // Slots to keep when `num_tokens` tokens have been seen (never below protected + 1), with
  // the keep fraction scaled by `scale` (a per-layer policy's layer share).
  int32_t Budget(int32_t num_tokens, double scale = 1.0) const;

  // Keeps sinks, the recent window of the budget and the best-scoring rest. Acts only once
  // the prompt is done and when the live slots exceed the budget.
  std::vector<int32_t> Plan(const SequenceKvView& view, PolicyState& state) const override;

 protected:
  // Keeps the `budget` best slots of `scores` under the protection rules (ascending indices).
  std::vector<int32_t> SelectTopK(absl::Span<const float> scores, int32_t budget,
                                  int32_t recent) const;

 private:
  const PolicySpec spec_;
  const ScoringParams params_;
};

// Reads the common keys of `spec` (with the given defaults) and rejects unknown keys, listing
// `allowed` plus the common ones.
absl::StatusOr<ScoringParams> ReadScoringParams(const PolicySpec& spec,
                                                const ScoringParams& defaults,
                                                const std::vector<std::string>& allowed);

// softmax(logits / tau) into `out` (same size), max-subtracted.
void SoftmaxInto(absl::Span<const float> logits, float tau, std::vector<float>& out);

// scores[i] += softmax(logits)[i]: one query's attention added to accumulated scores (H2O,
// SnapKV's window, ScaleKV's phase). REQUIRES: scores.size() >= logits.size().
void AccumulateAttention(absl::Span<const float> logits, std::vector<float>& scores);

// out[i] = mean of scores over the `kernel` positions centred on i, clipped at the ends
// (SnapKV's and ScaleKV's pooling: neighbours of important tokens survive too). out gets
// scores.size() entries. REQUIRES: kernel >= 1.
void AveragePool(absl::Span<const float> scores, int32_t kernel, std::vector<float>& out);

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_POLICY_SCORING_POLICY_H_
