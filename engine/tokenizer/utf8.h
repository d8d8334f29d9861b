// Small UTF-8 helpers shared by the tokenizer and the incremental detokenizer.
// Stateless free functions; thread-safe.
#ifndef KVSERVE_ENGINE_TOKENIZER_UTF8_H_
#define KVSERVE_ENGINE_TOKENIZER_UTF8_H_

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace kvserve::engine {

// What starts at one position of a byte string.
struct Utf8Unit {
  enum class Kind {
    kValid,       // A complete, well-formed character of `length` bytes.
    kInvalid,     // An ill-formed sequence: its maximal subpart is `length` bytes (>= 1).
    kIncomplete,  // A well-formed prefix of a character cut off by the end of the string.
  };
  Kind kind;
  size_t length;
};

// Classifies the bytes of `s` starting at `pos` (REQUIRES: pos < s.size()). Well-formed
// means RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF.
Utf8Unit NextUtf8Unit(std::string_view s, size_t pos);

// OK if `text` is well-formed UTF-8, else INVALID_ARGUMENT naming the byte offset.
absl::Status ValidateUtf8(std::string_view text);

// Appends `in` to `out`, replacing each ill-formed sequence by U+FFFD (one per maximal
// subpart, as the Unicode standard recommends). A trailing incomplete character is replaced
// too when `at_end`, else left unconsumed. Returns the number of bytes of `in` consumed.
size_t AppendUtf8Sanitized(std::string_view in, bool at_end, std::string& out);

inline constexpr std::string_view kReplacementCharacter = "\xEF\xBF\xBD";  // U+FFFD

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_TOKENIZER_UTF8_H_
