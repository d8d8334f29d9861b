// Linear: the matrix products of the forward pass (y = x W^T) on oneDNN matmul, with the weight
// packed once into oneDNN's preferred blocked layout.
//
// Thread safety: thread-compatible. Call Forward from one compute thread, the same thread for
// every Linear sharing a Device (they share the Device's workspace). The Device must outlive
// every Linear created on it.
//
// How it stays fast (see /work/shared/docs/TOOLCHAIN.md section 4):
// - Weights are reordered ONCE, at Create, into the layout a brgemm primitive asks for with
//   format_tag::any (weights in plain layout run 1.15x-4x slower).
// - oneDNN primitives with a runtime M fall back to the slow gemm:jit kernels, so a primitive
//   is made for each concrete row count "bucket" (BucketRows), lazily on first use, and kept.
//   Every bucket is created against the SAME packed weights memory descriptor, so one packed
//   copy of the weights serves all of them.
// - A batch whose row count is not a bucket size is padded up to the bucket through the
//   Device's workspace; after every bucket in use has been created, Forward allocates nothing
//   of its own (oneDNN's execute itself still builds a small argument map per call).
// - bf16 (kBf16) at up to gemv_max_rows() rows (decode; every row count on CPUs where
//   Bf16GemvFma is the faster method): Bf16Gemv (bf16_gemv.h), a hand-written
//   AVX512-BF16 kernel that reads the SAME packed weights (oneDNN's "BA16a<nb>b2a" layout,
//   verified at Create; any other layout, or a CPU without AVX512-BF16, leaves everything on
//   oneDNN) at the memory bandwidth roof, where oneDNN's brgemm reaches ~75% of it at M = 1.
//   It accumulates in oneDNN's order, so results are bit-identical either way. kInt8 likewise
//   runs Int8Gemv (int8_gemv.h, AVX512-VNNI) on oneDNN's "BA16a<nb>b4a" s8 weights; its s32
//   sums are exact, so they too are the same bits as oneDNN's.
// - On CPUs with AMX (where oneDNN picks its AMX brgemm): bf16 runs AmxBf16Gemm for EVERY row
//   count (oneDNN's AMX results for a row change with the batch size, ours do not), and int8
//   chunks from kDefaultInt8AmxMinRows rows run AmxInt8Gemm (amx_gemm.h), both on the same
//   packed weights, prefetching the weight stream.
// - int8 (kInt8): the weights are quantised once per output channel (symmetric s8, scale =
//   max|w_row| / 127) and the activations per row (per token) on every call (symmetric,
//   scale = max|x_row| / 127, stored as u8 = q + 128 because VNNI multiplies u8 by s8). The
//   primitive is a plain u8 x s8 -> s32 matmul with no attributes: oneDNN 2.6 only runs int8
//   on its fast brgemm kernels when no scale is supplied at run time, so both scales and the
//   +128 shift (minus 128 * sum of the row's s8 weights) are applied in one post pass over
//   the s32 result: y = (acc - 128 * sum_k w_q) * w_scale[n] * x_scale[m]. No outlier
//   decomposition (LLM.int8()'s f16 path for large activation columns) is done; per-token
//   scales keep one outlier from spoiling other tokens.
#ifndef KVSERVE_ENGINE_COMPUTE_LINEAR_H_
#define KVSERVE_ENGINE_COMPUTE_LINEAR_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/compute/bf16_gemv.h"
#include "engine/compute/device.h"
#include "engine/compute/int8_gemv.h"
#include "engine/model/tensor_data.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace kvserve::engine {

// The type the weights are stored and multiplied in. Activations are always passed in and
// returned as f32; with kBf16 they are rounded to bf16 (nearest even) before the product,
// which accumulates in f32; with kInt8 they are quantised per row to 8 bits (see above) and
// the product accumulates exactly in s32. kAuto is not a storage type: it asks
// ResolveWeightType to pick one from the model file.
enum class WeightType { kF32, kBf16, kInt8, kAuto };

// "f32", "bf16", "int8" or "auto".
std::string_view WeightTypeName(WeightType type);
// The inverse of WeightTypeName; INVALID_ARGUMENT naming the choices for anything else.
absl::StatusOr<WeightType> ParseWeightType(std::string_view name);
// `requested` unless it is kAuto; then the type matching how the file stores its matrices:
// 16-bit (f16, bf16) -> kBf16, q8_0 and q4_0 -> kInt8, f32 -> kF32.
WeightType ResolveWeightType(WeightType requested, TensorType stored);

class Linear {
 public:
  // The largest row count one primitive call handles; longer batches are split into chunks
  // of this many rows (each chunk an exact bucket, so no padding) plus one padded remainder.
  static constexpr int64_t kMaxBucketRows = 512;

