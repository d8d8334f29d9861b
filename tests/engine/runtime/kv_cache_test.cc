#include "engine/runtime/kv_cache.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <random>
#include <set>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "engine/runtime/kv_dtype.h"

namespace kvserve::engine {
namespace {

KvCacheOptions SmallOptions() {
  return {.kv_dim = 8, .block_size = 4, .num_blocks = 5};
}

TEST(KvCacheTest, RejectsNonPositiveSizes) {
  KvCacheOptions options = SmallOptions();
  options.num_blocks = 0;
  EXPECT_EQ(KvCache::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options = SmallOptions();
  options.kv_dim = -1;
  EXPECT_EQ(KvCache::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(KvCacheTest, AllocatesEveryBlockOnceThenRunsOut) {
  auto cache = KvCache::Create(SmallOptions()).value();
  std::set<BlockId> seen;
  for (int i = 0; i < 5; ++i) {
    std::optional<BlockId> b = cache->Allocate();
    ASSERT_TRUE(b.has_value());
    EXPECT_TRUE(seen.insert(*b).second);
  }
  EXPECT_EQ(cache->free_blocks(), 0);
  EXPECT_FALSE(cache->Allocate().has_value());
  cache->Free(*seen.begin());
  EXPECT_EQ(cache->free_blocks(), 1);
  cache->Free(*seen.begin());  // A double free is ignored, not a corruption.
  EXPECT_EQ(cache->free_blocks(), 1);
  EXPECT_TRUE(cache->Allocate().has_value());
}

TEST(KvCacheTest, SlotsDoNotOverlap) {
  const KvCacheOptions options = SmallOptions();
  auto cache = KvCache::Create(options).value();
  // Write a distinct value into every slot of every block, then read all back.
  auto tag = [](int b, int s, int kind, int d) {
    return static_cast<float>(((b * 4 + s) * 2 + kind) * 8 + d);
  };
  for (int b = 0; b < 5; ++b)
    for (int s = 0; s < 4; ++s)
      for (int d = 0; d < 8; ++d) {
        cache->Key(b, s)[d] = tag(b, s, 0, d);
        cache->Value(b, s)[d] = tag(b, s, 1, d);
      }
  for (int b = 0; b < 5; ++b)
    for (int s = 0; s < 4; ++s)
      for (int d = 0; d < 8; ++d) {
        ASSERT_EQ(cache->Key(b, s)[d], tag(b, s, 0, d));
        ASSERT_EQ(cache->Value(b, s)[d], tag(b, s, 1, d));
      }
  // One block is one layer's keys and values of block_size slots.
  EXPECT_EQ(cache->block_bytes(), 2 * 4 * 8 * 4);
}

TEST(KvCacheTest, RegisteredBlocksAreSharedAndCachedInLruOrder) {
  auto cache = KvCache::Create(SmallOptions()).value();
  const int32_t tokens_a[4] = {1, 2, 3, 4};
  const int32_t tokens_b[4] = {5, 6, 7, 8};
  const BlockId a = *cache->Allocate();
  const BlockId b = *cache->Allocate();
  cache->RegisterFull(a, 100, tokens_a);
  cache->RegisterFull(b, 200, tokens_b);
  EXPECT_EQ(cache->cached_blocks(), 2);

  // Lookup needs both the hash and the exact tokens (collisions cannot alias).
  EXPECT_FALSE(cache->Lookup(100, tokens_b).has_value());
  EXPECT_FALSE(cache->Lookup(300, tokens_a).has_value());
  EXPECT_EQ(cache->Lookup(100, tokens_a), a);  // Second reference to a.

  cache->Free(a);
  cache->Free(b);  // b unreferenced: cached, still available.
  EXPECT_EQ(cache->free_blocks(), 4);
  cache->Free(a);  // a unreferenced now too; LRU order is b, a.
  EXPECT_EQ(cache->free_blocks(), 5);

  // Never-cached blocks are used first, then the least recently used cached block (b).
  std::vector<BlockId> taken;
  for (int i = 0; i < 3; ++i) taken.push_back(*cache->Allocate());
  EXPECT_EQ(cache->cached_blocks(), 2);
  EXPECT_EQ(cache->Allocate(), b);
  EXPECT_EQ(cache->cached_blocks(), 1);
  EXPECT_FALSE(cache->Lookup(200, tokens_b).has_value());
  EXPECT_EQ(cache->Lookup(100, tokens_a), a);  // Revived from the LRU list.
  EXPECT_EQ(cache->free_blocks(), 0);
}

TEST(KvDtypeTest, ParsesNamesAndRejectsOthersNamingTheChoices) {
  for (KvDtype d : {KvDtype::kF32, KvDtype::kBf16, KvDtype::kInt8}) {
    EXPECT_EQ(ParseKvDtype(KvDtypeName(d)).value(), d);
  }
  EXPECT_EQ(KvDtypeName(KvDtype::kBf16), "bf16");
  const absl::Status bad = ParseKvDtype("fp8").status();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.message(), testing::HasSubstr("f32, bf16 or int8"));
  EXPECT_FALSE(ParseKvDtype("F32").ok());
}

TEST(KvDtypeTest, BlockBytesCountDataAndScales) {
  // 3 layers x 4 slots x K and V; kv_dim 8 is not a multiple of 32: one f16 scale per row.
  EXPECT_EQ(KvCache::BlockBytes(3, 8, 4, KvDtype::kF32), 2 * 3 * 4 * 8 * 4);
  EXPECT_EQ(KvCache::BlockBytes(3, 8, 4, KvDtype::kBf16), 2 * 3 * 4 * 8 * 2);
  EXPECT_EQ(KvCache::BlockBytes(3, 8, 4, KvDtype::kInt8), 2 * 3 * 4 * (8 + 2));
  // stories260K (kv_dim 32) and TinyLlama (kv_dim 256): 34/128 and 272/1024 bytes per row,
  // i.e. 3.76x smaller than f32.
  EXPECT_EQ(KvRowBytes(KvDtype::kInt8, 32), 34);
  EXPECT_EQ(KvRowBytes(KvDtype::kInt8, 256), 256 + 8 * 2);
  EXPECT_EQ(KvCache::BlockBytes(5, 32, 16, KvDtype::kInt8), 2 * 5 * 16 * 34);
  EXPECT_EQ(KvCache::BlockBytes(5, 32, 16), KvCache::BlockBytes(5, 32, 16, KvDtype::kF32));
  for (KvDtype d : {KvDtype::kF32, KvDtype::kBf16, KvDtype::kInt8}) {
    KvCacheOptions options = SmallOptions();
    options.dtype = d;
    auto cache = KvCache::Create(options).value();
    EXPECT_EQ(cache->block_bytes(), KvCache::BlockBytes(1, 8, 4, d));
    EXPECT_EQ(cache->dtype(), d);
  }
}

// Writes random rows (each with its own magnitude) to every slot through WriteKey/WriteValue,
// reads them back and checks the error bound of the storage type.
void CheckRoundTrip(KvDtype dtype, int64_t kv_dim) {
  KvCacheOptions options = {.kv_dim = kv_dim, .block_size = 4, .num_blocks = 6, .dtype = dtype};
  auto cache = KvCache::Create(options).value();
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> magnitude(-3.0f, 3.0f);
  std::vector<std::vector<float>> written;
  for (int b = 0; b < 6; ++b)
    for (int l = 0; l < 1; ++l)
      for (int s = 0; s < 4; ++s)
        for (int kind = 0; kind < 2; ++kind) {
          std::vector<float> row(kv_dim);
          const float m = std::pow(10.0f, magnitude(rng));
          for (float& v : row) v = m * normal(rng);
          kind == 0 ? cache->WriteKey(b, s, row.data()) : cache->WriteValue(b, s, row.data());
          written.push_back(std::move(row));
        }
  const int64_t group = KvInt8GroupSize(kv_dim);
  std::vector<float> got(kv_dim);
  size_t i = 0;
  for (int b = 0; b < 6; ++b)
    for (int l = 0; l < 1; ++l)
      for (int s = 0; s < 4; ++s)
        for (int kind = 0; kind < 2; ++kind) {
          const std::vector<float>& want = written[i++];
          kind == 0 ? cache->ReadKey(b, s, 0, kv_dim, got.data())
                    : cache->ReadValue(b, s, 0, kv_dim, got.data());
          for (int64_t d = 0; d < kv_dim; ++d) {
            const float err = std::fabs(got[d] - want[d]);
            switch (dtype) {
              case KvDtype::kF32:
                ASSERT_EQ(got[d], want[d]);
                break;
              case KvDtype::kBf16:  // 8 significant bits, rounded: half an ulp of 2^-7.
                ASSERT_LE(err, std::fabs(want[d]) * 0x1p-8f) << d;
                break;
              case KvDtype::kInt8: {  // Half a quantisation step of the value's own group.
                const int64_t g0 = d / group * group;
                float amax = 0;
                for (int64_t e = g0; e < g0 + group; ++e) amax = std::max(amax, std::fabs(want[e]));
                ASSERT_LE(err, 0.5f * amax / 127.0f * 1.001f) << d;
                break;
              }
            }
          }
        }
}

TEST(KvDtypeTest, RoundTripErrorBounds) {
  for (KvDtype d : {KvDtype::kF32, KvDtype::kBf16, KvDtype::kInt8}) {
    for (int64_t kv_dim : {8, 32, 96}) {
      SCOPED_TRACE(testing::Message() << KvDtypeName(d) << " kv_dim " << kv_dim);
      CheckRoundTrip(d, kv_dim);
    }
  }
}

TEST(KvDtypeTest, Bf16RoundsToNearestEven) {
  KvCacheOptions options = SmallOptions();
  options.dtype = KvDtype::kBf16;
  auto cache = KvCache::Create(options).value();
  // Ties (exactly half a bf16 ulp above) go to the even neighbour; above the tie rounds up.
  const float in[8] = {std::bit_cast<float>(0x3f808000u), std::bit_cast<float>(0x3f818000u),
                       std::bit_cast<float>(0x3f808001u), -2.0f, 0.0f, 1e-30f,
                       std::bit_cast<float>(0x3f807fffu), 3.0f};
  const uint32_t want[8] = {0x3f800000u, 0x3f820000u, 0x3f810000u, 0xc0000000u, 0u,
                            0x0da20000u /* 1e-30f = 0x0da24260 */, 0x3f800000u,
                            0x40400000u};
  cache->WriteKey(1, 2, in);
  float out[8];
  cache->ReadKey(1, 2, 0, 8, out);
  for (int d = 0; d < 8; ++d) EXPECT_EQ(std::bit_cast<uint32_t>(out[d]), want[d]) << d;
}

TEST(KvDtypeTest, Int8ScalesArePerGroupOf32) {
  // Two groups: a large one and a tiny one. A per-row scale would flush the tiny group to 0.
  KvCacheOptions options = {.kv_dim = 64, .block_size = 2, .num_blocks = 1,
                            .dtype = KvDtype::kInt8};
  auto cache = KvCache::Create(options).value();
  std::vector<float> row(64);
  for (int d = 0; d < 32; ++d) row[d] = 100.0f * static_cast<float>(d - 16);
  for (int d = 32; d < 64; ++d) row[d] = 0.001f * static_cast<float>(d - 48);
  cache->WriteValue(0, 1, row.data());
  std::vector<float> out(64);
  cache->ReadValue(0, 1, 0, 64, out.data());
  for (int d = 32; d < 64; ++d) EXPECT_NEAR(out[d], row[d], 0.5 * 0.016 / 127 * 1.001) << d;
  // The group maximum is 127 steps: off only by the f16 rounding of its scale.
  EXPECT_NEAR(out[0], -1600.0f, 1600.0f * 0x1p-11f);
  // A partial read across the group boundary decodes exactly the same values.
  std::vector<float> part(20);
  cache->ReadValue(0, 1, 22, 20, part.data());
  for (int d = 0; d < 20; ++d) EXPECT_EQ(part[d], out[22 + d]) << d;
  // All zeros stays exactly zero (scale 0).
  std::vector<float> zeros(64, 0.0f);
  cache->WriteValue(0, 0, zeros.data());
  cache->ReadValue(0, 0, 0, 64, out.data());
  for (float v : out) EXPECT_EQ(v, 0.0f);
}

TEST(KvDtypeTest, CopySlotMovesDataAndScales) {
  for (KvDtype dtype : {KvDtype::kF32, KvDtype::kBf16, KvDtype::kInt8}) {
    SCOPED_TRACE(KvDtypeName(dtype));
    KvCacheOptions options = SmallOptions();
    options.kv_dim = 32;
    options.dtype = dtype;
    auto cache = KvCache::Create(options).value();
    std::vector<float> a(32), b(32);
    for (int l = 0; l < 3; ++l) {
      for (int d = 0; d < 32; ++d) {
        a[d] = static_cast<float>((l + 1) * (d - 10)) * 0.37f;
        b[d] = static_cast<float>(d) * 1e-3f;  // Very different scale.
      }
      // Source block 2 + l (slot 3) to block l (slot 1), within and across blocks.
      cache->WriteKey(2 + l, 3, a.data());
      for (int d = 0; d < 32; ++d) a[d] = -a[d] * 2.0f;
      cache->WriteValue(2 + l, 3, a.data());
      cache->WriteKey(l, 1, b.data());
      cache->WriteValue(l, 1, b.data());
    }
    for (int l = 0; l < 3; ++l) cache->CopySlot(2 + l, 3, l, 1);
    std::vector<float> want(32), got(32);
    for (int l = 0; l < 3; ++l) {
      cache->ReadKey(2 + l, 3, 0, 32, want.data());
      cache->ReadKey(l, 1, 0, 32, got.data());
      EXPECT_EQ(got, want) << "block " << l;
      cache->ReadValue(2 + l, 3, 0, 32, want.data());
      cache->ReadValue(l, 1, 0, 32, got.data());
      EXPECT_EQ(got, want) << "block " << l;
    }
  }
}

}  // namespace
}  // namespace kvserve::engine
