#include "engine/model/gguf_model.h"

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "engine/model/model_file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/model/test_util.h"
#include "tools/model_maker.h"

namespace kvserve::engine {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

std::unique_ptr<ModelFile> LoadOrDie(const std::string& path) {
  auto m = LoadModelFile(path);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? *std::move(m) : nullptr;
}

TEST(GgufModelTest, BundledModelConfigAndVocab) {
  std::unique_ptr<ModelFile> m = LoadOrDie(testing::BundledGguf());
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->format, "gguf");
  const ModelConfig& c = m->config;
  EXPECT_EQ(c.architecture, "llama");
  EXPECT_EQ(c.name, "stories260K");
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.n_layers, 5);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.ffn_dim, 172);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.context_length, 512);
  EXPECT_EQ(c.rope_dim, 8);
  EXPECT_EQ(c.rope_theta, 10000.0f);
  EXPECT_EQ(c.rms_eps, 1e-5f);

  const Vocab& v = m->vocab;
  ASSERT_EQ(v.size(), 512);
  EXPECT_EQ(v.bos_id, 1);
  EXPECT_EQ(v.eos_id, 2);
  EXPECT_EQ(v.unk_id, 0);
  EXPECT_TRUE(v.add_bos);
  EXPECT_TRUE(v.add_space_prefix);
  EXPECT_EQ(v.pieces[0], "<unk>");
  EXPECT_EQ(v.kinds[0], TokenKind::kUnknown);
  EXPECT_EQ(v.pieces[1], "<s>");
  EXPECT_EQ(v.kinds[1], TokenKind::kControl);
  EXPECT_EQ(v.pieces[2], "</s>");
  EXPECT_EQ(v.pieces[3], "<0x00>");
  EXPECT_EQ(v.kinds[3], TokenKind::kByte);
  EXPECT_EQ(v.pieces[258], "<0xFF>");
  // "Once upon a time" -> [1, 403, 407, 261, 378] (reference.json).
  EXPECT_EQ(v.pieces[403], "\xE2\x96\x81Once");
  EXPECT_EQ(v.pieces[407], "\xE2\x96\x81upon");
  EXPECT_EQ(v.pieces[261], "\xE2\x96\x81" "a");
  EXPECT_EQ(v.pieces[378], "\xE2\x96\x81time");
  EXPECT_EQ(v.kinds[403], TokenKind::kNormal);
  EXPECT_EQ(v.scores[260], -1.0f);
  EXPECT_EQ(v.scores[403], -144.0f);

  const ModelWeights& w = m->weights;
  EXPECT_FALSE(w.tied_output);  // This GGUF carries output.weight (a copy of the embedding).
  ASSERT_EQ(w.layers.size(), 5u);
  EXPECT_EQ(w.token_embedding.shape, (std::vector<int64_t>{512, 64}));
  EXPECT_EQ(w.layers[3].wk.shape, (std::vector<int64_t>{32, 64}));
  EXPECT_EQ(w.layers[3].ffn_down.shape, (std::vector<int64_t>{64, 172}));
  EXPECT_EQ(w.layers[3].ffn_down.name, "blk.3.ffn_down.weight");
  EXPECT_EQ(m->storage.size(), 1u);
  ASSERT_EQ(std::memcmp(w.output.data, w.token_embedding.data, w.output.size_bytes), 0);
}

struct EditCase {
  const char* name;
  testing::GgufEdits edits;
  const char* message;
};

class BadGgufModelTest : public ::testing::TestWithParam<EditCase> {};

TEST_P(BadGgufModelTest, LoadFailsNamingTheProblem) {
  const std::string path = testing::TempDir("edit") + "/m.gguf";
  ASSERT_TRUE(testing::CopyGguf(testing::BundledGguf(), path, GetParam().edits).ok());
  auto m = LoadModelFile(path);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(m.status().message()), AllOf(HasSubstr(path), HasSubstr(GetParam().message)));
}

