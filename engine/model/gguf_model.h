// Maps a GGUF file of a LLaMA model (general.architecture "llama", SentencePiece tokenizer
// "llama") onto kvserve's ModelConfig, Vocab and ModelWeights. Pure functions over an
// immutable GgufFile; thread-safe. Errors are INVALID_ARGUMENT and name the file.
#ifndef KVSERVE_ENGINE_MODEL_GGUF_MODEL_H_
#define KVSERVE_ENGINE_MODEL_GGUF_MODEL_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/model/gguf_reader.h"
#include "engine/model/gguf_writer.h"
#include "engine/model/model_config.h"
#include "engine/model/model_file.h"
#include "engine/model/vocab.h"

namespace kvserve::engine {

// llama.* hyperparameters (defaults: head_count_kv = head_count, rope dims = head_dim,
// freq_base 10000, rms eps 1e-5); vocab_size from the token list. Validated.
absl::StatusOr<ModelConfig> ReadLlamaConfig(const GgufFile& file);

// tokenizer.ggml.* (tokenizer.ggml.model must be "llama"); scores default to 0, token types
// to normal, add_bos_token and add_space_prefix to true. Validated.
absl::StatusOr<Vocab> ReadGgufVocab(const GgufFile& file);

// Config, vocab and shape-checked weight views; the ModelFile takes over the mapping.
// output.weight may be absent (tied to token_embd.weight, tied_output = true).
absl::StatusOr<std::unique_ptr<ModelFile>> LoadGgufModel(std::unique_ptr<GgufFile> file);

// --- Writing (GgufWriter must only be used from one thread) ---

// Sets general.*, llama.* and tokenizer.ggml.* metadata describing (config, vocab) on
// `writer`; `dtype` picks general.file_type.
void SetLlamaMetadata(const ModelConfig& config, const Vocab& vocab, TensorType dtype,
                      GgufWriter& writer);

// llama.cpp's convention for the type a tensor is stored as when a model is written as
// `dtype`: 1-D tensors (norm weights) stay f32, matrices take `dtype`, except q8_0 matrices
// whose rows are not a multiple of 32, which fall back to f16.
TensorType LlamaStorageType(TensorType dtype, const std::vector<int64_t>& shape);

// A llama model's tensors in llama.cpp's file order: name and shape (outermost first).
struct LlamaTensorSpec {
  std::string name;
  std::vector<int64_t> shape;
};
std::vector<LlamaTensorSpec> LlamaTensorSpecs(const ModelConfig& config, bool with_output);

struct LlamaGgufOptions {
  TensorType dtype = TensorType::kF32;  // Storage of the matrices (see LlamaStorageType).
  bool write_output = true;             // False: omit output.weight (a tied classifier).
};

// Writes `model` (any format, any tensor types) as a llama GGUF v3 file.
absl::Status WriteLlamaGguf(const ModelFile& model, const LlamaGgufOptions& options,
                            const std::string& path);

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_MODEL_GGUF_MODEL_H_
