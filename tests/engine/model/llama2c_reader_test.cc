#include "engine/model/llama2c_reader.h"

#include <bit>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/model/model_file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/model/test_util.h"

namespace kvserve::engine {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

std::unique_ptr<ModelFile> LoadBundled() {
  auto m = LoadModelFile(testing::BundledCheckpoint(), testing::BundledTokenizer());
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? *std::move(m) : nullptr;
}

std::vector<float> Decode(const TensorData& t) {
  std::vector<float> out(static_cast<size_t>(t.num_elements()));
  EXPECT_TRUE(DecodeToF32(t, 0, absl::MakeSpan(out)).ok()) << t.name;
  return out;
}

void ExpectBitIdentical(const TensorData& a, const TensorData& b) {
  EXPECT_EQ(a.name, b.name);
  ASSERT_EQ(a.shape, b.shape) << a.name;
  const std::vector<float> x = Decode(a);
  const std::vector<float> y = Decode(b);
  ASSERT_EQ(x.size(), y.size());
  for (size_t i = 0; i < x.size(); ++i) {
    ASSERT_EQ(std::bit_cast<uint32_t>(x[i]), std::bit_cast<uint32_t>(y[i]))
        << a.name << "[" << i << "]";
  }
}

TEST(Llama2cReaderTest, MatchesTheGgufConversionExactly) {
  std::unique_ptr<ModelFile> l2c = LoadBundled();
  auto gguf = LoadModelFile(testing::BundledGguf());
  ASSERT_NE(l2c, nullptr);
  ASSERT_TRUE(gguf.ok()) << gguf.status();
  EXPECT_EQ(l2c->format, "llama2c");
  EXPECT_EQ(l2c->config.name, "stories260K");

  const ModelConfig& a = l2c->config;
  const ModelConfig& b = (*gguf)->config;
  EXPECT_EQ(a.dim, b.dim);
  EXPECT_EQ(a.n_layers, b.n_layers);
  EXPECT_EQ(a.n_heads, b.n_heads);
  EXPECT_EQ(a.n_kv_heads, b.n_kv_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.ffn_dim, b.ffn_dim);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.context_length, b.context_length);
  EXPECT_EQ(a.rope_dim, b.rope_dim);
  EXPECT_EQ(a.rope_theta, b.rope_theta);
  EXPECT_EQ(a.rms_eps, b.rms_eps);

  const Vocab& u = l2c->vocab;
  const Vocab& v = (*gguf)->vocab;
  ASSERT_EQ(u.size(), v.size());
  for (int64_t i = 0; i < u.size(); ++i) {
    EXPECT_EQ(u.pieces[i], v.pieces[i]) << i;
    EXPECT_EQ(std::bit_cast<uint32_t>(u.scores[i]), std::bit_cast<uint32_t>(v.scores[i])) << i;
    EXPECT_EQ(u.kinds[i], v.kinds[i]) << i;
  }
  EXPECT_EQ(u.bos_id, v.bos_id);
  EXPECT_EQ(u.eos_id, v.eos_id);
  EXPECT_EQ(u.unk_id, v.unk_id);
  EXPECT_EQ(u.add_bos, v.add_bos);
  EXPECT_EQ(u.add_space_prefix, v.add_space_prefix);

  const ModelWeights& x = l2c->weights;
  const ModelWeights& y = (*gguf)->weights;
  EXPECT_TRUE(x.tied_output);
  EXPECT_EQ(x.output.data, x.token_embedding.data);  // A view, not a copy.
  ExpectBitIdentical(x.token_embedding, y.token_embedding);
  ExpectBitIdentical(x.output_norm, y.output_norm);
  ASSERT_EQ(Decode(x.output), Decode(y.output));
  ASSERT_EQ(x.layers.size(), y.layers.size());
  for (size_t i = 0; i < x.layers.size(); ++i) {
    ExpectBitIdentical(x.layers[i].attn_norm, y.layers[i].attn_norm);
    ExpectBitIdentical(x.layers[i].wq, y.layers[i].wq);
    ExpectBitIdentical(x.layers[i].wk, y.layers[i].wk);
    ExpectBitIdentical(x.layers[i].wv, y.layers[i].wv);
    ExpectBitIdentical(x.layers[i].wo, y.layers[i].wo);
    ExpectBitIdentical(x.layers[i].ffn_norm, y.layers[i].ffn_norm);
    ExpectBitIdentical(x.layers[i].ffn_gate, y.layers[i].ffn_gate);
    ExpectBitIdentical(x.layers[i].ffn_up, y.layers[i].ffn_up);
    ExpectBitIdentical(x.layers[i].ffn_down, y.layers[i].ffn_down);
  }
  // Weights are views into the mapped checkpoint.
  const MappedFile& mapping = *l2c->storage.at(0);
  EXPECT_EQ(x.token_embedding.data, mapping.data() + 28);
}

