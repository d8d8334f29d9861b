#include "tools/model_maker.h"

#include <cmath>
#include <cstdlib>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "engine/model/gguf_reader.h"
#include "engine/model/model_file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/model/test_util.h"

namespace kvserve::tools {
namespace {

using engine::LoadModelFile;
using engine::TensorType;
using engine::TokenKind;
using ::testing::HasSubstr;

ModelMakerOptions Tiny(const std::string& out, TensorType dtype) {
  ModelMakerOptions o;
  o.out = out;
  o.dim = 64;
  o.layers = 2;
  o.heads = 4;
  o.kv_heads = 2;
  o.ffn = 96;
  o.vocab = 400;
  o.context = 128;
  o.dtype = dtype;
  return o;
}

class MakeModelTest : public ::testing::TestWithParam<TensorType> {};

TEST_P(MakeModelTest, WritesALoadableModel) {
  const std::string path = engine::testing::TempDir("make") + "/tiny.gguf";
  ASSERT_TRUE(MakeModel(Tiny(path, GetParam())).ok());
  auto m = LoadModelFile(path);
  ASSERT_TRUE(m.ok()) << m.status();
  const engine::ModelConfig& c = (*m)->config;
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.n_layers, 2);
  EXPECT_EQ(c.n_heads, 4);
  EXPECT_EQ(c.n_kv_heads, 2);
  EXPECT_EQ(c.ffn_dim, 96);
  EXPECT_EQ(c.vocab_size, 400);
  EXPECT_EQ(c.context_length, 128);
  EXPECT_EQ(c.name, "kvserve-random");
  const engine::ModelWeights& w = (*m)->weights;
  EXPECT_EQ(w.layers[1].wq.type, GetParam());
  EXPECT_EQ(w.token_embedding.type, GetParam());
  EXPECT_EQ(w.layers[1].attn_norm.type, TensorType::kF32);

  // Norms are 1; matrices look like normal(0, 0.02).
  std::vector<float> norm(64);
  ASSERT_TRUE(engine::DecodeToF32(w.output_norm, 0, absl::MakeSpan(norm)).ok());
  for (float f : norm) EXPECT_EQ(f, 1.0f);
  std::vector<float> x(static_cast<size_t>(w.token_embedding.num_elements()));
  ASSERT_TRUE(engine::DecodeToF32(w.token_embedding, 0, absl::MakeSpan(x)).ok());
  double sum = 0, sum2 = 0;
  for (float f : x) {
    sum += f;
    sum2 += double{f} * f;
  }
  const double mean = sum / x.size();
  const double stddev = std::sqrt(sum2 / x.size() - mean * mean);
  EXPECT_NEAR(mean, 0.0, 0.001);
  EXPECT_NEAR(stddev, 0.02, 0.001);
}

INSTANTIATE_TEST_SUITE_P(DTypes, MakeModelTest,
                         ::testing::Values(TensorType::kF32, TensorType::kF16, TensorType::kBF16,
                                           TensorType::kQ8_0, TensorType::kQ4_0),
                         [](const auto& info) {
                           return std::string(engine::TensorTypeName(info.param));
                         });

TEST(MakeModelTest, SameSeedSameBytesOtherSeedOtherWeights) {
  const std::string dir = engine::testing::TempDir("seed");
  ModelMakerOptions o = Tiny(dir + "/a.gguf", TensorType::kF32);
  ASSERT_TRUE(MakeModel(o).ok());
  o.out = dir + "/b.gguf";
  ASSERT_TRUE(MakeModel(o).ok());
  o.out = dir + "/c.gguf";
  o.seed += 1;
  ASSERT_TRUE(MakeModel(o).ok());
  const auto a = engine::testing::ReadBytes(dir + "/a.gguf");
  EXPECT_EQ(a, engine::testing::ReadBytes(dir + "/b.gguf"));
  const auto c = engine::testing::ReadBytes(dir + "/c.gguf");
  ASSERT_EQ(a.size(), c.size());
  EXPECT_NE(a, c);
}

TEST(MakeModelTest, Q8_0FallsBackToF16ForRowsNotAMultipleOf32) {
  const std::string path = engine::testing::TempDir("fallback") + "/s.gguf";
  auto o = PresetOptions("stories260k");
  ASSERT_TRUE(o.ok());
  o->out = path;
  o->dtype = TensorType::kQ8_0;
  o->layers = 1;
  ASSERT_TRUE(MakeModel(*o).ok());
  auto m = LoadModelFile(path);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->weights.layers[0].ffn_down.type, TensorType::kF16);  // Rows of 172.
  EXPECT_EQ((*m)->weights.layers[0].ffn_up.type, TensorType::kQ8_0);
}

TEST(MakeModelTest, CopiesTheVocabularyOfAnotherModel) {
  const std::string path = engine::testing::TempDir("vocab") + "/v.gguf";
  ModelMakerOptions o = Tiny(path, TensorType::kF32);
  o.vocab = 0;
  o.vocab_from = engine::testing::BundledGguf();
  ASSERT_TRUE(MakeModel(o).ok());
  auto made = LoadModelFile(path);
  auto bundled = LoadModelFile(engine::testing::BundledGguf());
  ASSERT_TRUE(made.ok() && bundled.ok());
  EXPECT_EQ((*made)->vocab.pieces, (*bundled)->vocab.pieces);
  EXPECT_EQ((*made)->vocab.scores, (*bundled)->vocab.scores);
  EXPECT_EQ((*made)->vocab.kinds, (*bundled)->vocab.kinds);
  o.vocab = 1000;
  EXPECT_THAT(std::string(MakeModel(o).message()), HasSubstr("has 512 tokens"));
}

