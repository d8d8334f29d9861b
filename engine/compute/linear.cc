#include "engine/compute/linear.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "engine/common/status_macros.h"
#include "engine/compute/amx_gemm.h"

// GCC 12 reports false -W(maybe-)uninitialized errors inside its own AVX-512 intrinsic headers (the
// `_mm512_undefined_*()` pass-through operand of unmasked intrinsics) once they are inlined.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace kvserve::engine {
namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

// Row count of the primitive used only to ask oneDNN for its preferred weights layout. The
// brgemm matmul picks the weights blocking from N, K and the data type, not from M; every
// bucket is then created with that exact layout (and a test checks they all run brgemm).
constexpr int64_t kLayoutProbeRows = 32;
constexpr size_t kAlign = 64;
constexpr int64_t kMaxInt8InFeatures = 65536;

// Abseil 20220623 (Debian) has its own string_view type, which StrCat takes.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

size_t AlignUp(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

std::string DnnlStatusName(dnnl_status_t s) {
  switch (s) {
    case dnnl_success:
      return "success";
    case dnnl_out_of_memory:
      return "out_of_memory";
    case dnnl_invalid_arguments:
      return "invalid_arguments";
    case dnnl_unimplemented:
      return "unimplemented";
    case dnnl_iterator_ends:
      return "iterator_ends";
    case dnnl_runtime_error:
      return "runtime_error";
    case dnnl_not_required:
      return "not_required";
  }
  return absl::StrCat("status ", static_cast<int>(s));
}

absl::Status DnnlError(std::string_view what, const dnnl::error& e) {
  return absl::InternalError(absl::StrCat(Sv(what), ": oneDNN error: ", e.what()));
}

// f32 -> bf16, round to nearest even. With AVX512-BF16 this is one instruction per 16 values
// (which also treats denormal inputs as zero, as oneDNN's own bf16 conversion does).
void ConvertToBf16(const float* x, int64_t n, uint16_t* out) {
  int64_t i = 0;
#if defined(__AVX512BF16__) && defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) {
    const __m256bh b = _mm512_cvtneps_pbh(_mm512_loadu_ps(x + i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), reinterpret_cast<const __m256i&>(b));
  }
#endif
  for (; i < n; ++i) out[i] = FloatToBf16(x[i]);
}

// x rounded to bf16 as ConvertToBf16 does, kept as f32 (Bf16GemvFma's activations).
void RoundToBf16AsF32(const float* x, int64_t n, float* out) {
  int64_t i = 0;
#if defined(__AVX512BF16__) && defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) {
    const __m256bh b = _mm512_cvtneps_pbh(_mm512_loadu_ps(x + i));
    const __m512i wide = _mm512_cvtepu16_epi32(reinterpret_cast<const __m256i&>(b));
    _mm512_storeu_ps(out + i, _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16)));
  }
#endif
  for (; i < n; ++i) out[i] = Bf16ToFloat(FloatToBf16(x[i]));
}

// "BA16a64b"-style name of a blocked memory layout (oneDNN's own notation: outer dimensions
// from the largest stride, capitalised when also blocked, then the inner blocks).
std::string LayoutName(const dnnl::memory::desc& md) {
  const dnnl_memory_desc_t& d = md.data;
  if (d.format_kind != dnnl_blocked) return "non-blocked";
  const auto& blk = d.format_desc.blocking;
  std::vector<int> order(d.ndims);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return blk.strides[a] > blk.strides[b]; });
  std::string out;
  for (int dim : order) {
    bool blocked = false;
    for (int i = 0; i < blk.inner_nblks; ++i) blocked |= blk.inner_idxs[i] == dim;
    out += static_cast<char>((blocked ? 'A' : 'a') + dim);
  }
  for (int i = 0; i < blk.inner_nblks; ++i) {
    absl::StrAppend(&out, blk.inner_blks[i],
                    std::string(1, static_cast<char>('a' + blk.inner_idxs[i])));
  }
  return out;
}

