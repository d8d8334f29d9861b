#include "engine/model/gguf_format.h"

#include <iterator>
#include <utility>

#include "absl/strings/str_cat.h"

namespace kvserve::engine {

std::string GgufValueTypeName(uint32_t type) {
  static constexpr const char* kNames[] = {"UINT8",   "INT8",  "UINT16", "INT16", "UINT32",
                                           "INT32",   "FLOAT32", "BOOL", "STRING", "ARRAY",
                                           "UINT64",  "INT64", "FLOAT64"};
  if (type < std::size(kNames)) return kNames[type];
  return absl::StrCat("type ", type);
}

std::string GgmlTypeName(uint32_t ggml_type) {
  // ggml.h `enum ggml_type`; nullptr marks ids ggml has retired.
  static constexpr const char* kNames[] = {
      "F32",     "F16",    "Q4_0",    "Q4_1",  "Q4_2",   "Q4_3",   "Q5_0",   "Q5_1",
      "Q8_0",    "Q8_1",   "Q2_K",    "Q3_K",  "Q4_K",   "Q5_K",   "Q6_K",   "Q8_K",
      "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S",  "IQ2_S",  "IQ4_XS",
      "I8",      "I16",    "I32",     "I64",   "F64",    "IQ1_M",  "BF16",   "Q4_0_4_4",
      "Q4_0_4_8", "Q4_0_8_8", "TQ1_0",  "TQ2_0", "IQ4_NL_4_4", "IQ4_NL_4_8", "IQ4_NL_8_8",
      "MXFP4"};
  if (ggml_type < std::size(kNames)) return kNames[ggml_type];
  return absl::StrCat("type ", ggml_type);
}

std::optional<TensorType> TensorTypeFromGgml(uint32_t ggml_type) {
  switch (static_cast<GgmlType>(ggml_type)) {
    case GgmlType::kF32:
      return TensorType::kF32;
    case GgmlType::kF16:
      return TensorType::kF16;
    case GgmlType::kQ8_0:
      return TensorType::kQ8_0;
    case GgmlType::kQ4_0:
      return TensorType::kQ4_0;
    case GgmlType::kBF16:
      return TensorType::kBF16;
  }
  return std::nullopt;
}

uint32_t GgmlTypeOf(TensorType type) {
  switch (type) {
    case TensorType::kF32:
      return static_cast<uint32_t>(GgmlType::kF32);
    case TensorType::kF16:
      return static_cast<uint32_t>(GgmlType::kF16);
    case TensorType::kBF16:
      return static_cast<uint32_t>(GgmlType::kBF16);
    case TensorType::kQ8_0:
      return static_cast<uint32_t>(GgmlType::kQ8_0);
    case TensorType::kQ4_0:
      return static_cast<uint32_t>(GgmlType::kQ4_0);
  }
  return static_cast<uint32_t>(GgmlType::kF32);
}

uint64_t TensorBytes(TensorType type, uint64_t num_elements) {
  switch (type) {
    case TensorType::kF32:
      return num_elements * 4;
    case TensorType::kF16:
    case TensorType::kBF16:
      return num_elements * 2;
    case TensorType::kQ8_0:
      return num_elements / kQ8_0BlockSize * kQ8_0BlockBytes;
    case TensorType::kQ4_0:
      return num_elements / kQ4_0BlockSize * kQ4_0BlockBytes;
  }
  return 0;
}

int64_t TensorBlockValues(TensorType type) {
  switch (type) {
    case TensorType::kQ8_0:
      return kQ8_0BlockSize;
    case TensorType::kQ4_0:
      return kQ4_0BlockSize;
    default:
      return 1;
  }
}

GgufValue GgufValue::Uint8(uint8_t v) {
  GgufValue r;
  r.type = GgufValueType::kUint8;
  r.uint_value = v;
  return r;
}
GgufValue GgufValue::Int8(int8_t v) {
  GgufValue r;
  r.type = GgufValueType::kInt8;
  r.int_value = v;
  return r;
}
GgufValue GgufValue::Uint16(uint16_t v) {
  GgufValue r;
  r.type = GgufValueType::kUint16;
  r.uint_value = v;
  return r;
}
GgufValue GgufValue::Int16(int16_t v) {
  GgufValue r;
  r.type = GgufValueType::kInt16;
  r.int_value = v;
  return r;
}
GgufValue GgufValue::Uint32(uint32_t v) {
  GgufValue r;
  r.type = GgufValueType::kUint32;
  r.uint_value = v;
  return r;
}
GgufValue GgufValue::Int32(int32_t v) {
  GgufValue r;
  r.type = GgufValueType::kInt32;
  r.int_value = v;
  return r;
}
GgufValue GgufValue::Uint64(uint64_t v) {
  GgufValue r;
  r.type = GgufValueType::kUint64;
  r.uint_value = v;
  return r;
}
GgufValue GgufValue::Int64(int64_t v) {
  GgufValue r;
  r.type = GgufValueType::kInt64;
  r.int_value = v;
  return r;
}
GgufValue GgufValue::Float32(float v) {
  GgufValue r;
  r.type = GgufValueType::kFloat32;
  r.float_value = v;
  return r;
}
GgufValue GgufValue::Float64(double v) {
  GgufValue r;
  r.type = GgufValueType::kFloat64;
  r.float_value = v;
  return r;
}
GgufValue GgufValue::Bool(bool v) {
  GgufValue r;
  r.type = GgufValueType::kBool;
  r.bool_value = v;
  return r;
}
GgufValue GgufValue::String(std::string v) {
  GgufValue r;
  r.type = GgufValueType::kString;
  r.string_value = std::move(v);
  return r;
}
GgufValue GgufValue::Array(GgufValueType element_type, std::vector<GgufValue> elements) {
  GgufValue r;
  r.type = GgufValueType::kArray;
  r.array_type = element_type;
  r.array = std::move(elements);
  return r;
}
GgufValue GgufValue::StringArray(const std::vector<std::string>& v) {
  std::vector<GgufValue> elements;
  elements.reserve(v.size());
  for (const std::string& s : v) elements.push_back(String(s));
  return Array(GgufValueType::kString, std::move(elements));
}
GgufValue GgufValue::Float32Array(const std::vector<float>& v) {
  std::vector<GgufValue> elements;
  elements.reserve(v.size());
  for (float f : v) elements.push_back(Float32(f));
  return Array(GgufValueType::kFloat32, std::move(elements));
}
GgufValue GgufValue::Int32Array(const std::vector<int32_t>& v) {
  std::vector<GgufValue> elements;
  elements.reserve(v.size());
  for (int32_t i : v) elements.push_back(Int32(i));
  return Array(GgufValueType::kInt32, std::move(elements));
}

}  // namespace kvserve::engine