TEST(SynthesizeVocabTest, SentencePieceLayout) {
  auto v = SynthesizeVocab(32000);
  ASSERT_TRUE(v.ok()) << v.status();
  ASSERT_EQ(v->size(), 32000);
  EXPECT_EQ(v->pieces[0], "<unk>");
  EXPECT_EQ(v->kinds[0], TokenKind::kUnknown);
  EXPECT_EQ(v->pieces[1], "<s>");
  EXPECT_EQ(v->kinds[2], TokenKind::kControl);
  EXPECT_EQ(v->pieces[3], "<0x00>");
  EXPECT_EQ(v->pieces[258], "<0xFF>");
  EXPECT_EQ(v->kinds[258], TokenKind::kByte);
  EXPECT_EQ(v->pieces[259], "\xE2\x96\x81");
  EXPECT_EQ(v->kinds[259], TokenKind::kNormal);
  std::set<std::string> unique(v->pieces.begin(), v->pieces.end());
  EXPECT_EQ(unique.size(), v->pieces.size());
  for (int64_t i = 260; i < v->size(); ++i) ASSERT_LT(v->scores[i], v->scores[i - 1]) << i;
  EXPECT_FALSE(SynthesizeVocab(258).ok());
  EXPECT_TRUE(SynthesizeVocab(259).ok());
}

TEST(PresetTest, KnownPresets) {
  auto t = PresetOptions("tinyllama-1.1b");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->dim, 2048);
  EXPECT_EQ(t->layers, 22);
  EXPECT_EQ(t->heads, 32);
  EXPECT_EQ(t->kv_heads, 4);
  EXPECT_EQ(t->ffn, 5632);
  EXPECT_EQ(t->vocab, 32000);
  EXPECT_EQ(t->context, 2048);
  EXPECT_THAT(std::string(PresetOptions("llama-70b").status().message()), HasSubstr("tinyllama-1.1b"));
  EXPECT_TRUE(ParseDType("q4_0").ok());
  EXPECT_FALSE(ParseDType("q4_k").ok());
  EXPECT_EQ(*ParseDType("bf16"), TensorType::kBF16);
}

TEST(MakeModelBinaryTest, CommandLineWritesALoadableModel) {
  const std::string binary = std::string(KVSERVE_BINARY_DIR) + "/tools/kvserve-make-model";
  const std::string path = engine::testing::TempDir("cli") + "/cli.gguf";
  const std::string command = binary +
                              " --preset stories260k --layers 1 --dtype bf16 --seed 5 --out " +
                              path + " > /dev/null";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  auto m = LoadModelFile(path);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->config.n_layers, 1);
  EXPECT_EQ((*m)->config.dim, 64);
  EXPECT_EQ((*m)->weights.layers[0].wq.type, TensorType::kBF16);
  // Bad flags fail with a non-zero exit status.
  EXPECT_NE(std::system((binary + " --dtype q4_k --out " + path + " 2> /dev/null").c_str()), 0);
  // --convert re-encodes a real model; it cannot be combined with random-weight flags.
  const std::string bundled = std::string(KVSERVE_SOURCE_DIR) + "/models/stories260K.gguf";
  ASSERT_EQ(std::system((binary + " --convert " + bundled + " --dtype q4_0 --out " + path +
                         " > /dev/null").c_str()),
            0);
  auto converted = LoadModelFile(path);
  ASSERT_TRUE(converted.ok()) << converted.status();
  EXPECT_EQ((*converted)->config.name, "stories260K");
  EXPECT_EQ((*converted)->weights.layers[0].wq.type, TensorType::kQ4_0);
  EXPECT_EQ((*converted)->weights.layers[0].ffn_down.type, TensorType::kF16);  // Rows of 172.
  EXPECT_NE(std::system((binary + " --convert " + bundled + " --seed 3 --out " + path +
                         " 2> /dev/null").c_str()),
            0);
}

// ConvertModel keeps the model (vocabulary, shape, tied classifier) and changes the storage.
TEST(ConvertModelTest, ReencodesTheBundledModel) {
  const std::string bundled = std::string(KVSERVE_SOURCE_DIR) + "/models/stories260K.gguf";
  const std::string path = engine::testing::TempDir("convert") + "/q8.gguf";
  ASSERT_TRUE(ConvertModel(bundled, TensorType::kQ8_0, path).ok());
  auto original = LoadModelFile(bundled);
  auto converted = LoadModelFile(path);
  ASSERT_TRUE(original.ok() && converted.ok());
  EXPECT_EQ((*converted)->vocab.pieces, (*original)->vocab.pieces);
  EXPECT_EQ((*converted)->weights.tied_output, (*original)->weights.tied_output);
  EXPECT_EQ((*converted)->config.n_layers, (*original)->config.n_layers);
  EXPECT_EQ((*converted)->weights.layers[2].wk.type, TensorType::kQ8_0);
  EXPECT_FALSE(ConvertModel("/nonexistent.gguf", TensorType::kQ8_0, path).ok());
}

}  // namespace
}  // namespace kvserve::tools
