// KvCache: the paged key/value store of every running sequence.
//
// A pool of fixed-size blocks; each block holds the keys and values of `block_size` token
// slots of ONE layer (the KV-Compress layout), so layers can keep different tokens and a
// layer that evicts more frees more memory (per-layer budgets, ScaleKV). A sequence owns one
// ordered list of blocks per layer (its block tables, kept by the caller); slot i of a layer
// lives in slot i % block_size of that layer's block i / block_size.
//
//   block b:  K[slot 0..bs-1][row]  V[slot 0..bs-1][row]
//
// A row is one token's kv_dim keys (or values) of one layer in the cache's storage type
// (kv_dtype.h): f32, bf16, or int8 with its scales, so a row's bytes are self-contained.
//
// Blocks are reference-counted so sequences can share them (prefix caching). A full block
// can be registered under a content hash (the hash of its tokens chained with the hash of
// every block before it, so it also fixes the position); when no sequence references it any
// more it stays cached in LRU order and is only reused when no never-cached block is free.
// Shared blocks are never written: sequences only share blocks whose slots are all computed.
//
// Thread-compatible; engine thread only. Knows nothing about policies or sequences.
#ifndef KVSERVE_ENGINE_RUNTIME_KV_CACHE_H_
#define KVSERVE_ENGINE_RUNTIME_KV_CACHE_H_

#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "engine/runtime/kv_dtype.h"

namespace kvserve::engine {

using BlockId = int32_t;

struct KvCacheOptions {
  int64_t kv_dim = 0;       // n_kv_heads * head_dim: floats per token per layer, for K and for V.
  int32_t block_size = 16;  // Token slots per block.
  int64_t num_blocks = 0;   // Capacity of the pool.
  KvDtype dtype = KvDtype::kF32;
};

class KvCache {
 public:
  // INVALID_ARGUMENT for non-positive sizes; RESOURCE_EXHAUSTED if the pool cannot be allocated.
  static absl::StatusOr<std::unique_ptr<KvCache>> Create(const KvCacheOptions& options);

  // Bytes that `block_size` tokens occupy in `num_layers` layers (keys and values, int8
  // scales included): num_layers blocks. BlockBytes(1, ...) is one block.
  static int64_t BlockBytes(int64_t num_layers, int64_t kv_dim, int32_t block_size,
                            KvDtype dtype = KvDtype::kF32);

  // Takes a free block with one reference, or nullopt when none is left. Prefers blocks that
  // were never cached; otherwise evicts the least recently used cached block.
  std::optional<BlockId> Allocate();
  // Drops one reference to `block`; at zero it becomes free (or cached, if registered).
  // Unknown or unreferenced blocks are ignored.
  void Free(BlockId block);

  // Registers a full, computed block under `hash` with its `tokens` (checked on lookup, so a
  // hash collision can never alias two prefixes). No-op if the hash is already registered.
  // Callers fold the layer into the hash (each layer's block is cached on its own).
  void RegisterFull(BlockId block, uint64_t hash, const int32_t* tokens);
  // The block registered under `hash` holding exactly `tokens` (block_size of them), with a
  // new reference taken, or nullopt.
  std::optional<BlockId> Lookup(uint64_t hash, const int32_t* tokens);

  // Blocks available to Allocate: never-used and cached-unreferenced ones.
  int64_t free_blocks() const {
    return static_cast<int64_t>(free_list_.size() + lru_.size());
  }
  int64_t cached_blocks() const { return static_cast<int64_t>(by_hash_.size()); }
  int64_t total_blocks() const { return options_.num_blocks; }
  int32_t block_size() const { return options_.block_size; }
  int64_t kv_dim() const { return options_.kv_dim; }
  int64_t block_bytes() const;  // One block (one layer).
  KvDtype dtype() const { return options_.dtype; }
  int64_t row_bytes() const { return row_bytes_; }

