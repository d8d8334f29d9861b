#include "engine/runtime/kv_cache.h"

#include <memory>
#include <algorithm>
#include <cstring>
#include <new>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace kvserve::engine {

int64_t KvCache::BlockBytes(int64_t num_layers, int64_t kv_dim, int32_t block_size,
                            KvDtype dtype) {
  return 2 * num_layers * block_size * KvRowBytes(dtype, kv_dim);
}

absl::StatusOr<std::unique_ptr<KvCache>> KvCache::Create(const KvCacheOptions& options) {
  if (options.kv_dim <= 0 || options.block_size <= 0 || options.num_blocks <= 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "KV cache needs positive sizes (kv_dim %d, block_size %d, blocks %d)", options.kv_dim,
        options.block_size, options.num_blocks));
  }
  const int64_t bytes =
      BlockBytes(1, options.kv_dim, options.block_size, options.dtype) * options.num_blocks;
  const int64_t floats = (bytes + 3) / 4;
  std::unique_ptr<float[]> data;
  try {
    data = std::make_unique_for_overwrite<float[]>(floats);  // No zeroing: slots are written before read.
  } catch (const std::bad_alloc&) {
  }
  if (data == nullptr) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "cannot allocate a KV cache of %d blocks (%d MiB); lower --kv-cache-mb",
        options.num_blocks, bytes >> 20));
  }
  return std::make_unique<KvCache>(PrivateKey{}, options, std::move(data));
}

KvCache::KvCache(PrivateKey, const KvCacheOptions& options, std::unique_ptr<float[]> data)
    : options_(options),
      row_bytes_(KvRowBytes(options.dtype, options.kv_dim)),
      data_(std::move(data)),
      refs_(options.num_blocks, 0),
      hash_of_(options.num_blocks),
      block_tokens_(options.num_blocks * options.block_size, 0),
      lru_pos_(options.num_blocks, lru_.end()) {
  free_list_.reserve(options.num_blocks);
  for (int64_t b = options.num_blocks - 1; b >= 0; --b) free_list_.push_back(static_cast<BlockId>(b));
}

int64_t KvCache::block_bytes() const {
  return BlockBytes(1, options_.kv_dim, options_.block_size, options_.dtype);
}

void KvCache::CopySlot(BlockId src_block, int32_t src_slot, BlockId dst_block, int32_t dst_slot) {
  std::memmove(KeyRow(dst_block, dst_slot), KeyRow(src_block, src_slot), row_bytes_);
  std::memmove(ValueRow(dst_block, dst_slot), ValueRow(src_block, src_slot), row_bytes_);
}

std::optional<BlockId> KvCache::Allocate() {
  BlockId block;
  if (!free_list_.empty()) {
    block = free_list_.back();
    free_list_.pop_back();
  } else if (!lru_.empty()) {
    block = lru_.front();
    Evict(block);
  } else {
    return std::nullopt;
  }
  refs_[block] = 1;
  return block;
}

void KvCache::Evict(BlockId block) {
  lru_.erase(lru_pos_[block]);
  lru_pos_[block] = lru_.end();
  by_hash_.erase(*hash_of_[block]);
  hash_of_[block].reset();
}

void KvCache::Free(BlockId block) {
  // Defensive: a double free is a no-op, never a corruption of the pool.
  if (block < 0 || block >= options_.num_blocks || refs_[block] == 0) return;
  if (--refs_[block] > 0) return;
  if (hash_of_[block].has_value()) {
    lru_pos_[block] = lru_.insert(lru_.end(), block);
  } else {
    free_list_.push_back(block);
  }
}

void KvCache::RegisterFull(BlockId block, uint64_t hash, const int32_t* tokens) {
  if (block < 0 || block >= options_.num_blocks || refs_[block] == 0) return;
  if (hash_of_[block].has_value() || by_hash_.contains(hash)) return;
  by_hash_[hash] = block;
  hash_of_[block] = hash;
  std::copy_n(tokens, options_.block_size, block_tokens_.data() + block * options_.block_size);
}

std::optional<BlockId> KvCache::Lookup(uint64_t hash, const int32_t* tokens) {
  auto it = by_hash_.find(hash);
  if (it == by_hash_.end()) return std::nullopt;
  const BlockId block = it->second;
  if (!std::equal(tokens, tokens + options_.block_size,
                  block_tokens_.data() + block * options_.block_size)) {
    return std::nullopt;
  }
  if (refs_[block] == 0) {  // Cached and unreferenced: leaves the LRU list.
    lru_.erase(lru_pos_[block]);
    lru_pos_[block] = lru_.end();
  }
  ++refs_[block];
  return block;
}

}  // namespace kvserve::engine
