// Each op against its scalar double-precision reference (engine/compute/reference_ops.h).
//
// Tolerances (per element, |got - want| <= kRel * |want| + floor):
// - Add, Axpy: one f32 rounding (or one fused multiply-add), so 1 ulp: kRel = 1.2e-7.
// - Dot: f32 accumulation in a fixed blocked order; its error grows like sqrt(n) eps times
//   sum |a_i b_i|, so the bound is 1e-6 * sum |a_i b_i| (a dropped or doubled term is > 1e-4).
// - RmsNorm: the Dot above plus three roundings: 1e-6 relative.
// - SiluMul, Softmax: the vectorised exp is about 2 ulp (Cephes polynomial), plus a division
//   and a normalisation: 2e-6 relative, with a 1e-30 floor for results that underflow
//   (Softmax also rounds x - max to f32 first; see there).
// - ApplyRope: the angle is exact to double, cos/sin rounded to f32, then two f32 products
//   and a sum: 3e-7 * (|v0| + |v1|) for each rotated value.
#include "engine/compute/ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "engine/compute/reference_ops.h"
#include "gtest/gtest.h"

namespace kvserve::engine {
namespace {

std::vector<float> RandomVector(int64_t n, float lo, float hi, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

void ExpectNear(const std::vector<float>& got, const std::vector<float>& want, double rel,
                double floor) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    const double tol = rel * std::fabs(want[i]) + floor;
    ASSERT_LE(std::fabs(static_cast<double>(got[i]) - want[i]), tol)
        << "element " << i << " of " << got.size() << ": got " << got[i] << " want " << want[i];
  }
}

struct SizeCase {
  std::string name;
  int64_t n;
};

// Odd sizes (vector tails), the bundled stories260K shapes (dim 64, hidden 172, vocab 512) and
// TinyLlama-1.1B's (dim 2048, hidden 5632).
const SizeCase kSizes[] = {
    {"n1", 1},
    {"n3", 3},
    {"n15", 15},
    {"n16", 16},
    {"n17", 17},
    {"n63", 63},
    {"Bundled64", 64},
    {"n65", 65},
    {"Bundled172", 172},
    {"Bundled512", 512},
    {"n1001", 1001},
    {"TinyLlama2048", 2048},
    {"TinyLlama5632", 5632},
};

class ElementwiseOpsTest : public ::testing::TestWithParam<SizeCase> {};

TEST_P(ElementwiseOpsTest, DotMatchesReference) {
  const int64_t n = GetParam().n;
  const std::vector<float> a = RandomVector(n, -1, 1, 1);
  const std::vector<float> b = RandomVector(n, -1, 1, 2);
  double abs_sum = 0;
  for (int64_t i = 0; i < n; ++i) abs_sum += std::fabs(static_cast<double>(a[i]) * b[i]);
  EXPECT_NEAR(Dot(a.data(), b.data(), n), reference::Dot(a.data(), b.data(), n), 1e-6 * abs_sum);
}

TEST_P(ElementwiseOpsTest, RmsNormMatchesReference) {
  const int64_t n = GetParam().n;
  const std::vector<float> x = RandomVector(n, -3, 3, 3);
  const std::vector<float> w = RandomVector(n, 0.5, 1.5, 4);
  std::vector<float> got(n), want(n);
  RmsNorm(x.data(), w.data(), n, 1e-5f, got.data());
  reference::RmsNorm(x.data(), w.data(), n, 1e-5f, want.data());
  ExpectNear(got, want, 1e-6, 1e-30);
  // In place gives the same bits.
  std::vector<float> in_place = x;
  RmsNorm(in_place.data(), w.data(), n, 1e-5f, in_place.data());
  EXPECT_EQ(in_place, got);
}

TEST_P(ElementwiseOpsTest, RmsNormRowsNormalisesEachRowAlone) {
  const int64_t n = GetParam().n;
  constexpr int64_t kRows = 3;
  const std::vector<float> x = RandomVector(kRows * n, -3, 3, 5);
  const std::vector<float> w = RandomVector(n, 0.5, 1.5, 6);
  std::vector<float> got(kRows * n), want(kRows * n);
  RmsNormRows(x.data(), w.data(), kRows, n, 1e-6f, got.data());
  reference::RmsNormRows(x.data(), w.data(), kRows, n, 1e-6f, want.data());
  ExpectNear(got, want, 1e-6, 1e-30);
  // Row r is bit-identical to normalising that row on its own (batch invariance).
  for (int64_t r = 0; r < kRows; ++r) {
    std::vector<float> row(n);
    RmsNorm(x.data() + r * n, w.data(), n, 1e-6f, row.data());
    EXPECT_TRUE(std::equal(row.begin(), row.end(), got.begin() + r * n)) << "row " << r;
  }
}

TEST_P(ElementwiseOpsTest, SiluMulMatchesReference) {
  const int64_t n = GetParam().n;
  const std::vector<float> g = RandomVector(n, -12, 12, 7);
  const std::vector<float> u = RandomVector(n, -2, 2, 8);
  std::vector<float> got(n), want(n);
  SiluMul(g.data(), u.data(), n, got.data());
  reference::SiluMul(g.data(), u.data(), n, want.data());
  ExpectNear(got, want, 2e-6, 1e-30);
}

TEST_P(ElementwiseOpsTest, SoftmaxMatchesReferenceAndSumsToOne) {
  const int64_t n = GetParam().n;
  const std::vector<float> x = RandomVector(n, -20, 20, 9);
  std::vector<float> got = x, want = x;
  Softmax(got.data(), n);
  reference::Softmax(want.data(), n);
  // x - max is rounded to f32 (up to 2^-24 |x - max| absolute), which e^ turns into that much
  // relative error on top of the 2e-6.
  const float max = *std::max_element(x.begin(), x.end());
  for (int64_t i = 0; i < n; ++i) {
    const double rel = 2e-6 + 6e-8 * std::fabs(static_cast<double>(x[i]) - max);
    ASSERT_LE(std::fabs(static_cast<double>(got[i]) - want[i]), rel * want[i] + 1e-30)
        << "element " << i << " of " << n << ": got " << got[i] << " want " << want[i];
  }
  const double sum = std::accumulate(got.begin(), got.end(), 0.0);
  EXPECT_NEAR(sum, 1.0, 1e-5);
}

TEST_P(ElementwiseOpsTest, AddMatchesReference) {
  const int64_t n = GetParam().n;
  const std::vector<float> y = RandomVector(n, -5, 5, 10);
  std::vector<float> got = RandomVector(n, -5, 5, 11);
  std::vector<float> want = got;
  Add(got.data(), y.data(), n);
  reference::Add(want.data(), y.data(), n);
  EXPECT_EQ(got, want);  // A single f32 addition is exactly the rounded double sum.
}

TEST_P(ElementwiseOpsTest, AxpyMatchesReference) {
  const int64_t n = GetParam().n;
  const std::vector<float> x = RandomVector(n, -5, 5, 12);
  std::vector<float> got = RandomVector(n, -5, 5, 13);
  std::vector<float> want = got;
  Axpy(0.37f, x.data(), got.data(), n);
  reference::Axpy(0.37f, x.data(), want.data(), n);
  ExpectNear(got, want, 1.2e-7, 1e-30);
}

INSTANTIATE_TEST_SUITE_P(Sizes, ElementwiseOpsTest, ::testing::ValuesIn(kSizes),
                         [](const auto& info) { return info.param.name; });

TEST(SoftmaxTest, MaskedEntriesBecomeZero) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> x = {1.0f, -inf, 2.0f, -inf, 0.5f};
  std::vector<float> want = x;
  Softmax(x.data(), x.size());
  reference::Softmax(want.data(), want.size());
  EXPECT_EQ(x[1], 0.0f);
  EXPECT_EQ(x[3], 0.0f);
  ExpectNear(x, want, 2e-6, 0);
}