  // One token slot's row, in the storage type.
  uint8_t* KeyRow(BlockId block, int32_t slot) { return bytes() + Offset(block, slot, 0); }
  uint8_t* ValueRow(BlockId block, int32_t slot) { return bytes() + Offset(block, slot, 1); }
  const uint8_t* KeyRow(BlockId block, int32_t slot) const {
    return bytes() + Offset(block, slot, 0);
  }
  const uint8_t* ValueRow(BlockId block, int32_t slot) const {
    return bytes() + Offset(block, slot, 1);
  }

  // Stores kv_dim floats into a slot, converting to the storage type.
  void WriteKey(BlockId block, int32_t slot, const float* src) {
    EncodeKvRow(options_.dtype, src, options_.kv_dim, KeyRow(block, slot));
  }
  void WriteValue(BlockId block, int32_t slot, const float* src) {
    EncodeKvRow(options_.dtype, src, options_.kv_dim, ValueRow(block, slot));
  }
  // dst[i] = element begin + i of a slot's keys (values), as f32, for i < count.
  void ReadKey(BlockId block, int32_t slot, int64_t begin, int64_t count, float* dst) const {
    DecodeKvRow(options_.dtype, KeyRow(block, slot), options_.kv_dim, begin, count, dst);
  }
  void ReadValue(BlockId block, int32_t slot, int64_t begin, int64_t count, float* dst) const {
    DecodeKvRow(options_.dtype, ValueRow(block, slot), options_.kv_dim, begin, count, dst);
  }
  // Copies a slot's key and value (scales included) to another slot.
  void CopySlot(BlockId src_block, int32_t src_slot, BlockId dst_block, int32_t dst_slot);

  // f32 caches only: the kv_dim floats of one token slot, in place.
  float* Key(BlockId block, int32_t slot) {
    return reinterpret_cast<float*>(KeyRow(block, slot));
  }
  float* Value(BlockId block, int32_t slot) {
    return reinterpret_cast<float*>(ValueRow(block, slot));
  }
  const float* Key(BlockId block, int32_t slot) const {
    return reinterpret_cast<const float*>(KeyRow(block, slot));
  }
  const float* Value(BlockId block, int32_t slot) const {
    return reinterpret_cast<const float*>(ValueRow(block, slot));
  }

  struct PrivateKey {
   private:
    friend class KvCache;
    PrivateKey() = default;
  };
  KvCache(PrivateKey, const KvCacheOptions& options, std::unique_ptr<float[]> data);

 private:
  // Byte offset of a row.
  int64_t Offset(BlockId block, int32_t slot, int kind) const {
    return ((static_cast<int64_t>(block) * 2 + kind) * options_.block_size + slot) * row_bytes_;
  }
  // The pool is float storage (aligned for the f32 rows) viewed as bytes for the others.
  uint8_t* bytes() { return reinterpret_cast<uint8_t*>(data_.get()); }
  const uint8_t* bytes() const { return reinterpret_cast<const uint8_t*>(data_.get()); }

  const KvCacheOptions options_;
  const int64_t row_bytes_;
  std::unique_ptr<float[]> data_;
  void Evict(BlockId block);

  std::vector<BlockId> free_list_;  // Never-cached free blocks; LIFO keeps them warm.
  std::vector<int32_t> refs_;       // References per block; 0 = free or cached-unreferenced.
  // Prefix cache: registered blocks by hash; their hashes and tokens; unreferenced
  // registered blocks in LRU order (front = oldest) with O(1) removal.
  absl::flat_hash_map<uint64_t, BlockId> by_hash_;
  std::vector<std::optional<uint64_t>> hash_of_;
  std::vector<int32_t> block_tokens_;  // block_size tokens per block (registered blocks only).
  std::list<BlockId> lru_;
  std::vector<std::list<BlockId>::iterator> lru_pos_;
};

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_RUNTIME_KV_CACHE_H_