TEST(Llama2cReaderTest, TokenizerPiecesAreSentencePieceForm) {
  auto v = ReadLlama2cTokenizer(testing::BundledTokenizer());
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->size(), 512);
  EXPECT_EQ(v->pieces[1], "<s>");  // Stored as "\n<s>\n".
  EXPECT_EQ(v->pieces[2], "</s>");
  EXPECT_EQ(v->pieces[410], "\xE2\x96\x81");  // Stored as " ".
  EXPECT_EQ(v->pieces[403], "\xE2\x96\x81Once");
  EXPECT_EQ(v->kinds[0], TokenKind::kUnknown);
  EXPECT_EQ(v->kinds[2], TokenKind::kControl);
  EXPECT_EQ(v->kinds[3 + 0x41], TokenKind::kByte);
  EXPECT_EQ(v->pieces[3 + 0x41], "<0x41>");
}

TEST(Llama2cReaderTest, DefaultTokenizerIsTokenizerBinBesideTheCheckpoint) {
  const std::string dir = testing::TempDir("beside");
  std::filesystem::copy_file(testing::BundledCheckpoint(), dir + "/model.bin");
  auto missing = LoadModelFile(dir + "/model.bin");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("tokenizer.bin"));
  std::filesystem::copy_file(testing::BundledTokenizer(), dir + "/tokenizer.bin");
  auto m = LoadModelFile(dir + "/model.bin");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->get()->vocab.size(), 512);
}

TEST(Llama2cReaderTest, UntiedCheckpointReadsItsClassifier) {
  // Negative vocab_size, and a wcls array (here: the embedding doubled) after the RoPE tables.
  std::vector<uint8_t> bytes = testing::ReadBytes(testing::BundledCheckpoint());
  int32_t vocab;
  std::memcpy(&vocab, bytes.data() + 20, 4);
  ASSERT_EQ(vocab, 512);
  vocab = -vocab;
  std::memcpy(bytes.data() + 20, &vocab, 4);
  std::vector<float> wcls(512 * 64);
  std::memcpy(wcls.data(), bytes.data() + 28, wcls.size() * 4);
  for (float& f : wcls) f *= 2.0f;
  const auto* p = reinterpret_cast<const uint8_t*>(wcls.data());
  bytes.insert(bytes.end(), p, p + wcls.size() * 4);
  const std::string path = testing::TempDir("untied") + "/untied.bin";
  testing::WriteBytes(path, bytes);
  auto m = LoadModelFile(path, testing::BundledTokenizer());
  ASSERT_TRUE(m.ok()) << m.status();
  const ModelWeights& w = (*m)->weights;
  EXPECT_FALSE(w.tied_output);
  EXPECT_EQ((*m)->config.vocab_size, 512);
  EXPECT_EQ(Decode(w.output), wcls);
}

TEST(Llama2cReaderTest, TokenizerOfAnotherSizeIsRejected) {
  // The first 300 tokens of tok512 form a valid 300-token tokenizer.
  const std::vector<uint8_t> bytes = testing::ReadBytes(testing::BundledTokenizer());
  size_t pos = 4;
  for (int i = 0; i < 300; ++i) {
    int32_t len;
    std::memcpy(&len, bytes.data() + pos + 4, 4);
    pos += 8 + static_cast<size_t>(len);
  }
  const std::string path = testing::TempDir("tok300") + "/tok300.bin";
  testing::WriteBytes(path, bytes, pos);
  auto v = ReadLlama2cTokenizer(path);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->size(), 300);
  auto m = LoadModelFile(testing::BundledCheckpoint(), path);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()),
              AllOf(HasSubstr("the tokenizer has 300 tokens"), HasSubstr("vocabulary of 512")));
}

