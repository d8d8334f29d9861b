// Bf16Gemv (the AVX512-BF16 decode kernel) and AmxBf16Gemm (AMX, every row count) against the
// double-precision reference Matmul, on weights packed here by the documented layout, and
// Bf16Gemv through Linear against oneDNN.
//
// Tolerance, per output element, relative to s = sum_k |x_k w_k| (the size of the terms):
// - against the reference on bf16-rounded x and W (exactly the values the kernel multiplies;
//   vdpbf16ps forms each bf16 x bf16 product exactly in f32), only the f32 accumulation error
//   remains: chunks of <= 1024 terms summed in order plus <= K / 1024 chunk adds, about
//   sqrt(K) * 2^-24 * s for random signs (~2e-6 s at K = 1100), so |y - ref| <= 1e-5 s.
//   One missing, doubled or misplaced term moves y by about s / K >= 9e-4 s at these K, two
//   orders of magnitude above it, so a layout or indexing bug cannot pass.
// - against oneDNN (the same packed weights): bit for bit, because the kernel sums in oneDNN
//   2.6's order (K chunks, see bf16_gemv.h); this is what keeps Linear batch-invariant.
#include "engine/compute/bf16_gemv.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/compute/amx_gemm.h"
#include "engine/compute/device.h"
#include "engine/compute/linear.h"
#include "engine/compute/reference_ops.h"
#include "engine/model/tensor_data.h"
#include "gtest/gtest.h"

namespace kvserve::engine {
namespace {

std::vector<float> RandomVector(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1, 1);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

std::vector<float> RoundToBf16(const std::vector<float>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = Bf16ToFloat(FloatToBf16(v[i]));
  return out;
}

// Packs row-major W{n, k} into the "BA16a<nb>b2a" layout of bf16_gemv.h, K padded to a
// multiple of 32 and the last column block to nb with zeros; `slack` extra elements between
// column blocks check that n_block_stride is honoured.
std::vector<uint16_t> Pack(const std::vector<float>& w, int64_t n, int64_t k, int64_t nb,
                           int64_t slack, Bf16PackedLayout* layout) {
  const int64_t k_pad = (k + 31) / 32 * 32;
  const int64_t blocks = (n + nb - 1) / nb;
  layout->k = k;
  layout->n = n;
  layout->n_block = nb;
  layout->n_block_stride = k_pad * nb + slack;
  layout->k_chunk = Bf16GemvChunkRows(k);
  std::vector<uint16_t> packed(blocks * layout->n_block_stride, 0);
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t i = 0; i < k; ++i) {
      const int64_t at =
          (j / nb) * layout->n_block_stride + (i / 2) * nb * 2 + (j % nb) * 2 + i % 2;
      packed[at] = FloatToBf16(w[j * k + i]);
    }
  }
  return packed;
}

struct GemvCase {
  int64_t n;
  int64_t k;
  int64_t nb;
};

class Bf16GemvTest : public ::testing::TestWithParam<GemvCase> {
 protected:
  void SetUp() override {
    if (!Bf16GemvAvailable()) GTEST_SKIP() << "no AVX512-BF16 on this CPU or in this build";
  }
};

// A case's random weights packed by the documented layout, with their bf16-rounded values and
// those values' magnitudes (for the reference and the tolerance).
struct PackedWeights {
  Bf16PackedLayout layout;
  std::vector<uint16_t> packed;
  std::vector<float> rounded;
  std::vector<float> abs;
};

PackedWeights PackCase(const GemvCase& c) {
  const std::vector<float> w = RandomVector(c.n * c.k, static_cast<uint32_t>(c.n * 31 + c.k));
  PackedWeights p;
  p.packed = Pack(w, c.n, c.k, c.nb, /*slack=*/32, &p.layout);
  p.rounded = RoundToBf16(w);
  p.abs.resize(w.size());
  for (size_t i = 0; i < w.size(); ++i) p.abs[i] = std::fabs(p.rounded[i]);
  return p;
}

