// Causal attention of a batch of query tokens over their sequences' paged KV.
//
// Every (token, query head) pair is computed independently and in a fixed order, so a
// token's result does not depend on what else is in the batch or on the thread count
// (batch invariance). Thread-compatible; uses the calling thread's OpenMP team.
#ifndef KVSERVE_ENGINE_RUNTIME_PAGED_ATTENTION_H_
#define KVSERVE_ENGINE_RUNTIME_PAGED_ATTENTION_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "engine/runtime/kv_cache.h"

namespace kvserve::engine {

struct AttentionGeometry {
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t max_context = 0;  // Longest sequence any query may attend over.
};

// One query token: its sequence's block table and its position (it attends to 0..position).
struct AttentionQuery {
  const std::vector<BlockId>* blocks = nullptr;
  int32_t position = 0;
};

class PagedAttention {
 public:
  explicit PagedAttention(const AttentionGeometry& geometry);

  // q: queries.size() rows of n_heads*head_dim; out: same shape. Keys/values of `layer` for
  // every attended position must already be in `cache`.
  void Forward(const KvCache& cache, int64_t layer, absl::Span<const AttentionQuery> queries,
               const float* q, float* out);

 private:
  const AttentionGeometry geometry_;
  const float scale_;
  int max_threads_;
  std::vector<float> scores_;  // max_threads_ rows of max_context: per-thread scratch.
};

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_RUNTIME_PAGED_ATTENTION_H_
