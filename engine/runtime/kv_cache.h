// KvCache: the paged key/value store of every running sequence.
//
// A pool of fixed-size blocks; each block holds `block_size` token slots of keys and values
// for every layer. A sequence owns an ordered list of blocks (its block table, kept by the
// caller); token i of a sequence lives in slot i % block_size of its block i / block_size.
//
//   block b:  K[layer 0][slot 0..bs-1][kv_dim] ... K[layer L-1][...]   (then the same for V)
//
// Thread-compatible; engine thread only. Knows nothing about policies or sequences.
#ifndef KVSERVE_ENGINE_RUNTIME_KV_CACHE_H_
#define KVSERVE_ENGINE_RUNTIME_KV_CACHE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"

namespace kvserve::engine {

using BlockId = int32_t;

struct KvCacheOptions {
  int64_t num_layers = 0;
  int64_t kv_dim = 0;       // n_kv_heads * head_dim: floats per token per layer, for K and for V.
  int32_t block_size = 16;  // Token slots per block.
  int64_t num_blocks = 0;   // Capacity of the pool.
};

class KvCache {
 public:
  // INVALID_ARGUMENT for non-positive sizes; RESOURCE_EXHAUSTED if the pool cannot be allocated.
  static absl::StatusOr<std::unique_ptr<KvCache>> Create(const KvCacheOptions& options);

  // Bytes one block occupies (keys and values of all layers).
  static int64_t BlockBytes(int64_t num_layers, int64_t kv_dim, int32_t block_size);

  // Takes a free block, or nullopt when none is left.
  std::optional<BlockId> Allocate();
  // Returns `block` to the pool. REQUIRES: it was allocated and not freed since.
  void Free(BlockId block);

  int64_t free_blocks() const { return static_cast<int64_t>(free_list_.size()); }
  int64_t total_blocks() const { return options_.num_blocks; }
  int32_t block_size() const { return options_.block_size; }
  int64_t kv_dim() const { return options_.kv_dim; }
  int64_t block_bytes() const;

  // The kv_dim floats of one token slot.
  float* Key(BlockId block, int64_t layer, int32_t slot) { return data_.get() + Offset(block, layer, slot, 0); }
  float* Value(BlockId block, int64_t layer, int32_t slot) { return data_.get() + Offset(block, layer, slot, 1); }
  const float* Key(BlockId block, int64_t layer, int32_t slot) const { return data_.get() + Offset(block, layer, slot, 0); }
  const float* Value(BlockId block, int64_t layer, int32_t slot) const { return data_.get() + Offset(block, layer, slot, 1); }

  struct PrivateKey {
   private:
    friend class KvCache;
    PrivateKey() = default;
  };
  KvCache(PrivateKey, const KvCacheOptions& options, std::unique_ptr<float[]> data);

 private:
  int64_t Offset(BlockId block, int64_t layer, int32_t slot, int kind) const {
    return (((static_cast<int64_t>(block) * 2 + kind) * options_.num_layers + layer) *
                options_.block_size + slot) * options_.kv_dim;
  }

  const KvCacheOptions options_;
  std::unique_ptr<float[]> data_;
  std::vector<BlockId> free_list_;  // LIFO: recently freed blocks are warm in cache.
  std::vector<bool> allocated_;
};

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_RUNTIME_KV_CACHE_H_