// Quantises each of `rows` rows of k f32 values symmetrically to 8 bits (q = round(x / s),
// s = max|x| / 127, round to nearest even) and stores q + 128 as u8; scales[r] = s (0 for an
// all-zero row, whose values then all become 128).
void QuantizeRowsU8(const float* x, int64_t rows, int64_t k, uint8_t* out, float* scales) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * k;
    uint8_t* o = out + r * k;
    float amax = 0.0f;
    int64_t i = 0;
#if defined(__AVX512F__)
    __m512 vmax = _mm512_setzero_ps();
    for (; i + 16 <= k; i += 16) vmax = _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_loadu_ps(xr + i)));
    amax = _mm512_reduce_max_ps(vmax);
#endif
    for (; i < k; ++i) amax = std::max(amax, std::fabs(xr[i]));
    const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    scales[r] = amax / 127.0f;
    i = 0;
#if defined(__AVX512F__)
    const __m512 vinv = _mm512_set1_ps(inv);
    const __m512i shift = _mm512_set1_epi32(128);
    for (; i + 16 <= k; i += 16) {
      const __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xr + i), vinv));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(o + i),
                       _mm512_cvtusepi32_epi8(_mm512_add_epi32(q, shift)));
    }
#endif
    for (; i < k; ++i) {
      const float q = std::nearbyint(xr[i] * inv);
      o[i] = static_cast<uint8_t>(std::clamp(q, -127.0f, 127.0f) + 128.0f);
    }
  }
}

// y[r][j] = (acc[r][j] - comp[j]) * w_scales[j] * x_scales[r], in that order for every element.
void DequantizeRows(const int32_t* acc, int64_t rows, int64_t n, const int32_t* comp,
                    const float* w_scales, const float* x_scales, float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t* a = acc + r * n;
    float* yr = y + r * n;
    const float xs = x_scales[r];
    int64_t j = 0;
#if defined(__AVX512F__)
    const __m512 vxs = _mm512_set1_ps(xs);
    for (; j + 16 <= n; j += 16) {
      const __m512i d = _mm512_sub_epi32(_mm512_loadu_si512(a + j), _mm512_loadu_si512(comp + j));
      _mm512_storeu_ps(yr + j, _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(d),
                                                           _mm512_loadu_ps(w_scales + j)),
                                             vxs));
    }
#endif
    for (; j < n; ++j) yr[j] = static_cast<float>(a[j] - comp[j]) * w_scales[j] * xs;
  }
}

}  // namespace

std::string_view WeightTypeName(WeightType type) {
  switch (type) {
    case WeightType::kF32:
      return "f32";
    case WeightType::kBf16:
      return "bf16";
    case WeightType::kInt8:
      return "int8";
    case WeightType::kAuto:
      return "auto";
  }
  return "unknown";
}

absl::StatusOr<WeightType> ParseWeightType(std::string_view name) {
  for (WeightType t : {WeightType::kAuto, WeightType::kF32, WeightType::kBf16, WeightType::kInt8}) {
    if (name == WeightTypeName(t)) return t;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown weight type \"", Sv(name),
                                                 "\"; choose one of: auto, f32, bf16, int8"));
}

WeightType ResolveWeightType(WeightType requested, TensorType stored) {
  if (requested != WeightType::kAuto) return requested;
  switch (stored) {
    case TensorType::kF32:
      return WeightType::kF32;
    case TensorType::kF16:
    case TensorType::kBF16:
      return WeightType::kBf16;
    case TensorType::kQ8_0:
    case TensorType::kQ4_0:  // 4-bit values fit int8 with per-row scales at little extra loss.
      return WeightType::kInt8;
  }
  return WeightType::kF32;
}

// One concrete-M primitive and the memory objects that wrap its (per call) buffers.
struct Linear::Bucket {
  int64_t rows = 0;
  dnnl::matmul primitive;
  dnnl::memory src;      // Handle set per call.
  dnnl::memory dst;      // Handle set per call.
  dnnl::memory scratch;  // Empty when the primitive needs no scratchpad.
  // Workspace layout: [scratchpad | padded/converted src | padded dst].
  size_t src_offset = 0;
  size_t dst_offset = 0;
  std::string impl;
};

int64_t Linear::BucketRows(int64_t m) {
  if (m <= 16) return m;
  if (m <= 128) return (m + 15) / 16 * 16;
  return (m + 31) / 32 * 32;
}

