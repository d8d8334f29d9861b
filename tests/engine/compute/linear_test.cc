// Linear (oneDNN matmul) against the double-precision reference Matmul.
//
// Tolerances, per output element, relative to s = sum_k |x_k w_k| (the size of the terms):
// - f32: f32 accumulation error only: |y - ref| <= 1e-5 s (one wrong or missing term of a
//   K <= 5632 product moves y by about s / K >= 1.8e-4 s, so this cannot pass by accident).
// - bf16, tight: against the reference on bf16-rounded x and W (what the kernel multiplies):
//   the same 1e-5 s.
// - bf16, loose: against the unrounded reference: each product carries up to 2 * 2^-9
//   relative rounding error, so |y - ref| <= 4e-3 s.
// - int8, tight: against the reference on the dequantised x and W (q * scale, quantised here
//   by the documented rule): the integer product is exact, so only the f32 rescale and the
//   reference's own rounding remain: 1e-5 s.
// - int8, bound: against the unquantised reference, within the worst case of the rounding:
//   each x_k is off by at most sx/2 and each w_k by at most sw/2, so
//   |y - ref| <= sw/2 sum|x| + sx/2 sum|w| + K sx sw / 4 (plus 1e-5 s of f32 slack).
#include "engine/compute/linear.h"

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <new>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "engine/compute/device.h"
#include "engine/compute/reference_ops.h"
#include "engine/model/tensor_data.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

// Counts C++ heap allocations in this test binary (oneDNN's included), to check what Forward
// allocates once warm. GCC cannot see that the replaced operator new and delete below pair
// malloc with free, and warns at every inlined delete.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
namespace {
std::atomic<int64_t> g_allocations{0};
}  // namespace

// Every non-aligned form is replaced, so each new pairs with a delete of this file: under ASan
// a form left out comes from ASan's allocator and would be freed here (alloc-dealloc mismatch;
// std::stable_sort's buffer uses the nothrow new). The aligned forms all stay the runtime's.
void* operator new(size_t size) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void* operator new(size_t size, const std::nothrow_t&) noexcept {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  return std::malloc(size == 0 ? 1 : size);
}
void* operator new[](size_t size) { return operator new(size); }
void* operator new[](size_t size, const std::nothrow_t& tag) noexcept {
  return operator new(size, tag);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }

namespace kvserve::engine {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

std::vector<float> RandomVector(int64_t n, float lo, float hi, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

std::vector<float> RoundToBf16(const std::vector<float>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = Bf16ToFloat(FloatToBf16(v[i]));
  return out;
}

// Quantises each row of `cols` values to 8 bits and back, by Linear's rule (symmetric,
// scale = max|row| / 127, q = round-to-nearest-even(x * (127 / max|row|))). Fills the
// per-row scales.
std::vector<float> QuantizeRows(const std::vector<float>& v, int64_t cols,
                                std::vector<float>* scales) {
  std::vector<float> out(v.size());
  const int64_t rows = static_cast<int64_t>(v.size()) / cols;
  scales->assign(rows, 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    float amax = 0;
    for (int64_t i = 0; i < cols; ++i) amax = std::max(amax, std::fabs(v[r * cols + i]));
    const float inv = amax > 0 ? 127.0f / amax : 0.0f;
    (*scales)[r] = amax / 127.0f;
    for (int64_t i = 0; i < cols; ++i) {
      out[r * cols + i] = std::nearbyint(v[r * cols + i] * inv) * (*scales)[r];
    }
  }
  return out;
}

std::vector<float> Abs(const std::vector<float>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = std::fabs(v[i]);
  return out;
}

// Random {n, k} weights, made once per shape for the whole binary (the 32000 x 2048 matrix
// takes a while to generate).
const std::vector<float>& Weights(int64_t n, int64_t k) {
  static std::map<std::pair<int64_t, int64_t>, std::vector<float>> cache;
  auto [it, inserted] = cache.try_emplace({n, k});
  if (inserted) it->second = RandomVector(n * k, -1, 1, static_cast<uint32_t>(n * 7919 + k));
  return it->second;
}

TensorData F32Tensor(const std::vector<float>& w, int64_t n, int64_t k) {
  TensorData t;
  t.name = "test.weight";
  t.type = TensorType::kF32;
  t.shape = {n, k};
  t.data = reinterpret_cast<const uint8_t*>(w.data());
  t.size_bytes = w.size() * sizeof(float);
  return t;
}

// Compares y (m x n) with `want`, element by element, within rel * abs_sums.
void ExpectClose(const std::vector<float>& y, const std::vector<float>& want,
                 const std::vector<float>& abs_sums, double rel, int64_t n,
                 const std::string& what) {
  ASSERT_EQ(y.size(), want.size());
  for (size_t i = 0; i < y.size(); ++i) {
    const double tol = rel * abs_sums[i] + 1e-30;
    ASSERT_LE(std::fabs(static_cast<double>(y[i]) - want[i]), tol)
        << what << ": row " << i / n << " col " << i % n << " got " << y[i] << " want " << want[i];
  }
}

class LinearTestBase : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::unique_ptr<Device>> device = Device::Create(DeviceKind::kCpu);
    ASSERT_TRUE(device.ok()) << device.status();
    device_ = std::move(*device);
  }
  static void TearDownTestSuite() { device_.reset(); }
  static std::unique_ptr<Device> device_;
};
std::unique_ptr<Device> LinearTestBase::device_;

