#include "engine/model/tensor_data.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#if defined(__F16C__)
#include <immintrin.h>
#endif

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvserve::engine {
namespace {

using ::testing::HasSubstr;

TEST(TensorTypeNameTest, NamesEveryType) {
  EXPECT_EQ(TensorTypeName(TensorType::kF32), "f32");
  EXPECT_EQ(TensorTypeName(TensorType::kF16), "f16");
  EXPECT_EQ(TensorTypeName(TensorType::kBF16), "bf16");
  EXPECT_EQ(TensorTypeName(TensorType::kQ8_0), "q8_0");
  EXPECT_EQ(TensorTypeName(TensorType::kQ4_0), "q4_0");
}

TEST(HalfTest, KnownValues) {
  EXPECT_EQ(HalfToFloat(0x3c00), 1.0f);
  EXPECT_EQ(HalfToFloat(0xc000), -2.0f);
  EXPECT_EQ(HalfToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));  // Smallest subnormal.
  EXPECT_EQ(HalfToFloat(0x0400), std::ldexp(1.0f, -14));  // Smallest normal.
  EXPECT_EQ(HalfToFloat(0x7c00), std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::signbit(HalfToFloat(0x8000)));
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7e00)));
}

TEST(HalfTest, EveryHalfRoundTrips) {
  for (uint32_t h = 0; h <= 0xffff; ++h) {
    const float f = HalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(f)))) << h;
    } else {
      EXPECT_EQ(FloatToHalf(f), h) << h;
    }
  }
}

struct RoundingCase {
  const char* name;
  float input;
  uint16_t expected;
};

class FloatToHalfRoundingTest : public ::testing::TestWithParam<RoundingCase> {};

TEST_P(FloatToHalfRoundingTest, RoundsToNearestEven) {
  EXPECT_EQ(FloatToHalf(GetParam().input), GetParam().expected) << GetParam().name;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, FloatToHalfRoundingTest,
    ::testing::Values(
        RoundingCase{"TieToEvenDown", 1.0f + std::ldexp(1.0f, -11), 0x3c00},
        RoundingCase{"TieToEvenUp", 1.0f + 3 * std::ldexp(1.0f, -11), 0x3c02},
        RoundingCase{"AboveTieRoundsUp", 1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -20),
                     0x3c01},
        RoundingCase{"LargestBelowOverflow", 65519.0f, 0x7bff},
        RoundingCase{"OverflowTieToInfinity", 65520.0f, 0x7c00},
        RoundingCase{"HugeToInfinity", 1e10f, 0x7c00},
        RoundingCase{"NegativeHugeToInfinity", -1e10f, 0xfc00},
        RoundingCase{"HalfSmallestSubnormalToZero", std::ldexp(1.0f, -25), 0x0000},
        RoundingCase{"JustAboveHalfSubnormal", std::ldexp(1.0f, -25) * 1.0001f, 0x0001},
        RoundingCase{"SubnormalTieToEven", 3 * std::ldexp(1.0f, -25), 0x0002},
        RoundingCase{"SubnormalRoundsIntoNormal", std::ldexp(1.0f, -14) * 0.99999f, 0x0400},
        RoundingCase{"NegativeZero", -0.0f, 0x8000},
        RoundingCase{"Infinity", std::numeric_limits<float>::infinity(), 0x7c00}),
    [](const auto& info) { return std::string(info.param.name); });

#if defined(__F16C__)
// The CPU's own conversion (F16C, round to nearest even) is an independent oracle.
TEST(HalfTest, MatchesHardwareConversionOnRandomFloats) {
  std::mt19937 rng(7);
  for (int i = 0; i < 2000000; ++i) {
    const float f = std::bit_cast<float>(static_cast<uint32_t>(rng()));
    if (std::isnan(f)) continue;
    const uint16_t hw = static_cast<uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
    ASSERT_EQ(FloatToHalf(f), hw) << f;
    ASSERT_EQ(std::bit_cast<uint32_t>(HalfToFloat(hw)), std::bit_cast<uint32_t>(_cvtsh_ss(hw)));
  }
}
#endif

TEST(Bf16Test, EveryBf16RoundTrips) {
  for (uint32_t b = 0; b <= 0xffff; ++b) {
    const float f = Bf16ToFloat(static_cast<uint16_t>(b));
    EXPECT_EQ(std::bit_cast<uint32_t>(f), b << 16);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(f))));
    } else {
      EXPECT_EQ(FloatToBf16(f), b);
    }
  }
}

TEST(Bf16Test, RoundsToNearestEven) {
  EXPECT_EQ(FloatToBf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);      // Tie, even is down.
  EXPECT_EQ(FloatToBf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);  // Tie, even is up.
  EXPECT_EQ(FloatToBf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)), 0x3f81);
  EXPECT_EQ(FloatToBf16(std::numeric_limits<float>::max()), 0x7f80);  // Rounds to infinity.
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(std::nanf("")))));
  // A NaN whose payload sits only in the low bits must not become infinity.
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(std::bit_cast<float>(0x7f800001u)))));
}