int Linear::BucketIndex(int64_t rows) {
  if (rows <= 16) return static_cast<int>(rows - 1);             // 0..15
  if (rows <= 128) return static_cast<int>(16 + rows / 16 - 2);  // 32..128 -> 16..22
  return static_cast<int>(23 + rows / 32 - 5);                   // 160..512 -> 23..34
}

absl::StatusOr<std::unique_ptr<Linear>> Linear::Create(Device& device, const TensorData& weight,
                                                       WeightType type) {
  const TensorData* parts[] = {&weight};
  return CreateStacked(device, parts, type);
}

absl::StatusOr<std::unique_ptr<Linear>> Linear::CreateStacked(
    Device& device, absl::Span<const TensorData* const> parts, WeightType type) {
  if (device.kind() != DeviceKind::kCpu) {
    return absl::UnimplementedError(
        absl::StrCat("Linear runs on host memory and is not implemented for the ",
                     Sv(DeviceKindName(device.kind())), " device yet; use --device=cpu"));
  }
  if (type == WeightType::kAuto) {
    return absl::InvalidArgumentError("weight type \"auto\" must be resolved before packing");
  }
  if (parts.empty()) return absl::InvalidArgumentError("no weight matrices to stack");
  int64_t n = 0;
  const int64_t k = parts[0]->shape.size() == 2 ? parts[0]->shape[1] : 0;  // in_features
  for (const TensorData* part : parts) {
    const TensorData& weight = *part;
    if (weight.shape.size() != 2 || weight.shape[0] <= 0 || weight.shape[1] <= 0) {
      std::string dims;
      for (int64_t d : weight.shape) absl::StrAppend(&dims, dims.empty() ? "" : ",", d);
      return absl::InvalidArgumentError(absl::StrCat(
          "weight \"", weight.name, "\" must be a non-empty 2-D matrix, got shape {", dims, "}"));
    }
    if (weight.data == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("weight \"", weight.name, "\" has no data"));
    }
    if (weight.shape[1] != k) {
      return absl::InvalidArgumentError(
          absl::StrCat("weight \"", weight.name, "\" has ", weight.shape[1],
                       " input features; the matrices stacked with it have ", k));
    }
    n += weight.shape[0];
  }
  // The s32 accumulator of a u8 x s8 product of K terms reaches 255 * 127 * K.
  if (type == WeightType::kInt8 && k > kMaxInt8InFeatures) {
    return absl::InvalidArgumentError(
        absl::StrCat("weight \"", parts[0]->name, "\" has ", k, " input features; int8 takes at most ",
                     kMaxInt8InFeatures, " (the s32 accumulator would overflow)"));
  }
  const dt wdt = type == WeightType::kF32 ? dt::f32 : type == WeightType::kBf16 ? dt::bf16 : dt::s8;

  // Where the weights come from: a single matrix's file bytes when they are f32 (the reorder
  // below converts f32 to bf16 when needed, rounding to nearest even) or already bf16 for a
  // bf16 Linear; otherwise an f32 decode of all the rows (freed after packing), which int8
  // then quantises per row.
  std::vector<float> decoded;
  const void* user_data = nullptr;
  dt user_dt = dt::f32;
  const TensorData& first = *parts[0];
  if (parts.size() == 1 && type != WeightType::kInt8 &&
      (first.type == TensorType::kF32 ||
       (first.type == TensorType::kBF16 && type == WeightType::kBf16))) {
    const size_t elem = first.type == TensorType::kF32 ? 4 : 2;
    if (first.size_bytes != static_cast<size_t>(n * k) * elem) {
      return absl::InvalidArgumentError(
          absl::StrCat("weight \"", first.name, "\" has ", first.size_bytes, " bytes, expected ",
                       static_cast<size_t>(n * k) * elem, " for its shape"));
    }
    user_data = first.data;
    user_dt = first.type == TensorType::kF32 ? dt::f32 : dt::bf16;
  } else {
    decoded.resize(static_cast<size_t>(n * k));
    int64_t row = 0;
    for (const TensorData* part : parts) {
      const int64_t rows = part->shape[0];
      if (part->type == TensorType::kF32 &&
          part->size_bytes != static_cast<size_t>(rows * k) * sizeof(float)) {
        return absl::InvalidArgumentError(
            absl::StrCat("weight \"", part->name, "\" has ", part->size_bytes,
                         " bytes, expected ", static_cast<size_t>(rows * k) * 4, " for its shape"));
      }
      KV_RETURN_IF_ERROR(
          DecodeToF32(*part, 0, absl::MakeSpan(decoded.data() + row * k, rows * k)));
      row += rows;
    }
    user_data = decoded.data();
  }

  // int8: per output channel symmetric quantisation, and the compensation of the +128
  // activation shift (128 * the row's sum of quants).
  std::vector<float> w_scales;
  std::vector<int32_t> compensation;
  std::vector<int8_t> quantized;
  if (type == WeightType::kInt8) {
    w_scales.resize(n);
    compensation.resize(n);
    quantized.resize(static_cast<size_t>(n * k));
    for (int64_t j = 0; j < n; ++j) {
      const float* w = decoded.data() + j * k;
      float amax = 0.0f;
      for (int64_t i = 0; i < k; ++i) amax = std::max(amax, std::fabs(w[i]));
      const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
      w_scales[j] = amax / 127.0f;
      int32_t sum = 0;
      for (int64_t i = 0; i < k; ++i) {
        const auto q = static_cast<int8_t>(std::clamp(std::nearbyint(w[i] * inv), -127.0f, 127.0f));
        quantized[j * k + i] = q;
        sum += q;
      }
      compensation[j] = 128 * sum;
    }
    decoded = {};
    user_data = quantized.data();
    user_dt = dt::s8;
  }

  try {
    dnnl::engine& engine = device.engine();
    // y{M,N} = x{M,K} * W^T: oneDNN's weights are {K,N}; our row-major {N,K} is its "ba".
    const dt adt = type == WeightType::kInt8 ? dt::u8 : wdt;
    const dt ddt = type == WeightType::kInt8 ? dt::s32 : dt::f32;
    const dnnl::memory::desc src_md({kLayoutProbeRows, k}, adt, tag::ab);
    const dnnl::memory::desc any_md({k, n}, wdt, tag::any);
    const dnnl::memory::desc dst_md({kLayoutProbeRows, n}, ddt, tag::ab);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src_md, any_md, dst_md), attr, engine);
    dnnl::memory packed(pd.weights_desc(), engine);
    dnnl::memory user(dnnl::memory::desc({k, n}, user_dt, tag::ba), engine,
                      const_cast<void*>(user_data));
    dnnl::reorder(user, packed).execute(device.stream(), user, packed);
    device.stream().wait();
    auto linear = std::make_unique<Linear>(PrivateKey(), device, k, n, type, std::move(packed),
                                           std::move(w_scales), std::move(compensation));
    linear->EnableGemvIfSupported(pd.impl_info_str());
    return linear;
  } catch (const dnnl::error& e) {
    return DnnlError(absl::StrCat("packing weight \"", first.name, "\""), e);
  }
}