  // The number of rows the primitive used for an m-row chunk (1 <= m <= kMaxBucketRows) is
  // made for:
  // - m <= 16: m itself. Small batches (decode) are memory-bound on streaming the weights, so
  //   each row costs nearly nothing and there are few distinct sizes worth an exact kernel.
  // - 17..128: m rounded up to a multiple of 16. The brgemm kernels work on 16-row register
  //   blocks anyway, and at these sizes the weights still dominate the cost, so <= 15 padding
  //   rows are cheap.
  // - 129..512: m rounded up to a multiple of 32 (compute-bound prefill: padding wastes at
  //   most 31 rows, under 20%), keeping the number of primitives per shape at 35.
  static int64_t BucketRows(int64_t m);

  // `weight` is {out_features, in_features} of any TensorType; it is decoded and packed once
  // here into oneDNN's preferred blocked layout in `type` (the TensorData's bytes are not
  // referenced afterwards). INVALID_ARGUMENT for a weight that is not a non-empty 2-D matrix
  // or whose bytes do not match its shape; UNIMPLEMENTED on a GPU device (the weights and
  // activations here are host memory; GPU matmuls need device buffers and are not written
  // yet); INTERNAL if oneDNN fails.
  // kAuto is INVALID_ARGUMENT (resolve it first), and so is kInt8 with more than 65536
  // in_features (its s32 accumulator could overflow).
  static absl::StatusOr<std::unique_ptr<Linear>> Create(Device& device, const TensorData& weight,
                                                        WeightType type);

  // One Linear over the rows of several matrices stacked in order (e.g. Q, K and V, or gate
  // and up), so one matmul computes all their outputs side by side in each output row: part
  // i's outputs are columns [sum of earlier parts' rows, + its rows). Every part must have
  // the same in_features. Each output column is computed exactly as the part's own Linear
  // would (int8 scales are per output channel), so stacking changes no result.
  static absl::StatusOr<std::unique_ptr<Linear>> CreateStacked(
      Device& device, absl::Span<const TensorData* const> parts, WeightType type);

