#include "engine/tokenizer/bpe_tokenizer.h"

#include <chrono>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/tokenizer/test_vocab.h"

namespace kvserve::engine {
namespace {

using ::kvserve::engine::testing::ByteId;
using ::kvserve::engine::testing::IdOf;
using ::kvserve::engine::testing::MakeTestVocab;
using ::kvserve::engine::testing::TestVocabOptions;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// Scores chosen so that merge order is visible: "bc" beats "ab" beats "▁a"; "abcd" is a
// piece but unreachable through pairwise merges; "xy" and "yx" tie.
Vocab MergeVocab(const TestVocabOptions& options = {}) {
  return MakeTestVocab({{"▁", -10}, {"a", -10}, {"b", -10}, {"c", -10}, {"d", -10},
                        {"x", -10}, {"y", -10}, {"é", -10}, {"ab", -1}, {"bc", -0.5f},
                        {"cd", -3}, {"▁a", -2}, {"▁▁", -4}, {"abcd", -0.1f}, {"xy", -1},
                        {"yx", -1}},
                       options);
}

std::unique_ptr<BpeTokenizer> MustCreate(const Vocab& vocab) {
  auto tokenizer = BpeTokenizer::Create(vocab);
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return tokenizer.ok() ? std::move(tokenizer).value() : nullptr;
}

// Pieces of the ids, where a piece reads more clearly than an id in expectations.
std::vector<std::string> Pieces(const BpeTokenizer& t, const std::vector<TokenId>& ids) {
  std::vector<std::string> out;
  for (TokenId id : ids) out.emplace_back(t.Piece(id));
  return out;
}

struct EncodeCase {
  std::string name;
  std::string text;
  std::vector<std::string> pieces;  // Expected, without BOS.
};

void PrintTo(const EncodeCase& c, std::ostream* os) { *os << c.name; }

class EncodeTest : public ::testing::TestWithParam<EncodeCase> {};

TEST_P(EncodeTest, MatchesExpectedPiecesAndRoundTrips) {
  const EncodeCase& c = GetParam();
  auto tokenizer = MustCreate(MergeVocab());
  ASSERT_NE(tokenizer, nullptr);
  auto ids = tokenizer->Encode(c.text, /*add_bos=*/false);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(Pieces(*tokenizer, *ids), c.pieces);
  EXPECT_EQ(tokenizer->Decode(*ids), c.text);

  auto with_bos = tokenizer->Encode(c.text, /*add_bos=*/true);
  ASSERT_TRUE(with_bos.ok());
  ASSERT_FALSE(with_bos->empty());
  EXPECT_EQ(with_bos->front(), 1);
  EXPECT_EQ(std::vector<TokenId>(with_bos->begin() + 1, with_bos->end()), *ids);
  EXPECT_EQ(tokenizer->Decode(*with_bos), c.text);
}

INSTANTIATE_TEST_SUITE_P(
    MergeVocab, EncodeTest,
    ::testing::Values(
        EncodeCase{"Empty", "", {}},
        EncodeCase{"HighestScoreFirst", "abc", {"▁a", "bc"}},
        EncodeCase{"PairMergedAfterPrefixFails", "ab", {"▁", "ab"}},
        EncodeCase{"LongPieceUnreachableByPairs", "abcd", {"▁a", "bc", "d"}},
        EncodeCase{"TieGoesLeftmost", "xyx", {"▁", "xy", "x"}},
        EncodeCase{"TieGoesLeftmostOtherSide", "yxy", {"▁", "yx", "y"}},
        EncodeCase{"SpaceOnly", " ", {"▁▁"}},
        EncodeCase{"MultipleSpaces", "a  a", {"▁a", "▁", "▁a"}},
        EncodeCase{"TrailingSpace", "a ", {"▁a", "▁"}},
        EncodeCase{"MultiByteCharInVocab", "é", {"▁", "é"}},
        EncodeCase{"TwoByteFallback", "ü", {"▁", "<0xC3>", "<0xBC>"}},
        EncodeCase{"ThreeByteFallback", "中", {"▁", "<0xE4>", "<0xB8>", "<0xAD>"}},
        EncodeCase{"EmojiFallback", "a😀", {"▁a", "<0xF0>", "<0x9F>", "<0x98>", "<0x80>"}},
        EncodeCase{"Newline", "a\nb", {"▁a", "<0x0A>", "b"}},
        EncodeCase{"TabAndCarriageReturn", "\t\r", {"▁", "<0x09>", "<0x0D>"}},
        EncodeCase{"ControlPieceTextIsNotSpecial", "<s>",
                   {"▁", "<0x3C>", "<0x73>", "<0x3E>"}},
        EncodeCase{"NulByte", std::string("a\0b", 3), {"▁a", "<0x00>", "b"}}),
    [](const ::testing::TestParamInfo<EncodeCase>& info) { return info.param.name; });

TEST(BpeTokenizerTest, EmptyTextGivesBosOnly) {
  auto tokenizer = MustCreate(MergeVocab());
  ASSERT_NE(tokenizer, nullptr);
  auto ids = tokenizer->Encode("", /*add_bos=*/true);
  ASSERT_TRUE(ids.ok());
  EXPECT_THAT(*ids, ElementsAre(1));
  ids = tokenizer->Encode("", /*add_bos=*/false);
  ASSERT_TRUE(ids.ok());
  EXPECT_THAT(*ids, IsEmpty());
}

TEST(BpeTokenizerTest, WithoutSpacePrefix) {
  auto tokenizer = MustCreate(MergeVocab({.byte_pieces = true, .add_space_prefix = false}));
  ASSERT_NE(tokenizer, nullptr);
  auto ids = tokenizer->Encode("ab a", /*add_bos=*/false);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(Pieces(*tokenizer, *ids), (std::vector<std::string>{"ab", "▁a"}));
  EXPECT_EQ(tokenizer->Decode(*ids), "ab a");
  // No dummy prefix to drop, so a leading "▁" piece keeps its space.
  ids = tokenizer->Encode(" a", /*add_bos=*/false);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(Pieces(*tokenizer, *ids), (std::vector<std::string>{"▁a"}));
  EXPECT_EQ(tokenizer->Decode(*ids), " a");
}

TEST(BpeTokenizerTest, UnkFallbackWithoutBytePieces) {
  auto tokenizer = MustCreate(MergeVocab({.byte_pieces = false, .add_space_prefix = true}));
  ASSERT_NE(tokenizer, nullptr);
  auto ids = tokenizer->Encode("aüb", /*add_bos=*/false);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(Pieces(*tokenizer, *ids), (std::vector<std::string>{"▁a", "<unk>", "b"}));
  // One unk per unknown character, not per byte.
  ids = tokenizer->Encode("ü😀", /*add_bos=*/false);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(Pieces(*tokenizer, *ids), (std::vector<std::string>{"▁", "<unk>", "<unk>"}));
  EXPECT_EQ(tokenizer->Decode(*ids), "");  // Unknown tokens render as "" (as llama.cpp).
}

TEST(BpeTokenizerTest, DecodeDropsOnlyTheFirstDummyPrefixAndSkipsControlTokens) {
  auto tokenizer = MustCreate(MergeVocab());
  ASSERT_NE(tokenizer, nullptr);
  const Vocab& v = tokenizer->vocab();
  const TokenId a = IdOf(v, "▁a"), space = IdOf(v, "▁");
  EXPECT_EQ(tokenizer->Decode({1, a, a}), "a a");
  EXPECT_EQ(tokenizer->Decode({1, 2, a, 2, a}), "a a");
  EXPECT_EQ(tokenizer->Decode({space, a}), " a");  // " a" encodes as ["▁▁"]/["▁","▁a"].
  EXPECT_EQ(tokenizer->Decode({ByteId('x'), a}), "x a");  // A byte piece ends the start.
  EXPECT_EQ(tokenizer->Decode({-1, 100000, a}), "a");     // Out of range: "".
  EXPECT_EQ(tokenizer->Decode({}), "");
}

TEST(BpeTokenizerTest, PieceAndTokenText) {
  auto tokenizer = MustCreate(MergeVocab());
  ASSERT_NE(tokenizer, nullptr);
  const TokenId a = IdOf(tokenizer->vocab(), "▁a");
  EXPECT_EQ(tokenizer->Piece(a), "▁a");
  EXPECT_EQ(tokenizer->TokenText(a), " a");
  EXPECT_EQ(tokenizer->Piece(ByteId(0x0A)), "<0x0A>");
  EXPECT_EQ(tokenizer->TokenText(ByteId(0x0A)), "\n");
  EXPECT_EQ(tokenizer->Piece(1), "<s>");
  EXPECT_EQ(tokenizer->TokenText(1), "");
  EXPECT_EQ(tokenizer->Piece(-1), "");
  EXPECT_EQ(tokenizer->Piece(static_cast<TokenId>(tokenizer->vocab_size())), "");
  EXPECT_EQ(tokenizer->vocab_size(), 3 + 256 + 16);
}

struct InvalidUtf8Case {
  std::string name;
  std::string text;
  std::string message;  // Expected substring.
};

void PrintTo(const InvalidUtf8Case& c, std::ostream* os) { *os << c.name; }

class InvalidUtf8Test : public ::testing::TestWithParam<InvalidUtf8Case> {};

TEST_P(InvalidUtf8Test, IsRejectedWithOffset) {
  auto tokenizer = MustCreate(MergeVocab());
  ASSERT_NE(tokenizer, nullptr);
  auto ids = tokenizer->Encode(GetParam().text, /*add_bos=*/true);
  ASSERT_FALSE(ids.ok());
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(ids.status().message()), HasSubstr("not valid UTF-8"));
  EXPECT_THAT(std::string(ids.status().message()), HasSubstr(GetParam().message));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, InvalidUtf8Test,
    ::testing::Values(
        InvalidUtf8Case{"LoneContinuation", "ab\x80", "byte 0x80 at byte 2"},
        InvalidUtf8Case{"InvalidLeadFF", "\xFF", "byte 0xFF at byte 0"},
        InvalidUtf8Case{"TruncatedAtEnd", "abc\xC3", "incomplete character at byte 3"},
        InvalidUtf8Case{"TruncatedEmoji", "x\xF0\x9F\x98", "incomplete character at byte 1"},
        InvalidUtf8Case{"BadContinuation", "\xC3(", "byte 0x28 at byte 1"},
        InvalidUtf8Case{"Overlong", "\xC0\x80", "byte 0xC0 at byte 0"},
        InvalidUtf8Case{"OverlongThreeByte", "\xE0\x80\x80", "byte 0x80 at byte 1"},
        InvalidUtf8Case{"Surrogate", "a\xED\xA0\x80", "byte 0xA0 at byte 2"},
        InvalidUtf8Case{"AboveMaxCodePoint", "\xF4\x90\x80\x80", "byte 0x90 at byte 1"}),
    [](const ::testing::TestParamInfo<InvalidUtf8Case>& info) { return info.param.name; });

struct BadVocabCase {
  std::string name;
  std::function<void(Vocab&)> mutate;
  std::string message;  // Expected substring.
};

void PrintTo(const BadVocabCase& c, std::ostream* os) { *os << c.name; }

class BadVocabTest : public ::testing::TestWithParam<BadVocabCase> {};

TEST_P(BadVocabTest, CreateFails) {
  Vocab v = MergeVocab();
  GetParam().mutate(v);
  auto tokenizer = BpeTokenizer::Create(v);
  ASSERT_FALSE(tokenizer.ok());
  EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(tokenizer.status().message()), HasSubstr(GetParam().message));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, BadVocabTest,
    ::testing::Values(
        BadVocabCase{"Empty", [](Vocab& v) { v = Vocab(); }, "empty"},
        BadVocabCase{"ScoresSize", [](Vocab& v) { v.scores.pop_back(); }, "sizes disagree"},
        BadVocabCase{"KindsSize", [](Vocab& v) { v.kinds.push_back(TokenKind::kNormal); },
                     "sizes disagree"},
        BadVocabCase{"BosOutOfRange", [](Vocab& v) { v.bos_id = 100000; }, "bos id 100000"},
        BadVocabCase{"EosNegative", [](Vocab& v) { v.eos_id = -1; }, "eos id -1"},
        BadVocabCase{"UnkOutOfRange",
                     [](Vocab& v) { v.unk_id = static_cast<TokenId>(v.size()); }, "unk id"},
        BadVocabCase{"UnknownKind", [](Vocab& v) { v.kinds[5] = static_cast<TokenKind>(9); },
                     "unknown kind 9"},
        BadVocabCase{"PartialBytePieces", [](Vocab& v) {
                       v.pieces[ByteId(0x41)] = "A";
                       v.kinds[ByteId(0x41)] = TokenKind::kNormal;
                     },
                     "<0x41> is missing"},
        BadVocabCase{"BytePieceMalformed",
                     [](Vocab& v) {
                       v.pieces.push_back("<0xZZ>");
                       v.scores.push_back(0);
                       v.kinds.push_back(TokenKind::kByte);
                     },
                     "is not <0xHH>"}),
    [](const ::testing::TestParamInfo<BadVocabCase>& info) { return info.param.name; });

