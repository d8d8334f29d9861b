#include "engine/runtime/kv_dtype.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/model/tensor_data.h"

// GCC 12 reports false -W(maybe-)uninitialized errors inside its own AVX-512 intrinsic headers
// once they are inlined (the `_mm512_undefined_*()` pass-through operands).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace kvserve::engine {
namespace {

constexpr float kLargestHalf = 65504.0f;

uint16_t LoadU16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

void StoreU16(uint16_t v, uint8_t* p) { std::memcpy(p, &v, sizeof(v)); }

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
inline __mmask16 Mask(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << n) - 1);
}
#endif

// dst[i] = scale * q[i] for i < n.
void DequantRun(const int8_t* q, float scale, int64_t n, float* dst) {
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
  const __m512 vscale = _mm512_set1_ps(scale);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = Mask(n - i);
    const __m128i bytes = _mm_maskz_loadu_epi8(m, q + i);
    const __m512 v = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes));
    _mm512_mask_storeu_ps(dst + i, m, _mm512_mul_ps(v, vscale));
  }
#else
  for (int64_t i = 0; i < n; ++i) dst[i] = scale * static_cast<float>(q[i]);
#endif
}

void DecodeBf16(const uint8_t* data, int64_t n, float* dst) {
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = Mask(n - i);
    const __m256i halves = _mm256_maskz_loadu_epi16(m, data + 2 * i);
    const __m512i words = _mm512_slli_epi32(_mm512_cvtepu16_epi32(halves), 16);
    _mm512_mask_storeu_ps(dst + i, m, _mm512_castsi512_ps(words));
  }
#else
  for (int64_t i = 0; i < n; ++i) dst[i] = Bf16ToFloat(LoadU16(data + 2 * i));
#endif
}

}  // namespace

std::string_view KvDtypeName(KvDtype dtype) {
  switch (dtype) {
    case KvDtype::kF32:
      return "f32";
    case KvDtype::kBf16:
      return "bf16";
    case KvDtype::kInt8:
      return "int8";
  }
  return "f32";
}

absl::StatusOr<KvDtype> ParseKvDtype(std::string_view name) {
  for (KvDtype d : {KvDtype::kF32, KvDtype::kBf16, KvDtype::kInt8}) {
    if (name == KvDtypeName(d)) return d;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown KV storage type \"", std::string(name),
                                                 "\"; choose f32, bf16 or int8"));
}

int64_t KvInt8GroupSize(int64_t kv_dim) {
  return kv_dim % kKvInt8Group == 0 ? kKvInt8Group : kv_dim;
}

int64_t KvRowBytes(KvDtype dtype, int64_t kv_dim) {
  switch (dtype) {
    case KvDtype::kF32:
      return kv_dim * static_cast<int64_t>(sizeof(float));
    case KvDtype::kBf16:
      return kv_dim * 2;
    case KvDtype::kInt8:
      return kv_dim + 2 * (kv_dim / KvInt8GroupSize(kv_dim));
  }
  return 0;
}

void EncodeKvRow(KvDtype dtype, const float* src, int64_t kv_dim, uint8_t* row) {
  switch (dtype) {
    case KvDtype::kF32:
      std::memcpy(row, src, kv_dim * sizeof(float));
      return;
    case KvDtype::kBf16:
      for (int64_t i = 0; i < kv_dim; ++i) StoreU16(FloatToBf16(src[i]), row + 2 * i);
      return;
    case KvDtype::kInt8: {
      const int64_t group = KvInt8GroupSize(kv_dim);
      int8_t* q = reinterpret_cast<int8_t*>(row);
      uint8_t* scales = row + kv_dim;
      for (int64_t g0 = 0; g0 < kv_dim; g0 += group) {
        float amax = 0.0f;
        for (int64_t i = g0; i < g0 + group; ++i) amax = std::max(amax, std::fabs(src[i]));
        // Quantise against the scale as stored (f16), so decode sees exactly the same scale.
        const uint16_t half = FloatToHalf(std::min(amax / 127.0f, kLargestHalf));
        StoreU16(half, scales + 2 * (g0 / group));
        const float scale = HalfToFloat(half);
        const float inv = scale > 0.0f ? 1.0f / scale : 0.0f;  // Tiny groups decode as zero.
        for (int64_t i = g0; i < g0 + group; ++i) {
          const float v = std::clamp(std::nearbyint(src[i] * inv), -127.0f, 127.0f);
          q[i] = static_cast<int8_t>(v);
        }
      }
      return;
    }
  }
}

void DecodeKvRow(KvDtype dtype, const uint8_t* row, int64_t kv_dim, int64_t begin, int64_t count,
                 float* dst) {
  switch (dtype) {
    case KvDtype::kF32:
      std::memcpy(dst, row + begin * sizeof(float), count * sizeof(float));
      return;
    case KvDtype::kBf16:
      DecodeBf16(row + 2 * begin, count, dst);
      return;
    case KvDtype::kInt8: {
      const int64_t group = KvInt8GroupSize(kv_dim);
      const int8_t* q = reinterpret_cast<const int8_t*>(row);
      const uint8_t* scales = row + kv_dim;
      const int64_t end = begin + count;
      // Runs of values sharing one scale.
      for (int64_t i = begin; i < end;) {
        const int64_t g = i / group;
        const int64_t run = std::min(end, (g + 1) * group) - i;
        DequantRun(q + i, HalfToFloat(LoadU16(scales + 2 * g)), run, dst + (i - begin));
        i += run;
      }
      return;
    }
  }
}

}  // namespace kvserve::engine