TEST(SoftmaxTest, LargeInputsDoNotOverflow) {
  std::vector<float> x = {1000.0f, 999.0f, -1000.0f};
  Softmax(x.data(), x.size());
  EXPECT_NEAR(x[0], 1.0 / (1.0 + std::exp(-1.0)), 1e-6);
  EXPECT_NEAR(x[1], std::exp(-1.0) / (1.0 + std::exp(-1.0)), 1e-6);
  EXPECT_EQ(x[2], 0.0f);
}

TEST(SiluMulTest, SaturatesForLargeMagnitudes) {
  const std::vector<float> g = {-200.0f, -90.0f, 0.0f, 90.0f, 200.0f};
  const std::vector<float> u = {1.0f, 1.0f, 1.0f, 1.0f, 1.0f};
  std::vector<float> out(g.size());
  SiluMul(g.data(), u.data(), g.size(), out.data());
  EXPECT_EQ(out[0], 0.0f);
  EXPECT_NEAR(out[1], 0.0f, 1e-30);
  EXPECT_EQ(out[2], 0.0f);
  EXPECT_EQ(out[3], 90.0f);
  EXPECT_EQ(out[4], 200.0f);
}

struct RopeCase {
  std::string name;
  int64_t n_heads;
  int64_t head_dim;
  int64_t rope_dim;
  int64_t position;
  float theta;
};

