#include "engine/policy/keyformer_policy.h"

#include <cmath>

namespace kvserve::engine {
namespace {

uint64_t Mix(uint64_t x) {  // splitmix64 finaliser.
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

float KeyformerPolicy::Gumbel(uint64_t seed, int32_t step, int64_t layer, int64_t head,
                              int32_t slot) {
  uint64_t h = Mix(seed);
  h = Mix(h ^ static_cast<uint32_t>(step));
  h = Mix(h ^ static_cast<uint64_t>(layer));
  h = Mix(h ^ static_cast<uint64_t>(head));
  h = Mix(h ^ static_cast<uint32_t>(slot));
  // Uniform in (0, 1) from the top 53 bits, never exactly 0 or 1.
  const double u = (static_cast<double>(h >> 11) + 0.5) * (1.0 / 9007199254740992.0);
  return static_cast<float>(-std::log(-std::log(u)));
}

double KeyformerPolicy::Temperature(int32_t step, int32_t max_new_tokens) const {
  const double t_max = std::max(1, max_new_tokens);
  return tau_init_ + std::min<double>(step, t_max) * (tau_end_ - tau_init_) / t_max;
}

void KeyformerPolicy::Observe(const AttentionRow& row, PolicyState& state) const {
  thread_local std::vector<float> noisy;
  thread_local std::vector<float> f;
  const int32_t step = row.prefill ? 0 : state.decode_step;
  noisy.resize(row.logits.size());
  for (size_t i = 0; i < row.logits.size(); ++i) {
    noisy[i] = row.logits[i] + Gumbel(state.seed, step, row.layer, row.head, static_cast<int32_t>(i));
  }
  const double tau = row.prefill ? tau_init_ : Temperature(step, state.max_new_tokens);
  SoftmaxInto(noisy, static_cast<float>(tau), f);
  for (size_t i = 0; i < f.size(); ++i) state.scores[i] += f[i];
}

}  // namespace kvserve::engine
