// Int8Gemv (the AVX512-VNNI decode kernel) against an exact integer reference, on weights
// packed here by the documented layout, and through Linear against oneDNN.
//
// Tolerance: none. u8 x s8 products summed in s32 are exact (no overflow at these K), so the
// kernel must equal the reference exactly, and Linear's kernel path must give oneDNN's bits.
#include "engine/compute/int8_gemv.h"

#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/compute/device.h"
#include "engine/compute/linear.h"
#include "engine/model/tensor_data.h"
#include "gtest/gtest.h"

namespace kvserve::engine {
namespace {

// Packs row-major s8 W{n, k} into the "BA16a<nb>b4a" layout of int8_gemv.h, K padded to a
// multiple of 64 and the last column block to nb with zeros; `slack` extra bytes between
// column blocks check that n_block_stride is honoured.
std::vector<int8_t> Pack(const std::vector<int8_t>& w, int64_t n, int64_t k, int64_t nb,
                         int64_t slack, Int8PackedLayout* layout) {
  const int64_t k_pad = (k + 63) / 64 * 64;
  const int64_t blocks = (n + nb - 1) / nb;
  layout->k = k;
  layout->n = n;
  layout->n_block = nb;
  layout->n_block_stride = k_pad * nb + slack;
  std::vector<int8_t> packed(blocks * layout->n_block_stride, 0);
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t i = 0; i < k; ++i) {
      packed[(j / nb) * layout->n_block_stride + (i / 4) * nb * 4 + (j % nb) * 4 + i % 4] =
          w[j * k + i];
    }
  }
  return packed;
}

struct GemvCase {
  int64_t n;
  int64_t k;
  int64_t nb;
};

class Int8GemvTest : public ::testing::TestWithParam<GemvCase> {
 protected:
  void SetUp() override {
    if (!Int8GemvAvailable()) GTEST_SKIP() << "no AVX512-VNNI on this CPU or in this build";
  }
};

