// libFuzzer target: arbitrary bytes as a llama2.c tokenizer file plus checkpoint.
//
// Input layout: a little-endian uint16 N, then N bytes of tokenizer file (fewer if the input
// ends first), then the checkpoint bytes. The tokenizer goes through ReadLlama2cTokenizer and,
// when accepted, BpeTokenizer::Create and a short encode/decode; the pair goes through
// LoadModelFile (which sends non-GGUF files to LoadLlama2cModel) and every weight view of an
// accepted model is checked to lie inside the checkpoint. Any status is fine; a crash or a
// sanitizer report is not.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/llama2c_reader.h"
#include "engine/model/model_file.h"
#include "engine/tokenizer/bpe_tokenizer.h"
#include "engine/tokenizer/utf8.h"
#include "tests/fuzz/fuzz_file.h"

namespace kvserve::fuzz {
namespace {

void ExerciseVocab(const engine::Vocab& vocab) {
  absl::StatusOr<std::unique_ptr<engine::BpeTokenizer>> tok = engine::BpeTokenizer::Create(vocab);
  if (!tok.ok()) return;
  absl::StatusOr<std::vector<engine::TokenId>> ids =
      (*tok)->Encode("Once upon a time \xE2\x96\x81 \xC3\xA9\xF0\x9F\x99\x82", true);
  if (!ids.ok()) Fail("Encode rejects valid UTF-8: " + ids.status().ToString());
  (void)(*tok)->Decode(*ids);
}

void ExerciseModel(const engine::ModelFile& model) {
  CheckModelWeights(model);
  if (model.vocab.size() != model.config.vocab_size) {
    Fail("accepted a model whose tokenizer size differs from its vocab_size");
  }
}

}  // namespace
}  // namespace kvserve::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvserve;  // NOLINT(build/namespaces): a C entry point.
  static fuzz::FuzzFile tokenizer_file("llama2c-tokenizer");
  static fuzz::FuzzFile checkpoint_file("llama2c-checkpoint");
  if (size < 2) return 0;
  const size_t tok_size = std::min<size_t>(data[0] | (size_t{data[1]} << 8), size - 2);
  const std::string& tok_path = tokenizer_file.Write(data + 2, tok_size);
  const std::string& ckpt_path =
      checkpoint_file.Write(data + 2 + tok_size, size - 2 - tok_size);

  absl::StatusOr<engine::Vocab> vocab = engine::ReadLlama2cTokenizer(tok_path);
  if (vocab.ok()) fuzz::ExerciseVocab(*vocab);

  absl::StatusOr<std::unique_ptr<engine::ModelFile>> model =
      engine::LoadModelFile(ckpt_path, tok_path);
  if (model.ok()) fuzz::ExerciseModel(**model);
  return 0;
}
