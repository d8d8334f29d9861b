#include "engine/runtime/paged_attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>

#include "engine/compute/ops.h"

namespace kvserve::engine {

PagedAttention::PagedAttention(const AttentionGeometry& geometry)
    : geometry_(geometry),
      scale_(1.0f / std::sqrt(static_cast<float>(geometry.head_dim))),
      max_threads_(std::max(omp_get_num_procs(), omp_get_max_threads())),
      scores_(static_cast<size_t>(max_threads_) * geometry.max_context) {}

void PagedAttention::Forward(const KvCache& cache, int64_t layer,
                             absl::Span<const AttentionQuery> queries, const float* q,
                             float* out) {
  const int64_t n_heads = geometry_.n_heads;
  const int64_t head_dim = geometry_.head_dim;
  const int64_t group = n_heads / geometry_.n_kv_heads;  // Query heads sharing one KV head.
  const int64_t q_stride = n_heads * head_dim;
  const int32_t block_size = cache.block_size();
  const int64_t work = static_cast<int64_t>(queries.size()) * n_heads;
  const int threads = std::min<int64_t>(max_threads_, std::max<int64_t>(1, work));

#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t item = 0; item < work; ++item) {
    const int64_t t = item / n_heads;
    const int64_t h = item % n_heads;
    const int64_t kv_offset = (h / group) * head_dim;
    const AttentionQuery& query = queries[t];
    const std::vector<BlockId>& blocks = *query.blocks;
    const float* qh = q + t * q_stride + h * head_dim;
    float* scores = scores_.data() + static_cast<int64_t>(omp_get_thread_num()) * geometry_.max_context;
    const int32_t n = query.position + 1;

    for (int32_t j = 0; j < n; ++j) {
      const float* k = cache.Key(blocks[j / block_size], layer, j % block_size) + kv_offset;
      scores[j] = Dot(qh, k, head_dim) * scale_;
    }
    Softmax(scores, n);
    float* oh = out + t * q_stride + h * head_dim;
    std::fill(oh, oh + head_dim, 0.0f);
    for (int32_t j = 0; j < n; ++j) {
      const float* v = cache.Value(blocks[j / block_size], layer, j % block_size) + kv_offset;
      Axpy(scores[j], v, oh, head_dim);
    }
  }
}

}  // namespace kvserve::engine