TEST_P(Int8GemvTest, EqualsExactIntegerProduct) {
  const auto& c = GetParam();
  const int64_t n = c.n, k = c.k;
  std::mt19937 rng(static_cast<uint32_t>(n * 13 + k));
  std::uniform_int_distribution<int> wdist(-127, 127), xdist(0, 255);
  std::vector<int8_t> w(n * k);
  for (int8_t& v : w) v = static_cast<int8_t>(wdist(rng));
  Int8PackedLayout layout;
  const std::vector<int8_t> packed = Pack(w, n, k, c.nb, /*slack=*/64, &layout);
  ASSERT_TRUE(Int8GemvSupportsLayout(layout));
  const int64_t x_stride = (k + 3) / 4 * 4 + 8;
  for (int64_t m : {1, 2, 3, 4, 5, 6, 7, 8, 13, 16}) {
    SCOPED_TRACE("m = " + std::to_string(m));
    // Garbage past k in each row: the kernel must only meet it with zero weights.
    std::vector<uint8_t> x(m * x_stride);
    for (uint8_t& v : x) v = static_cast<uint8_t>(xdist(rng));
    const int64_t acc_stride = n + 3;
    std::vector<int32_t> acc(m * acc_stride, -7);  // Canary in the 3 columns past n.
    Int8Gemv(layout, packed.data(), x.data(), m, x_stride, acc.data(), acc_stride);
    for (int64_t r = 0; r < m; ++r) {
      for (int64_t j = 0; j < n; ++j) {
        int64_t want = 0;
        for (int64_t i = 0; i < k; ++i) want += int64_t{x[r * x_stride + i]} * w[j * k + i];
        ASSERT_EQ(acc[r * acc_stride + j], want) << "row " << r << " col " << j;
      }
      for (int64_t j = n; j < acc_stride; ++j) {
        ASSERT_EQ(acc[r * acc_stride + j], -7) << "wrote past column " << n << " in row " << r;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, Int8GemvTest,
    ::testing::Values(
        // K not a multiple of 4 or 64, N not a multiple of 16, every column block width.
        GemvCase{17, 33, 16}, GemvCase{45, 71, 32}, GemvCase{97, 135, 48}, GemvCase{100, 137, 64},
        // Large enough (> 128 KiB) to split the columns over the threads.
        GemvCase{203, 1101, 64}, GemvCase{130, 2050, 48},
        // A single column, a single K value.
        GemvCase{1, 1, 16}, GemvCase{5, 3, 64}),
    [](const auto& info) {
      return "N" + std::to_string(info.param.n) + "K" + std::to_string(info.param.k) + "Nb" +
             std::to_string(info.param.nb);
    });

TEST(Int8GemvLayoutTest, RejectsLayoutsItDoesNotImplement) {
  Int8PackedLayout l{.k = 64, .n = 64, .n_block = 64, .n_block_stride = 64 * 64};
  EXPECT_TRUE(Int8GemvSupportsLayout(l));
  for (int64_t nb : {0, 8, 24, 80, 128}) {
    Int8PackedLayout bad = l;
    bad.n_block = nb;
    EXPECT_FALSE(Int8GemvSupportsLayout(bad)) << "n_block " << nb;
  }
  Int8PackedLayout short_stride = l;
  short_stride.n_block_stride = 64 * 64 - 1;
  EXPECT_FALSE(Int8GemvSupportsLayout(short_stride));
}

// Through Linear: the kernel path and oneDNN's primitives give the same bits (same
// quantisation, exact s32 product, same post pass).
class LinearInt8GemvTest : public ::testing::TestWithParam<GemvCase> {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::unique_ptr<Device>> device = Device::Create(DeviceKind::kCpu);
    ASSERT_TRUE(device.ok()) << device.status();
    device_ = std::move(*device);
  }
  static void TearDownTestSuite() { device_.reset(); }
  static std::unique_ptr<Device> device_;
};
std::unique_ptr<Device> LinearInt8GemvTest::device_;

TEST_P(LinearInt8GemvTest, KernelEqualsOneDnnBitForBit) {
  const int64_t n = GetParam().n, k = GetParam().k;
  std::mt19937 rng(static_cast<uint32_t>(n + 3 * k));
  std::uniform_real_distribution<float> dist(-1, 1);
  std::vector<float> w(n * k), x(35 * k);  // Up to kMaxM rows below.
  for (float& v : w) v = dist(rng);
  for (float& v : x) v = dist(rng);
  TensorData t;
  t.name = "test.weight";
  t.type = TensorType::kF32;
  t.shape = {n, k};
  t.data = reinterpret_cast<const uint8_t*>(w.data());
  t.size_bytes = w.size() * sizeof(float);
  absl::StatusOr<std::unique_ptr<Linear>> linear = Linear::Create(*device_, t, WeightType::kInt8);
  ASSERT_TRUE(linear.ok()) << linear.status();
  if ((*linear)->gemv_max_rows() == 0) {
    GTEST_SKIP() << "Int8Gemv not used here: layout " << (*linear)->WeightsLayout()
                 << ", AVX512-VNNI " << Int8GemvAvailable();
  }
  // On AMX CPUs the rows from int8_amx_min_rows() up run AmxInt8Gemm (amx_gemm.h): checked
  // with the default split and with AMX for every row count, up to several 16-row tiles.
  std::vector<int64_t> amx_min_rows = {(*linear)->int8_amx_min_rows()};
  if (amx_min_rows[0] <= Linear::kMaxBucketRows) amx_min_rows.push_back(1);
  constexpr int64_t kMaxM = 35;
  for (int64_t amx_from : amx_min_rows) {
    (*linear)->SetInt8AmxMinRows(amx_from);
    for (int64_t m = 1; m <= kMaxM; m += m < 18 ? 1 : 17) {
      SCOPED_TRACE("m = " + std::to_string(m) + ", AMX from " + std::to_string(amx_from));
      std::vector<float> kernel(m * n), onednn(m * n);
      (*linear)->SetGemvMaxRows(kMaxM);
      ASSERT_EQ((*linear)->ImplName(m),
                m >= (*linear)->int8_amx_min_rows() ? "int8_gemv:amx_int8" : "int8_gemv:avx512_vnni");
      ASSERT_TRUE((*linear)->Forward(x.data(), m, kernel.data()).ok());
      (*linear)->SetGemvMaxRows(0);
      ASSERT_EQ((*linear)->ImplName(m).rfind("brg:", 0), 0u) << (*linear)->ImplName(m);
      ASSERT_TRUE((*linear)->Forward(x.data(), m, onednn.data()).ok());
      EXPECT_EQ(std::memcmp(kernel.data(), onednn.data(), kernel.size() * sizeof(float)), 0);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, LinearInt8GemvTest,
                         ::testing::Values(GemvCase{96, 136, 0}, GemvCase{33, 511, 0},
                                           GemvCase{2560, 2048, 0}, GemvCase{77, 5633, 0}),
                         [](const auto& info) {
                           return "N" + std::to_string(info.param.n) + "K" +
                                  std::to_string(info.param.k);
                         });

}  // namespace
}  // namespace kvserve::engine
