#include "engine/tokenizer/incremental_detokenizer.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/engine/tokenizer/test_vocab.h"

namespace kvserve::engine {
namespace {

using ::kvserve::engine::testing::ByteId;
using ::kvserve::engine::testing::IdOf;
using ::kvserve::engine::testing::MakeTestVocab;

constexpr std::string_view kFffd = "\xEF\xBF\xBD";

std::unique_ptr<BpeTokenizer> TestTokenizer() {
  auto tokenizer =
      BpeTokenizer::Create(MakeTestVocab({{"▁", -1}, {"▁there", -1}, {"a", -1}, {"é", -1}}));
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return tokenizer.ok() ? std::move(tokenizer).value() : nullptr;
}

struct DetokCase {
  std::string name;
  std::vector<std::string> pieces;  // Vocabulary pieces pushed in order.
  std::vector<std::string> chunks;  // Expected Push() results, then Flush()'s.
};

void PrintTo(const DetokCase& c, std::ostream* os) { *os << c.name; }

class IncrementalDetokenizerTest : public ::testing::TestWithParam<DetokCase> {};

TEST_P(IncrementalDetokenizerTest, EmitsExpectedChunks) {
  auto tokenizer = TestTokenizer();
  ASSERT_NE(tokenizer, nullptr);
  IncrementalDetokenizer detok(*tokenizer);
  std::vector<std::string> chunks;
  for (const std::string& piece : GetParam().pieces) {
    const TokenId id = IdOf(tokenizer->vocab(), piece);
    ASSERT_GE(id, 0) << piece;
    chunks.push_back(detok.Push(id));
  }
  chunks.push_back(detok.Flush());
  EXPECT_EQ(chunks, GetParam().chunks);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, IncrementalDetokenizerTest,
    ::testing::Values(
        // No dummy-prefix stripping: generated text continues the prompt.
        DetokCase{"SpaceOnFirstToken", {"▁there", "a", "▁"}, {" there", "a", " ", ""}},
        DetokCase{"ControlTokensAreEmpty", {"<s>", "a", "</s>", "<unk>"}, {"", "a", "", "", ""}},
        DetokCase{"ByteTokens", {"<0x0A>", "<0x41>"}, {"\n", "A", ""}},
        DetokCase{"TwoByteCharSplit", {"<0xC3>", "<0xA9>", "a"}, {"", "é", "a", ""}},
        DetokCase{"EmojiSplit",
                  {"<0xF0>", "<0x9F>", "<0x98>", "<0x80>"},
                  {"", "", "", "😀", ""}},
        DetokCase{"CjkAfterText", {"a", "<0xE4>", "<0xB8>", "<0xAD>", "é"},
                  {"a", "", "", "中", "é", ""}},
        DetokCase{"IncompleteAtEndBecomesFffd", {"a", "<0xE4>", "<0xB8>"},
                  {"a", "", "", std::string(kFffd)}},
        // Known invalid at once: a lone continuation byte or an invalid lead.
        DetokCase{"LoneContinuationImmediate", {"<0x80>", "a"}, {std::string(kFffd), "a", ""}},
        DetokCase{"InvalidLeadImmediate", {"<0xFF>"}, {std::string(kFffd), ""}},
        // An incomplete character followed by a non-continuation: FFFD, then the new text.
        DetokCase{"InterruptedByText", {"<0xC3>", "a"}, {"", std::string(kFffd) + "a", ""}},
        DetokCase{"InterruptedByPiece", {"<0xF0>", "<0x9F>", "▁there"},
                  {"", "", std::string(kFffd) + " there", ""}},
        // A surrogate's second byte shows the sequence is invalid; the third byte is a lone
        // continuation: two replacement characters (maximal subparts).
        DetokCase{"Surrogate", {"<0xED>", "<0xA0>", "<0x80>"},
                  {"", std::string(kFffd) + std::string(kFffd), std::string(kFffd), ""}},
        DetokCase{"InterruptedByNewLead", {"<0xE4>", "<0xC3>", "<0xA9>"},
                  {"", std::string(kFffd), "é", ""}}),
    [](const ::testing::TestParamInfo<DetokCase>& info) { return info.param.name; });

TEST(IncrementalDetokenizerTest, ConcatenationEqualsDecodeOfContinuation) {
  auto tokenizer = TestTokenizer();
  ASSERT_NE(tokenizer, nullptr);
  // "▁there" + "é" as bytes + "😀" as bytes + text: the stream equals the whole decode with
  // the leading space kept.
  std::vector<TokenId> ids = {IdOf(tokenizer->vocab(), "▁there"), ByteId(0xC3), ByteId(0xA9),
                              ByteId(0xF0),  ByteId(0x9F), ByteId(0x98), ByteId(0x80),
                              IdOf(tokenizer->vocab(), "a")};
  IncrementalDetokenizer detok(*tokenizer);
  std::string streamed;
  for (TokenId id : ids) streamed += detok.Push(id);
  streamed += detok.Flush();
  EXPECT_EQ(streamed, " thereé😀a");
  EXPECT_EQ(" " + tokenizer->Decode(ids), streamed);
}

TEST(IncrementalDetokenizerTest, FlushResetsForReuse) {
  auto tokenizer = TestTokenizer();
  ASSERT_NE(tokenizer, nullptr);
  IncrementalDetokenizer detok(*tokenizer);
  EXPECT_EQ(detok.Push(ByteId(0xC3)), "");
  EXPECT_EQ(detok.Flush(), kFffd);
  EXPECT_EQ(detok.Flush(), "");
  EXPECT_EQ(detok.Push(ByteId(0xA9)), kFffd);  // The held byte was dropped by Flush.
  EXPECT_EQ(detok.Push(-5), "");               // Out of range renders as "".
}

}  // namespace
}  // namespace kvserve::engine
