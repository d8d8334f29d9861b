#include "engine/runtime/kv_cache.h"

#include <memory>
#include <new>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace kvserve::engine {

int64_t KvCache::BlockBytes(int64_t num_layers, int64_t kv_dim, int32_t block_size) {
  return 2 * num_layers * block_size * kv_dim * static_cast<int64_t>(sizeof(float));
}

absl::StatusOr<std::unique_ptr<KvCache>> KvCache::Create(const KvCacheOptions& options) {
  if (options.num_layers <= 0 || options.kv_dim <= 0 || options.block_size <= 0 ||
      options.num_blocks <= 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "KV cache needs positive sizes (layers %d, kv_dim %d, block_size %d, blocks %d)",
        options.num_layers, options.kv_dim, options.block_size, options.num_blocks));
  }
  const int64_t floats = BlockBytes(options.num_layers, options.kv_dim, options.block_size) /
                         static_cast<int64_t>(sizeof(float)) * options.num_blocks;
  std::unique_ptr<float[]> data;
  try {
    data = std::make_unique_for_overwrite<float[]>(floats);  // No zeroing: slots are written before read.
  } catch (const std::bad_alloc&) {
  }
  if (data == nullptr) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "cannot allocate a KV cache of %d blocks (%d MiB); lower --kv-cache-mb",
        options.num_blocks, floats * 4 >> 20));
  }
  return std::make_unique<KvCache>(PrivateKey{}, options, std::move(data));
}

KvCache::KvCache(PrivateKey, const KvCacheOptions& options, std::unique_ptr<float[]> data)
    : options_(options), data_(std::move(data)), allocated_(options.num_blocks, false) {
  free_list_.reserve(options.num_blocks);
  for (int64_t b = options.num_blocks - 1; b >= 0; --b) free_list_.push_back(static_cast<BlockId>(b));
}

int64_t KvCache::block_bytes() const {
  return BlockBytes(options_.num_layers, options_.kv_dim, options_.block_size);
}

std::optional<BlockId> KvCache::Allocate() {
  if (free_list_.empty()) return std::nullopt;
  const BlockId block = free_list_.back();
  free_list_.pop_back();
  allocated_[block] = true;
  return block;
}

void KvCache::Free(BlockId block) {
  if (block < 0 || block >= options_.num_blocks || !allocated_[block]) return;  // Defensive: double free is a no-op.
  allocated_[block] = false;
  free_list_.push_back(block);
}

}  // namespace kvserve::engine
