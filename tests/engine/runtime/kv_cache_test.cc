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

}  // namespace
}  // namespace kvserve::engine
