#include "engine/compute/linear.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "engine/common/status_macros.h"

namespace kvserve::engine {
namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

// Row count of the primitive used only to ask oneDNN for its preferred weights layout. The
// brgemm matmul picks the weights blocking from N, K and the data type, not from M; every
// bucket is then created with that exact layout (and a test checks they all run brgemm).
constexpr int64_t kLayoutProbeRows = 32;
constexpr size_t kAlign = 64;

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

}  // namespace

std::string_view WeightTypeName(WeightType type) {
  switch (type) {
    case WeightType::kF32:
      return "f32";
    case WeightType::kBf16:
      return "bf16";
  }
  return "unknown";
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
  if (device.kind() != DeviceKind::kCpu) {
    return absl::UnimplementedError(
        absl::StrCat("Linear runs on host memory and is not implemented for the ",
                     Sv(DeviceKindName(device.kind())), " device yet; use --device=cpu"));
  }
  if (weight.shape.size() != 2 || weight.shape[0] <= 0 || weight.shape[1] <= 0) {
    std::string dims;
    for (int64_t d : weight.shape) absl::StrAppend(&dims, dims.empty() ? "" : ",", d);
    return absl::InvalidArgumentError(absl::StrCat(
        "weight \"", weight.name, "\" must be a non-empty 2-D matrix, got shape {", dims, "}"));
  }
  if (weight.data == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("weight \"", weight.name, "\" has no data"));
  }
  const int64_t n = weight.shape[0];  // out_features
  const int64_t k = weight.shape[1];  // in_features
  const dt wdt = type == WeightType::kF32 ? dt::f32 : dt::bf16;

  // Where the weights come from: the model file's bytes when they are f32 (the reorder below
  // converts f32 to bf16 when needed, rounding to nearest even) or already bf16 for a bf16
  // Linear; otherwise an f32 decode of the whole matrix (freed after packing).
  std::vector<float> decoded;
  const void* user_data = nullptr;
  dt user_dt = dt::f32;
  if (weight.type == TensorType::kF32 ||
      (weight.type == TensorType::kBF16 && type == WeightType::kBf16)) {
    const size_t elem = weight.type == TensorType::kF32 ? 4 : 2;
    if (weight.size_bytes != static_cast<size_t>(n * k) * elem) {
      return absl::InvalidArgumentError(
          absl::StrCat("weight \"", weight.name, "\" has ", weight.size_bytes, " bytes, expected ",
                       static_cast<size_t>(n * k) * elem, " for its shape"));
    }
    user_data = weight.data;
    user_dt = weight.type == TensorType::kF32 ? dt::f32 : dt::bf16;
  } else {
    decoded.resize(static_cast<size_t>(n * k));
    KV_RETURN_IF_ERROR(DecodeToF32(weight, 0, absl::MakeSpan(decoded)));
    user_data = decoded.data();
  }

  try {
    dnnl::engine& engine = device.engine();
    // y{M,N} = x{M,K} * W^T: oneDNN's weights are {K,N}; our row-major {N,K} is its "ba".
    const dnnl::memory::desc src_md({kLayoutProbeRows, k}, wdt, tag::ab);
    const dnnl::memory::desc any_md({k, n}, wdt, tag::any);
    const dnnl::memory::desc dst_md({kLayoutProbeRows, n}, dt::f32, tag::ab);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src_md, any_md, dst_md), attr, engine);
    dnnl::memory packed(pd.weights_desc(), engine);
    dnnl::memory user(dnnl::memory::desc({k, n}, user_dt, tag::ba), engine,
                      const_cast<void*>(user_data));
    dnnl::reorder(user, packed).execute(device.stream(), user, packed);
    device.stream().wait();
    return std::make_unique<Linear>(PrivateKey(), device, k, n, type, std::move(packed));
  } catch (const dnnl::error& e) {
    return DnnlError(absl::StrCat("packing weight \"", weight.name, "\""), e);
  }
}

Linear::Linear(PrivateKey, Device& device, int64_t in_features, int64_t out_features,
               WeightType type, dnnl::memory packed_weights)
    : device_(device),
      in_features_(in_features),
      out_features_(out_features),
      type_(type),
      weights_(std::move(packed_weights)) {}

Linear::~Linear() = default;

std::string Linear::WeightsLayout() const {
  try {
    return LayoutName(weights_.get_desc());
  } catch (const dnnl::error& e) {
    return absl::StrCat("error: ", e.what());
  }
}

absl::StatusOr<Linear::Bucket*> Linear::GetBucket(int64_t rows) {
  std::unique_ptr<Bucket>& slot = buckets_[BucketIndex(rows)];
  if (slot != nullptr) return slot.get();
  try {
    dnnl::engine& engine = device_.engine();
    const dt adt = type_ == WeightType::kF32 ? dt::f32 : dt::bf16;
    const dnnl::memory::desc src_md({rows, in_features_}, adt, tag::ab);
    const dnnl::memory::desc dst_md({rows, out_features_}, dt::f32, tag::ab);
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

absl::Status Linear::ForwardChunk(const float* x, int64_t m, float* y) {
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
  } else {
    auto* s = reinterpret_cast<uint16_t*>(workspace + bucket->src_offset);
    ConvertToBf16(x, m * k, s);
    if (padded) std::memset(s + m * k, 0, sizeof(uint16_t) * (rows - m) * k);
    src = s;
  }
  void* dst = padded ? static_cast<void*>(workspace + bucket->dst_offset) : static_cast<void*>(y);

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
  if (padded) std::memcpy(y, dst, sizeof(float) * m * out_features_);
  return absl::OkStatus();
}

}  // namespace kvserve::engine
