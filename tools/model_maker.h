// The logic of kvserve-make-model: writes a LLaMA GGUF of any shape with seeded random
// weights (normal(0, init_std) matrices, norm weights 1) and a usable SentencePiece
// vocabulary, streaming tensor by tensor so even a 1.1B-parameter model is never held in
// memory. Pure functions; thread-safe.
#ifndef KVSERVE_TOOLS_MODEL_MAKER_H_
#define KVSERVE_TOOLS_MODEL_MAKER_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/model/tensor_data.h"
#include "engine/model/vocab.h"

namespace kvserve::tools {

struct ModelMakerOptions {
  std::string out;                  // Output .gguf path (required).
  std::string name = "kvserve-random";  // general.name.
  int64_t dim = 64;                 // Embedding width.
  int64_t layers = 5;               // Transformer blocks.
  int64_t heads = 8;                // Query heads.
  int64_t kv_heads = 4;             // Key/value heads.
  int64_t ffn = 172;                // SwiGLU hidden width.
  // Vocabulary size. With vocab_from: 0 takes the file's size, anything else must match it.
  int64_t vocab = 512;
  int64_t context = 512;            // Context length.
  float rope_theta = 10000.0f;      // RoPE frequency base.
  float rms_eps = 1e-5f;            // RMSNorm epsilon.
  // Storage of the matrices; norm weights stay f32 and q8_0 matrices whose rows are not a
  // multiple of 32 fall back to f16 (llama.cpp's convention).
  engine::TensorType dtype = engine::TensorType::kF32;
  uint64_t seed = 20240229;         // Same seed, same options: byte-identical file.
  float init_std = 0.02f;           // Standard deviation of the matrices' values.
  std::string vocab_from;           // A GGUF whose tokenizer to copy; empty: synthesise one.
};

// "tinyllama-1.1b" (TinyLlama 1.1B's shape) or "stories260k" (the bundled model's shape);
// INVALID_ARGUMENT naming the known presets otherwise.
absl::StatusOr<ModelMakerOptions> PresetOptions(absl::string_view preset);

// A SentencePiece-style vocabulary of `size` (>= 259) tokens: <unk>, <s>, </s>, the 256
// byte-fallback tokens <0x00>..<0xFF>, then printable pieces ("▁", letters, pairs, ...)
// with descending scores.
absl::StatusOr<engine::Vocab> SynthesizeVocab(int64_t size);

// Parses "f32", "f16", "bf16" or "q8_0".
absl::StatusOr<engine::TensorType> ParseDType(absl::string_view name);

// Writes the model described by `options` to options.out.
absl::Status MakeModel(const ModelMakerOptions& options);

// Re-encodes the real model at `from` (GGUF or llama2.c) as a llama GGUF at `out` with its
// matrices stored as `dtype` (a tied classifier stays tied): how the q4_0 / q8_0 copies of the
// bundled model are made for tests.
absl::Status ConvertModel(const std::string& from, engine::TensorType dtype,
                          const std::string& out);

}  // namespace kvserve::tools

#endif  // KVSERVE_TOOLS_MODEL_MAKER_H_
