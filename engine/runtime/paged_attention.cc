#include "engine/runtime/paged_attention.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "engine/compute/ops.h"

// GCC 12 reports false -W(maybe-)uninitialized errors inside its own AVX-512 intrinsic headers
// once they are inlined (the `_mm512_undefined_*()` pass-through operands).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace kvserve::engine {
namespace {

constexpr int64_t kC = PagedAttention::kChunkPositions;

int64_t ChunksOf(int32_t position) { return position / kC + 1; }


#if defined(__AVX512F__)
inline __mmask16 Mask(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << n) - 1);
}
#endif

// Up to this many query heads (of one KV head) are computed together, sharing every key and
// value load; the loops over them are unrolled so the accumulators stay in registers (rolled,
// GCC kept them on the stack: a load-FMA-store chain per head, ~2x slower prefill attention).
constexpr int64_t kHeadsAtOnce = 8;

// Per thread: transposed keys (head_dim x kC), scores (kHeadsAtOnce x kC), then a tile of
// kC rows of head_dim decoded from a non-f32 cache (keys, then values).
int64_t ScratchFloats(int64_t head_dim) {
  return head_dim * kC + kHeadsAtOnce * kC + kC * head_dim;
}

// For each of `heads` query heads h (q + h * head_dim): scores[h * kC + j] = scale * sum_d
// q_h[d] * key_t[d * kC + j] for j < n. 16 positions per vector, the sum over d in order (one
// FMA per d per lane), so each score depends only on its q row and its key.
void Scores(const float* q, int64_t heads, const float* key_t, int64_t head_dim, int64_t n,
            float scale, float* scores) {
#if defined(__AVX512F__)
  const __m512 vscale = _mm512_set1_ps(scale);
  for (int64_t j = 0; j < n; j += 16) {
    __m512 acc[kHeadsAtOnce];
#pragma GCC unroll 8
    for (int64_t h = 0; h < kHeadsAtOnce; ++h) acc[h] = _mm512_setzero_ps();
    const float* kt = key_t + j;
    if (heads == kHeadsAtOnce) {  // The common GQA case, fully unrolled.
      for (int64_t d = 0; d < head_dim; ++d, kt += kC) {
        const __m512 k = _mm512_loadu_ps(kt);
#pragma GCC unroll 8
        for (int64_t h = 0; h < kHeadsAtOnce; ++h) {
          acc[h] = _mm512_fmadd_ps(_mm512_set1_ps(q[h * head_dim + d]), k, acc[h]);
        }
      }
    } else {
      for (int64_t d = 0; d < head_dim; ++d, kt += kC) {
        const __m512 k = _mm512_loadu_ps(kt);
#pragma GCC unroll 8
        for (int64_t h = 0; h < heads; ++h) {
          acc[h] = _mm512_fmadd_ps(_mm512_set1_ps(q[h * head_dim + d]), k, acc[h]);
        }
      }
    }
    const __mmask16 m = Mask(n - j);
#pragma GCC unroll 8
    for (int64_t h = 0; h < heads; ++h) {
      _mm512_mask_storeu_ps(scores + h * kC + j, m, _mm512_mul_ps(acc[h], vscale));
    }
  }
#else
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t j = 0; j < n; ++j) {
      float s = 0.0f;
      for (int64_t d = 0; d < head_dim; ++d) s += q[h * head_dim + d] * key_t[d * kC + j];
      scores[h * kC + j] = s * scale;
    }
  }
#endif
}

// For each of `heads` heads: o[h * stride + d] = sum_j p[h * kC + j] * values[j][d], j in
// order (one FMA per j per lane).
void WeightedValues(const float* p, int64_t heads, const float* const* values, int64_t head_dim,
                    int64_t n, float* o, int64_t stride) {
#if defined(__AVX512F__)
  for (int64_t d = 0; d < head_dim; d += 16) {
    const __mmask16 m = Mask(head_dim - d);
    __m512 acc[kHeadsAtOnce];
#pragma GCC unroll 8
    for (int64_t h = 0; h < kHeadsAtOnce; ++h) acc[h] = _mm512_setzero_ps();
    if (heads == kHeadsAtOnce) {
      for (int64_t j = 0; j < n; ++j) {
        const __m512 v = _mm512_maskz_loadu_ps(m, values[j] + d);
#pragma GCC unroll 8
        for (int64_t h = 0; h < kHeadsAtOnce; ++h) {
          acc[h] = _mm512_fmadd_ps(_mm512_set1_ps(p[h * kC + j]), v, acc[h]);
        }
      }
    } else {
      for (int64_t j = 0; j < n; ++j) {
        const __m512 v = _mm512_maskz_loadu_ps(m, values[j] + d);
#pragma GCC unroll 8
        for (int64_t h = 0; h < heads; ++h) {
          acc[h] = _mm512_fmadd_ps(_mm512_set1_ps(p[h * kC + j]), v, acc[h]);
        }
      }
    }
#pragma GCC unroll 8
    for (int64_t h = 0; h < heads; ++h) _mm512_mask_storeu_ps(o + h * stride + d, m, acc[h]);
  }
#else
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t d = 0; d < head_dim; ++d) {
      float s = 0.0f;
      for (int64_t j = 0; j < n; ++j) s += p[h * kC + j] * values[j][d];
      o[h * stride + d] = s;
    }
  }
