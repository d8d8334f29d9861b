// The tokenizer on the bundled stories260K vocabulary, loaded both from the GGUF file and
// from the llama2.c tokenizer file, against llama.cpp's ids (tests/testdata/).
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/model/model_file.h"
#include "engine/tokenizer/bpe_tokenizer.h"
#include "engine/tokenizer/incremental_detokenizer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace kvserve::engine {
namespace {

const std::string kSourceDir = KVSERVE_SOURCE_DIR;

nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  return nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
}

struct VocabSource {
  std::string name;
  std::string model;      // Relative to the source dir.
  std::string tokenizer;  // "" for GGUF.
};

void PrintTo(const VocabSource& s, std::ostream* os) { *os << s.name; }

class Stories260KTokenizerTest : public ::testing::TestWithParam<VocabSource> {
 protected:
  void SetUp() override {
    const VocabSource& source = GetParam();
    auto model = LoadModelFile(kSourceDir + "/" + source.model,
                               source.tokenizer.empty() ? "" : kSourceDir + "/" + source.tokenizer);
    ASSERT_TRUE(model.ok()) << model.status();
    vocab_ = (*model)->vocab;
    auto tokenizer = BpeTokenizer::Create(vocab_);
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = std::move(tokenizer).value();
  }

  Vocab vocab_;
  std::unique_ptr<BpeTokenizer> tokenizer_;
};

TEST_P(Stories260KTokenizerTest, ReferencePromptsAndStreamedText) {
  const nlohmann::json reference =
      ReadJson(kSourceDir + "/tests/testdata/stories260K_reference.json");
  ASSERT_TRUE(reference.contains("results"));
  ASSERT_EQ(reference["results"].size(), 4u);
  for (const auto& result : reference["results"]) {
    const std::string prompt = result["prompt"];
    SCOPED_TRACE(prompt);
    auto ids = tokenizer_->Encode(prompt, tokenizer_->vocab().add_bos);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, result["prompt_ids"].get<std::vector<TokenId>>());
    EXPECT_EQ(tokenizer_->Decode(*ids), prompt);

    // llama.cpp's text of the greedy continuation, streamed token by token.
    IncrementalDetokenizer detok(*tokenizer_);
    std::string streamed;
    for (TokenId id : result["generated_ids"].get<std::vector<TokenId>>()) {
      streamed += detok.Push(id);
    }
    streamed += detok.Flush();
    EXPECT_EQ(streamed, result["generated_text"].get<std::string>());
  }
}

TEST_P(Stories260KTokenizerTest, GoldenIdsFromLlamaCpp) {
  const nlohmann::json golden =
      ReadJson(kSourceDir + "/tests/testdata/tokenizer/stories260K_golden.json");
  ASSERT_TRUE(golden.contains("cases"));
  ASSERT_GE(golden["cases"].size(), 25u);
  for (const auto& c : golden["cases"]) {
    const std::string text = c["text"];
    SCOPED_TRACE(text);
    auto ids = tokenizer_->Encode(text, /*add_bos=*/true);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, c["ids"].get<std::vector<TokenId>>());
    EXPECT_EQ(tokenizer_->Decode(*ids), text);
  }
}

TEST_P(Stories260KTokenizerTest, UserDefinedPiecesSplitTheTextAsInLlamaCpp) {
  const nlohmann::json golden =
      ReadJson(kSourceDir + "/tests/testdata/tokenizer/stories260K_golden.json");
  ASSERT_TRUE(golden.contains("user_defined"));
  Vocab vocab = vocab_;
  for (TokenId id : golden["user_defined"]["ids"].get<std::vector<TokenId>>()) {
    vocab.kinds.at(id) = TokenKind::kUserDefined;
  }
  auto tokenizer = BpeTokenizer::Create(vocab);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  ASSERT_GE(golden["user_defined"]["cases"].size(), 10u);
  for (const auto& c : golden["user_defined"]["cases"]) {
    const std::string text = c["text"];
    SCOPED_TRACE(text);
    auto ids = (*tokenizer)->Encode(text, /*add_bos=*/true);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, c["ids"].get<std::vector<TokenId>>());
  }
}

TEST_P(Stories260KTokenizerTest, RandomTextRoundTrips) {
  // Pieces of the vocabulary glued with random separators and a few non-ASCII characters.
  std::mt19937 rng(77);
  const Vocab& vocab = tokenizer_->vocab();
  std::uniform_int_distribution<TokenId> piece(259, static_cast<TokenId>(vocab.size() - 1));
  static const char* const kExtra[] = {" ", "  ", "\n", "\t", "é", "中", "😀", "'", "\"", ""};
  std::uniform_int_distribution<int> extra(0, std::size(kExtra) - 1);
  for (int i = 0; i < 500; ++i) {
    std::string text;
    for (int n = i % 30; n > 0; --n) {
      std::string p(tokenizer_->Piece(piece(rng)));
      for (size_t pos; (pos = p.find("\xE2\x96\x81")) != std::string::npos;) p.replace(pos, 3, " ");
      text += p;
      text += kExtra[extra(rng)];
    }
    auto ids = tokenizer_->Encode(text, /*add_bos=*/true);
    ASSERT_TRUE(ids.ok()) << ids.status();
    ASSERT_EQ(tokenizer_->Decode(*ids), text) << "case " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Vocabularies, Stories260KTokenizerTest,
    ::testing::Values(VocabSource{"Gguf", "models/stories260K.gguf", ""},
                      VocabSource{"Llama2c", "models/stories260K.bin", "models/tok512.bin"}),
    [](const ::testing::TestParamInfo<VocabSource>& info) { return info.param.name; });

}  // namespace
}  // namespace kvserve::engine
