#include "engine/tokenizer/bpe_tokenizer.h"

#include <algorithm>
#include <queue>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "absl/strings/escaping.h"
#include "absl/strings/string_view.h"
#include "engine/common/status_macros.h"
#include "engine/tokenizer/utf8.h"

namespace kvserve::engine {
namespace {

constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";  // U+2581 "▁"

// Debian's Abseil has its own string_view type; hash lookups need it.
absl::string_view ToAbsl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// "▁" -> " ", as SentencePiece renders a normal piece.
std::string UnescapeSpaces(std::string_view piece) {
  std::string out;
  out.reserve(piece.size());
  for (size_t i = 0; i < piece.size();) {
    if (piece.substr(i, kSpaceSymbol.size()) == kSpaceSymbol) {
      out.push_back(' ');
      i += kSpaceSymbol.size();
    } else {
      out.push_back(piece[i++]);
    }
  }
  return out;
}

std::string BytePiece(int byte) { return absl::StrFormat("<0x%02X>", byte); }

// Parses "<0xHH>" (upper- or lower-case hex); -1 if `piece` is not of that form.
int ParseBytePiece(std::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return -1;
  int value = 0;
  for (char c : piece.substr(3, 2)) {
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else {
      return -1;
    }
    value = value * 16 + digit;
  }
  return value;
}

// One BPE symbol: a byte range of the escaped text, linked to its live neighbours.
struct Symbol {
  uint32_t offset;
  uint32_t length;  // 0 once merged into its left neighbour.
  int32_t prev;     // -1 at the ends.
  int32_t next;
};

// A candidate merge of two adjacent symbols, valid while their lengths still add up to
// `length` (a symbol only ever grows or dies, so a stale entry always fails that check).
struct Bigram {
  float score;
  int32_t left;
  int32_t right;
  uint32_t length;
};

// Highest score first; ties go to the leftmost pair (llama.cpp's llm_bigram_spm order).
struct BigramLess {
  bool operator()(const Bigram& a, const Bigram& b) const {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::Create(const Vocab& vocab) {
  const int64_t n = vocab.size();
  if (n == 0) return absl::InvalidArgumentError("vocabulary is empty");
  if (n > INT32_MAX) {
    return absl::InvalidArgumentError(absl::StrFormat("vocabulary has %d pieces, too many", n));
  }
  if (static_cast<int64_t>(vocab.scores.size()) != n ||
      static_cast<int64_t>(vocab.kinds.size()) != n) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "vocabulary sizes disagree: %d pieces, %d scores, %d kinds", n, vocab.scores.size(),
        vocab.kinds.size()));
  }
  const auto check_id = [n](const char* name, TokenId id) -> absl::Status {
    if (id < 0 || id >= n) {
      return absl::InvalidArgumentError(
          absl::StrFormat("vocabulary %s id %d is out of range [0, %d)", name, id, n));
    }
    return absl::OkStatus();
  };
  KV_RETURN_IF_ERROR(check_id("bos", vocab.bos_id));
  KV_RETURN_IF_ERROR(check_id("eos", vocab.eos_id));
  KV_RETURN_IF_ERROR(check_id("unk", vocab.unk_id));
  for (int64_t id = 0; id < n; ++id) {
    const int32_t kind = static_cast<int32_t>(vocab.kinds[id]);
    if (kind < static_cast<int32_t>(TokenKind::kNormal) ||
        kind > static_cast<int32_t>(TokenKind::kByte)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("vocabulary token %d has unknown kind %d", id, kind));
    }
    if (vocab.kinds[id] == TokenKind::kByte && ParseBytePiece(vocab.pieces[id]) < 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "vocabulary token %d is a byte token but its piece \"%s\" is not <0xHH>", id,
          absl::CHexEscape(vocab.pieces[id])));
    }
  }

  auto tokenizer = std::make_unique<BpeTokenizer>(PrivateKey(), vocab);
  // Byte fallback needs all 256 byte pieces; a vocabulary with only some is malformed.
  int present = 0;
  int first_missing = -1;
  for (int b = 0; b < 256; ++b) {
    if (tokenizer->byte_to_id_[b] >= 0) {
      ++present;
    } else if (first_missing < 0) {
      first_missing = b;
    }
  }
  if (present != 0 && present != 256) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "vocabulary has %d of the 256 byte pieces; %s is missing", present,
        BytePiece(first_missing)));
  }
  tokenizer->has_byte_pieces_ = present == 256;
  return tokenizer;
}