Linear::Linear(PrivateKey, Device& device, int64_t in_features, int64_t out_features,
               WeightType type, dnnl::memory packed_weights,
               std::vector<float> int8_weight_scales, std::vector<int32_t> int8_compensation)
    : device_(device),
      in_features_(in_features),
      out_features_(out_features),
      type_(type),
      weights_(std::move(packed_weights)),
      w_scales_(std::move(int8_weight_scales)),
      w_compensation_(std::move(int8_compensation)),
      x_scales_(type == WeightType::kInt8 ? kMaxBucketRows : 0) {}

Linear::~Linear() = default;

std::string Linear::WeightsLayout() const {
  try {
    return LayoutName(weights_.get_desc());
  } catch (const dnnl::error& e) {
    return absl::StrCat("error: ", e.what());
  }
}

void Linear::EnableGemvIfSupported(std::string_view onednn_impl) {
  if (type_ != WeightType::kBf16 && type_ != WeightType::kInt8) return;
  const bool bf16 = type_ == WeightType::kBf16;
  // bf16: Bf16Gemv reproduces oneDNN's avx512_core_bf16 summation order (so rows are
  // bit-identical whichever path computes them). Where oneDNN picked AMX, whose rows are not
  // bit-identical across batch sizes, AmxBf16Gemm takes every row count (the packed layout is
  // the same family); a DNNL_MAX_CPU_ISA cap below AMX turns it off with oneDNN's. Any other
  // implementation keeps everything on oneDNN. int8 sums are exact in any order.
  // int8 on AMX CPUs: AmxInt8Gemm serves every chunk from kDefaultInt8AmxMinRows rows.
  const bool amx = bf16 ? onednn_impl == "brg:avx512_core_amx_bf16" && AmxBf16Available()
                        : onednn_impl == "brg:avx512_core_amx_int8" && AmxInt8Available();
  if (bf16 ? !amx && (!Bf16GemvAvailable() || onednn_impl != "brg:avx512_core_bf16")
           : !Int8GemvAvailable()) {
    return;
  }
  // Accept exactly oneDNN's "BA16a<nb>b2a" (bf16) / "BA16a<nb>b4a" (s8) for {K, N}: tiles of
  // 16 K-pairs (quads) x nb columns, N blocks outermost, K blocks dense inside them (so each
  // N block is one run of K pairs / quads).
  const int64_t group = bf16 ? 2 : 4;
  const dnnl_memory_desc_t& d = weights_.get_desc().data;
  if (d.format_kind != dnnl_blocked || d.ndims != 2 ||
      d.data_type != (bf16 ? dnnl_bf16 : dnnl_s8) || d.offset0 != 0 || d.extra.flags != 0 ||
      d.dims[0] != in_features_ || d.dims[1] != out_features_) {
    return;
  }
  const auto& blk = d.format_desc.blocking;
  if (blk.inner_nblks != 3 || blk.inner_idxs[0] != 0 || blk.inner_idxs[1] != 1 ||
      blk.inner_idxs[2] != 0 || blk.inner_blks[0] != 16 || blk.inner_blks[2] != group) {
    return;
  }
  const int64_t nb = blk.inner_blks[1];
  if (blk.strides[0] != 16 * group * nb || blk.strides[1] != d.padded_dims[0] * nb) return;
  void* handle = nullptr;
  if (dnnl_memory_get_data_handle(weights_.get(), &handle) != dnnl_success || handle == nullptr) {
    return;
  }
  if (bf16) {
    Bf16PackedLayout layout;
    layout.k = in_features_;
    layout.n = out_features_;
    layout.n_block = nb;
    layout.n_block_stride = blk.strides[1];
    layout.k_chunk = Bf16GemvChunkRows(in_features_);
    if (!Bf16GemvSupportsLayout(layout) || (amx && !AmxBf16SupportsLayout(layout))) return;
    bf16_layout_ = layout;
  } else {
    Int8PackedLayout layout;
    layout.k = in_features_;
    layout.n = out_features_;
    layout.n_block = nb;
    layout.n_block_stride = blk.strides[1];  // Elements are bytes.
    if (!Int8GemvSupportsLayout(layout)) return;
    int8_layout_ = layout;
    if (amx && AmxInt8SupportsLayout(layout)) int8_amx_min_rows_ = kDefaultInt8AmxMinRows;
  }
  gemv_weights_ = handle;
  if (bf16) bf16_method_ = amx ? Bf16GemvMethod::kAmx : FasterBf16GemvMethod();
  gemv_max_rows_ = default_gemv_max_rows();
}