  // x: m rows of in_features() f32 (row-major, contiguous); y: m rows of out_features() f32.
  // x and y must not overlap. m == 0 does nothing; m < 0 is INVALID_ARGUMENT. The first call
  // with a new bucket creates its primitive (about 0.1-1 ms); INTERNAL if oneDNN fails.
  absl::Status Forward(const float* x, int64_t m, float* y);

  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }
  WeightType weight_type() const { return type_; }

  // The defaults of gemv_max_rows(), chosen by measurement on Zen 4 (compute_benchmark
  // BM_Bf16Decode / BM_Int8Decode, kernel against oneDNN on the same weights, M = 1..16):
  // up to these the kernels are faster at every TinyLlama shape.
  // With Bf16GemvFma (CPUs whose f32 FMA rate is above their vdpbf16ps rate) the kernel beats
  // oneDNN's vdpbf16ps brgemm further: measured on Intel Xeon (Sapphire Rapids class).
  static constexpr int64_t kDefaultBf16GemvMaxRows = 8;
  static constexpr int64_t kDefaultInt8GemvMaxRows = 4;
  // On AMX CPUs int8 chunks of kDefaultInt8AmxMinRows rows and more run AmxInt8Gemm: measured
  // (Sapphire Rapids, TinyLlama shapes, BM_Int8Decode kernel:3) 15-30% faster than Int8Gemv
  // and oneDNN's AMX brgemm from 4 to 16 rows (it prefetches the weight stream) and no slower
  // up to 256; one row is a tie with Int8Gemv, which keeps it.
  static constexpr int64_t kDefaultInt8AmxMinRows = 2;
  static constexpr int64_t kDefaultInt8AmxGemvMaxRows = kMaxBucketRows;
  // With AMX (kAmx) every row count runs AmxBf16Gemm: oneDNN's AMX brgemm is not
  // batch-invariant (amx_gemm.h).
  static int64_t DefaultGemvMaxRows(WeightType type,
                                    Bf16GemvMethod method = Bf16GemvMethod::kDot) {
    if (type == WeightType::kBf16) {
      return method == Bf16GemvMethod::kDot ? kDefaultBf16GemvMaxRows : kMaxBucketRows;
    }
    return type == WeightType::kInt8 ? kDefaultInt8GemvMaxRows : 0;
  }

  // The largest row count (chunk) served by the Bf16Gemv / Int8Gemv kernel; 0 when no kernel
  // applies (kF32, another packed layout, or a CPU without AVX512-BF16 / AVX512-VNNI).
  int64_t gemv_max_rows() const { return gemv_max_rows_; }
  // What gemv_max_rows() is after Create: DefaultGemvMaxRows for the method in use, and
  // kDefaultInt8AmxGemvMaxRows for int8 on AMX CPUs; 0 without a kernel.
  int64_t default_gemv_max_rows() const;
  // Changes that limit (clamped to [0, kMaxBucketRows]; 0 = everything through oneDNN) when
  // the kernel applies; does nothing otherwise. For tests and benchmarks that compare the two
  // paths.
  void SetGemvMaxRows(int64_t rows);
  // kBf16 with the kernel path: which Bf16Gemv variant runs (FasterBf16GemvMethod() unless
  // set). Both give the same bits; for tests and benchmarks. Does nothing otherwise.
  Bf16GemvMethod bf16_gemv_method() const { return bf16_method_; }
  void SetBf16GemvMethod(Bf16GemvMethod method);
  // kInt8 on AMX CPUs: kernel-path chunks of at least this many rows run AmxInt8Gemm, fewer
  // Int8Gemv (kDefaultInt8AmxMinRows unless set; above kMaxBucketRows when AMX does not
  // apply, and then the setter does nothing; kMaxBucketRows + 1 turns AMX off). Both give the
  // same exact sums.
  int64_t int8_amx_min_rows() const { return int8_amx_min_rows_; }
  void SetInt8AmxMinRows(int64_t rows);

  // The implementation used for an m-row chunk: "bf16_gemv:avx512_bf16" (Bf16Gemv),
  // "bf16_gemv:avx512_fma" (Bf16GemvFma), "bf16_gemv:amx_bf16" (AmxBf16Gemm),
  // "int8_gemv:avx512_vnni" (Int8Gemv) or "int8_gemv:amx_int8" (AmxInt8Gemm) for the kernels, else oneDNN's impl_info_str of the primitive,
  // creating it if needed, e.g. "brg:avx512_core". An "error: ..." string if that fails.
  // For tests and benchmarks.
  std::string ImplName(int64_t m);

  // The packed weights' layout as oneDNN prints it (e.g. "BA16a64b"), for tests and logs.
  std::string WeightsLayout() const;

  ~Linear();
  Linear(const Linear&) = delete;
  Linear& operator=(const Linear&) = delete;

  // Use Create(); public only for std::make_unique, and only Linear can make the key.
  class PrivateKey {
    friend class Linear;
    PrivateKey() = default;
  };
  Linear(PrivateKey, Device& device, int64_t in_features, int64_t out_features, WeightType type,
         dnnl::memory packed_weights, std::vector<float> int8_weight_scales,
         std::vector<int32_t> int8_compensation);

 private:
  struct Bucket;
  static constexpr int kNumBuckets = 35;  // Distinct values of BucketRows (see above).
  static int BucketIndex(int64_t bucket_rows);

  // The primitive for `rows` (a BucketRows value), created on first use.
  absl::StatusOr<Bucket*> GetBucket(int64_t rows);
  // Runs one chunk of 1..kMaxBucketRows rows.
  absl::Status ForwardChunk(const float* x, int64_t m, float* y);
  // Runs m <= gemv_max_rows_ rows through Bf16Gemv (kBf16) or Int8Gemv (kInt8).
  absl::Status ForwardGemv(const float* x, int64_t m, float* y);
  // Whether an m-row chunk on the kernel path runs Bf16GemvFma: with kFma from 2 rows up. One
  // row is bound by reading the weights, where widening them costs more than it saves.
  bool UsesBf16Fma(int64_t m) const { return bf16_method_ == Bf16GemvMethod::kFma && m >= 2; }
  // Turns the kernel path on if the CPU, the packed layout and oneDNN's implementation
  // (`onednn_impl`, for the larger row counts) allow it.
  void EnableGemvIfSupported(std::string_view onednn_impl);

  Device& device_;
  const int64_t in_features_;
  const int64_t out_features_;
  const WeightType type_;
  const dnnl::memory weights_;  // Packed, owned by oneDNN.
  // kInt8 only: per output channel, the weight scale and 128 * sum of its s8 weights.
  const std::vector<float> w_scales_;
  const std::vector<int32_t> w_compensation_;
  std::vector<float> x_scales_;  // kInt8 only: per-row activation scales of the current chunk.
  std::array<std::unique_ptr<Bucket>, kNumBuckets> buckets_;
  // Kernel path: the packed weights as the kernel for type_ sees them; off when 0 rows.
  Bf16PackedLayout bf16_layout_;
  Int8PackedLayout int8_layout_;
  const void* gemv_weights_ = nullptr;
  int64_t gemv_max_rows_ = 0;
  Bf16GemvMethod bf16_method_ = Bf16GemvMethod::kDot;
  int64_t int8_amx_min_rows_ = kMaxBucketRows + 1;
};

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_COMPUTE_LINEAR_H_