BpeTokenizer::BpeTokenizer(PrivateKey, const Vocab& vocab) : vocab_(vocab) {
  const int64_t n = vocab_.size();
  piece_to_id_.reserve(n);
  token_text_.resize(n);
  byte_to_id_.fill(-1);
  for (TokenId id = 0; id < n; ++id) {
    const std::string& piece = vocab_.pieces[id];
    piece_to_id_[piece] = id;  // Duplicates: the last id wins, as in llama.cpp.
    max_piece_bytes_ = std::max(max_piece_bytes_, piece.size());
    switch (vocab_.kinds[id]) {
      case TokenKind::kNormal:
        token_text_[id] = UnescapeSpaces(piece);
        break;
      case TokenKind::kUserDefined:
        token_text_[id] = piece;
        if (!piece.empty()) user_defined_.emplace_back(piece, id);
        break;
      case TokenKind::kByte:
        token_text_[id] = std::string(1, static_cast<char>(ParseBytePiece(piece)));
        break;
      case TokenKind::kUnknown:
      case TokenKind::kControl:
      case TokenKind::kUnused:
        break;  // Invisible, as llama.cpp renders them without "special".
    }
  }
  // Longest first (as llama.cpp's special-token cache); equal lengths by id.
  std::stable_sort(user_defined_.begin(), user_defined_.end(),
                   [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  // Byte fallback looks the pieces up by text, whatever their kind (as llama.cpp does).
  for (int b = 0; b < 256; ++b) {
    auto it = piece_to_id_.find(BytePiece(b));
    if (it != piece_to_id_.end()) byte_to_id_[b] = it->second;
  }
}

std::string_view BpeTokenizer::Piece(TokenId id) const {
  if (id < 0 || id >= vocab_.size()) return {};
  return vocab_.pieces[id];
}

std::string_view BpeTokenizer::TokenText(TokenId id) const {
  if (id < 0 || id >= vocab_.size()) return {};
  return token_text_[id];
}

void BpeTokenizer::EmitSymbol(std::string_view symbol, std::vector<TokenId>& out) const {
  if (auto it = piece_to_id_.find(ToAbsl(symbol)); it != piece_to_id_.end()) {
    out.push_back(it->second);
  } else if (has_byte_pieces_) {
    for (char c : symbol) out.push_back(byte_to_id_[static_cast<uint8_t>(c)]);
  } else {
    out.push_back(vocab_.unk_id);  // No byte fallback: one unk per unknown character.
  }
}

absl::StatusOr<std::vector<TokenId>> BpeTokenizer::Encode(std::string_view text,
                                                          bool add_bos) const {
  KV_RETURN_IF_ERROR(ValidateUtf8(text));
  std::vector<TokenId> ids;
  if (add_bos) ids.push_back(vocab_.bos_id);
  if (text.empty()) return ids;
  if (text.size() > UINT32_MAX / 4) {
    return absl::InvalidArgumentError(
        absl::StrFormat("text of %d bytes is too long to tokenize", text.size()));
  }
  if (user_defined_.empty()) {
    EncodeRaw(text, vocab_.add_space_prefix, ids);
    return ids;
  }

  // llama.cpp's special-token partition (without parse_special, only user-defined pieces):
  // each user-defined piece, longest first, splits every remaining raw fragment at its
  // occurrences. A raw fragment that follows a token gets the dummy prefix again.
  struct Fragment {
    TokenId token;  // >= 0: a whole token; -1: raw text.
    size_t offset;
    size_t length;
  };
  std::vector<Fragment> fragments = {{-1, 0, text.size()}};
  std::vector<Fragment> next;
  for (const auto& [piece, id] : user_defined_) {
    next.clear();
    for (const Fragment& f : fragments) {
      if (f.token >= 0) {
        next.push_back(f);
        continue;
      }
      const std::string_view raw = text.substr(f.offset, f.length);
      size_t start = 0;
      for (size_t hit; (hit = raw.find(piece, start)) != std::string_view::npos;
           start = hit + piece.size()) {
        if (hit > start) next.push_back({-1, f.offset + start, hit - start});
        next.push_back({id, 0, 0});
      }
      if (start < raw.size()) next.push_back({-1, f.offset + start, raw.size() - start});
    }
    fragments.swap(next);
  }
  bool after_token = true;  // The text's start counts as following a token.
  for (const Fragment& f : fragments) {
    if (f.token >= 0) {
      ids.push_back(f.token);
      after_token = true;
    } else {
      EncodeRaw(text.substr(f.offset, f.length), vocab_.add_space_prefix && after_token, ids);
      after_token = false;
    }
  }
  return ids;
}

void BpeTokenizer::EncodeRaw(std::string_view text, bool add_prefix,
                             std::vector<TokenId>& ids) const {
  // SentencePiece normalization as llama.cpp does it: dummy prefix, then ' ' -> "▁".
  std::string escaped;
  escaped.reserve(text.size() + kSpaceSymbol.size() * 8);
  if (add_prefix) escaped.append(kSpaceSymbol);
  for (char c : text) {
    if (c == ' ') {
      escaped.append(kSpaceSymbol);
    } else {
      escaped.push_back(c);
    }
  }

  if (escaped.empty()) return;

  // Initial symbols: one per UTF-8 character (the text is valid, so lengths are exact).
  std::vector<Symbol> symbols;
  symbols.reserve(escaped.size());
  for (size_t offset = 0; offset < escaped.size();) {
    const size_t length = NextUtf8Unit(escaped, offset).length;
    const int32_t index = static_cast<int32_t>(symbols.size());
    symbols.push_back({static_cast<uint32_t>(offset), static_cast<uint32_t>(length), index - 1,
                       index + 1});
    offset += length;
  }
  symbols.back().next = -1;

  std::vector<Bigram> storage;
  storage.reserve(symbols.size() * 2);
  std::priority_queue<Bigram, std::vector<Bigram>, BigramLess> queue(BigramLess(),
                                                                     std::move(storage));
  const auto try_add_bigram = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const uint32_t length = symbols[left].length + symbols[right].length;
    if (length > max_piece_bytes_) return;
    const std::string_view merged(escaped.data() + symbols[left].offset, length);
    auto it = piece_to_id_.find(ToAbsl(merged));
    if (it == piece_to_id_.end()) return;
    queue.push({vocab_.scores[it->second], left, right, length});
  };
  for (int32_t i = 1; i < static_cast<int32_t>(symbols.size()); ++i) try_add_bigram(i - 1, i);

  while (!queue.empty()) {
    const Bigram bigram = queue.top();
    queue.pop();
    Symbol& left = symbols[bigram.left];
    Symbol& right = symbols[bigram.right];
    if (left.length == 0 || right.length == 0 || left.length + right.length != bigram.length) {
      continue;  // Stale: one side has merged with something else since.
    }
    left.length += right.length;
    right.length = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = bigram.left;
    try_add_bigram(left.prev, bigram.left);
    try_add_bigram(bigram.left, left.next);
  }

  // Every merged symbol is a vocabulary piece; only single characters can be missing.
  for (int32_t i = 0; i != -1; i = symbols[i].next) {
    const std::string_view symbol(escaped.data() + symbols[i].offset, symbols[i].length);
    EmitSymbol(symbol, ids);
  }
}

std::string BpeTokenizer::Decode(absl::Span<const TokenId> ids) const {
  std::string text;
  bool at_start = vocab_.add_space_prefix;
  for (TokenId id : ids) {
    const std::string_view piece_text = TokenText(id);
    if (piece_text.empty()) continue;  // Control tokens do not end the leading position.
    if (at_start) {
      at_start = false;
      if (vocab_.kinds[id] == TokenKind::kNormal && Piece(id).substr(0, 3) == kSpaceSymbol) {
        text.append(piece_text.substr(1));  // The dummy prefix's space.
        continue;
      }
    }
    text.append(piece_text);
  }
  return text;
}

}  // namespace kvserve::engine