int64_t Linear::default_gemv_max_rows() const {
  if (gemv_weights_ == nullptr) return 0;
  if (type_ == WeightType::kBf16) return DefaultGemvMaxRows(type_, bf16_method_);
  return int8_amx_min_rows_ <= kMaxBucketRows ? kDefaultInt8AmxGemvMaxRows
                                              : kDefaultInt8GemvMaxRows;
}

void Linear::SetInt8AmxMinRows(int64_t rows) {
  if (gemv_weights_ != nullptr && type_ == WeightType::kInt8 &&
      int8_amx_min_rows_ <= kMaxBucketRows) {
    int8_amx_min_rows_ = std::clamp<int64_t>(rows, 1, kMaxBucketRows + 1);
  }
}

void Linear::SetBf16GemvMethod(Bf16GemvMethod method) {
  if (gemv_weights_ != nullptr && type_ == WeightType::kBf16) bf16_method_ = method;
}

void Linear::SetGemvMaxRows(int64_t rows) {
  if (gemv_weights_ == nullptr) return;
  gemv_max_rows_ = std::clamp<int64_t>(rows, 0, kMaxBucketRows);
}

absl::StatusOr<Linear::Bucket*> Linear::GetBucket(int64_t rows) {
  std::unique_ptr<Bucket>& slot = buckets_[BucketIndex(rows)];
  if (slot != nullptr) return slot.get();
  try {
    dnnl::engine& engine = device_.engine();
    const dt adt = type_ == WeightType::kF32    ? dt::f32
                   : type_ == WeightType::kBf16 ? dt::bf16
                                                : dt::u8;
    const dt ddt = type_ == WeightType::kInt8 ? dt::s32 : dt::f32;
    const dnnl::memory::desc src_md({rows, in_features_}, adt, tag::ab);
    const dnnl::memory::desc dst_md({rows, out_features_}, ddt, tag::ab);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    // The packed weights' own descriptor, not `any`: all buckets share one packed copy.
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src_md, weights_.get_desc(), dst_md),
                                          attr, engine);
    if (pd.weights_desc() != weights_.get_desc()) {
      return absl::InternalError(absl::StrCat("the ", rows,
                                              "-row matmul primitive did not accept the packed "
                                              "weights layout ",
                                              WeightsLayout()));
    }
    auto bucket = std::make_unique<Bucket>();
    bucket->rows = rows;
    bucket->primitive = dnnl::matmul(pd);
    bucket->impl = pd.impl_info_str();
    bucket->src = dnnl::memory(src_md, engine, DNNL_MEMORY_NONE);
    bucket->dst = dnnl::memory(dst_md, engine, DNNL_MEMORY_NONE);
    const size_t scratch_bytes = pd.scratchpad_desc().get_size();
    if (scratch_bytes > 0) {
      bucket->scratch = dnnl::memory(pd.scratchpad_desc(), engine, DNNL_MEMORY_NONE);
    }
    bucket->src_offset = AlignUp(scratch_bytes);
    bucket->dst_offset = bucket->src_offset + AlignUp(src_md.get_size());
    KV_RETURN_IF_ERROR(
        device_.workspace().Reserve(bucket->dst_offset + AlignUp(dst_md.get_size())));
    slot = std::move(bucket);
    return slot.get();
  } catch (const dnnl::error& e) {
    return DnnlError(absl::StrCat("creating the ", rows, "x", in_features_, "x", out_features_, " ",
                                  Sv(WeightTypeName(type_)), " matmul"),
                     e);
  }
}