struct LinearCase {
  std::string name;
  int64_t out_features;
  int64_t in_features;
  WeightType type;
  std::vector<int64_t> ms;
};

const std::vector<int64_t> kAllMs = {1, 2, 3, 7, 16, 17, 33, 64, 100, 128, 257};

class LinearTest : public LinearTestBase, public ::testing::WithParamInterface<LinearCase> {};

TEST_P(LinearTest, MatchesReference) {
  const LinearCase& c = GetParam();
  const int64_t n = c.out_features, k = c.in_features;
  const std::vector<float>& w = Weights(n, k);
  absl::StatusOr<std::unique_ptr<Linear>> linear =
      Linear::Create(*device_, F32Tensor(w, n, k), c.type);
  ASSERT_TRUE(linear.ok()) << linear.status();
  EXPECT_EQ((*linear)->in_features(), k);
  EXPECT_EQ((*linear)->out_features(), n);
  EXPECT_EQ((*linear)->weight_type(), c.type);

  const bool bf16 = c.type == WeightType::kBf16;
  const bool int8 = c.type == WeightType::kInt8;
  const std::vector<float> w_abs = Abs(w);
  std::vector<float> w_scales;
  const std::vector<float> w_rounded = bf16   ? RoundToBf16(w)
                                       : int8 ? QuantizeRows(w, k, &w_scales)
                                              : w;
  for (int64_t m : c.ms) {
    SCOPED_TRACE("m = " + std::to_string(m));
    const std::vector<float> x = RandomVector(m * k, -1, 1, 200 + m);
    std::vector<float> y(m * n, NAN);
    ASSERT_TRUE((*linear)->Forward(x.data(), m, y.data()).ok());

    std::vector<float> abs_sums(m * n), want(m * n);
    reference::Matmul(Abs(x).data(), m, w_abs.data(), n, k, abs_sums.data());
    std::vector<float> x_scales;
    const std::vector<float> x_rounded = bf16   ? RoundToBf16(x)
                                         : int8 ? QuantizeRows(x, k, &x_scales)
                                                : x;
    reference::Matmul(x_rounded.data(), m, w_rounded.data(), n, k, want.data());
    ExpectClose(y, want, abs_sums, 1e-5, n,
                bf16 ? "bf16 vs bf16-rounded reference"
                     : (int8 ? "int8 vs dequantised reference" : "f32"));
    if (bf16) {
      reference::Matmul(x.data(), m, w.data(), n, k, want.data());
      ExpectClose(y, want, abs_sums, 4e-3, n, "bf16 vs f32 reference");
    }
    if (int8) {
      reference::Matmul(x.data(), m, w.data(), n, k, want.data());
      std::vector<float> x_abs_sum(m, 0.0f), w_abs_sum(n, 0.0f);
      for (int64_t i = 0; i < m * k; ++i) x_abs_sum[i / k] += std::fabs(x[i]);
      for (int64_t i = 0; i < n * k; ++i) w_abs_sum[i / k] += w_abs[i];
      double worst = 0;
      for (int64_t r = 0; r < m; ++r) {
        for (int64_t j = 0; j < n; ++j) {
          const double bound = 0.5 * w_scales[j] * x_abs_sum[r] + 0.5 * x_scales[r] * w_abs_sum[j] +
                               0.25 * k * x_scales[r] * w_scales[j] + 1e-5 * abs_sums[r * n + j];
          const double err = std::fabs(static_cast<double>(y[r * n + j]) - want[r * n + j]);
          ASSERT_LE(err, bound) << "int8 vs f32 reference: row " << r << " col " << j;
          worst = std::max(worst, err / abs_sums[r * n + j]);
        }
      }
      RecordProperty("int8_max_error_over_abs_sum_m" + std::to_string(m), std::to_string(worst));
    }
    // bf16 / int8 decode batches run the Bf16Gemv / Int8Gemv kernels on CPUs that have them
    // (bf16_gemv_test.cc, int8_gemv_test.cc).
    const char* kernel = bf16 ? "bf16_gemv:" : "int8_gemv:";
    EXPECT_THAT((*linear)->ImplName(m),
                StartsWith(std::min(m, Linear::kMaxBucketRows) <= (*linear)->gemv_max_rows()
                               ? kernel
                               : "brg:"));
  }
}

