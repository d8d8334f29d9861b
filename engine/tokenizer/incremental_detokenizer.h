// Turns a stream of generated token ids into text chunks as they arrive, never splitting a
// UTF-8 character across chunks: bytes of an incomplete character are held back until it
// completes, and ill-formed byte sequences become U+FFFD as soon as they are known to be
// ill-formed.
//
// Generated tokens continue a prompt, so "▁" always renders as a space, including on the
// first token (no dummy-prefix stripping). Control tokens render as "".
//
// Thread safety: thread-compatible; one instance per sequence. The tokenizer must outlive it.
#ifndef KVSERVE_ENGINE_TOKENIZER_INCREMENTAL_DETOKENIZER_H_
#define KVSERVE_ENGINE_TOKENIZER_INCREMENTAL_DETOKENIZER_H_

#include <string>

#include "engine/model/vocab.h"
#include "engine/tokenizer/bpe_tokenizer.h"

namespace kvserve::engine {

class IncrementalDetokenizer {
 public:
  explicit IncrementalDetokenizer(const BpeTokenizer& tokenizer) : tokenizer_(&tokenizer) {}

  // Returns the text completed by token `id` (possibly ""). Out-of-range ids render as "".
  std::string Push(TokenId id);

  // End of stream: returns the held-back bytes of an incomplete character as U+FFFD (or ""
  // if nothing is held back) and resets, so the instance can be reused.
  std::string Flush();

 private:
  const BpeTokenizer* tokenizer_;
  std::string pending_;  // At most 3 bytes: the start of a character not yet complete.
};

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_TOKENIZER_INCREMENTAL_DETOKENIZER_H_