TensorData View(const char* name, TensorType type, std::vector<int64_t> shape,
                const std::vector<uint8_t>& bytes) {
  TensorData t;
  t.name = name;
  t.type = type;
  t.shape = std::move(shape);
  t.data = bytes.data();
  t.size_bytes = bytes.size();
  return t;
}

TEST(DecodeToF32Test, F32F16Bf16) {
  const std::vector<float> values = {1.5f, -2.0f, 0.25f, 3.0f};
  std::vector<uint8_t> f32(16), f16(8), bf16(8);
  std::memcpy(f32.data(), values.data(), 16);
  for (int i = 0; i < 4; ++i) {
    const uint16_t h = FloatToHalf(values[i]);
    const uint16_t b = FloatToBf16(values[i]);
    std::memcpy(f16.data() + 2 * i, &h, 2);
    std::memcpy(bf16.data() + 2 * i, &b, 2);
  }
  for (const auto& [type, bytes] :
       {std::pair{TensorType::kF32, &f32}, {TensorType::kF16, &f16}, {TensorType::kBF16, &bf16}}) {
    const TensorData t = View("t", type, {2, 2}, *bytes);
    std::vector<float> out(3);
    ASSERT_TRUE(DecodeToF32(t, 1, absl::MakeSpan(out)).ok());
    EXPECT_THAT(out, ::testing::ElementsAre(-2.0f, 0.25f, 3.0f)) << TensorTypeName(type);
  }
}

TEST(DecodeToF32Test, Q8_0AnyRange) {
  // Two blocks: d = 0.5 with q = i - 16, then d = 2 with q = -i.
  std::vector<uint8_t> bytes(68);
  const uint16_t d0 = FloatToHalf(0.5f), d1 = FloatToHalf(2.0f);
  std::memcpy(bytes.data(), &d0, 2);
  std::memcpy(bytes.data() + 34, &d1, 2);
  for (int i = 0; i < 32; ++i) {
    bytes[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(i - 16));
    bytes[36 + i] = static_cast<uint8_t>(static_cast<int8_t>(-i));
  }
  const TensorData t = View("q", TensorType::kQ8_0, {64}, bytes);
  std::vector<float> out(10);
  ASSERT_TRUE(DecodeToF32(t, 27, absl::MakeSpan(out)).ok());  // Straddles the block boundary.
  for (int k = 0; k < 10; ++k) {
    const int e = 27 + k;
    const float expected = e < 32 ? 0.5f * (e - 16) : 2.0f * -(e - 32);
    EXPECT_EQ(out[k], expected) << e;
  }
}

// ggml's block_q4_0: f16 d, then 16 bytes; byte j has value j in its low nibble and value
// j + 16 in its high nibble, each q + 8.
TEST(DecodeToF32Test, Q4_0NibbleLayoutAnyRange) {
  // Two blocks: d = 0.5 with value i = (i % 16) - 8, then d = -2 with value i = 7 - (i % 16)
  // (low nibbles) / (i % 16) - 8 (high nibbles).
  std::vector<uint8_t> bytes(36);
  const uint16_t d0 = FloatToHalf(0.5f), d1 = FloatToHalf(-2.0f);
  std::memcpy(bytes.data(), &d0, 2);
  std::memcpy(bytes.data() + 18, &d1, 2);
  for (int j = 0; j < 16; ++j) {
    bytes[2 + j] = static_cast<uint8_t>(j | (j << 4));
    bytes[20 + j] = static_cast<uint8_t>((15 - j) | (j << 4));
  }
  const TensorData t = View("q", TensorType::kQ4_0, {64}, bytes);
  std::vector<float> all(64);
  ASSERT_TRUE(DecodeToF32(t, 0, absl::MakeSpan(all)).ok());
  for (int e = 0; e < 64; ++e) {
    const int j = e % 16;
    float expected;
    if (e < 32) {
      expected = 0.5f * (j - 8);
    } else {
      expected = -2.0f * (e < 48 ? (15 - j) - 8 : j - 8);
    }
    EXPECT_EQ(all[e], expected) << e;
  }
  std::vector<float> out(9);
  ASSERT_TRUE(DecodeToF32(t, 29, absl::MakeSpan(out)).ok());  // Straddles the block boundary.
  for (int k = 0; k < 9; ++k) EXPECT_EQ(out[k], all[29 + k]) << 29 + k;
}

TEST(DecodeToF32Test, RejectsRangesOutsideTheTensor) {
  std::vector<uint8_t> bytes(16);
  const TensorData t = View("blk.0.attn_norm.weight", TensorType::kF32, {4}, bytes);
  std::vector<float> out(2);
  EXPECT_TRUE(DecodeToF32(t, 2, absl::MakeSpan(out)).ok());
  const absl::Status s = DecodeToF32(t, 3, absl::MakeSpan(out));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("blk.0.attn_norm.weight"));
  EXPECT_FALSE(DecodeToF32(t, -1, absl::MakeSpan(out)).ok());
}

TEST(DecodeToF32Test, RejectsATensorWithTooFewBytes) {
  std::vector<uint8_t> bytes(10);
  const TensorData t = View("short", TensorType::kF32, {4}, bytes);
  std::vector<float> out(1);
  EXPECT_EQ(DecodeToF32(t, 0, absl::MakeSpan(out)).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvserve::engine
