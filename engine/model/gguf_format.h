// Constants and value types of the GGUF file format (ggml's model container), shared by
// GgufFile (reading) and GgufWriter (writing). Plain values and pure functions; thread-safe.
//
// A GGUF file is, all integers little-endian:
//   1. header: magic "GGUF", uint32 version (2 or 3), uint64 tensor count, uint64 kv count;
//   2. kv count metadata entries: string key, uint32 value type, value;
//      (a string is a uint64 byte length + bytes, no terminator; an array is a uint32 element
//      type, a uint64 count and the elements, which may themselves be arrays);
//   3. tensor count tensor infos: string name, uint32 n_dims, n_dims x uint64 dimensions
//      (innermost first), uint32 ggml type, uint64 offset into the data section;
//   4. padding to `general.alignment` (default 32), then the data section; every tensor's
//      offset is a multiple of the alignment.
#ifndef KVSERVE_ENGINE_MODEL_GGUF_FORMAT_H_
#define KVSERVE_ENGINE_MODEL_GGUF_FORMAT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/model/tensor_data.h"

namespace kvserve::engine {

inline constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" read as a little-endian uint32.
inline constexpr uint32_t kGgufVersion = 3;         // What GgufWriter writes.
inline constexpr uint64_t kGgufDefaultAlignment = 32;
inline constexpr int kGgufMaxDims = 4;              // GGML_MAX_DIMS.
inline constexpr int64_t kQ8_0BlockSize = 32;       // Values per q8_0 block.
inline constexpr int64_t kQ8_0BlockBytes = 34;      // f16 scale + 32 int8.
inline constexpr int64_t kQ4_0BlockSize = 32;       // Values per q4_0 block.
inline constexpr int64_t kQ4_0BlockBytes = 18;      // f16 scale + 32 4-bit values.

enum class GgufValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

// "UINT32", "ARRAY", ...; "type N" for an unknown id.
std::string GgufValueTypeName(uint32_t type);

// ggml tensor type ids kvserve reads (ggml.h `enum ggml_type`).
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ8_0 = 8,
  kBF16 = 30,
};

// The ggml name of a tensor type id ("F32", "Q4_K", "IQ2_XXS", ...); "type N" when unknown.
std::string GgmlTypeName(uint32_t ggml_type);

// The TensorType of a ggml type id, or nullopt for a type kvserve does not read.
std::optional<TensorType> TensorTypeFromGgml(uint32_t ggml_type);
uint32_t GgmlTypeOf(TensorType type);

// Bytes needed by `num_elements` values of `type` (for block types, num_elements must be a
// multiple of the block). No overflow check: callers bound num_elements first.
uint64_t TensorBytes(TensorType type, uint64_t num_elements);
// Values per block of `type`: a row (innermost dimension) must be a multiple of it. 1 for
// the plain float types, 32 for q8_0 and q4_0.
int64_t TensorBlockValues(TensorType type);

// One metadata value. Scalars use the field matching `type` (all integer types share
// `int_value` / `uint_value`, both floats `float_value`); arrays hold `array_type` elements
// in `array`.
struct GgufValue {
  GgufValueType type = GgufValueType::kUint32;
  uint64_t uint_value = 0;       // kUint8, kUint16, kUint32, kUint64.
  int64_t int_value = 0;         // kInt8, kInt16, kInt32, kInt64.
  double float_value = 0;        // kFloat32, kFloat64.
  bool bool_value = false;       // kBool.
  std::string string_value;      // kString.
  GgufValueType array_type = GgufValueType::kUint8;  // kArray: the element type.
  std::vector<GgufValue> array;  // kArray: the elements.

  static GgufValue Uint8(uint8_t v);
  static GgufValue Int8(int8_t v);
  static GgufValue Uint16(uint16_t v);
  static GgufValue Int16(int16_t v);
  static GgufValue Uint32(uint32_t v);
  static GgufValue Int32(int32_t v);
  static GgufValue Uint64(uint64_t v);
  static GgufValue Int64(int64_t v);
  static GgufValue Float32(float v);
  static GgufValue Float64(double v);
  static GgufValue Bool(bool v);
  static GgufValue String(std::string v);
  // An array of `element_type`; every element must have that type.
  static GgufValue Array(GgufValueType element_type, std::vector<GgufValue> elements);
  static GgufValue StringArray(const std::vector<std::string>& v);
  static GgufValue Float32Array(const std::vector<float>& v);
  static GgufValue Int32Array(const std::vector<int32_t>& v);
};

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_MODEL_GGUF_FORMAT_H_
