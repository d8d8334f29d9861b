// Reader for Karpathy's llama2.c files: the legacy ("version 0") checkpoint export and the
// tokenizer .bin. Weights become f32 views into the mapped checkpoint (no copy); the
// tokenizer's pieces are converted to SentencePiece form (' ' -> U+2581).
//
// Checkpoint: 7 little-endian int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
// vocab_size, seq_len; a negative vocab_size means an untied classifier), then f32 arrays:
// token embedding, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3 (each for all layers),
// rms_final, RoPE cos and sin tables (seq_len x head_size/2 each, unused), [wcls].
// Tokenizer: int32 max_token_length, then per token: f32 score, int32 length, bytes.
//
// Pure functions; thread-safe. Errors name the file: NOT_FOUND when missing,
// INVALID_ARGUMENT when malformed.
#ifndef KVSERVE_ENGINE_MODEL_LLAMA2C_READER_H_
#define KVSERVE_ENGINE_MODEL_LLAMA2C_READER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/model/model_file.h"
#include "engine/model/vocab.h"

namespace kvserve::engine {

struct Llama2cHeader {
  int32_t dim = 0;
  int32_t hidden_dim = 0;
  int32_t n_layers = 0;
  int32_t n_heads = 0;
  int32_t n_kv_heads = 0;
  int32_t vocab_size = 0;  // Negative: untied classifier weights follow the RoPE tables.
  int32_t seq_len = 0;
};

// Reads a tokenizer .bin; every token up to the end of the file. Ids 0 unknown, 1 BOS and
// 2 EOS (control), "<0xHH>" pieces byte tokens, the rest normal.
absl::StatusOr<Vocab> ReadLlama2cTokenizer(const std::string& path);

// Loads checkpoint + tokenizer into a ModelFile (format "llama2c"); the tokenizer must have
// exactly the model's vocab_size tokens.
absl::StatusOr<std::unique_ptr<ModelFile>> LoadLlama2cModel(const std::string& checkpoint_path,
                                                            const std::string& tokenizer_path);

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_MODEL_LLAMA2C_READER_H_
