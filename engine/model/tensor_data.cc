#include "engine/model/tensor_data.h"

#include <bit>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace kvserve::engine {
namespace {

constexpr int64_t kQ8Block = 32;       // Values per q8_0 block.
constexpr int64_t kQ8BlockBytes = 34;  // f16 scale + 32 int8.
constexpr int64_t kQ4Block = 32;       // Values per q4_0 block.
constexpr int64_t kQ4BlockBytes = 18;  // f16 scale + 16 bytes of two 4-bit values each.

uint16_t LoadU16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// Bytes a tensor of `type` with `n` elements needs (n a multiple of 32 for q8_0).
int64_t BytesFor(TensorType type, int64_t n) {
  switch (type) {
    case TensorType::kF32:
      return n * 4;
    case TensorType::kF16:
    case TensorType::kBF16:
      return n * 2;
    case TensorType::kQ8_0:
      return (n + kQ8Block - 1) / kQ8Block * kQ8BlockBytes;
    case TensorType::kQ4_0:
      return (n + kQ4Block - 1) / kQ4Block * kQ4BlockBytes;
  }
  return 0;
}

}  // namespace

std::string_view TensorTypeName(TensorType type) {
  switch (type) {
    case TensorType::kF32:
      return "f32";
    case TensorType::kF16:
      return "f16";
    case TensorType::kBF16:
      return "bf16";
    case TensorType::kQ8_0:
      return "q8_0";
    case TensorType::kQ4_0:
      return "q4_0";
  }
  return "unknown";
}

absl::Status DecodeToF32(const TensorData& tensor, int64_t first, absl::Span<float> out) {
  const int64_t total = tensor.num_elements();
  const int64_t count = static_cast<int64_t>(out.size());
  if (first < 0 || first > total || count > total - first) {
    return absl::InvalidArgumentError(absl::StrCat("elements [", first, ", ", first + count,
                                                   ") are outside tensor ", tensor.name,
                                                   " of ", total, " elements"));
  }
  if (tensor.data == nullptr || BytesFor(tensor.type, total) > static_cast<int64_t>(tensor.size_bytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor ", tensor.name, " has ", tensor.size_bytes, " bytes, too few for ",
                     total, " ", std::string(TensorTypeName(tensor.type)), " elements"));
  }
  const uint8_t* data = tensor.data;
  switch (tensor.type) {
    case TensorType::kF32:
      std::memcpy(out.data(), data + first * 4, static_cast<size_t>(count) * 4);
      break;
    case TensorType::kF16:
      for (int64_t i = 0; i < count; ++i) out[i] = HalfToFloat(LoadU16(data + (first + i) * 2));
      break;
    case TensorType::kBF16:
      for (int64_t i = 0; i < count; ++i) out[i] = Bf16ToFloat(LoadU16(data + (first + i) * 2));
      break;
    case TensorType::kQ8_0:
      for (int64_t i = 0; i < count; ++i) {
        const int64_t e = first + i;
        const uint8_t* block = data + (e / kQ8Block) * kQ8BlockBytes;
        const float d = HalfToFloat(LoadU16(block));
        out[i] = d * static_cast<float>(static_cast<int8_t>(block[2 + e % kQ8Block]));
      }
      break;
    case TensorType::kQ4_0:
      // ggml's block_q4_0: byte j holds value j in its low nibble and value j + 16 in its high.
      for (int64_t i = 0; i < count; ++i) {
        const int64_t e = first + i;
        const uint8_t* block = data + (e / kQ4Block) * kQ4BlockBytes;
        const int64_t j = e % kQ4Block;
        const uint8_t byte = block[2 + j % (kQ4Block / 2)];
        const int q = (j < kQ4Block / 2 ? byte & 0x0f : byte >> 4) - 8;
        out[i] = HalfToFloat(LoadU16(block)) * static_cast<float>(q);
      }
      break;
  }
  return absl::OkStatus();
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exponent = (h >> 10) & 0x1f;
  const uint32_t mantissa = h & 0x3ff;
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24, exact in f32.
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 31) return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
  return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

float Bf16ToFloat(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

uint16_t FloatToHalf(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000);
  const uint32_t abs = x & 0x7fffffff;
  if (abs >= 0x7f800000) {
    if (abs == 0x7f800000) return sign | 0x7c00;
    // NaN: keep the payload's top bits and force it quiet so it stays a NaN.
    return static_cast<uint16_t>(sign | 0x7e00 | ((abs >> 13) & 0x3ff));
  }
  // 65520 is halfway between the largest half (65504) and 2^16; ties go to even = infinity.
  if (abs >= 0x477ff000) return sign | 0x7c00;
  if (abs < 0x38800000) {
    // Result is subnormal (or zero): count units of 2^-24 with round-to-nearest-even.
    const uint32_t exponent = abs >> 23;
    if (exponent < 102) return sign;  // Below 2^-25: rounds to zero.
    const uint32_t mantissa = (abs & 0x7fffff) | 0x800000;
    const uint32_t shift = 126 - exponent;
    uint32_t q = mantissa >> shift;
    const uint32_t rem = mantissa & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1))) ++q;
    return static_cast<uint16_t>(sign | q);
  }
  // Normal: rebias the exponent (127 -> 15) and round away 13 mantissa bits; a carry rolls
  // into the exponent correctly.
  const uint32_t rebiased = abs - (112u << 23);
  uint32_t q = rebiased >> 13;
  const uint32_t rem = rebiased & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (q & 1))) ++q;
  return static_cast<uint16_t>(sign | q);
}

uint16_t FloatToBf16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7fffffff) > 0x7f800000) return static_cast<uint16_t>((x >> 16) | 0x40);  // Quiet NaN.
  const uint32_t rounding = 0x7fff + ((x >> 16) & 1);
  return static_cast<uint16_t>((x + rounding) >> 16);
}

}  // namespace kvserve::engine
