// KvDtype: how the KV cache stores one token's keys (or values) of one layer, a "row" of
// kv_dim numbers, and the conversions between a row and f32.
//
//   f32   kv_dim floats, exactly as computed.
//   bf16  kv_dim bfloat16 (the top 16 bits of the f32, rounded to nearest even).
//   int8  kv_dim int8 followed by one f16 scale per group of kKvInt8Group consecutive values
//         along kv_dim (llama.cpp's q8_0 layout, split into data then scales): symmetric,
//         x ~= scale * q with scale = max|x| / 127 over the group. When kv_dim is not a multiple
//         of kKvInt8Group the whole row is one group (one scale per token).
//
// A row is self-contained (its scales travel with it), so copying a row's bytes moves a token.
// Row bytes for kv_dim 32 (stories260K) and 256 (TinyLlama): f32 128/1024, bf16 64/512,
// int8 34/272, i.e. int8 is 3.76x smaller than f32 (not 4x: the f16 scale costs 2 bytes per 32).
//
// Pure functions; thread-safe.
#ifndef KVSERVE_ENGINE_RUNTIME_KV_DTYPE_H_
#define KVSERVE_ENGINE_RUNTIME_KV_DTYPE_H_

#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"

namespace kvserve::engine {

enum class KvDtype { kF32, kBf16, kInt8 };

inline constexpr int64_t kKvInt8Group = 32;

// "f32", "bf16", "int8".
std::string_view KvDtypeName(KvDtype dtype);
// Inverse of KvDtypeName; INVALID_ARGUMENT naming the choices for anything else.
absl::StatusOr<KvDtype> ParseKvDtype(std::string_view name);

// Values per int8 scale for a row of kv_dim values.
int64_t KvInt8GroupSize(int64_t kv_dim);
// Bytes of one row of kv_dim values.
int64_t KvRowBytes(KvDtype dtype, int64_t kv_dim);

// Stores the kv_dim floats `src` as one row at `row` (KvRowBytes bytes).
void EncodeKvRow(KvDtype dtype, const float* src, int64_t kv_dim, uint8_t* row);
// dst[i] = value begin + i of the row, for i < count (begin + count <= kv_dim).
void DecodeKvRow(KvDtype dtype, const uint8_t* row, int64_t kv_dim, int64_t begin, int64_t count,
                 float* dst);

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_RUNTIME_KV_DTYPE_H_
