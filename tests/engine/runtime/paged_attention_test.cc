// PagedAttention (vectorised, split-context) against a scalar double-precision reference,
// and its batch / thread-count invariance.
//
// Tolerance: the output is a convex combination of value rows, so an error is measured
// against max|v| of the sequence: |out - ref| <= 5e-5 max|v|. Dropping or duplicating one of
// N <= 1000 attended positions, or merging two chunks with a wrong rescale, moves the output
// by ~1/N max|v| >= 1e-3 max|v|, twenty times the tolerance.
#include "engine/runtime/paged_attention.h"

#include <omp.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <utility>
#include <memory>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "engine/runtime/kv_cache.h"
#include "gtest/gtest.h"

namespace kvserve::engine {
namespace {

struct Geometry {
  std::string name;
  int64_t n_heads;
  int64_t n_kv_heads;
  int64_t head_dim;
  int32_t block_size;
};

void PrintTo(const Geometry& g, std::ostream* os) { *os << g.name; }

// A KV cache of storage type `dtype` with sequences of given lengths filled with random
// keys/values in layer 1 (of 2, so a wrong layer offset shows), plus random queries. The same
// f32 rows also go to an f32 cache (`f32_cache`, same block ids) for the quantisation error.
class Fixture {
 public:
  Fixture(const Geometry& g, const std::vector<int32_t>& lengths, uint32_t seed,
          KvDtype dtype = KvDtype::kF32)
      : g_(g) {
    const int64_t kv_dim = g.n_kv_heads * g.head_dim;
    int64_t blocks = 0;
    for (int32_t len : lengths) blocks += (len + g.block_size - 1) / g.block_size;
    for (KvDtype d : {dtype, KvDtype::kF32}) {
      auto cache = KvCache::Create({.kv_dim = kv_dim, .block_size = g.block_size,
                                    .num_blocks = blocks + 1, .dtype = d});
      EXPECT_TRUE(cache.ok()) << cache.status();
      (d == dtype && cache_ == nullptr ? cache_ : f32_) = std::move(*cache);
    }
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(-1.5f, 1.5f);
    std::vector<float> k(kv_dim), v(kv_dim);
    for (int32_t len : lengths) {
      std::vector<BlockId> table;
      for (int32_t i = 0; i < len; i += g.block_size) {
        table.push_back(*cache_->Allocate());
        EXPECT_EQ(*f32_->Allocate(), table.back());
      }
      for (int32_t pos = 0; pos < len; ++pos) {
        for (int layer = 0; layer < 2; ++layer) {
          for (int64_t d = 0; d < kv_dim; ++d) {
            k[d] = dist(rng);
            v[d] = dist(rng);
          }
          // The tables are layer 1's (a block holds one layer); layer 0's draws keep the
          // random stream as it was.
          if (layer != 1) continue;
          for (KvCache* c : {cache_.get(), f32_.get()}) {
            c->WriteKey(table[pos / g.block_size], pos % g.block_size, k.data());
            c->WriteValue(table[pos / g.block_size], pos % g.block_size, v.data());
          }
        }
      }
      tables_.push_back(std::move(table));
      lengths_.push_back(len);
    }
    q_.resize(4096 * g.n_heads * g.head_dim);
    for (float& x : q_) x = dist(rng);
  }

  const KvCache& cache() const { return *cache_; }
  const KvCache& f32_cache() const { return *f32_; }
  const std::vector<BlockId>* table(int seq) const { return &tables_[seq]; }
  const float* q(int64_t row) const { return q_.data() + row * g_.n_heads * g_.head_dim; }

  // Scalar reference of one query (sequence `seq`, `position`, query row `row`) over the
  // keys and values of `cache` as decoded to f32 (default: the fixture's cache).
  // With `depth`, slots j with depth[j] <= 1 (no KV in layer 1) are skipped.
  std::vector<double> Reference(int seq, int32_t position, const float* q, double* max_v,
                                const KvCache* cache = nullptr,
                                const int16_t* depth = nullptr) const {
    if (cache == nullptr) cache = cache_.get();
    const int64_t hd = g_.head_dim, group = g_.n_heads / g_.n_kv_heads;
    std::vector<float> k(hd), v(hd);
    std::vector<double> out(g_.n_heads * hd, 0.0);
    *max_v = 0;
    for (int64_t h = 0; h < g_.n_heads; ++h) {
      const int64_t off = (h / group) * hd;
      std::vector<double> s(position + 1);
      double m = -INFINITY;
      for (int32_t j = 0; j <= position; ++j) {
        if (depth != nullptr && depth[j] <= 1) {
          s[j] = -INFINITY;
          continue;
        }
        cache->ReadKey(tables_[seq][j / g_.block_size], j % g_.block_size, off, hd, k.data());
        double dot = 0;
        for (int64_t d = 0; d < hd; ++d) dot += static_cast<double>(q[h * hd + d]) * k[d];
        s[j] = dot / std::sqrt(static_cast<double>(hd));
        m = std::max(m, s[j]);
      }
      double sum = 0;
      for (double& x : s) sum += (x = std::exp(x - m));
      for (int32_t j = 0; j <= position; ++j) {
        if (depth != nullptr && depth[j] <= 1) continue;
        cache->ReadValue(tables_[seq][j / g_.block_size], j % g_.block_size, off, hd,
                         v.data());
        for (int64_t d = 0; d < hd; ++d) {
          out[h * hd + d] += s[j] / sum * v[d];
          *max_v = std::max(*max_v, std::fabs(static_cast<double>(v[d])));
        }
      }
    }
    return out;
  }

