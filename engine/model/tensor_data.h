// A typed, non-owning view of one weight tensor as stored in a model file.
#ifndef KVSERVE_ENGINE_MODEL_TENSOR_DATA_H_
#define KVSERVE_ENGINE_MODEL_TENSOR_DATA_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace kvserve::engine {

// Storage types a model file may hold that kvserve can read.
enum class TensorType {
  kF32,
  kF16,
  kBF16,
  kQ8_0,  // ggml blocks of 32 int8 values with one f16 scale (34 bytes per block).
  kQ4_0,  // ggml blocks of 32 4-bit values (q - 8) with one f16 scale (18 bytes per block).
};

std::string_view TensorTypeName(TensorType type);

struct TensorData {
  std::string name;
  TensorType type = TensorType::kF32;
  // Row-major, outermost dimension first: a matrix applied as y = W x is {out_features,
  // in_features}; the token embedding is {vocab_size, dim}; a norm weight is {dim}.
  // (GGUF lists dimensions innermost first; the reader reverses them.)
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // Owned by the ModelFile that produced this view.
  size_t size_bytes = 0;

  int64_t num_elements() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  int64_t rows() const { return shape.size() < 2 ? 1 : num_elements() / shape.back(); }
  int64_t cols() const { return shape.empty() ? 1 : shape.back(); }
};

// Decodes elements [first, first + out.size()) of `tensor` (in row-major order) into f32.
// For q8_0, `first` and out.size() need not be multiples of the block size.
// INVALID_ARGUMENT if the range is outside the tensor.
absl::Status DecodeToF32(const TensorData& tensor, int64_t first, absl::Span<float> out);

// IEEE half and bfloat16 conversions (exact for every finite value, NaN and infinity kept).
float HalfToFloat(uint16_t h);
float Bf16ToFloat(uint16_t b);
uint16_t FloatToHalf(float f);  // Round to nearest even.
uint16_t FloatToBf16(float f);  // Round to nearest even.

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_MODEL_TENSOR_DATA_H_