#endif
}

}  // namespace

PagedAttention::PagedAttention(const AttentionGeometry& geometry)
    : geometry_(geometry),
      scale_(1.0f / std::sqrt(static_cast<float>(geometry.head_dim))),
      partial_floats_(geometry.head_dim + 2),
      max_threads_(std::max(omp_get_num_procs(), omp_get_max_threads())),
      thread_scratch_(static_cast<size_t>(max_threads_) * ScratchFloats(geometry.head_dim)),
      thread_value_rows_(static_cast<size_t>(max_threads_) * kC) {}

void PagedAttention::RunItem(const KvCache& cache, int64_t layer,
                             absl::Span<const AttentionQuery> queries, const float* q,
                             const Item& item, float* key_t, float* scores, float* tile,
                             const float** value_rows) {
  const int64_t head_dim = geometry_.head_dim;
  const int64_t group = geometry_.n_heads / geometry_.n_kv_heads;
  const int64_t q_stride = geometry_.n_heads * head_dim;
  const int64_t kv_offset = item.kv_head * head_dim;
  const int32_t block_size = cache.block_size();
  const std::vector<BlockId>& blocks = *queries[item.first].blocks;
  const int16_t* depth = queries[item.first].depth;
  int32_t max_position = 0;
  for (int32_t t = item.first; t < item.first + item.count; ++t) {
    max_position = std::max(max_position, queries[t].position);
  }
  const int64_t start = item.chunk * kC;
  const int64_t end = std::min<int64_t>(start + kC, max_position + 1);

  if (cache.dtype() == KvDtype::kF32) {
    // Keys of the chunk, transposed (key_t[d][j]) so scores are 16-position vectors.
    for (int64_t j = 0; j < end - start; ++j) {
      const int64_t slot = start + j;
      const float* k = cache.Key(blocks[slot / block_size], slot % block_size) + kv_offset;
      for (int64_t d = 0; d < head_dim; ++d) key_t[d * kC + j] = k[d];
    }
    // The chunk's value rows, in place.
    for (int64_t j = 0; j < end - start; ++j) {
      const int64_t slot = start + j;
      value_rows[j] = cache.Value(blocks[slot / block_size], slot % block_size) + kv_offset;
    }
  } else {
    // bf16/int8: the KV head's slice of each row is decoded to f32 once per item (the tile),
    // then the same f32 arithmetic runs on it.
    for (int64_t j = 0; j < end - start; ++j) {
      const int64_t slot = start + j;
      cache.ReadKey(blocks[slot / block_size], slot % block_size, kv_offset, head_dim,
                    tile + j * head_dim);
    }
    for (int64_t j = 0; j < end - start; ++j) {
      for (int64_t d = 0; d < head_dim; ++d) key_t[d * kC + j] = tile[j * head_dim + d];
    }
    for (int64_t j = 0; j < end - start; ++j) {
      const int64_t slot = start + j;
      cache.ReadValue(blocks[slot / block_size], slot % block_size, kv_offset, head_dim,
                      tile + j * head_dim);
      value_rows[j] = tile + j * head_dim;
    }
  }

  for (int32_t t = item.first; t < item.first + item.count; ++t) {
    const int32_t position = queries[t].position;
    if (position < start) continue;  // This chunk is in the query's future.
    const int64_t n = std::min<int64_t>(end, position + 1) - start;
    const int64_t chunks = ChunksOf(position);
    for (int64_t h0 = 0; h0 < group; h0 += kHeadsAtOnce) {
      const int64_t heads = std::min(kHeadsAtOnce, group - h0);
      const int64_t first_head = item.kv_head * group + h0;
      Scores(q + t * q_stride + first_head * head_dim, heads, key_t, head_dim, n, scale_, scores);
      float* partial = partials_.data() +
                       (partial_base_[t] + first_head * chunks + item.chunk) * partial_floats_;
      const int64_t head_stride = chunks * partial_floats_;  // Between heads' partials.
      if (depth != nullptr) {  // Pruned slots (no KV in this layer) get no weight.
        for (int64_t j = 0; j < n; ++j) {
          if (depth[start + j] > layer) continue;
          for (int64_t h = 0; h < heads; ++h) scores[h * kC + j] = -INFINITY;
        }
      }
      for (int64_t h = 0; h < heads; ++h) {
        float* row = scores + h * kC;
        const float max = MaxOf(row, n);
        partial[h * head_stride + head_dim] = max;
        if (max == -INFINITY) {  // Every slot of the chunk masked: contributes nothing.
          std::fill(row, row + n, 0.0f);
          partial[h * head_stride + head_dim + 1] = 0.0f;
          continue;
        }
        partial[h * head_stride + head_dim + 1] = ExpShiftSum(row, n, max);
      }
      WeightedValues(scores, heads, value_rows, head_dim, n, partial, head_stride);
    }
  }
}