  AttentionGeometry geometry() const {
    return {.n_heads = g_.n_heads, .n_kv_heads = g_.n_kv_heads, .head_dim = g_.head_dim,
            .max_context = 4096};
  }

 private:
  Geometry g_;
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<KvCache> f32_;
  std::vector<std::vector<BlockId>> tables_;
  std::vector<int32_t> lengths_;
  std::vector<float> q_;
};

class PagedAttentionTest : public ::testing::TestWithParam<Geometry> {};

// A mixed batch: a prefill chunk of 40 consecutive positions of sequence 0 crossing a chunk
// boundary, and decodes of sequences 1 and 2 at positions in 1, 2 and 8 chunks.
TEST_P(PagedAttentionTest, MatchesScalarReference) {
  const Geometry& g = GetParam();
  Fixture f(g, {300, 129, 1000}, 1);
  std::vector<AttentionQuery> queries;
  std::vector<int> seqs;
  for (int32_t p = 100; p < 140; ++p) {
    queries.push_back({.blocks = f.table(0), .position = p});
    seqs.push_back(0);
  }
  for (int32_t p : {0, 1, 127, 128}) {
    queries.push_back({.blocks = f.table(1), .position = p});
    seqs.push_back(1);
  }
  queries.push_back({.blocks = f.table(2), .position = 999});
  seqs.push_back(2);
  const int64_t row = g.n_heads * g.head_dim;
  std::vector<float> out(queries.size() * row, NAN);
  PagedAttention attention(f.geometry());
  attention.Forward(f.cache(), 1, queries, f.q(0), out.data());
  for (size_t t = 0; t < queries.size(); ++t) {
    double max_v = 0;
    const std::vector<double> want = f.Reference(seqs[t], queries[t].position, f.q(t), &max_v);
    for (int64_t i = 0; i < row; ++i) {
      ASSERT_NEAR(out[t * row + i], want[i], 5e-5 * max_v)
          << "query " << t << " (position " << queries[t].position << ") head "
          << i / g.head_dim << " dim " << i % g.head_dim;
    }
  }
}

// A query's result is bit-identical alone, inside a mixed batch (any neighbours, any tile
// position), and with 1, 2 or 3 threads.
TEST_P(PagedAttentionTest, BitIdenticalAcrossBatchesAndThreadCounts) {
  const Geometry& g = GetParam();
  Fixture f(g, {600, 70, 300}, 2);
  const int saved_threads = omp_get_max_threads();
  omp_set_num_threads(3);
  PagedAttention attention(f.geometry());
  const int64_t row = g.n_heads * g.head_dim;

  // Reference: each query of sequence 0 at positions 250..299, alone, 1 thread.
  omp_set_num_threads(1);
  std::vector<float> alone(50 * row);
  for (int32_t i = 0; i < 50; ++i) {
    const AttentionQuery q = {.blocks = f.table(0), .position = 250 + i};
    attention.Forward(f.cache(), 1, absl::MakeConstSpan(&q, 1), f.q(i), alone.data() + i * row);
  }
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    // Decodes of other sequences before and after, and a 50-token chunk of sequence 0 (tiles
    // of 16 then split differently from the 1-query runs above).
    std::vector<AttentionQuery> queries = {{.blocks = f.table(1), .position = 69}};
    std::vector<float> q(row);
    std::copy_n(f.q(100), row, q.data());
    for (int32_t i = 0; i < 50; ++i) {
      queries.push_back({.blocks = f.table(0), .position = 250 + i});
      q.insert(q.end(), f.q(i), f.q(i) + row);
    }
    queries.push_back({.blocks = f.table(2), .position = 299});
    q.insert(q.end(), f.q(101), f.q(101) + row);
    std::vector<float> out(queries.size() * row);
    attention.Forward(f.cache(), 1, queries, q.data(), out.data());
    EXPECT_EQ(std::memcmp(out.data() + row, alone.data(), alone.size() * sizeof(float)), 0)
        << threads << " threads";
  }
  omp_set_num_threads(saved_threads);
}

// LazyLLM's depth mask: in layer 1 a query ignores slots whose depth is <= 1 (pruned after
// layer 0): a whole 128-position chunk masked, scattered masked slots elsewhere, queries in a
// prefill tile and alone. All slots at full depth is bit-identical to no mask.
TEST_P(PagedAttentionTest, DepthMaskSkipsSlotsWithoutKv) {
  const Geometry& g = GetParam();
  Fixture f(g, {400}, 4);
  std::vector<int16_t> depth(400, 2);
  for (int32_t j = 128; j < 256; ++j) depth[j] = 1;            // A fully masked chunk.
  for (int32_t j = 0; j < 400; j += 7) depth[j] = j % 2 ? 1 : 0;  // Scattered.
  std::vector<AttentionQuery> queries;
  for (int32_t p : {1, 130, 257, 300, 301, 302, 399}) {
    depth[p] = 2;  // A query's own slot always has KV.
    queries.push_back({.blocks = f.table(0), .position = p, .depth = depth.data()});
  }
  const int64_t row = g.n_heads * g.head_dim;
  std::vector<float> out(queries.size() * row, NAN);
  PagedAttention attention(f.geometry());
  attention.Forward(f.cache(), 1, queries, f.q(0), out.data());
  for (size_t t = 0; t < queries.size(); ++t) {
    double max_v = 0;
    const std::vector<double> want =
        f.Reference(0, queries[t].position, f.q(t), &max_v, nullptr, depth.data());
    for (int64_t i = 0; i < row; ++i) {
      ASSERT_FALSE(std::isnan(out[t * row + i])) << "query " << t;
      ASSERT_NEAR(out[t * row + i], want[i], 5e-5 * max_v)
          << "query " << t << " (position " << queries[t].position << ") head "
          << i / g.head_dim << " dim " << i % g.head_dim;
    }
  }
  // Nothing masked: the same bits as without a depth array.
  std::vector<int16_t> full(400, 2);
  std::vector<float> plain(queries.size() * row), masked(queries.size() * row);
  for (AttentionQuery& q : queries) q.depth = nullptr;
  attention.Forward(f.cache(), 1, queries, f.q(0), plain.data());
  for (AttentionQuery& q : queries) q.depth = full.data();
  attention.Forward(f.cache(), 1, queries, f.q(0), masked.data());
  EXPECT_EQ(std::memcmp(plain.data(), masked.data(), plain.size() * sizeof(float)), 0);
}

// bf16 and int8 caches: the kernel's arithmetic on the decoded rows is as exact as for f32
// (same 5e-5 max|v| bound against the scalar reference over the decoded rows), and the result
// stays close to attention over the original f32 rows. Measured worst errors over these
// geometries (uniform keys/values in +-1.5, queries in +-1.5): bf16 2.7e-3 max|v|, int8
// 3.9e-3 max|v|; the bounds below leave ~4x margin, while a mis-decoded row (wrong scale,
// group or offset) moves outputs by O(max|v|).
TEST_P(PagedAttentionTest, QuantisedCachesMatchF32Reference) {
  const Geometry& g = GetParam();
  for (const auto& [dtype, tolerance] : {std::pair{KvDtype::kBf16, 1e-2},
                                          std::pair{KvDtype::kInt8, 1.5e-2}}) {
    SCOPED_TRACE(KvDtypeName(dtype));
    Fixture f(g, {300, 129, 1000}, 3, dtype);
    std::vector<AttentionQuery> queries;
    std::vector<int> seqs;
    for (int32_t p = 120; p < 140; ++p) {
      queries.push_back({.blocks = f.table(0), .position = p});
      seqs.push_back(0);
    }
    for (int32_t p : {0, 128}) {
      queries.push_back({.blocks = f.table(1), .position = p});
      seqs.push_back(1);
    }
    queries.push_back({.blocks = f.table(2), .position = 999});
    seqs.push_back(2);
    const int64_t row = g.n_heads * g.head_dim;
    std::vector<float> out(queries.size() * row, NAN);
    PagedAttention attention(f.geometry());
    attention.Forward(f.cache(), 1, queries, f.q(0), out.data());
    double worst = 0;
    for (size_t t = 0; t < queries.size(); ++t) {
      double max_v = 0;
      const std::vector<double> decoded = f.Reference(seqs[t], queries[t].position, f.q(t), &max_v);
      double max_v32 = 0;
      const std::vector<double> exact =
          f.Reference(seqs[t], queries[t].position, f.q(t), &max_v32, &f.f32_cache());
      for (int64_t i = 0; i < row; ++i) {
        ASSERT_NEAR(out[t * row + i], decoded[i], 5e-5 * max_v) << "query " << t << " i " << i;
        ASSERT_NEAR(out[t * row + i], exact[i], tolerance * max_v32) << "query " << t << " i " << i;
        worst = std::max(worst, std::fabs(out[t * row + i] - exact[i]) / max_v32);
      }
    }
    RecordProperty(std::string("worst_error_") + std::string(KvDtypeName(dtype)),
                   std::to_string(worst));
    std::printf("%s %s: worst |out - f32 ref| = %.2e max|v|\n", g.name.c_str(),
                std::string(KvDtypeName(dtype)).c_str(), worst);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Geometries, PagedAttentionTest,
    ::testing::Values(Geometry{"TinyLlama32q4kv64d", 32, 4, 64, 16},
                      Geometry{"Bundled8q4kv8d", 8, 4, 8, 16},
                      Geometry{"MultiHead4q4kv128dBlock32", 4, 4, 128, 32},
                      Geometry{"OddHeadDim6q2kv40dBlock7", 6, 2, 40, 7}),
    [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace kvserve::engine