std::string Linear::ImplName(int64_t m) {
  if (m < 1) return "error: m must be positive";
  if (std::min(m, kMaxBucketRows) <= gemv_max_rows_) {
    if (type_ == WeightType::kInt8) {
      return std::min(m, kMaxBucketRows) >= int8_amx_min_rows_ ? "int8_gemv:amx_int8"
                                                               : "int8_gemv:avx512_vnni";
    }
    if (bf16_method_ == Bf16GemvMethod::kAmx) return "bf16_gemv:amx_bf16";
    return UsesBf16Fma(std::min(m, kMaxBucketRows)) ? "bf16_gemv:avx512_fma"
                                                    : "bf16_gemv:avx512_bf16";
  }
  absl::StatusOr<Bucket*> bucket = GetBucket(BucketRows(std::min(m, kMaxBucketRows)));
  if (!bucket.ok()) return absl::StrCat("error: ", bucket.status().message());
  return (*bucket)->impl;
}

absl::Status Linear::Forward(const float* x, int64_t m, float* y) {
  if (m < 0) return absl::InvalidArgumentError(absl::StrCat("negative row count ", m));
  for (int64_t done = 0; done < m; done += kMaxBucketRows) {
    const int64_t rows = std::min(kMaxBucketRows, m - done);
    KV_RETURN_IF_ERROR(ForwardChunk(x + done * in_features_, rows, y + done * out_features_));
  }
  return absl::OkStatus();
}

