// Causal attention of a batch of query tokens over their sequences' paged KV (f32, bf16 or
// int8 storage: non-f32 rows are decoded to f32 per work item, then the same f32 math runs).
//
// How it is computed (split-context, Lean/Flash-decoding style): each query's visible
// positions 0..position are cut into FIXED chunks of kChunkPositions positions (chunk c covers
// [c * kChunkPositions, (c + 1) * kChunkPositions)). For every (query, KV head, chunk) the
// kernel computes, for each query head sharing that KV head, the chunk's scores, their max m,
// the sum l of e^(score - m) and the unnormalised weighted sum o of the values; then the
// chunks of each (query, head) are merged in chunk order: M = max m_c, out = sum_c o_c
// e^(m_c - M) / sum_c l_c e^(m_c - M). Work items (a tile of consecutive queries of one
// sequence, one KV head, one chunk) are spread over the calling thread's OpenMP team, so one
// long sequence still uses every core.
//
// Batch invariance: every arithmetic step of a query's result depends only on that query
// (its q, its position, its sequence's KV) and the fixed chunk size: not on which other
// queries share its tile or batch, on the thread count or on the schedule. Results are
// bit-identical however a batch is composed or run.
//
// Thread-compatible; uses the calling thread's OpenMP team. Forward allocates only when a
// batch needs more partial-result space than any before it (grow-only scratch).
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

// One query token: its sequence's block table of the layer being computed and its position
// (it attends to slots 0..position of that table).
// With `depth` (LazyLLM, engine/runtime/lazy_tokens.h), a query in layer l also ignores every
// slot j with depth[j] <= l (no KV there); queries sharing `blocks` must share `depth`, and
// the query's own slot must be visible.
struct AttentionQuery {
  const std::vector<BlockId>* blocks = nullptr;
  int32_t position = 0;
  const int16_t* depth = nullptr;  // Per slot; null = every slot has every layer.
};

class PagedAttention {
 public:
  // Positions per context chunk. Fixed (never derived from the thread count or the batch):
  // the chunking is part of the arithmetic, so changing it changes results in the last bits.
  static constexpr int64_t kChunkPositions = 128;
  // Most consecutive queries of one sequence (a prefill chunk) sharing one work item: they
  // share its transposed keys.
  static constexpr int64_t kTileQueries = 16;

  explicit PagedAttention(const AttentionGeometry& geometry);

  // q: queries.size() rows of n_heads*head_dim; out: same shape. Keys/values of `layer` for
  // every attended position must already be in `cache`.
  void Forward(const KvCache& cache, int64_t layer, absl::Span<const AttentionQuery> queries,
               const float* q, float* out);

 private:
  struct Item {
    int32_t first = 0;   // First query of the tile.
    int32_t count = 0;   // Queries in the tile (same sequence, consecutive in the batch).
    int32_t kv_head = 0;
    int32_t chunk = 0;
  };
  // One work item: partial results of its queries' heads for its chunk.
  void RunItem(const KvCache& cache, int64_t layer, absl::Span<const AttentionQuery> queries,
               const float* q, const Item& item, float* key_t, float* scores, float* tile,
               const float** value_rows);

  const AttentionGeometry geometry_;
  const float scale_;
  const int64_t partial_floats_;  // Per (query, head, chunk): o[head_dim], m, l.
  int max_threads_;
  // Per thread: transposed keys of one chunk (head_dim x kChunkPositions), the scores of up
  // to 8 heads, a tile of the chunk's rows decoded from a bf16/int8 cache, and the chunk's
  // value row pointers.
  std::vector<float> thread_scratch_;
  std::vector<const float*> thread_value_rows_;
  std::vector<float> partials_;   // Grow-only.
  std::vector<int64_t> partial_base_;  // Per query: index of its first partial (grow-only).
  std::vector<Item> items_;            // Grow-only.
};

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_RUNTIME_PAGED_ATTENTION_H_
