// Per-sequence next-token sampling from a row of logits: greedy argmax, or temperature ->
// top-k -> softmax -> top-p -> one draw from a seeded std::mt19937_64 stream.
//
// Thread safety: thread-compatible; one Sampler per sequence. Results depend only on the
// parameters, the seed and the sequence of logits given (never on threads or timing).
#ifndef KVSERVE_ENGINE_SAMPLING_SAMPLER_H_
#define KVSERVE_ENGINE_SAMPLING_SAMPLER_H_

#include <cstdint>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "engine/model/vocab.h"

namespace kvserve::engine {

struct SamplingParams {
  // Logits are divided by it before the softmax; 0 selects greedy (argmax) decoding.
  float temperature = 0.0f;
  // Keep only the k most likely tokens; 0 keeps all.
  int32_t top_k = 0;
  // Keep the smallest set of most likely tokens whose probability reaches top_p; in (0, 1],
  // 1 keeps all.
  float top_p = 1.0f;
  // Seed of the sequence's random stream.
  uint64_t seed = 0;
};

// OK, or INVALID_ARGUMENT naming the field, its value and the allowed range: temperature
// finite in [0, 100], top_k >= 0, top_p finite in (0, 1].
absl::Status ValidateSamplingParams(const SamplingParams& params);

class Sampler {
 public:
  // REQUIRES: ValidateSamplingParams(params).ok().
  explicit Sampler(const SamplingParams& params);

  // Picks the next token from `logits` (one per vocabulary id). Greedy: the largest logit,
  // lowest id on ties. NaN logits are never picked unless all are NaN. No heap allocation
  // once called with a vocabulary this large (scratch is reused).
  // REQUIRES: !logits.empty() (returns 0 otherwise).
  TokenId Sample(absl::Span<const float> logits);

  const SamplingParams& params() const { return params_; }

 private:
  struct Candidate {
    float value;  // Scaled logit, then probability weight.
    TokenId id;
  };

  // Constant after construction.
  const SamplingParams params_;

  std::mt19937_64 rng_;
  std::vector<Candidate> scratch_;  // Grows to the largest vocabulary seen; never shrinks.
};

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_SAMPLING_SAMPLER_H_
