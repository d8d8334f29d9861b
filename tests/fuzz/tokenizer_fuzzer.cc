// libFuzzer target: the tokenizer of the bundled model (models/tok512.bin, 512 pieces) on
// arbitrary bytes, checking properties rather than just "no crash":
//   1. Encode(bytes) fails with INVALID_ARGUMENT exactly when the bytes are not valid UTF-8;
//      otherwise every id is in range, BOS leads when asked for, and Decode(Encode(s)) == s
//      with every U+2581 of s read as a space (with and without SentencePiece's dummy-prefix
//      space). Those two are the known exceptions to an exact inverse: "▁" is how
//      SentencePiece writes a space, so a literal U+2581 in the input decodes as ' ' (as in
//      SentencePiece and llama.cpp); and user-defined pieces, which this vocabulary lacks.
//   2. The same bytes read as little-endian uint16 token ids (mapped onto [-4, vocab + 4) so
//      out-of-range ids occur): IncrementalDetokenizer emits only valid UTF-8 in every chunk,
//      and all chunks together equal the whole sequence's text sanitized at once (ill-formed
//      bytes -> U+FFFD), so streaming never changes the text. Decode never crashes on them.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"
#include "engine/model/llama2c_reader.h"
#include "engine/tokenizer/bpe_tokenizer.h"
#include "engine/tokenizer/incremental_detokenizer.h"
#include "engine/tokenizer/utf8.h"
#include "tests/fuzz/fuzz_file.h"

namespace kvserve::fuzz {
namespace {

using engine::BpeTokenizer;
using engine::TokenId;

// C-escaped bytes for messages (Debian's Abseil string_view is not std::string_view).
std::string Escape(std::string_view s) {
  return absl::CHexEscape(absl::string_view(s.data(), s.size()));
}

std::unique_ptr<BpeTokenizer> MakeTokenizer(bool add_space_prefix) {
  absl::StatusOr<engine::Vocab> vocab =
      engine::ReadLlama2cTokenizer(KVSERVE_SOURCE_DIR "/models/tok512.bin");
  if (!vocab.ok()) Fail("cannot read models/tok512.bin: " + vocab.status().ToString());
  vocab->add_space_prefix = add_space_prefix;
  absl::StatusOr<std::unique_ptr<BpeTokenizer>> tok = BpeTokenizer::Create(*vocab);
  if (!tok.ok()) Fail("cannot make the tokenizer: " + tok.status().ToString());
  return std::move(*tok);
}

void CheckRoundTrip(const BpeTokenizer& tok, std::string_view text, bool add_bos) {
  const bool valid = engine::ValidateUtf8(text).ok();
  absl::StatusOr<std::vector<TokenId>> ids = tok.Encode(text, add_bos);
  if (!valid) {
    if (ids.ok() || !absl::IsInvalidArgument(ids.status())) {
      Fail(absl::StrCat("Encode of invalid UTF-8 \"", Escape(text), "\" gave ",
                        ids.status().ToString(), " instead of INVALID_ARGUMENT"));
    }
    return;
  }
  if (!ids.ok()) {
    Fail(absl::StrCat("Encode of valid UTF-8 \"", Escape(text),
                      "\" failed: ", ids.status().ToString()));
  }
  for (TokenId id : *ids) {
    if (id < 0 || id >= tok.vocab_size()) Fail(absl::StrCat("Encode produced id ", id));
  }
  if (add_bos && (ids->empty() || ids->front() != tok.vocab().bos_id)) {
    Fail("Encode with add_bos does not start with BOS");
  }
  const std::string decoded = tok.Decode(*ids);
  const std::string expected = absl::StrReplaceAll(
      absl::string_view(text.data(), text.size()), {{"\xE2\x96\x81", " "}});
  if (decoded != expected) {
    Fail(absl::StrCat("Decode(Encode(s)) != s (add_space_prefix ", tok.vocab().add_space_prefix ? "on" : "off",
                      ")\n  s       = \"", Escape(text), "\"\n  ids     = [",
                      absl::StrJoin(*ids, ", "), "]\n  decoded = \"",
                      Escape(decoded), "\""));
  }
}

void CheckDetokenizer(const BpeTokenizer& tok, const uint8_t* data, size_t size) {
  std::vector<TokenId> ids;
  const int64_t range = tok.vocab_size() + 8;
  for (size_t i = 0; i + 1 < size; i += 2) {
    const int64_t v = data[i] | (int64_t{data[i + 1]} << 8);
    ids.push_back(static_cast<TokenId>(v % range - 4));
  }
  engine::IncrementalDetokenizer detok(tok);
  std::string streamed;
  std::string raw;
  for (TokenId id : ids) {
    const std::string chunk = detok.Push(id);
    if (!engine::ValidateUtf8(chunk).ok()) {
      Fail(absl::StrCat("Push(", id, ") emitted invalid UTF-8 \"", Escape(chunk),
                        "\"; ids [", absl::StrJoin(ids, ", "), "]"));
    }
    streamed += chunk;
    raw.append(tok.TokenText(id));
  }
  const std::string tail = detok.Flush();
  if (!engine::ValidateUtf8(tail).ok()) Fail("Flush emitted invalid UTF-8");
  streamed += tail;
  std::string whole;
  engine::AppendUtf8Sanitized(raw, /*at_end=*/true, whole);
  if (streamed != whole) {
    Fail(absl::StrCat("streamed text differs from the sanitized whole text; ids [",
                      absl::StrJoin(ids, ", "), "]\n  streamed = \"",
                      Escape(streamed), "\"\n  whole    = \"",
                      Escape(whole), "\""));
  }
  // Whole-sequence decode of arbitrary ids: any bytes, but no crash.
  (void)tok.Decode(ids);
  // Flush reset the instance: it is reusable.
  if (!detok.Flush().empty()) Fail("a second Flush emitted text");
}

}  // namespace
}  // namespace kvserve::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvserve;  // NOLINT(build/namespaces): a C entry point.
  static const std::unique_ptr<engine::BpeTokenizer> with_prefix = fuzz::MakeTokenizer(true);
  static const std::unique_ptr<engine::BpeTokenizer> without_prefix = fuzz::MakeTokenizer(false);
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  fuzz::CheckRoundTrip(*with_prefix, text, /*add_bos=*/true);
  fuzz::CheckRoundTrip(*without_prefix, text, /*add_bos=*/false);
  fuzz::CheckDetokenizer(*with_prefix, data, size);
  return 0;
}
