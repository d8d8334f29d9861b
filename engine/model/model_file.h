// A loaded model file: hyperparameters, vocabulary and typed views of every weight tensor.
// Immutable after loading; safe to share between threads.
#ifndef KVSERVE_ENGINE_MODEL_MODEL_FILE_H_
#define KVSERVE_ENGINE_MODEL_MODEL_FILE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/common/mapped_file.h"
#include "engine/model/model_config.h"
#include "engine/model/tensor_data.h"
#include "engine/model/vocab.h"

namespace kvserve::engine {

struct LayerWeights {
  TensorData attn_norm;  // {dim}
  TensorData wq;         // {n_heads * head_dim, dim}
  TensorData wk;         // {n_kv_heads * head_dim, dim}
  TensorData wv;         // {n_kv_heads * head_dim, dim}
  TensorData wo;         // {dim, n_heads * head_dim}
  TensorData ffn_norm;   // {dim}
  TensorData ffn_gate;   // {ffn_dim, dim}   (llama2.c w1)
  TensorData ffn_up;     // {ffn_dim, dim}   (llama2.c w3)
  TensorData ffn_down;   // {dim, ffn_dim}   (llama2.c w2)
};

struct ModelWeights {
  TensorData token_embedding;  // {vocab_size, dim}
  std::vector<LayerWeights> layers;
  TensorData output_norm;      // {dim}
  TensorData output;           // {vocab_size, dim}; the embedding's view when tied.
  bool tied_output = false;
};

struct ModelFile {
  std::string format;  // "gguf" or "llama2c".
  ModelConfig config;
  Vocab vocab;
  ModelWeights weights;  // Views into `storage`.
  std::vector<std::unique_ptr<MappedFile>> storage;
};

// Loads a model, choosing the format by the file's first bytes: GGUF ("GGUF" magic), else a
// llama2.c checkpoint, whose tokenizer comes from `tokenizer_path` or, when that is empty,
// from "tokenizer.bin" beside the checkpoint. Every tensor's shape is checked against the
// hyperparameters. Errors name the file and what is wrong with it: NOT_FOUND for a missing
// file, INVALID_ARGUMENT for a malformed, truncated or unsupported one.
absl::StatusOr<std::unique_ptr<ModelFile>> LoadModelFile(const std::string& path,
                                                         const std::string& tokenizer_path = "");

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_MODEL_MODEL_FILE_H_