namespace {

// x{m, k} f32 -> `rows` rows of `stride` bf16 at dst: elements k..stride of each row and rows
// m..rows are 0 (the kernels read whole K pairs / tile steps and whole tiles).
void ConvertRowsToBf16(const float* x, int64_t m, int64_t k, int64_t stride, int64_t rows,
                       uint16_t* dst) {
  if (stride == k) {
    ConvertToBf16(x, m * k, dst);
  } else {
    for (int64_t i = 0; i < m; ++i) {
      ConvertToBf16(x + i * k, k, dst + i * stride);
      std::fill(dst + i * stride + k, dst + (i + 1) * stride, uint16_t{0});
    }
  }
  std::fill(dst + m * stride, dst + rows * stride, uint16_t{0});
}

}  // namespace

absl::Status Linear::ForwardGemv(const float* x, int64_t m, float* y) {
  const int64_t k = in_features_, n = out_features_;
  if (type_ == WeightType::kBf16 && bf16_method_ == Bf16GemvMethod::kAmx) {
    // Rows padded to whole K steps with zeros, and to whole tiles (AmxPaddedRows).
    const int64_t k_step = (k + kAmxBf16KStep - 1) / kAmxBf16KStep * kAmxBf16KStep;
    const int64_t rows = AmxPaddedRows(m);
    KV_RETURN_IF_ERROR(device_.workspace().Reserve(sizeof(uint16_t) * rows * k_step));
    auto* xb = reinterpret_cast<uint16_t*>(device_.workspace().data());
    ConvertRowsToBf16(x, m, k, k_step, rows, xb);
    AmxBf16Gemm(bf16_layout_, static_cast<const uint16_t*>(gemv_weights_), xb, m, k_step, y, n);
    return absl::OkStatus();
  }
  if (type_ == WeightType::kBf16) {
    const int64_t k_even = (k + 1) / 2 * 2;  // The kernel reads whole K pairs.
    if (UsesBf16Fma(m)) {
      KV_RETURN_IF_ERROR(device_.workspace().Reserve(sizeof(float) * m * k_even));
      auto* xf = reinterpret_cast<float*>(device_.workspace().data());
      for (int64_t i = 0; i < m; ++i) {
        RoundToBf16AsF32(x + i * k, k, xf + i * k_even);
        if (k_even != k) xf[i * k_even + k] = 0;
      }
      Bf16GemvFma(bf16_layout_, static_cast<const uint16_t*>(gemv_weights_), xf, m, k_even, y, n);
      return absl::OkStatus();
    }
    KV_RETURN_IF_ERROR(device_.workspace().Reserve(sizeof(uint16_t) * m * k_even));
    auto* xb = reinterpret_cast<uint16_t*>(device_.workspace().data());
    ConvertRowsToBf16(x, m, k, k_even, m, xb);
    Bf16Gemv(bf16_layout_, static_cast<const uint16_t*>(gemv_weights_), xb, m, k_even, y, n);
    return absl::OkStatus();
  }
  // kInt8: quantise as for oneDNN, s32 product by the kernel, the same post pass. AMX reads
  // whole K steps and whole 16-row tiles (AmxPaddedRows), Int8Gemv whole K quads.
  const bool amx = m >= int8_amx_min_rows_;
  const int64_t k_quad = amx ? (k + kAmxInt8KStep - 1) / kAmxInt8KStep * kAmxInt8KStep
                             : (k + 3) / 4 * 4;
  const int64_t x_rows = amx ? AmxPaddedRows(m) : m;
  const size_t x_bytes = AlignUp(static_cast<size_t>(x_rows * k_quad));
  KV_RETURN_IF_ERROR(device_.workspace().Reserve(x_bytes + sizeof(int32_t) * m * n));
  uint8_t* const workspace = device_.workspace().data();
  uint8_t* xq = workspace;
  auto* acc = reinterpret_cast<int32_t*>(workspace + x_bytes);
  if (k_quad == k) {
    QuantizeRowsU8(x, m, k, xq, x_scales_.data());
  } else {
    for (int64_t i = 0; i < m; ++i) {
      QuantizeRowsU8(x + i * k, 1, k, xq + i * k_quad, &x_scales_[i]);
      // Met only by zero (padding) weights; set so that no uninitialised byte is read.
      std::memset(xq + i * k_quad + k, 128, k_quad - k);
    }
  }
  if (amx) {
    std::memset(xq + m * k_quad, 128, (x_rows - m) * k_quad);
    AmxInt8Gemm(int8_layout_, static_cast<const int8_t*>(gemv_weights_), xq, m, k_quad, acc, n);
  } else {
    Int8Gemv(int8_layout_, static_cast<const int8_t*>(gemv_weights_), xq, m, k_quad, acc, n);
  }
  DequantizeRows(acc, m, n, w_compensation_.data(), w_scales_.data(), x_scales_.data(), y);
  return absl::OkStatus();
}

