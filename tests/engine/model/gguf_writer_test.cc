#include "engine/model/gguf_writer.h"

#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/model/gguf_reader.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/model/test_util.h"

namespace kvserve::engine {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(GgufWriterTest, MetadataOfEveryTypeRoundTrips) {
  GgufWriter w;
  w.SetMetadata("u8", GgufValue::Uint8(250));
  w.SetMetadata("i8", GgufValue::Int8(-100));
  w.SetMetadata("u16", GgufValue::Uint16(65000));
  w.SetMetadata("i16", GgufValue::Int16(-32000));
  w.SetMetadata("u32", GgufValue::Uint32(4000000000u));
  w.SetMetadata("i32", GgufValue::Int32(-2000000000));
  w.SetMetadata("u64", GgufValue::Uint64(uint64_t{1} << 62));
  w.SetMetadata("u64_huge", GgufValue::Uint64(~uint64_t{0}));
  w.SetMetadata("i64", GgufValue::Int64(-(int64_t{1} << 61)));
  w.SetMetadata("f32", GgufValue::Float32(0.1f));
  w.SetMetadata("f64", GgufValue::Float64(0.1));
  w.SetMetadata("bool", GgufValue::Bool(true));
  w.SetMetadata("str", GgufValue::String("héllo ▁world"));
  w.SetMetadata("strs", GgufValue::StringArray({"a", "", "ccc"}));
  w.SetMetadata("floats", GgufValue::Float32Array({1.5f, -0.0f}));
  w.SetMetadata("ints", GgufValue::Int32Array({-1, 7}));
  w.SetMetadata("nested",
                GgufValue::Array(GgufValueType::kArray,
                                 {GgufValue::Int32Array({1, 2}),
                                  GgufValue::Array(GgufValueType::kInt32, {})}));
  w.SetMetadata("u8s", GgufValue::Array(GgufValueType::kUint8,
                                        {GgufValue::Uint8(1), GgufValue::Uint8(255)}));
  const std::string path = testing::TempDir("meta") + "/m.gguf";
  ASSERT_TRUE(w.WriteFile(path).ok());

  auto f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  const GgufFile& g = **f;
  EXPECT_EQ(g.version(), 3u);
  EXPECT_THAT(g.Keys(), ElementsAre("u8", "i8", "u16", "i16", "u32", "i32", "u64", "u64_huge",
                                    "i64", "f32", "f64", "bool", "str", "strs", "floats", "ints",
                                    "nested", "u8s"));
  EXPECT_EQ(*g.GetInt("u8"), 250);
  EXPECT_EQ(*g.GetInt("i8"), -100);
  EXPECT_EQ(*g.GetInt("u16"), 65000);
  EXPECT_EQ(*g.GetInt("i16"), -32000);
  EXPECT_EQ(*g.GetInt("u32"), 4000000000);
  EXPECT_EQ(*g.GetInt("i32"), -2000000000);
  EXPECT_EQ(*g.GetInt("u64"), int64_t{1} << 62);
  EXPECT_FALSE(g.GetInt("u64_huge").ok());
  EXPECT_EQ(g.GetValue("u64_huge")->uint_value, ~uint64_t{0});
  EXPECT_EQ(*g.GetInt("i64"), -(int64_t{1} << 61));
  EXPECT_EQ(*g.GetFloat("f32"), static_cast<double>(0.1f));
  EXPECT_EQ(*g.GetFloat("f64"), 0.1);
  EXPECT_TRUE(*g.GetBool("bool"));
  EXPECT_EQ(*g.GetString("str"), "héllo ▁world");
  EXPECT_THAT(*g.GetStringArray("strs"), ElementsAre("a", "", "ccc"));
  const std::vector<float> floats = *g.GetFloatArray("floats");
  ASSERT_EQ(floats.size(), 2u);
  EXPECT_EQ(floats[0], 1.5f);
  EXPECT_TRUE(std::signbit(floats[1]));
  EXPECT_THAT(*g.GetIntArray("ints"), ElementsAre(-1, 7));
  EXPECT_THAT(*g.GetIntArray("u8s"), ElementsAre(1, 255));

