// LoadModelFile: format detection and the errors every caller (the runtime, the server) sees.
#include <filesystem>
#include <memory>
#include <string>

#include "engine/model/model_file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/model/test_util.h"

namespace kvserve::engine {
namespace {

using ::testing::HasSubstr;

TEST(LoadModelFileTest, PicksTheFormatByMagic) {
  auto gguf = LoadModelFile(testing::BundledGguf());
  ASSERT_TRUE(gguf.ok()) << gguf.status();
  EXPECT_EQ((*gguf)->format, "gguf");
  // A tokenizer path is ignored for GGUF, which carries its own vocabulary.
  auto gguf2 = LoadModelFile(testing::BundledGguf(), "/nonexistent/tokenizer.bin");
  ASSERT_TRUE(gguf2.ok()) << gguf2.status();
  auto l2c = LoadModelFile(testing::BundledCheckpoint(), testing::BundledTokenizer());
  ASSERT_TRUE(l2c.ok()) << l2c.status();
  EXPECT_EQ((*l2c)->format, "llama2c");
}

TEST(LoadModelFileTest, MissingFileIsNotFound) {
  auto m = LoadModelFile("/nonexistent/model.gguf");
  EXPECT_EQ(m.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("/nonexistent/model.gguf"));
}

TEST(LoadModelFileTest, DirectoryIsInvalidArgument) {
  auto m = LoadModelFile(testing::TempDir("dir"));
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(LoadModelFileTest, EmptyFileIsInvalidArgument) {
  const std::string path = testing::TempDir("empty") + "/empty.gguf";
  testing::WriteBytes(path, {});
  auto m = LoadModelFile(path, testing::BundledTokenizer());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("truncated"));
}

TEST(LoadModelFileTest, TheModelOutlivesNothingButItself) {
  // Views stay valid after the loader's temporaries are gone: read the last weight.
  auto m = LoadModelFile(testing::BundledGguf());
  ASSERT_TRUE(m.ok());
  const TensorData& t = (*m)->weights.layers.back().ffn_up;
  std::vector<float> out(static_cast<size_t>(t.num_elements()));
  ASSERT_TRUE(DecodeToF32(t, 0, absl::MakeSpan(out)).ok());
  float sum = 0;
  for (float f : out) sum += std::fabs(f);
  EXPECT_GT(sum, 0.0f);
}

}  // namespace
}  // namespace kvserve::engine