absl::Status Linear::ForwardChunk(const float* x, int64_t m, float* y) {
  if (m <= gemv_max_rows_) return ForwardGemv(x, m, y);
  const int64_t rows = BucketRows(m);
  KV_ASSIGN_OR_RETURN(Bucket * bucket, GetBucket(rows));
  uint8_t* const workspace = device_.workspace().data();  // Read after GetBucket may grow it.
  const bool padded = m != rows;
  const int64_t k = in_features_;

  void* src = nullptr;
  if (type_ == WeightType::kF32) {
    if (padded) {
      auto* s = reinterpret_cast<float*>(workspace + bucket->src_offset);
      std::memcpy(s, x, sizeof(float) * m * k);
      // Padding rows do not change the real rows' results (rows are independent); zeroing
      // them only keeps stale NaNs/denormals out of the kernel.
      std::memset(s + m * k, 0, sizeof(float) * (rows - m) * k);
      src = s;
    } else {
      src = const_cast<float*>(x);  // oneDNN only reads the source.
    }
  } else if (type_ == WeightType::kBf16) {
    auto* s = reinterpret_cast<uint16_t*>(workspace + bucket->src_offset);
    ConvertToBf16(x, m * k, s);
    if (padded) std::memset(s + m * k, 0, sizeof(uint16_t) * (rows - m) * k);
    src = s;
  } else {
    uint8_t* s = workspace + bucket->src_offset;
    QuantizeRowsU8(x, m, k, s, x_scales_.data());
    if (padded) std::memset(s + m * k, 128, (rows - m) * k);
    src = s;
  }
  // int8 always goes through the workspace (s32, rescaled below).
  const bool via_workspace = padded || type_ == WeightType::kInt8;
  void* dst =
      via_workspace ? static_cast<void*>(workspace + bucket->dst_offset) : static_cast<void*>(y);

  // The C API: no exceptions, and the argument array lives on the stack.
  dnnl_status_t s = dnnl_memory_set_data_handle_v2(bucket->src.get(), src, nullptr);
  if (s == dnnl_success) s = dnnl_memory_set_data_handle_v2(bucket->dst.get(), dst, nullptr);
  dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, bucket->src.get()},
                             {DNNL_ARG_WEIGHTS, weights_.get()},
                             {DNNL_ARG_DST, bucket->dst.get()},
                             {DNNL_ARG_SCRATCHPAD, nullptr}};
  int nargs = 3;
  if (bucket->scratch) {
    if (s == dnnl_success) {
      s = dnnl_memory_set_data_handle_v2(bucket->scratch.get(), workspace, nullptr);
    }
    args[nargs++].memory = bucket->scratch.get();
  }
  if (s == dnnl_success) {
    s = dnnl_primitive_execute(bucket->primitive.get(), device_.stream().get(), nargs, args);
  }
  if (s == dnnl_success) s = dnnl_stream_wait(device_.stream().get());
  if (s != dnnl_success) {
    return absl::InternalError(absl::StrCat("executing the ", rows, "-row ",
                                            Sv(WeightTypeName(type_)),
                                            " matmul failed: ", DnnlStatusName(s)));
  }
  if (type_ == WeightType::kInt8) {
    DequantizeRows(static_cast<const int32_t*>(dst), m, out_features_, w_compensation_.data(),
                   w_scales_.data(), x_scales_.data(), y);
  } else if (padded) {
    std::memcpy(y, dst, sizeof(float) * m * out_features_);
  }
  return absl::OkStatus();
}

}  // namespace kvserve::engine