class RopeTest : public ::testing::TestWithParam<RopeCase> {};

TEST_P(RopeTest, MatchesReference) {
  const RopeCase& c = GetParam();
  const std::vector<float> v = RandomVector(c.n_heads * c.head_dim, -2, 2, 14);
  std::vector<float> got = v, want = v;
  ApplyRope(got.data(), c.n_heads, c.head_dim, c.rope_dim, c.position, c.theta);
  reference::ApplyRope(want.data(), c.n_heads, c.head_dim, c.rope_dim, c.position, c.theta);
  for (int64_t h = 0; h < c.n_heads; ++h) {
    for (int64_t i = 0; i < c.head_dim; ++i) {
      const int64_t at = h * c.head_dim + i;
      if (i >= c.rope_dim) {
        EXPECT_EQ(got[at], v[at]) << "head " << h << " dim " << i << " is past rope_dim";
        continue;
      }
      const int64_t pair = at - (i % 2);
      const double tol = 3e-7 * (std::fabs(v[pair]) + std::fabs(v[pair + 1]));
      ASSERT_NEAR(got[at], want[at], tol) << "head " << h << " dim " << i;
    }
  }
}

// The table-driven variant the model runner uses must give exactly ApplyRope's results.
TEST_P(RopeTest, CachedTableIsBitIdentical) {
  const RopeCase& c = GetParam();
  const std::vector<float> v = RandomVector(c.n_heads * c.head_dim, -2, 2, 15);
  const int64_t pairs = c.rope_dim / 2;
  std::vector<float> cos((c.position + 1) * pairs), sin((c.position + 1) * pairs);
  RopeTable(c.rope_dim, c.position + 1, c.theta, cos.data(), sin.data());
  std::vector<float> got = v, want = v;
  ApplyRopeCached(got.data(), c.n_heads, c.head_dim, c.rope_dim, cos.data() + c.position * pairs,
                  sin.data() + c.position * pairs);
  ApplyRope(want.data(), c.n_heads, c.head_dim, c.rope_dim, c.position, c.theta);
  EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0);
}

INSTANTIATE_TEST_SUITE_P(Shapes, RopeTest,
                         ::testing::Values(
                             // stories260K: dim 64, 8 heads (q) / 4 kv heads of head_dim 8.
                             RopeCase{"BundledQPos0", 8, 8, 8, 0, 10000.0f},
                             RopeCase{"BundledQPos5", 8, 8, 8, 5, 10000.0f},
                             RopeCase{"BundledKPos255", 4, 8, 8, 255, 10000.0f},
                             // TinyLlama-1.1B: 32 q heads / 4 kv heads of head_dim 64.
                             RopeCase{"TinyLlamaQPos1", 32, 64, 64, 1, 10000.0f},
                             RopeCase{"TinyLlamaKPos2047", 4, 64, 64, 2047, 10000.0f},
                             RopeCase{"LongContextTheta500k", 8, 128, 128, 100000, 500000.0f},
                             RopeCase{"PartialRotary", 4, 64, 32, 77, 10000.0f},
                             RopeCase{"OneHeadOnePair", 1, 2, 2, 3, 10000.0f}),
                         [](const auto& info) { return info.param.name; });

TEST(RopeSpecTest, RotatesInterleavedPairsByPositionTimesInverseFrequency) {
  // head_dim 4: pair 0 turns by pos * theta^0, pair 1 by pos * theta^(-2/4).
  std::vector<float> v = {1, 0, 1, 0};
  ApplyRope(v.data(), 1, 4, 4, 3, 100.0f);
  EXPECT_NEAR(v[0], std::cos(3.0), 1e-7);
  EXPECT_NEAR(v[1], std::sin(3.0), 1e-7);
  EXPECT_NEAR(v[2], std::cos(0.3), 1e-7);
  EXPECT_NEAR(v[3], std::sin(0.3), 1e-7);
}

TEST(RopeSpecTest, PositionZeroIsIdentity) {
  const std::vector<float> v = RandomVector(4 * 64, -2, 2, 15);
  std::vector<float> got = v;
  ApplyRope(got.data(), 4, 64, 64, 0, 10000.0f);
  EXPECT_EQ(got, v);
}

}  // namespace
}  // namespace kvserve::engine
