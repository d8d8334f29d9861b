// libFuzzer target: arbitrary bytes as a GGUF file.
//
// The bytes go through GgufFile::Parse (with the mapping's zero tail poisoned, so reading past
// the end of the input is an ASan report), every metadata lookup and tensor view, then
// LoadGgufModel (llama config, vocabulary, shape-checked weights) and, for a vocabulary it
// accepts, BpeTokenizer::Create and a short encode/decode. Any status is fine; a crash, a
// sanitizer report, or a view outside the file is not.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/common/mapped_file.h"
#include "engine/model/gguf_model.h"
#include "engine/model/gguf_reader.h"
#include "engine/model/model_file.h"
#include "engine/tokenizer/bpe_tokenizer.h"
#include "engine/tokenizer/incremental_detokenizer.h"
#include "engine/tokenizer/utf8.h"
#include "tests/fuzz/fuzz_file.h"

namespace kvserve::fuzz {
namespace {

using engine::GgufFile;
using engine::GgufValueType;

void ExerciseMetadata(const GgufFile& gguf) {
  for (const std::string& key : gguf.Keys()) {
    if (!gguf.HasKey(key) || !gguf.KeyType(key).has_value()) {
      Fail("Keys() lists '" + key + "' but HasKey/KeyType do not find it");
    }
    // Each typed getter either reads the value or reports a type error; all must be safe.
    (void)gguf.GetValue(key);
    (void)gguf.GetString(key);
    (void)gguf.GetInt(key);
    (void)gguf.GetFloat(key);
    (void)gguf.GetBool(key);
    (void)gguf.GetStringArray(key);
    (void)gguf.GetIntArray(key);
    (void)gguf.GetFloatArray(key);
  }
  (void)gguf.GetString("no.such.key");
}

void ExerciseTensors(const GgufFile& gguf) {
  const engine::MappedFile& map = gguf.mapping();
  for (const engine::GgufTensorInfo& info : gguf.tensors()) {
    if (gguf.FindTensor(info.name) == nullptr) Fail("FindTensor misses '" + info.name + "'");
    absl::StatusOr<engine::TensorData> t = gguf.GetTensor(info.name);
    if (!t.ok()) Fail("GetTensor fails for listed tensor '" + info.name + "'");
    CheckTensorView(*t, map.data(), map.size());
  }
}

void ExerciseModel(const engine::ModelFile& model) {
  CheckModelWeights(model);
  // A vocabulary the loader accepted must either make a tokenizer or be rejected cleanly,
  // and a tokenizer must handle text and every id.
  absl::StatusOr<std::unique_ptr<engine::BpeTokenizer>> tok =
      engine::BpeTokenizer::Create(model.vocab);
  if (!tok.ok()) return;
  absl::StatusOr<std::vector<engine::TokenId>> ids =
      (*tok)->Encode("Once upon a time, \xC3\xA9t\xC3\xA9 \xF0\x9F\x99\x82 <s>\n", true);
  if (!ids.ok()) Fail("Encode rejects valid UTF-8: " + ids.status().ToString());
  (void)(*tok)->Decode(*ids);
  engine::IncrementalDetokenizer detok(**tok);
  std::string text;
  const int64_t n = (*tok)->vocab_size();
  for (int64_t id = -1; id <= n && id < 600; ++id) {
    text += detok.Push(static_cast<engine::TokenId>(id));
  }
  text += detok.Flush();
  if (!engine::ValidateUtf8(text).ok()) Fail("IncrementalDetokenizer emitted invalid UTF-8");
}

}  // namespace
}  // namespace kvserve::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvserve;  // NOLINT(build/namespaces): a C entry point.
  static fuzz::FuzzFile file("gguf");
  const std::string& path = file.Write(data, size);
  absl::StatusOr<std::unique_ptr<engine::MappedFile>> mapped = engine::MappedFile::Open(path);
  if (!mapped.ok()) fuzz::Fail("cannot map the memfd: " + mapped.status().ToString());
  const fuzz::PoisonedTail poison(**mapped);  // Destroyed last, after the mapping.

  absl::StatusOr<std::unique_ptr<engine::GgufFile>> gguf =
      engine::GgufFile::Parse(std::move(*mapped));
  if (!gguf.ok()) return 0;
  fuzz::ExerciseMetadata(**gguf);
  fuzz::ExerciseTensors(**gguf);
  absl::StatusOr<std::unique_ptr<engine::ModelFile>> model =
      engine::LoadGgufModel(std::move(*gguf));
  if (model.ok()) fuzz::ExerciseModel(**model);
  return 0;
}