  auto nested = g.GetValue("nested");
  ASSERT_TRUE(nested.ok()) << nested.status();
  ASSERT_EQ(nested->type, GgufValueType::kArray);
  EXPECT_EQ(nested->array_type, GgufValueType::kArray);
  ASSERT_EQ(nested->array.size(), 2u);
  ASSERT_EQ(nested->array[0].array.size(), 2u);
  EXPECT_EQ(nested->array[0].array[1].int_value, 2);
  EXPECT_TRUE(nested->array[1].array.empty());

  // Wrong-type and missing lookups name the key.
  EXPECT_THAT(std::string(g.GetString("u32").status().message()), HasSubstr("'u32' is UINT32"));
  EXPECT_THAT(std::string(g.GetStringArray("ints").status().message()), HasSubstr("ARRAY of INT32"));
  EXPECT_EQ(g.GetInt("missing").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(g.GetFloat("u8").status().code(), absl::StatusCode::kInvalidArgument);
}

// Random values exactly representable in `type` (so f16/bf16 must round-trip exactly).
std::vector<float> RepresentableValues(TensorType type, int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) {
    x = normal(rng);
    if (type == TensorType::kF16) x = HalfToFloat(FloatToHalf(x));
    if (type == TensorType::kBF16) x = Bf16ToFloat(FloatToBf16(x));
  }
  return v;
}

class TensorRoundTripTest : public ::testing::TestWithParam<TensorType> {};

TEST_P(TensorRoundTripTest, WrittenThenReadMatches) {
  const TensorType type = GetParam();
  const std::vector<int64_t> shape = {5, 96};
  const std::vector<float> values = RepresentableValues(type, 5 * 96, 11);
  GgufWriter w;
  ASSERT_TRUE(w.AddTensor("m", type, shape, values).ok());
  ASSERT_TRUE(w.AddTensor("norm", TensorType::kF32, {7}, std::vector<float>(7, 1.0f)).ok());
  const std::string path = testing::TempDir("rt") + "/t.gguf";
  ASSERT_TRUE(w.WriteFile(path).ok());

  auto f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  auto t = (*f)->GetTensor("m");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->type, type);
  EXPECT_EQ(t->shape, shape);
  EXPECT_EQ((*f)->FindTensor("m")->dims, (std::vector<int64_t>{96, 5}));  // Innermost first.
  std::vector<float> decoded(values.size());
  ASSERT_TRUE(DecodeToF32(*t, 0, absl::MakeSpan(decoded)).ok());
  for (size_t block = 0; block < values.size() / 32; ++block) {
    float amax = 0;
    for (size_t j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(values[block * 32 + j]));
    for (size_t j = 0; j < 32; ++j) {
      const size_t i = block * 32 + j;
      if (type == TensorType::kQ8_0) {
        // Half a quantisation step, plus the f16 rounding of the scale times |q| <= 127.
        const float d = amax / 127.0f;
        EXPECT_NEAR(decoded[i], values[i], d * 0.5f + 127.0f * d * std::ldexp(1.0f, -11) + 1e-7f)
            << i;
      } else {
        EXPECT_EQ(decoded[i], values[i]) << i;
      }
    }
  }
  auto norm = (*f)->GetTensor("norm");
  ASSERT_TRUE(norm.ok());
  EXPECT_EQ(norm->data - t->data, static_cast<ptrdiff_t>((t->size_bytes + 31) / 32 * 32));
}

INSTANTIATE_TEST_SUITE_P(AllTypes, TensorRoundTripTest,
                         ::testing::Values(TensorType::kF32, TensorType::kF16, TensorType::kBF16,
                                           TensorType::kQ8_0),
                         [](const auto& info) { return std::string(TensorTypeName(info.param)); });

TEST(QuantizeQ8_0Test, MatchesGgmlReference) {
  // ggml quantize_row_q8_0_ref: d = amax / 127, q = round(x * (1 / d)).
  std::vector<float> x(32);
  for (int i = 0; i < 32; ++i) x[i] = static_cast<float>(i) - 10.0f;  // amax 21.
  std::vector<uint8_t> out(34);
  QuantizeRowQ8_0(x.data(), 32, out.data());
  uint16_t dh;
  std::memcpy(&dh, out.data(), 2);
  EXPECT_EQ(dh, FloatToHalf(21.0f / 127.0f));
  const float id = 127.0f / 21.0f;
  for (int i = 0; i < 32; ++i) {
    EXPECT_EQ(static_cast<int8_t>(out[2 + i]), static_cast<int8_t>(std::roundf(x[i] * id))) << i;
  }
  EXPECT_EQ(static_cast<int8_t>(out[2 + 31]), 127);
  // An all-zero block has d = 0 and q = 0.
  std::vector<float> zeros(32, 0.0f);
  QuantizeRowQ8_0(zeros.data(), 32, out.data());
  for (uint8_t b : out) EXPECT_EQ(b, 0);
}

