// SentencePiece-style BPE tokenizer over a model's Vocab: the llama / llama2.c algorithm,
// producing exactly llama.cpp's "SPM" tokenizer output (greedy highest-score pair merging,
// byte fallback for characters missing from the vocabulary).
//
// Thread safety: immutable after Create(); every method is const and safe to call
// concurrently from any number of threads.
#ifndef KVSERVE_ENGINE_TOKENIZER_BPE_TOKENIZER_H_
#define KVSERVE_ENGINE_TOKENIZER_BPE_TOKENIZER_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/model/vocab.h"

namespace kvserve::engine {

class BpeTokenizer {
 public:
  // Copies what it needs from `vocab`. INVALID_ARGUMENT when the vocabulary is unusable:
  // pieces/scores/kinds sizes disagree, it is empty, a kind is out of range, bos/eos/unk ids
  // are out of range, only some of the 256 byte pieces <0x00>..<0xFF> are present, or a
  // kByte token's piece is not of the form <0xHH>.
  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> Create(const Vocab& vocab);

  // Tokenizes `text` (UTF-8). With `add_bos` the result starts with vocab().bos_id (callers
  // encoding a prompt usually pass vocab().add_bos). Empty text gives just [BOS] or [].
  // Text is never parsed for control tokens ("<s>" is three characters, not BOS), but, as in
  // llama.cpp, user-defined pieces (TokenKind::kUserDefined) found in the text become their
  // token, and text after one gets the dummy-prefix space again; Decode() then renders that
  // space, so it is not an exact inverse for such text.
  // Characters missing from the vocabulary become byte tokens (<0xHH>), or one unk each
  // when the vocabulary has no byte pieces. INVALID_ARGUMENT if `text` is not valid UTF-8
  // (the message gives the byte offset).
  absl::StatusOr<std::vector<TokenId>> Encode(std::string_view text, bool add_bos) const;

  // Whole-sequence decode, the inverse of Encode: "▁" renders as a space, byte tokens as
  // their byte, control/unknown/unused tokens and out-of-range ids as "". As SentencePiece
  // does, the dummy-prefix space of the first text-producing piece is dropped (when the
  // vocabulary adds one). Byte sequences are concatenated as they are (not re-validated).
  std::string Decode(absl::Span<const TokenId> ids) const;

  // The raw vocabulary piece ("▁there", "<0x0A>"); "" for an out-of-range id.
  std::string_view Piece(TokenId id) const;

  // The text a token contributes in the middle of a stream: "▁" -> " ", a byte token's raw
  // byte, "" for control/unknown/unused tokens and out-of-range ids. No prefix stripping.
  std::string_view TokenText(TokenId id) const;

  const Vocab& vocab() const { return vocab_; }
  int64_t vocab_size() const { return vocab_.size(); }

  // Use Create(); public only so std::make_unique can reach it.
  class PrivateKey {
    friend class BpeTokenizer;
    PrivateKey() = default;
  };
  BpeTokenizer(PrivateKey, const Vocab& vocab);

 private:
  // BPE over one fragment of raw text (no user-defined pieces in it), appended to `ids`.
  void EncodeRaw(std::string_view text, bool add_prefix, std::vector<TokenId>& ids) const;

  // Appends the tokens for one final BPE symbol: its piece, else its bytes' byte tokens,
  // else unk.
  void EmitSymbol(std::string_view symbol, std::vector<TokenId>& out) const;

  // Constant after construction.
  Vocab vocab_;
  absl::flat_hash_map<std::string, TokenId> piece_to_id_;  // Last id wins, as in llama.cpp.
  std::vector<std::string> token_text_;                     // TokenText() per id.
  std::array<TokenId, 256> byte_to_id_;                     // -1 where absent.
  std::vector<std::pair<std::string, TokenId>> user_defined_;  // Longest piece first.
  bool has_byte_pieces_ = false;
  size_t max_piece_bytes_ = 0;
};

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_TOKENIZER_BPE_TOKENIZER_H_
