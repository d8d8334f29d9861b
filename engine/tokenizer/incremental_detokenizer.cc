#include "engine/tokenizer/incremental_detokenizer.h"

#include "engine/tokenizer/utf8.h"

namespace kvserve::engine {

std::string IncrementalDetokenizer::Push(TokenId id) {
  const std::string_view piece_text = tokenizer_->TokenText(id);
  std::string out;
  if (piece_text.empty()) return out;
  if (pending_.empty()) {
    const size_t consumed = AppendUtf8Sanitized(piece_text, /*at_end=*/false, out);
    pending_.assign(piece_text.substr(consumed));
    return out;
  }
  pending_.append(piece_text);
  const size_t consumed = AppendUtf8Sanitized(pending_, /*at_end=*/false, out);
  pending_.erase(0, consumed);
  return out;
}

std::string IncrementalDetokenizer::Flush() {
  std::string out;
  AppendUtf8Sanitized(pending_, /*at_end=*/true, out);
  pending_.clear();
  return out;
}

}  // namespace kvserve::engine