TEST(GgufWriterTest, StreamsRowsInOrderInChunks) {
  // 3000 rows of 512: more than one chunk of 2^20 values.
  const int64_t rows = 3000, cols = 512;
  int64_t next_row = 0;
  GgufWriter w;
  ASSERT_TRUE(w.AddTensor("big", TensorType::kBF16, {rows, cols},
                          [&](int64_t first_row, absl::Span<float> out) {
                            EXPECT_EQ(first_row, next_row);
                            EXPECT_EQ(out.size() % cols, 0u);
                            for (size_t i = 0; i < out.size(); ++i) {
                              out[i] = static_cast<float>(first_row + i / cols);
                            }
                            next_row += static_cast<int64_t>(out.size()) / cols;
                            return absl::OkStatus();
                          })
                  .ok());
  const std::string path = testing::TempDir("stream") + "/s.gguf";
  ASSERT_TRUE(w.WriteFile(path).ok());
  EXPECT_EQ(next_row, rows);
  auto f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok());
  auto t = (*f)->GetTensor("big");
  std::vector<float> row(cols);
  ASSERT_TRUE(DecodeToF32(*t, 2047 * cols, absl::MakeSpan(row)).ok());
  EXPECT_EQ(row[0], 2048.0f);  // bf16 rounds 2047 to even: 2048.
  ASSERT_TRUE(DecodeToF32(*t, 17 * cols, absl::MakeSpan(row)).ok());
  EXPECT_EQ(row[cols - 1], 17.0f);
}

TEST(GgufWriterTest, HonoursAlignment) {
  GgufWriter w;
  ASSERT_TRUE(w.SetAlignment(256).ok());
  EXPECT_FALSE(w.SetAlignment(48).ok());
  ASSERT_TRUE(w.AddTensor("a", TensorType::kF32, {3}, std::vector<float>{1, 2, 3}).ok());
  ASSERT_TRUE(w.AddTensor("b", TensorType::kF16, {2}, std::vector<float>{4, 5}).ok());
  const std::string path = testing::TempDir("align") + "/a.gguf";
  ASSERT_TRUE(w.WriteFile(path).ok());
  auto f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->alignment(), 256u);
  EXPECT_EQ((*f)->data_offset() % 256, 0u);
  EXPECT_EQ((*f)->FindTensor("b")->offset, 256u);
  std::vector<float> b(2);
  ASSERT_TRUE(DecodeToF32(*(*f)->GetTensor("b"), 0, absl::MakeSpan(b)).ok());
  EXPECT_THAT(b, ElementsAre(4.0f, 5.0f));
}

TEST(GgufWriterTest, RejectsBadTensors) {
  GgufWriter w;
  EXPECT_FALSE(w.AddTensor("q", TensorType::kQ8_0, {2, 40}, std::vector<float>(80)).ok());
  EXPECT_FALSE(w.AddTensor("n", TensorType::kF32, {2, 3}, std::vector<float>(5)).ok());
  EXPECT_FALSE(w.AddTensor("z", TensorType::kF32, {0}, std::vector<float>()).ok());
  EXPECT_FALSE(w.AddTensor("d", TensorType::kF32, {1, 1, 1, 1, 1}, std::vector<float>(1)).ok());
}

TEST(GgufWriterTest, SourceErrorsAbortTheWriteAndNameTheTensor) {
  GgufWriter w;
  ASSERT_TRUE(w.AddTensor("bad", TensorType::kF32, {4},
                          [](int64_t, absl::Span<float>) {
                            return absl::InternalError("no data");
                          })
                  .ok());
  const std::string path = testing::TempDir("abort") + "/x.gguf";
  const absl::Status s = w.WriteFile(path);
  EXPECT_THAT(std::string(s.message()), HasSubstr("bad"));
  EXPECT_FALSE(std::filesystem::exists(path));
}

}  // namespace
}  // namespace kvserve::engine