void PagedAttention::Forward(const KvCache& cache, int64_t layer,
                             absl::Span<const AttentionQuery> queries, const float* q,
                             float* out) {
  const int64_t n_queries = static_cast<int64_t>(queries.size());
  if (n_queries == 0) return;
  const int64_t n_heads = geometry_.n_heads;
  const int64_t head_dim = geometry_.head_dim;

  // Where each query's partial results go, and the work items.
  if (partial_base_.size() < static_cast<size_t>(n_queries)) partial_base_.resize(n_queries);
  int64_t total = 0;
  for (int64_t t = 0; t < n_queries; ++t) {
    partial_base_[t] = total;
    total += n_heads * ChunksOf(queries[t].position);
  }
  if (partials_.size() < static_cast<size_t>(total * partial_floats_)) {
    partials_.resize(total * partial_floats_);
  }
  items_.clear();
  for (int32_t first = 0; first < n_queries;) {
    int32_t count = 1;
    int32_t max_position = queries[first].position;
    while (first + count < n_queries && count < kTileQueries &&
           queries[first + count].blocks == queries[first].blocks) {
      max_position = std::max(max_position, queries[first + count].position);
      ++count;
    }
    for (int32_t chunk = 0; chunk < ChunksOf(max_position); ++chunk) {
      for (int32_t g = 0; g < geometry_.n_kv_heads; ++g) {
        items_.push_back({.first = first, .count = count, .kv_head = g, .chunk = chunk});
      }
    }
    first += count;
  }

  const int64_t n_items = static_cast<int64_t>(items_.size());
  const int64_t scratch_floats = ScratchFloats(head_dim);
  // The calling thread's team size (SetComputeThreads), within the scratch made for.
  const int64_t team = std::min(max_threads_, omp_get_max_threads());
  int threads = static_cast<int>(std::min<int64_t>(team, n_items));
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t i = 0; i < n_items; ++i) {
    const int thread = omp_get_thread_num();
    float* scratch = thread_scratch_.data() + thread * scratch_floats;
    RunItem(cache, layer, queries, q, items_[i], scratch, scratch + head_dim * kC,
            scratch + head_dim * kC + kHeadsAtOnce * kC, thread_value_rows_.data() + thread * kC);
  }

  // Merge each (query, head)'s chunks in chunk order.
  const int64_t pairs = n_queries * n_heads;
  threads = static_cast<int>(std::min<int64_t>(team, std::max<int64_t>(1, pairs / 8)));
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t pair = 0; pair < pairs; ++pair) {
    const int64_t t = pair / n_heads;
    const int64_t h = pair % n_heads;
    const int64_t chunks = ChunksOf(queries[t].position);
    const float* partial = partials_.data() + (partial_base_[t] + h * chunks) * partial_floats_;
    float max = -INFINITY;
    for (int64_t c = 0; c < chunks; ++c) max = std::max(max, partial[c * partial_floats_ + head_dim]);
    float* o = out + t * n_heads * head_dim + h * head_dim;
    std::fill(o, o + head_dim, 0.0f);
    float sum = 0.0f;
    for (int64_t c = 0; c < chunks; ++c) {
      const float* p = partial + c * partial_floats_;
      const float w = std::exp(p[head_dim] - max);
      sum += p[head_dim + 1] * w;
      Axpy(w, p, o, head_dim);
    }
    const float inv = 1.0f / sum;
    for (int64_t d = 0; d < head_dim; ++d) o[d] *= inv;
  }
}

}  // namespace kvserve::engine
