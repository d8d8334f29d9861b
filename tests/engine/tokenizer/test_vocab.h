// Hand-built vocabularies for tokenizer tests. Not thread-related; plain data builders.
#ifndef KVSERVE_TESTS_ENGINE_TOKENIZER_TEST_VOCAB_H_
#define KVSERVE_TESTS_ENGINE_TOKENIZER_TEST_VOCAB_H_

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "engine/model/vocab.h"

namespace kvserve::engine::testing {

struct TestVocabOptions {
  bool byte_pieces = true;       // Add <0x00>..<0xFF> as ids 3..258.
  bool add_space_prefix = true;  // Vocab::add_space_prefix.
};

// Ids: 0 <unk>, 1 <s>, 2 </s>, then (optionally) the 256 byte pieces, then `normal` in order
// with their scores. Use IdOf() to find an id.
inline Vocab MakeTestVocab(const std::vector<std::pair<std::string, float>>& normal,
                           const TestVocabOptions& options = {}) {
  Vocab v;
  const auto add = [&v](std::string piece, float score, TokenKind kind) {
    v.pieces.push_back(std::move(piece));
    v.scores.push_back(score);
    v.kinds.push_back(kind);
  };
  add("<unk>", 0.0f, TokenKind::kUnknown);
  add("<s>", 0.0f, TokenKind::kControl);
  add("</s>", 0.0f, TokenKind::kControl);
  if (options.byte_pieces) {
    for (int b = 0; b < 256; ++b) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "<0x%02X>", b);
      add(buf, 0.0f, TokenKind::kByte);
    }
  }
  for (const auto& [piece, score] : normal) add(piece, score, TokenKind::kNormal);
  v.bos_id = 1;
  v.eos_id = 2;
  v.unk_id = 0;
  v.add_space_prefix = options.add_space_prefix;
  return v;
}

inline TokenId IdOf(const Vocab& v, const std::string& piece) {
  for (size_t i = 0; i < v.pieces.size(); ++i) {
    if (v.pieces[i] == piece) return static_cast<TokenId>(i);
  }
  return -1;
}

inline TokenId ByteId(int byte) { return 3 + byte; }  // With byte_pieces.

}  // namespace kvserve::engine::testing

#endif  // KVSERVE_TESTS_ENGINE_TOKENIZER_TEST_VOCAB_H_