TEST_P(LinearTest, SameResultsRunToRun) {
  const LinearCase& c = GetParam();
  const int64_t n = c.out_features, k = c.in_features;
  const std::vector<float>& w = Weights(n, k);
  absl::StatusOr<std::unique_ptr<Linear>> linear =
      Linear::Create(*device_, F32Tensor(w, n, k), c.type);
  ASSERT_TRUE(linear.ok()) << linear.status();
  const int64_t m = c.ms.back();
  const std::vector<float> x = RandomVector(m * k, -1, 1, 300);
  std::vector<float> first(m * n), second(m * n);
  ASSERT_TRUE((*linear)->Forward(x.data(), m, first.data()).ok());
  ASSERT_TRUE((*linear)->Forward(x.data(), m, second.data()).ok());
  EXPECT_EQ(std::memcmp(first.data(), second.data(), first.size() * sizeof(float)), 0);
}

// Batch invariance: a token's output must not depend on what else is in the batch, i.e. row i
// of an m-row Forward must equal, bit for bit, the 1-row Forward of that row, whichever
// bucket (exact or padded) m falls in.
TEST_P(LinearTest, RowsAreBitIdenticalAcrossBatchSizes) {
  const LinearCase& c = GetParam();
  const int64_t n = c.out_features, k = c.in_features;
  const std::vector<float>& w = Weights(n, k);
  absl::StatusOr<std::unique_ptr<Linear>> linear =
      Linear::Create(*device_, F32Tensor(w, n, k), c.type);
  ASSERT_TRUE(linear.ok()) << linear.status();
  int64_t max_m = 0;
  for (int64_t m : c.ms) max_m = std::max(max_m, m);
  const std::vector<float> x = RandomVector(max_m * k, -1, 1, 400);
  std::vector<float> single(max_m * n);
  for (int64_t i = 0; i < max_m; ++i) {
    ASSERT_TRUE((*linear)->Forward(x.data() + i * k, 1, single.data() + i * n).ok());
  }
  for (int64_t m : c.ms) {
    std::vector<float> y(m * n);
    ASSERT_TRUE((*linear)->Forward(x.data(), m, y.data()).ok());
    int64_t differing_rows = 0;
    for (int64_t i = 0; i < m; ++i) {
      differing_rows +=
          std::memcmp(y.data() + i * n, single.data() + i * n, n * sizeof(float)) != 0;
    }
    EXPECT_EQ(differing_rows, 0) << "m = " << m << " (bucket " << Linear::BucketRows(m) << ", impl "
                                 << (*linear)->ImplName(m) << "): " << differing_rows << " of " << m
                                 << " rows differ from their 1-row results";
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, LinearTest,
    ::testing::Values(
        // Sizes that are not multiples of any block, every M of interest, and M > 512 (split
        // into a 512-row chunk plus a padded remainder).
        LinearCase{"F32Odd96x136",
                   96,
                   136,
                   WeightType::kF32,
                   {1, 2, 3, 7, 16, 17, 33, 64, 100, 128, 257, 600}},
        LinearCase{"Bf16Odd96x136",
                   96,
                   136,
                   WeightType::kBf16,
                   {1, 2, 3, 7, 16, 17, 33, 64, 100, 128, 257, 600}},
        LinearCase{"Int8Odd96x136",
                   96,
                   136,
                   WeightType::kInt8,
                   {1, 2, 3, 7, 16, 17, 33, 64, 100, 128, 257, 600}},
        LinearCase{"Int8BundledW2", 64, 172, WeightType::kInt8, kAllMs},
        LinearCase{"Int8TinyLlamaW1", 5632, 2048, WeightType::kInt8, {1, 16, 33}},
        LinearCase{"Int8Vocab32000", 32000, 2048, WeightType::kInt8, {1, 3}},
        // stories260K: w1/w3 {172, 64}, w2 {64, 172}, output {512, 64}.
        LinearCase{"F32BundledW1", 172, 64, WeightType::kF32, kAllMs},
        LinearCase{"F32BundledW2", 64, 172, WeightType::kF32, kAllMs},
        LinearCase{"Bf16BundledW2", 64, 172, WeightType::kBf16, kAllMs},
        LinearCase{"Bf16BundledOutput", 512, 64, WeightType::kBf16, kAllMs},
        // TinyLlama-1.1B: wq/wo {2048, 2048}, w1/w3 {5632, 2048}, w2 {2048, 5632}.
        LinearCase{"F32TinyLlamaWq", 2048, 2048, WeightType::kF32, {1, 17, 128}},
        LinearCase{"Bf16TinyLlamaWq", 2048, 2048, WeightType::kBf16, {1, 17, 128}},
        LinearCase{"Bf16TinyLlamaW1", 5632, 2048, WeightType::kBf16, {1, 16, 33}},
        LinearCase{"F32TinyLlamaW2", 2048, 5632, WeightType::kF32, {1, 7, 33}},
        // The vocabulary projection {32000, 2048}.
        LinearCase{"F32Vocab32000", 32000, 2048, WeightType::kF32, {1, 3}},
        LinearCase{"Bf16Vocab32000", 32000, 2048, WeightType::kBf16, {1, 3}}),
    [](const auto& info) { return info.param.name; });

// Weights stored in the other TensorTypes are decoded, then packed.
struct StorageCase {
  std::string name;
  TensorType storage;
  WeightType type;
};

class LinearStorageTest : public LinearTestBase,
                          public ::testing::WithParamInterface<StorageCase> {};

TEST_P(LinearStorageTest, MatchesReferenceOnDecodedWeights) {
  constexpr int64_t kN = 48, kK = 64, kM = 5;
  const std::vector<float> values = RandomVector(kN * kK, -1, 1, 500);
  std::vector<uint8_t> bytes;
  switch (GetParam().storage) {
    case TensorType::kF32:
      bytes.resize(values.size() * 4);
      std::memcpy(bytes.data(), values.data(), bytes.size());
      break;
    case TensorType::kF16:
    case TensorType::kBF16:
      for (float v : values) {
        const uint16_t h = GetParam().storage == TensorType::kF16 ? FloatToHalf(v) : FloatToBf16(v);
        bytes.push_back(h & 0xff);
        bytes.push_back(h >> 8);
      }
      break;
    case TensorType::kQ8_0:
      // Blocks of 32: an f16 scale, then 32 int8 quants.
      for (size_t b = 0; b < values.size(); b += 32) {
        const uint16_t d = FloatToHalf(1.0f / 127);
        bytes.push_back(d & 0xff);
        bytes.push_back(d >> 8);
        for (size_t i = 0; i < 32; ++i) {
          bytes.push_back(
              static_cast<uint8_t>(static_cast<int8_t>(std::lround(values[b + i] * 127))));
        }
      }
      break;
    case TensorType::kQ4_0:
      // Blocks of 32: an f16 scale (1/8), then 16 bytes: value i in the low nibble of byte i,
      // value i + 16 in its high nibble, each stored as q + 8 in [0, 15].
      for (size_t b = 0; b < values.size(); b += 32) {
        const uint16_t d = FloatToHalf(1.0f / 8);
        bytes.push_back(d & 0xff);
        bytes.push_back(d >> 8);
        const auto nibble = [&](size_t i) {
          return static_cast<uint8_t>(std::clamp<long>(std::lround(values[b + i] * 8) + 8, 0, 15));
        };
        for (size_t i = 0; i < 16; ++i) {
          bytes.push_back(static_cast<uint8_t>(nibble(i) | (nibble(i + 16) << 4)));
        }
      }
      break;
  }
  TensorData t;
  t.name = "stored.weight";
  t.type = GetParam().storage;
  t.shape = {kN, kK};
  t.data = bytes.data();
  t.size_bytes = bytes.size();
  std::vector<float> decoded(kN * kK);
  ASSERT_TRUE(DecodeToF32(t, 0, absl::MakeSpan(decoded)).ok());

  absl::StatusOr<std::unique_ptr<Linear>> linear = Linear::Create(*device_, t, GetParam().type);
  ASSERT_TRUE(linear.ok()) << linear.status();
  if (GetParam().type == WeightType::kInt8) {
    // The decoded weights requantised per row: q8_0's own quants (here all with one scale)
    // survive exactly when a row's largest quant is +-127.
    std::vector<float> w_scales, x_scales;
    const std::vector<float> x = RandomVector(kM * kK, -1, 1, 501);
    std::vector<float> y(kM * kN), want(kM * kN), abs_sums(kM * kN);
    ASSERT_TRUE((*linear)->Forward(x.data(), kM, y.data()).ok());
    reference::Matmul(Abs(x).data(), kM, Abs(decoded).data(), kN, kK, abs_sums.data());
    reference::Matmul(QuantizeRows(x, kK, &x_scales).data(), kM,
                      QuantizeRows(decoded, kK, &w_scales).data(), kN, kK, want.data());
    ExpectClose(y, want, abs_sums, 1e-5, kN, GetParam().name);
    return;
  }
  const bool bf16 = GetParam().type == WeightType::kBf16;
  const std::vector<float> x = RandomVector(kM * kK, -1, 1, 501);
  std::vector<float> y(kM * kN), want(kM * kN), abs_sums(kM * kN);
  ASSERT_TRUE((*linear)->Forward(x.data(), kM, y.data()).ok());
  reference::Matmul(Abs(x).data(), kM, Abs(decoded).data(), kN, kK, abs_sums.data());
  reference::Matmul(bf16 ? RoundToBf16(x).data() : x.data(), kM,
                    bf16 ? RoundToBf16(decoded).data() : decoded.data(), kN, kK, want.data());
  ExpectClose(y, want, abs_sums, 1e-5, kN, GetParam().name);
}

INSTANTIATE_TEST_SUITE_P(
    Storage, LinearStorageTest,
    ::testing::Values(StorageCase{"F32AsBf16", TensorType::kF32, WeightType::kBf16},
                      StorageCase{"Bf16AsF32", TensorType::kBF16, WeightType::kF32},
                      StorageCase{"Bf16AsBf16", TensorType::kBF16, WeightType::kBf16},
                      StorageCase{"F16AsF32", TensorType::kF16, WeightType::kF32},
                      StorageCase{"F16AsBf16", TensorType::kF16, WeightType::kBf16},
                      StorageCase{"Q8_0AsF32", TensorType::kQ8_0, WeightType::kF32},
                      StorageCase{"Q8_0AsBf16", TensorType::kQ8_0, WeightType::kBf16},
                      StorageCase{"Q8_0AsInt8", TensorType::kQ8_0, WeightType::kInt8},
                      StorageCase{"Q4_0AsF32", TensorType::kQ4_0, WeightType::kF32},
                      StorageCase{"Q4_0AsInt8", TensorType::kQ4_0, WeightType::kInt8},
                      StorageCase{"F16AsInt8", TensorType::kF16, WeightType::kInt8},
                      StorageCase{"F32AsInt8", TensorType::kF32, WeightType::kInt8}),
    [](const auto& info) { return info.param.name; });

class LinearApiTest : public LinearTestBase {};

TEST_F(LinearApiTest, PacksIntoABlockedLayout) {
  const std::vector<float> w = RandomVector(256 * 128, -1, 1, 600);
  for (WeightType type : {WeightType::kF32, WeightType::kBf16, WeightType::kInt8}) {
    absl::StatusOr<std::unique_ptr<Linear>> linear =
        Linear::Create(*device_, F32Tensor(w, 256, 128), type);
    ASSERT_TRUE(linear.ok()) << linear.status();
    // Not the plain "ba" (= our row-major {N, K}): brgemm's blocked layout, e.g. BA16a64b.
    EXPECT_THAT((*linear)->WeightsLayout(), StartsWith("BA16a"));
  }
}

TEST_F(LinearApiTest, RejectsBadWeights) {
  const std::vector<float> w(64, 1.0f);
  TensorData vector_weight = F32Tensor(w, 64, 1);
  vector_weight.shape = {64};
  absl::StatusOr<std::unique_ptr<Linear>> linear =
      Linear::Create(*device_, vector_weight, WeightType::kF32);
  EXPECT_EQ(linear.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(linear.status().message()), HasSubstr("2-D"));

  TensorData short_weight = F32Tensor(w, 16, 8);  // 128 elements claimed, 64 present.
  linear = Linear::Create(*device_, short_weight, WeightType::kF32);
  EXPECT_EQ(linear.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(linear.status().message()), HasSubstr("bytes"));

  TensorData empty = F32Tensor(w, 0, 64);
  linear = Linear::Create(*device_, empty, WeightType::kBf16);
  EXPECT_EQ(linear.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(LinearApiTest, ForwardValidatesRowCount) {
  const std::vector<float> w = RandomVector(32 * 32, -1, 1, 700);
  absl::StatusOr<std::unique_ptr<Linear>> linear =
      Linear::Create(*device_, F32Tensor(w, 32, 32), WeightType::kF32);
  ASSERT_TRUE(linear.ok()) << linear.status();
  std::vector<float> x(32), y(32);
  EXPECT_TRUE((*linear)->Forward(x.data(), 0, y.data()).ok());
  EXPECT_EQ((*linear)->Forward(x.data(), -1, y.data()).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT((*linear)->ImplName(0), StartsWith("error:"));
}

TEST_F(LinearApiTest, WarmForwardAllocatesOnlyInsideOneDnn) {
  const std::vector<float> w = RandomVector(256 * 256, -1, 1, 800);
  for (WeightType type : {WeightType::kF32, WeightType::kBf16, WeightType::kInt8}) {
    absl::StatusOr<std::unique_ptr<Linear>> linear =
        Linear::Create(*device_, F32Tensor(w, 256, 256), type);
    ASSERT_TRUE(linear.ok()) << linear.status();
    const std::vector<float> x = RandomVector(20 * 256, -1, 1, 801);
    std::vector<float> y(20 * 256);
    for (int64_t m : {1, 16, 20}) {  // The kernels (m = 1), exact and padded buckets.
      ASSERT_TRUE((*linear)->Forward(x.data(), m, y.data()).ok());  // Warm-up creates it.
      const int64_t before = g_allocations.load();
      ASSERT_TRUE((*linear)->Forward(x.data(), m, y.data()).ok());
      const int64_t during = g_allocations.load() - before;
      // oneDNN 2.6's execute builds an std::unordered_map of its arguments on every call (a
      // handful of nodes); anything more would be ours (buffers, primitives).
      EXPECT_LE(during, 8) << "m = " << m;
      // The kernel path (bf16 / int8 decode rows) allocates nothing at all.
      if (m <= (*linear)->gemv_max_rows()) {
        EXPECT_EQ(during, 0) << "m = " << m;
      }
      RecordProperty("allocations_per_forward_m" + std::to_string(m), std::to_string(during));
      std::printf("[ info ] %s m=%lld: %lld heap allocations in a warm Forward\n",
                  std::string(WeightTypeName(type)).c_str(), static_cast<long long>(m),
                  static_cast<long long>(during));
    }
  }
}

// Stacking Q/K/V-like parts into one Linear must give, column for column, exactly what each
// part's own Linear gives (per-channel int8 scales; the kernel's reduction over K does not
// depend on N).
class LinearStackedTest : public LinearTestBase, public ::testing::WithParamInterface<WeightType> {};

TEST_P(LinearStackedTest, ColumnsEqualThePartsOwnLinears) {
  constexpr int64_t kK = 160;
  const std::vector<int64_t> rows = {96, 32, 48};
  std::vector<std::vector<float>> values;
  std::vector<TensorData> tensors;
  for (size_t i = 0; i < rows.size(); ++i) {
    values.push_back(RandomVector(rows[i] * kK, -1, 1, 900 + i));
  }
  for (size_t i = 0; i < rows.size(); ++i) tensors.push_back(F32Tensor(values[i], rows[i], kK));
  const TensorData* parts[] = {&tensors[0], &tensors[1], &tensors[2]};
  absl::StatusOr<std::unique_ptr<Linear>> stacked =
      Linear::CreateStacked(*device_, parts, GetParam());
  ASSERT_TRUE(stacked.ok()) << stacked.status();
  ASSERT_EQ((*stacked)->out_features(), 176);
  ASSERT_EQ((*stacked)->in_features(), kK);
  for (int64_t m : {1, 5, 40}) {
    const std::vector<float> x = RandomVector(m * kK, -2, 2, 950 + m);
    std::vector<float> y(m * 176);
    ASSERT_TRUE((*stacked)->Forward(x.data(), m, y.data()).ok());
    int64_t column = 0;
    for (size_t i = 0; i < rows.size(); ++i) {
      absl::StatusOr<std::unique_ptr<Linear>> own = Linear::Create(*device_, tensors[i], GetParam());
      ASSERT_TRUE(own.ok()) << own.status();
      std::vector<float> yi(m * rows[i]);
      ASSERT_TRUE((*own)->Forward(x.data(), m, yi.data()).ok());
      for (int64_t r = 0; r < m; ++r) {
        for (int64_t j = 0; j < rows[i]; ++j) {
          // Bitwise equality, or near it: oneDNN may block N differently for a wider matrix,
          // which can only reorder f32 additions (int8 accumulates exactly in s32).
          const float a = y[r * 176 + column + j], b = yi[r * rows[i] + j];
          if (GetParam() == WeightType::kInt8) {
            ASSERT_EQ(a, b) << "part " << i << " row " << r << " col " << j;
          } else {
            ASSERT_NEAR(a, b, 1e-5 * (std::fabs(b) + 1)) << "part " << i << " row " << r;
          }
        }
      }
      column += rows[i];
    }
  }
}

TEST_P(LinearStackedTest, RejectsMismatchedInputs) {
  const std::vector<float> a = RandomVector(16 * 32, -1, 1, 990), b = RandomVector(16 * 48, -1, 1, 991);
  const TensorData ta = F32Tensor(a, 16, 32), tb = F32Tensor(b, 16, 48);
  const TensorData* parts[] = {&ta, &tb};
  EXPECT_EQ(Linear::CreateStacked(*device_, parts, GetParam()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Linear::CreateStacked(*device_, {}, GetParam()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Types, LinearStackedTest,
                         ::testing::Values(WeightType::kF32, WeightType::kBf16, WeightType::kInt8),
                         [](const auto& info) { return std::string(WeightTypeName(info.param)); });

TEST(WeightTypeTest, ParsesAndNamesEveryType) {
  for (WeightType t : {WeightType::kAuto, WeightType::kF32, WeightType::kBf16, WeightType::kInt8}) {
    absl::StatusOr<WeightType> parsed = ParseWeightType(WeightTypeName(t));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, t);
  }
  absl::StatusOr<WeightType> bad = ParseWeightType("fp8");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("auto, f32, bf16, int8"));
}

TEST(WeightTypeTest, AutoPicksByStorage) {
  EXPECT_EQ(ResolveWeightType(WeightType::kAuto, TensorType::kF32), WeightType::kF32);
  EXPECT_EQ(ResolveWeightType(WeightType::kAuto, TensorType::kF16), WeightType::kBf16);
  EXPECT_EQ(ResolveWeightType(WeightType::kAuto, TensorType::kBF16), WeightType::kBf16);
  EXPECT_EQ(ResolveWeightType(WeightType::kAuto, TensorType::kQ8_0), WeightType::kInt8);
  // An explicit choice wins whatever the storage.
  EXPECT_EQ(ResolveWeightType(WeightType::kInt8, TensorType::kF32), WeightType::kInt8);
  EXPECT_EQ(ResolveWeightType(WeightType::kF32, TensorType::kQ8_0), WeightType::kF32);
}

TEST_F(LinearApiTest, AutoMustBeResolvedBeforePacking) {
  const std::vector<float> w = RandomVector(16 * 16, -1, 1, 995);
  EXPECT_EQ(Linear::Create(*device_, F32Tensor(w, 16, 16), WeightType::kAuto).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(LinearBucketTest, BucketsCoverEveryRowCount) {
  int64_t distinct = 0, previous = 0;
  for (int64_t m = 1; m <= Linear::kMaxBucketRows; ++m) {
    const int64_t bucket = Linear::BucketRows(m);
    ASSERT_GE(bucket, m);
    ASSERT_GE(bucket, previous);
    ASSERT_LE(bucket - m, m <= 128 ? 15 : 31) << "m = " << m;
    if (bucket != previous) ++distinct;
    previous = bucket;
  }
  EXPECT_EQ(Linear::BucketRows(Linear::kMaxBucketRows), Linear::kMaxBucketRows);
  EXPECT_EQ(distinct, 35);
}

}  // namespace
}  // namespace kvserve::engine
