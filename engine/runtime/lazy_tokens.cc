#include "engine/runtime/lazy_tokens.h"

#include <algorithm>
#include <utility>

namespace kvserve::engine {

LazyTokens::LazyTokens(int32_t n_layers, int64_t d_model, int32_t prompt_length,
                       std::vector<LazyStage> stages)
    : n_layers_(n_layers),
      d_model_(d_model),
      prompt_length_(prompt_length),
      stages_(std::move(stages)) {}

void LazyTokens::EnsureSlots(int32_t slots) {
  if (slots <= num_slots()) return;
  depth_.resize(slots, static_cast<int16_t>(n_layers_));
  entry_.resize(slots, -1);
}

void LazyTokens::Prune(int32_t slot, int16_t depth, const float* hidden) {
  depth_[slot] = depth;
  int32_t e = entry_[slot];
  if (e < 0) {
    if (!free_.empty()) {
      e = free_.back();
      free_.pop_back();
    } else {
      e = static_cast<int32_t>(aux_.size() / d_model_);
      aux_.resize(aux_.size() + d_model_);
    }
    entry_[slot] = e;
    ++live_entries_;
  }
  std::copy_n(hidden, d_model_, aux_.data() + e * d_model_);
}

const float* LazyTokens::Hidden(int32_t slot) const {
  const int32_t e = slot < num_slots() ? entry_[slot] : -1;
  return e < 0 ? nullptr : aux_.data() + e * d_model_;
}

void LazyTokens::Revive(int32_t slot) {
  depth_[slot] = static_cast<int16_t>(n_layers_);
  const int32_t e = entry_[slot];
  if (e < 0) return;
  entry_[slot] = -1;
  free_.push_back(e);
  --live_entries_;
}

int64_t LazyTokens::bytes() const {
  return static_cast<int64_t>(depth_.capacity() * sizeof(int16_t) +
                              entry_.capacity() * sizeof(int32_t) +
                              aux_.capacity() * sizeof(float) + free_.capacity() * sizeof(int32_t));
}

void LazyTokens::Reset() {
  depth_.clear();
  entry_.clear();
  aux_.clear();
  free_.clear();
  live_entries_ = 0;
}

void PoolLazyScores(absl::Span<const float> scores, const int16_t* depth, int64_t layer,
                    int32_t pool, absl::Span<float> out) {
  const int64_t n = static_cast<int64_t>(scores.size());
  const int64_t half = pool / 2;
  for (int64_t j = 0; j < n; ++j) {
    double sum = 0;
    int64_t seen = 0;
    for (int64_t t = std::max<int64_t>(0, j - half); t <= std::min(n - 1, j + half); ++t) {
      if (depth[t] <= layer) continue;
      sum += scores[t];
      ++seen;
    }
    out[j] = seen == 0 ? 0.0f : static_cast<float>(sum / static_cast<double>(seen));
  }
}

}  // namespace kvserve::engine