TEST_P(Bf16GemvTest, MatchesReferenceOnBf16RoundedInputs) {
  const auto [n, k, nb] = GetParam();
  const PackedWeights pw = PackCase(GetParam());
  const Bf16PackedLayout& layout = pw.layout;
  const std::vector<uint16_t>& packed = pw.packed;
  ASSERT_TRUE(Bf16GemvSupportsLayout(layout));
  const std::vector<float>& w_rounded = pw.rounded;
  const std::vector<float>& w_abs = pw.abs;
  const int64_t x_stride = (k + 1) / 2 * 2 + 6;  // Even, with room beyond the row.
  for (int64_t m : {1, 2, 3, 4, 5, 6, 7, 8, 13, 16}) {
    SCOPED_TRACE("m = " + std::to_string(m));
    const std::vector<float> x = RoundToBf16(RandomVector(m * k, static_cast<uint32_t>(m)));
    std::vector<uint16_t> xb(m * x_stride, 0x7fc0);  // NaN: anything read past a pair shows.
    for (int64_t r = 0; r < m; ++r) {
      for (int64_t i = 0; i < k; ++i) xb[r * x_stride + i] = FloatToBf16(x[r * k + i]);
      if (k % 2 != 0) xb[r * x_stride + k] = 0;
    }
    const int64_t y_stride = n + 3;
    std::vector<float> y(m * y_stride, -7.0f);  // Canary in the 3 columns past n.
    Bf16Gemv(layout, packed.data(), xb.data(), m, x_stride, y.data(), y_stride);

    // Bf16GemvFma on the same values widened to f32: the same bits (the inputs here have no
    // denormals), whichever method this CPU prefers.
    std::vector<float> xf(m * x_stride, std::nanf(""));
    for (int64_t i = 0; i < m * x_stride; ++i) {
      if (xb[i] != 0x7fc0) xf[i] = Bf16ToFloat(xb[i]);
    }
    std::vector<float> y_fma(m * y_stride, -7.0f);
    Bf16GemvFma(layout, packed.data(), xf.data(), m, x_stride, y_fma.data(), y_stride);
    ASSERT_EQ(std::memcmp(y.data(), y_fma.data(), sizeof(float) * y.size()), 0)
        << "Bf16GemvFma differs from Bf16Gemv";

    std::vector<float> want(m * n), abs_sums(m * n), x_abs(x.size());
    for (size_t i = 0; i < x.size(); ++i) x_abs[i] = std::fabs(x[i]);
    reference::Matmul(x.data(), m, w_rounded.data(), n, k, want.data());
    reference::Matmul(x_abs.data(), m, w_abs.data(), n, k, abs_sums.data());
    for (int64_t r = 0; r < m; ++r) {
      for (int64_t j = 0; j < n; ++j) {
        const double got = y[r * y_stride + j];
        ASSERT_LE(std::fabs(got - want[r * n + j]), 1e-5 * abs_sums[r * n + j] + 1e-30)
            << "row " << r << " col " << j << " got " << got << " want " << want[r * n + j];
      }
      for (int64_t j = n; j < y_stride; ++j) {
        ASSERT_EQ(y[r * y_stride + j], -7.0f) << "wrote past column " << n << " in row " << r;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, Bf16GemvTest,
    ::testing::Values(
        // K odd and not a multiple of 32, N not a multiple of 16, every column block width.
        GemvCase{17, 33, 16}, GemvCase{45, 71, 32}, GemvCase{97, 135, 48}, GemvCase{100, 137, 64},
        // One K chunk of 512 plus a tail (513..1024) and 1024 chunks plus a tail (> 1024),
        // large enough (> 128 KiB) to split the columns over the threads.
        GemvCase{130, 777, 64}, GemvCase{203, 1100, 64}, GemvCase{70, 2049, 48},
        // A single column, a single K pair.
        GemvCase{1, 1, 16}, GemvCase{5, 2, 64}),
    [](const auto& info) {
      return "N" + std::to_string(info.param.n) + "K" + std::to_string(info.param.k) + "Nb" +
             std::to_string(info.param.nb);
    });

// AmxBf16Gemm (AMX tiles, every row count) on the same packed weights and shapes.
// Tolerance against the reference on bf16-rounded inputs: tdpbf16ps forms the bf16 products
// exactly and accumulates them in f32 in K steps of 32, so only f32 accumulation error remains
// (~sqrt(K) * 2^-24 * s), the same 1e-5 s bound as Bf16Gemv's. Batch invariance: every row is
// bit-identical whether it runs alone or among others, in any tile position; rows past m that
// AmxBf16Gemm reads to fill its last tile (NaN here) change nothing and nothing past column n
// is written.
class AmxBf16GemmTest : public ::testing::TestWithParam<GemvCase> {
 protected:
  void SetUp() override {
    if (!AmxBf16Available()) GTEST_SKIP() << "no AMX-BF16 on this CPU or in this build";
  }
};

TEST_P(AmxBf16GemmTest, MatchesReferenceAndRowsDoNotDependOnTheBatch) {
  const auto [n, k, nb] = GetParam();
  const PackedWeights pw = PackCase(GetParam());
  const Bf16PackedLayout& layout = pw.layout;
  const std::vector<uint16_t>& packed = pw.packed;
  ASSERT_TRUE(AmxBf16SupportsLayout(layout));
  const std::vector<float>& w_rounded = pw.rounded;
  const std::vector<float>& w_abs = pw.abs;
  const int64_t x_stride = (k + kAmxBf16KStep - 1) / kAmxBf16KStep * kAmxBf16KStep + 32;
  constexpr int64_t kMaxM = 53;  // Several full 16-row tiles and a partial one.
  const std::vector<float> x = RoundToBf16(RandomVector(kMaxM * k, 1234));
  // Rows [0, m) hold x (zero from k to the stride), the rows after them NaN.
  auto rows_of_x = [&](int64_t first, int64_t m) {
    std::vector<uint16_t> xb(AmxPaddedRows(m) * x_stride, 0x7fc0);
    for (int64_t r = 0; r < m; ++r) {
      std::fill(xb.begin() + r * x_stride, xb.begin() + (r + 1) * x_stride, uint16_t{0});
      for (int64_t i = 0; i < k; ++i) xb[r * x_stride + i] = FloatToBf16(x[(first + r) * k + i]);
    }
    return xb;
  };
  const int64_t y_stride = n + 3;
  auto run = [&](int64_t first, int64_t m) {
    const std::vector<uint16_t> xb = rows_of_x(first, m);
    std::vector<float> y(m * y_stride, -7.0f);  // Canary in the 3 columns past n.
    AmxBf16Gemm(layout, packed.data(), xb.data(), m, x_stride, y.data(), y_stride);
    return y;
  };
  std::vector<std::vector<float>> alone(kMaxM);
  for (int64_t r = 0; r < kMaxM; ++r) alone[r] = run(r, 1);

  std::vector<float> want(kMaxM * n), abs_sums(kMaxM * n), x_abs(x.size());
  for (size_t i = 0; i < x.size(); ++i) x_abs[i] = std::fabs(x[i]);
  reference::Matmul(x.data(), kMaxM, w_rounded.data(), n, k, want.data());
  reference::Matmul(x_abs.data(), kMaxM, w_abs.data(), n, k, abs_sums.data());
  for (int64_t m : {int64_t{1}, int64_t{2}, int64_t{3}, int64_t{7}, int64_t{15}, int64_t{16},
                    int64_t{17}, int64_t{32}, int64_t{33}, kMaxM}) {
    SCOPED_TRACE("m = " + std::to_string(m));
    const std::vector<float> y = run(0, m);
    for (int64_t r = 0; r < m; ++r) {
      for (int64_t j = 0; j < n; ++j) {
        const double got = y[r * y_stride + j];
        ASSERT_LE(std::fabs(got - want[r * n + j]), 1e-5 * abs_sums[r * n + j] + 1e-30)
            << "row " << r << " col " << j << " got " << got << " want " << want[r * n + j];
      }
      for (int64_t j = n; j < y_stride; ++j) {
        ASSERT_EQ(y[r * y_stride + j], -7.0f) << "wrote past column " << n << " in row " << r;
      }
      ASSERT_EQ(std::memcmp(y.data() + r * y_stride, alone[r].data(), sizeof(float) * n), 0)
          << "row " << r << " differs from the same row computed alone";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, AmxBf16GemmTest,
    ::testing::Values(
        // K not a multiple of 32 (odd too), N not a multiple of 16, every column block width.
        GemvCase{17, 33, 16}, GemvCase{45, 71, 32}, GemvCase{97, 135, 48}, GemvCase{100, 137, 64},
        // Large enough (> 128 KiB) to split the columns over the threads.
        GemvCase{203, 1100, 64}, GemvCase{70, 2049, 48},
        // A single column, a single K pair.
        GemvCase{1, 1, 16}, GemvCase{5, 2, 64}),
    [](const auto& info) {
      return "N" + std::to_string(info.param.n) + "K" + std::to_string(info.param.k) + "Nb" +
             std::to_string(info.param.nb);
    });

TEST(Bf16GemvLayoutTest, RejectsLayoutsItDoesNotImplement) {
  Bf16PackedLayout l{.k = 64, .n = 64, .n_block = 64, .n_block_stride = 64 * 64, .k_chunk = 64};
  EXPECT_TRUE(Bf16GemvSupportsLayout(l));
  for (int64_t nb : {0, 8, 24, 80, 128}) {
    Bf16PackedLayout bad = l;
    bad.n_block = nb;
    EXPECT_FALSE(Bf16GemvSupportsLayout(bad)) << "n_block " << nb;
  }
  Bf16PackedLayout short_stride = l;
  short_stride.n_block_stride = 64 * 64 - 1;
  EXPECT_FALSE(Bf16GemvSupportsLayout(short_stride));
  Bf16PackedLayout odd_chunk = l;
  odd_chunk.k_chunk = 31;
  EXPECT_FALSE(Bf16GemvSupportsLayout(odd_chunk));
}

TEST(Bf16GemvLayoutTest, ChunkRowsFollowOneDnn) {
  EXPECT_EQ(Bf16GemvChunkRows(1), 2);
  EXPECT_EQ(Bf16GemvChunkRows(136), 136);
  EXPECT_EQ(Bf16GemvChunkRows(512), 512);
  EXPECT_EQ(Bf16GemvChunkRows(513), 512);
  EXPECT_EQ(Bf16GemvChunkRows(1024), 512);
  EXPECT_EQ(Bf16GemvChunkRows(1025), 1024);
  EXPECT_EQ(Bf16GemvChunkRows(5632), 1024);
}

// Through Linear: the kernel and oneDNN's primitives on the same packed weights give the same
// bits (the K chunk rule above is what oneDNN does), for K around each chunk boundary.
class LinearGemvTest : public ::testing::TestWithParam<GemvCase> {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::unique_ptr<Device>> device = Device::Create(DeviceKind::kCpu);
    ASSERT_TRUE(device.ok()) << device.status();
    device_ = std::move(*device);
  }
  static void TearDownTestSuite() { device_.reset(); }
  static std::unique_ptr<Device> device_;
};
std::unique_ptr<Device> LinearGemvTest::device_;

TEST_P(LinearGemvTest, KernelEqualsOneDnnBitForBit) {
  const int64_t n = GetParam().n, k = GetParam().k;
  const std::vector<float> w = RandomVector(n * k, static_cast<uint32_t>(n + 5 * k));
  TensorData t;
  t.name = "test.weight";
  t.type = TensorType::kF32;
  t.shape = {n, k};
  t.data = reinterpret_cast<const uint8_t*>(w.data());
  t.size_bytes = w.size() * sizeof(float);
  absl::StatusOr<std::unique_ptr<Linear>> linear = Linear::Create(*device_, t, WeightType::kBf16);
  ASSERT_TRUE(linear.ok()) << linear.status();
  if ((*linear)->gemv_max_rows() == 0) {
    GTEST_SKIP() << "Bf16Gemv not used here: layout " << (*linear)->WeightsLayout() << ", impl "
                 << (*linear)->ImplName(32) << ", AVX512-BF16 " << Bf16GemvAvailable();
  }
  if ((*linear)->bf16_gemv_method() == Bf16GemvMethod::kAmx) {
    GTEST_SKIP() << "oneDNN runs AMX here, whose order Bf16Gemv does not reproduce: AmxBf16Gemm "
                    "takes every row count (bf16_gemv_test.cc)";
  }
  EXPECT_EQ((*linear)->bf16_gemv_method(), FasterBf16GemvMethod());
  EXPECT_EQ((*linear)->gemv_max_rows(),
            Linear::DefaultGemvMaxRows(WeightType::kBf16, FasterBf16GemvMethod()));
  constexpr int64_t kMaxM = 16;  // Up to 6 rows: one tile; 7..16: several tiles per span.
  const std::vector<float> x = RandomVector(300 * k, 99);
  for (const auto& [method, impl] :
       {std::pair{Bf16GemvMethod::kDot, "bf16_gemv:avx512_bf16"},
        std::pair{Bf16GemvMethod::kFma, "bf16_gemv:avx512_fma"}}) {
    (*linear)->SetBf16GemvMethod(method);
    std::vector<int64_t> ms;
    for (int64_t m = 1; m <= kMaxM; ++m) ms.push_back(m);
    // Prefill-sized batches (Linear runs Bf16GemvFma for them): several row groups of 144.
    for (int64_t m : {40, 145, 300}) ms.push_back(m);
    for (int64_t m : ms) {
      SCOPED_TRACE(absl::StrCat(impl, ", m = ", m));
      std::vector<float> kernel(m * n), onednn(m * n);
      (*linear)->SetGemvMaxRows(m);
      ASSERT_EQ((*linear)->ImplName(m),
                m == 1 && method == Bf16GemvMethod::kFma ? "bf16_gemv:avx512_bf16" : impl);
      ASSERT_TRUE((*linear)->Forward(x.data(), m, kernel.data()).ok());
      (*linear)->SetGemvMaxRows(0);
      ASSERT_EQ((*linear)->ImplName(m).rfind("brg:", 0), 0u) << (*linear)->ImplName(m);
      ASSERT_TRUE((*linear)->Forward(x.data(), m, onednn.data()).ok());
      int64_t differ = 0;
      for (int64_t i = 0; i < m * n; ++i) {
        differ += std::memcmp(&kernel[i], &onednn[i], sizeof(float)) != 0;
      }
      EXPECT_EQ(differ, 0) << differ << " of " << m * n << " outputs differ";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, LinearGemvTest,
                         ::testing::Values(GemvCase{96, 136, 0}, GemvCase{33, 511, 0},
                                           GemvCase{200, 513, 0}, GemvCase{64, 1024, 0},
                                           GemvCase{130, 1025, 0}, GemvCase{2560, 2048, 0},
                                           GemvCase{77, 5633, 0}),
                         [](const auto& info) {
                           return "N" + std::to_string(info.param.n) + "K" +
                                  std::to_string(info.param.k);
                         });

}  // namespace
}  // namespace kvserve::engine
