#include "engine/runtime/kv_cache.h"

#include <set>

#include "gtest/gtest.h"

namespace kvserve::engine {
namespace {

KvCacheOptions SmallOptions() {
  return {.num_layers = 3, .kv_dim = 8, .block_size = 4, .num_blocks = 5};
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
  // Write a distinct value into every slot of every block/layer, then read all back.
  auto tag = [](int b, int l, int s, int kind, int d) {
    return static_cast<float>((((b * 3 + l) * 4 + s) * 2 + kind) * 8 + d);
  };
  for (int b = 0; b < 5; ++b)
    for (int l = 0; l < 3; ++l)
      for (int s = 0; s < 4; ++s)
        for (int d = 0; d < 8; ++d) {
          cache->Key(b, l, s)[d] = tag(b, l, s, 0, d);
          cache->Value(b, l, s)[d] = tag(b, l, s, 1, d);
        }
  for (int b = 0; b < 5; ++b)
    for (int l = 0; l < 3; ++l)
      for (int s = 0; s < 4; ++s)
        for (int d = 0; d < 8; ++d) {
          ASSERT_EQ(cache->Key(b, l, s)[d], tag(b, l, s, 0, d));
          ASSERT_EQ(cache->Value(b, l, s)[d], tag(b, l, s, 1, d));
        }
  EXPECT_EQ(cache->block_bytes(), 2 * 3 * 4 * 8 * 4);
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

}  // namespace
}  // namespace kvserve::engine
