#include "engine/tokenizer/utf8.h"

#include <cstdint>

#include "absl/strings/str_format.h"

namespace kvserve::engine {

Utf8Unit NextUtf8Unit(std::string_view s, size_t pos) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(s[i]); };
  const uint8_t lead = byte(pos);
  if (lead < 0x80) return {Utf8Unit::Kind::kValid, 1};
  // Continuation count and the allowed range of the second byte (Unicode table 3-7).
  size_t need = 0;
  uint8_t lo = 0x80, hi = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    need = 1;
  } else if (lead == 0xE0) {
    need = 2, lo = 0xA0;
  } else if ((lead >= 0xE1 && lead <= 0xEC) || lead == 0xEE || lead == 0xEF) {
    need = 2;
  } else if (lead == 0xED) {
    need = 2, hi = 0x9F;  // No UTF-16 surrogates.
  } else if (lead == 0xF0) {
    need = 3, lo = 0x90;
  } else if (lead >= 0xF1 && lead <= 0xF3) {
    need = 3;
  } else if (lead == 0xF4) {
    need = 3, hi = 0x8F;  // Nothing above U+10FFFF.
  } else {
    return {Utf8Unit::Kind::kInvalid, 1};  // Continuation byte, C0/C1 or F5..FF.
  }
  size_t i = pos + 1;
  for (size_t k = 0; k < need; ++k, ++i) {
    if (i >= s.size()) return {Utf8Unit::Kind::kIncomplete, i - pos};
    const uint8_t c = byte(i);
    if (c < lo || c > hi) return {Utf8Unit::Kind::kInvalid, i - pos};
    lo = 0x80, hi = 0xBF;
  }
  return {Utf8Unit::Kind::kValid, need + 1};
}

absl::Status ValidateUtf8(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    const Utf8Unit unit = NextUtf8Unit(text, pos);
    if (unit.kind == Utf8Unit::Kind::kValid) {
      pos += unit.length;
      continue;
    }
    if (unit.kind == Utf8Unit::Kind::kIncomplete) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "text is not valid UTF-8: incomplete character at byte %d (text ends at byte %d)",
          pos, text.size()));
    }
    // The offending byte is the lead itself if it cannot start a character, else the first
    // continuation byte that does not fit (the one after the maximal subpart).
    const uint8_t lead = static_cast<uint8_t>(text[pos]);
    const bool lead_ok = lead >= 0xC2 && lead <= 0xF4;
    const size_t offending = lead_ok ? pos + unit.length : pos;
    return absl::InvalidArgumentError(absl::StrFormat(
        "text is not valid UTF-8: unexpected byte 0x%02X at byte %d (sequence starting at "
        "byte %d)",
        static_cast<uint8_t>(text[offending]), offending, pos));
  }
  return absl::OkStatus();
}

size_t AppendUtf8Sanitized(std::string_view in, bool at_end, std::string& out) {
  size_t pos = 0;
  while (pos < in.size()) {
    const Utf8Unit unit = NextUtf8Unit(in, pos);
    switch (unit.kind) {
      case Utf8Unit::Kind::kValid:
        out.append(in.substr(pos, unit.length));
        break;
      case Utf8Unit::Kind::kInvalid:
        out.append(kReplacementCharacter);
        break;
      case Utf8Unit::Kind::kIncomplete:
        if (!at_end) return pos;
        out.append(kReplacementCharacter);
        break;
    }
    pos += unit.length;
  }
  return pos;
}

}  // namespace kvserve::engine