// Random well-formed UTF-8 (no U+2581, which Decode renders as a space like SentencePiece).
std::string RandomUtf8(std::mt19937& rng, int max_chars) {
  static const char* const kPool[] = {"a", "b", "c", "d", "x", "y", " ", " ", "\n", "\t",
                                      "é", "ü", "中", "😀", "\r", "0", ".", "<s>"};
  std::uniform_int_distribution<int> length(0, max_chars);
  std::uniform_int_distribution<int> kind(0, 3);
  std::uniform_int_distribution<int> pick(0, std::size(kPool) - 1);
  std::uniform_int_distribution<uint32_t> code_point(1, 0x10FFFF);
  std::string s;
  for (int n = length(rng); n > 0; --n) {
    if (kind(rng) != 0) {
      s += kPool[pick(rng)];
      continue;
    }
    uint32_t cp = code_point(rng);
    if ((cp >= 0xD800 && cp <= 0xDFFF) || cp == 0x2581) cp = 'z';
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else if (cp < 0x800) {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      s += static_cast<char>(0xE0 | (cp >> 12));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      s += static_cast<char>(0xF0 | (cp >> 18));
      s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
  return s;
}

TEST(BpeTokenizerTest, RandomUtf8RoundTrips) {
  auto tokenizer = MustCreate(MergeVocab());
  ASSERT_NE(tokenizer, nullptr);
  std::mt19937 rng(20240611);
  for (int i = 0; i < 2000; ++i) {
    const std::string s = RandomUtf8(rng, 40);
    auto ids = tokenizer->Encode(s, /*add_bos=*/true);
    ASSERT_TRUE(ids.ok()) << ids.status();
    ASSERT_EQ(tokenizer->Decode(*ids), s) << "case " << i;
  }
}

TEST(BpeTokenizerTest, LongInputIsFast) {
  // Quadratic merging would take minutes on 300k symbols; the priority queue takes
  // well under a second.
  auto tokenizer = MustCreate(MergeVocab());
  ASSERT_NE(tokenizer, nullptr);
  std::string text;
  for (int i = 0; i < 50000; ++i) text += "abcd é";
  const auto start = std::chrono::steady_clock::now();
  auto ids = tokenizer->Encode(text, /*add_bos=*/false);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(tokenizer->Decode(*ids), text);
  EXPECT_LT(elapsed, std::chrono::seconds(10));
}

TEST(BpeTokenizerTest, UserDefinedPiecesSplitTextLongestFirst) {
  Vocab v = MergeVocab();
  for (const char* piece : {"<|im|>", "<|im|>x"}) {
    v.pieces.push_back(piece);
    v.scores.push_back(0);
    v.kinds.push_back(TokenKind::kUserDefined);
  }
  auto tokenizer = MustCreate(v);
  ASSERT_NE(tokenizer, nullptr);
  const auto encode = [&](std::string_view text) {
    auto ids = tokenizer->Encode(text, /*add_bos=*/false);
    EXPECT_TRUE(ids.ok()) << ids.status();
    return ids.ok() ? Pieces(*tokenizer, *ids) : std::vector<std::string>{};
  };
  // Text after a user-defined piece gets the dummy prefix again (llama.cpp's rule).
  EXPECT_EQ(encode("a<|im|>a"), (std::vector<std::string>{"▁a", "<|im|>", "▁a"}));
  EXPECT_EQ(encode("<|im|>"), (std::vector<std::string>{"<|im|>"}));
  EXPECT_EQ(encode("<|im|><|im|>xa"), (std::vector<std::string>{"<|im|>", "<|im|>x", "▁a"}));
  EXPECT_EQ(encode("<|im"), (std::vector<std::string>{"▁", "<0x3C>", "<0x7C>", "<0x69>",
                                                      "<0x6D>"}));
  // User-defined pieces render verbatim; the re-added prefix renders as a space.
  auto ids = tokenizer->Encode("a<|im|>a", /*add_bos=*/true);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(tokenizer->Decode(*ids), "a<|im|> a");
}

TEST(BpeTokenizerTest, DuplicatePiecesLastIdWinsAsInLlamaCpp) {
  Vocab v = MergeVocab();
  v.pieces.push_back("ab");
  v.scores.push_back(-1);
  v.kinds.push_back(TokenKind::kNormal);
  auto tokenizer = MustCreate(v);
  ASSERT_NE(tokenizer, nullptr);
  auto ids = tokenizer->Encode("ab", /*add_bos=*/false);
  ASSERT_TRUE(ids.ok());
  EXPECT_THAT(*ids, ElementsAre(IdOf(v, "▁"), static_cast<TokenId>(v.size() - 1)));
}

}  // namespace
}  // namespace kvserve::engine
