// A model's vocabulary as the tokenizer needs it, in SentencePiece form whatever the file.
#ifndef KVSERVE_ENGINE_MODEL_VOCAB_H_
#define KVSERVE_ENGINE_MODEL_VOCAB_H_

#include <cstdint>
#include <string>
#include <vector>

namespace kvserve::engine {

using TokenId = int32_t;

// Same values as GGUF's tokenizer.ggml.token_type.
enum class TokenKind : int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,      // BOS, EOS and the like: never produced by Encode, rendered as "".
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,         // Byte-fallback piece "<0xAB>".
};

struct Vocab {
  // Piece text, spaces written as U+2581 ("▁") as SentencePiece stores them (llama2.c's
  // tokenizer files use ' '; its reader converts).
  std::vector<std::string> pieces;
  std::vector<float> scores;     // Higher merges first.
  std::vector<TokenKind> kinds;
  TokenId bos_id = 1;
  TokenId eos_id = 2;
  TokenId unk_id = 0;
  bool add_bos = true;           // Prepend BOS when encoding a prompt.
  bool add_space_prefix = true;  // SentencePiece's "add dummy prefix": a leading ▁.

  int64_t size() const { return static_cast<int64_t>(pieces.size()); }
};

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_MODEL_VOCAB_H_