std::vector<EditCase> EditCases() {
  std::vector<EditCase> cases;
  {
    EditCase c{"WrongArchitecture", {}, "architecture 'gpt2' is not supported"};
    c.edits.set_metadata["general.architecture"] = GgufValue::String("gpt2");
    cases.push_back(c);
  }
  {
    EditCase c{"NoArchitecture", {}, "general.architecture is missing"};
    c.edits.remove_metadata.insert("general.architecture");
    cases.push_back(c);
  }
  {
    EditCase c{"WrongTokenizer", {}, "tokenizer 'gpt2' is not supported"};
    c.edits.set_metadata["tokenizer.ggml.model"] = GgufValue::String("gpt2");
    cases.push_back(c);
  }
  {
    EditCase c{"MissingTensor", {}, "required tensor blk.2.ffn_up.weight is missing"};
    c.edits.remove_tensors.insert("blk.2.ffn_up.weight");
    cases.push_back(c);
  }
  {
    EditCase c{"MissingEmbedding", {}, "required tensor token_embd.weight is missing"};
    c.edits.remove_tensors.insert("token_embd.weight");
    cases.push_back(c);
  }
  {
    EditCase c{"ShapeMismatch", {},
               "tensor blk.1.attn_k.weight has shape [64, 64] but the model needs [32, 64]"};
    c.edits.reshape_tensors["blk.1.attn_k.weight"] = {64, 64};
    cases.push_back(c);
  }
  {
    EditCase c{"NormShapeMismatch", {},
               "tensor output_norm.weight has shape [65] but the model needs [64]"};
    c.edits.reshape_tensors["output_norm.weight"] = {65};
    cases.push_back(c);
  }
  {
    EditCase c{"MissingBlockCount", {}, "required metadata key 'llama.block_count' is missing"};
    c.edits.remove_metadata.insert("llama.block_count");
    cases.push_back(c);
  }
  {
    EditCase c{"HeadsDoNotDivide", {}, "embedding length 64 is not a multiple of the 7 heads"};
    c.edits.set_metadata["llama.attention.head_count"] = GgufValue::Uint32(7);
    cases.push_back(c);
  }
  {
    EditCase c{"KvHeadsDoNotDivide", {}, "8 heads do not divide into 3 KV heads"};
    c.edits.set_metadata["llama.attention.head_count_kv"] = GgufValue::Uint32(3);
    cases.push_back(c);
  }
  {
    EditCase c{"BlockCountWrongType", {}, "'llama.block_count' is STRING, expected an integer"};
    c.edits.set_metadata["llama.block_count"] = GgufValue::String("5");
    cases.push_back(c);
  }
  {
    EditCase c{"BosOutOfRange", {}, "tokenizer.ggml.bos_token_id 512 is outside the vocabulary"};
    c.edits.set_metadata["tokenizer.ggml.bos_token_id"] = GgufValue::Uint32(512);
    cases.push_back(c);
  }
  {
    EditCase c{"ScoresTooShort", {}, "512 tokens but 2 scores"};
    c.edits.set_metadata["tokenizer.ggml.scores"] = GgufValue::Float32Array({0, 0});
    cases.push_back(c);
  }
  {
    EditCase c{"BadTokenType", {}, "token 0 has unknown token type 9"};
    std::vector<int32_t> types(512, 1);
    types[0] = 9;
    c.edits.set_metadata["tokenizer.ggml.token_type"] = GgufValue::Int32Array(types);
    cases.push_back(c);
  }
  {
    EditCase c{"VocabSizeDisagrees", {}, "llama.vocab_size is 600"};
    c.edits.set_metadata["llama.vocab_size"] = GgufValue::Uint32(600);
    cases.push_back(c);
  }
  {
    EditCase c{"RopeDimTooBig", {}, "RoPE dimension count 16"};
    c.edits.set_metadata["llama.rope.dimension_count"] = GgufValue::Uint32(16);
    cases.push_back(c);
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Edits, BadGgufModelTest, ::testing::ValuesIn(EditCases()),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(GgufModelTest, OptionalKeysTakeTheirDefaults) {
  testing::GgufEdits edits;
  for (const char* key : {"llama.rope.dimension_count", "llama.rope.freq_base",
                          "llama.attention.layer_norm_rms_epsilon", "tokenizer.ggml.add_bos_token",
                          "llama.vocab_size", "general.name", "tokenizer.ggml.scores",
                          "tokenizer.ggml.token_type"}) {
    edits.remove_metadata.insert(key);
  }
  edits.set_metadata["tokenizer.ggml.add_space_prefix"] = GgufValue::Bool(false);
  const std::string path = testing::TempDir("defaults") + "/my-model.gguf";
  ASSERT_TRUE(testing::CopyGguf(testing::BundledGguf(), path, edits).ok());
  std::unique_ptr<ModelFile> m = LoadOrDie(path);
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->config.rope_dim, 8);
  EXPECT_EQ(m->config.rope_theta, 10000.0f);
  EXPECT_EQ(m->config.rms_eps, 1e-5f);
  EXPECT_EQ(m->config.name, "my-model");
  EXPECT_TRUE(m->vocab.add_bos);
  EXPECT_FALSE(m->vocab.add_space_prefix);
  EXPECT_EQ(m->vocab.scores[403], 0.0f);
  EXPECT_EQ(m->vocab.kinds[1], TokenKind::kNormal);
}

TEST(GgufModelTest, KvHeadCountDefaultsToHeadCount) {
  const std::string dir = testing::TempDir("mha");
  tools::ModelMakerOptions o;
  o.out = dir + "/mha.gguf";
  o.dim = 32;
  o.layers = 1;
  o.heads = 4;
  o.kv_heads = 4;
  o.ffn = 64;
  o.vocab = 300;
  o.context = 64;
  ASSERT_TRUE(tools::MakeModel(o).ok());
  testing::GgufEdits edits;
  edits.remove_metadata.insert("llama.attention.head_count_kv");
  ASSERT_TRUE(testing::CopyGguf(o.out, dir + "/no_kv.gguf", edits).ok());
  std::unique_ptr<ModelFile> m = LoadOrDie(dir + "/no_kv.gguf");
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->config.n_kv_heads, 4);
}