struct HeaderCase {
  const char* name;
  int field;  // Index of the int32 header field to overwrite.
  int32_t value;
  const char* message;
};

class BadCheckpointHeaderTest : public ::testing::TestWithParam<HeaderCase> {};

TEST_P(BadCheckpointHeaderTest, IsRejected) {
  std::vector<uint8_t> bytes = testing::ReadBytes(testing::BundledCheckpoint());
  std::memcpy(bytes.data() + 4 * GetParam().field, &GetParam().value, 4);
  const std::string path = testing::TempDir("hdr") + "/m.bin";
  testing::WriteBytes(path, bytes);
  auto m = LoadModelFile(path, testing::BundledTokenizer());
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(m.status().message()), AllOf(HasSubstr(path), HasSubstr(GetParam().message)));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, BadCheckpointHeaderTest,
    ::testing::Values(HeaderCase{"ZeroDim", 0, 0, "embedding length (dim) is 0"},
                      HeaderCase{"HugeDim", 0, 1 << 30, "embedding length (dim) is 1073741824"},
                      HeaderCase{"NegativeLayers", 2, -5, "block count is -5"},
                      HeaderCase{"HeadsDoNotDivide", 3, 7, "not a multiple of the 7 heads"},
                      HeaderCase{"MoreKvHeadsThanHeads", 4, 16, "KV head count is 16"},
                      HeaderCase{"WrongHiddenDim", 1, 173, "has 1060380 bytes but the file has 1056540 bytes"},
                      HeaderCase{"MinIntVocab", 5, INT32_MIN, "vocabulary size is 2147483648"},
                      HeaderCase{"VersionedMagic", 0, 0x616b3432, "versioned exports"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(Llama2cReaderTest, EveryCheckpointTruncationIsACleanError) {
  const std::vector<uint8_t> bytes = testing::ReadBytes(testing::BundledCheckpoint());
  const std::string path = testing::TempDir("ck") + "/m.bin";
  std::vector<size_t> lengths;
  for (size_t n = 0; n <= 64; ++n) lengths.push_back(n);
  for (size_t n = 64; n < bytes.size(); n += 4099) lengths.push_back(n);
  lengths.push_back(bytes.size() - 1);
  for (size_t n : lengths) {
    testing::WriteBytes(path, bytes, n);
    auto m = LoadModelFile(path, testing::BundledTokenizer());
    ASSERT_FALSE(m.ok()) << n;
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << n;
    EXPECT_THAT(std::string(m.status().message()), HasSubstr("truncated")) << n << ": " << m.status();
  }
}

TEST(Llama2cReaderTest, EveryTokenizerTruncationIsACleanError) {
  const std::vector<uint8_t> bytes = testing::ReadBytes(testing::BundledTokenizer());
  const std::string path = testing::TempDir("tk") + "/tok.bin";
  for (size_t n = 0; n < bytes.size(); ++n) {
    testing::WriteBytes(path, bytes, n);
    auto m = LoadModelFile(testing::BundledCheckpoint(), path);
    ASSERT_FALSE(m.ok()) << n;
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << n;
  }
}

TEST(Llama2cReaderTest, RandomTokenizerCorruptionNeverCrashes) {
  const std::vector<uint8_t> original = testing::ReadBytes(testing::BundledTokenizer());
  const std::string path = testing::TempDir("tkc") + "/tok.bin";
  std::mt19937 rng(99);
  for (int variant = 0; variant < 300; ++variant) {
    std::vector<uint8_t> bytes = original;
    for (int i = 0; i < 3; ++i) bytes[rng() % bytes.size()] = static_cast<uint8_t>(rng());
    testing::WriteBytes(path, bytes);
    auto v = ReadLlama2cTokenizer(path);
    if (!v.ok()) {
      EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument);
    }
  }
}

}  // namespace
}  // namespace kvserve::engine