TEST(GgufModelTest, MissingOutputTiesToTheEmbedding) {
  testing::GgufEdits edits;
  edits.remove_tensors.insert("output.weight");
  const std::string path = testing::TempDir("tied") + "/tied.gguf";
  ASSERT_TRUE(testing::CopyGguf(testing::BundledGguf(), path, edits).ok());
  std::unique_ptr<ModelFile> m = LoadOrDie(path);
  ASSERT_NE(m, nullptr);
  EXPECT_TRUE(m->weights.tied_output);
  EXPECT_EQ(m->weights.output.data, m->weights.token_embedding.data);
  EXPECT_EQ(m->weights.output.shape, (std::vector<int64_t>{512, 64}));
}

std::vector<float> Decode(const TensorData& t) {
  std::vector<float> out(static_cast<size_t>(t.num_elements()));
  EXPECT_TRUE(DecodeToF32(t, 0, absl::MakeSpan(out)).ok()) << t.name;
  return out;
}

// Every (name, original, converted) tensor pair of two models.
std::vector<std::pair<const TensorData*, const TensorData*>> Pairs(const ModelWeights& a,
                                                                   const ModelWeights& b) {
  std::vector<std::pair<const TensorData*, const TensorData*>> pairs = {
      {&a.token_embedding, &b.token_embedding},
      {&a.output_norm, &b.output_norm},
      {&a.output, &b.output}};
  for (size_t i = 0; i < a.layers.size(); ++i) {
    const LayerWeights& x = a.layers[i];
    const LayerWeights& y = b.layers[i];
    pairs.insert(pairs.end(), {{&x.attn_norm, &y.attn_norm}, {&x.wq, &y.wq}, {&x.wk, &y.wk},
                               {&x.wv, &y.wv}, {&x.wo, &y.wo}, {&x.ffn_norm, &y.ffn_norm},
                               {&x.ffn_gate, &y.ffn_gate}, {&x.ffn_up, &y.ffn_up},
                               {&x.ffn_down, &y.ffn_down}});
  }
  return pairs;
}

struct DTypeCase {
  const char* name;
  TensorType dtype;
  bool write_output;
};

class ConvertedModelTest : public ::testing::TestWithParam<DTypeCase> {};

TEST_P(ConvertedModelTest, WeightsMatchTheOriginalWithinTheTypesPrecision) {
  std::unique_ptr<ModelFile> original = LoadOrDie(testing::BundledGguf());
  ASSERT_NE(original, nullptr);
  const std::string path = testing::TempDir("conv") + "/c.gguf";
  LlamaGgufOptions options;
  options.dtype = GetParam().dtype;
  options.write_output = GetParam().write_output;
  ASSERT_TRUE(WriteLlamaGguf(*original, options, path).ok());
  std::unique_ptr<ModelFile> converted = LoadOrDie(path);
  ASSERT_NE(converted, nullptr);
  EXPECT_EQ(converted->weights.tied_output, !GetParam().write_output);
  EXPECT_EQ(converted->vocab.pieces, original->vocab.pieces);
  EXPECT_EQ(converted->vocab.scores, original->vocab.scores);
  EXPECT_EQ(converted->vocab.kinds, original->vocab.kinds);
  EXPECT_EQ(converted->config.n_kv_heads, 4);

  for (const auto& [a, b] : Pairs(original->weights, converted->weights)) {
    const TensorType expected_type = LlamaStorageType(GetParam().dtype, a->shape);
    EXPECT_EQ(b->type, expected_type) << b->name;
    EXPECT_EQ(b->shape, a->shape) << b->name;
    const std::vector<float> x = Decode(*a);
    const std::vector<float> y = Decode(*b);
    ASSERT_EQ(x.size(), y.size());
    for (size_t i = 0; i < x.size(); ++i) {
      switch (expected_type) {
        case TensorType::kF32:
          ASSERT_EQ(y[i], x[i]) << b->name << "[" << i << "]";
          break;
        case TensorType::kF16:
          ASSERT_EQ(y[i], HalfToFloat(FloatToHalf(x[i]))) << b->name << "[" << i << "]";
          break;
        case TensorType::kBF16:
          ASSERT_EQ(y[i], Bf16ToFloat(FloatToBf16(x[i]))) << b->name << "[" << i << "]";
          break;
        case TensorType::kQ8_0: {
          float amax = 0;
          const size_t block = i / 32 * 32;
          for (size_t j = block; j < block + 32; ++j) amax = std::max(amax, std::fabs(x[j]));
          const float d = amax / 127.0f;
          ASSERT_NEAR(y[i], x[i], d * 0.5f + 127.0f * d * std::ldexp(1.0f, -11) + 1e-7f)
              << b->name << "[" << i << "]";
          break;
        }
        case TensorType::kQ4_0: {
          // Levels -8..7 times d = |max| / 8: half a step, except that the side opposite the
          // largest value reaches only 7 d (a whole step), plus d's f16 rounding.
          float amax = 0;
          const size_t block = i / 32 * 32;
          for (size_t j = block; j < block + 32; ++j) amax = std::max(amax, std::fabs(x[j]));
          const float d = amax / 8.0f;
          ASSERT_NEAR(y[i], x[i], d + 8.0f * d * std::ldexp(1.0f, -11) + 1e-7f)
              << b->name << "[" << i << "]";
          break;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    DTypes, ConvertedModelTest,
    ::testing::Values(DTypeCase{"F32", TensorType::kF32, true},
                      DTypeCase{"F32Untied", TensorType::kF32, false},
                      DTypeCase{"F16", TensorType::kF16, true},
                      DTypeCase{"BF16", TensorType::kBF16, true},
                      DTypeCase{"Q8_0", TensorType::kQ8_0, true},
                      DTypeCase{"Q4_0", TensorType::kQ4_0, true},
                      DTypeCase{"Q8_0Untied", TensorType::kQ8_0, false}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(GgufModelTest, F32ConversionIsByteIdenticalInItsTensors) {
  std::unique_ptr<ModelFile> original = LoadOrDie(testing::BundledGguf());
  ASSERT_NE(original, nullptr);
  const std::string path = testing::TempDir("f32") + "/f.gguf";
  ASSERT_TRUE(WriteLlamaGguf(*original, LlamaGgufOptions{}, path).ok());
  auto a = GgufFile::Open(testing::BundledGguf());
  auto b = GgufFile::Open(path);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ((*a)->tensors().size(), (*b)->tensors().size());
  for (size_t i = 0; i < (*a)->tensors().size(); ++i) {
    const GgufTensorInfo& x = (*a)->tensors()[i];
    const GgufTensorInfo& y = (*b)->tensors()[i];
    EXPECT_EQ(x.name, y.name);
    EXPECT_EQ(x.dims, y.dims);
    EXPECT_EQ(x.offset, y.offset);
    ASSERT_EQ(x.size_bytes, y.size_bytes);
    EXPECT_EQ(std::memcmp(x.data, y.data, x.size_bytes), 0) << x.name;
  }
}

}  // namespace
}  // namespace kvserve::engine
