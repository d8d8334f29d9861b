// Hyperparameters of a LLaMA-family model, read from the model file's metadata.
// A plain value type.
#ifndef KVSERVE_ENGINE_MODEL_MODEL_CONFIG_H_
#define KVSERVE_ENGINE_MODEL_MODEL_CONFIG_H_

#include <cstdint>
#include <string>

namespace kvserve::engine {

struct ModelConfig {
  std::string architecture = "llama";  // general.architecture; only "llama" is served.
  std::string name;                    // general.name, or the file's base name.
  int64_t dim = 0;             // Embedding (residual stream) width.
  int64_t n_layers = 0;        // Transformer blocks.
  int64_t n_heads = 0;         // Query heads.
  int64_t n_kv_heads = 0;      // Key/value heads (grouped-query attention when < n_heads).
  int64_t head_dim = 0;        // dim / n_heads.
  int64_t ffn_dim = 0;         // SwiGLU hidden width.
  int64_t vocab_size = 0;      // Rows of the embedding and output matrices.
  int64_t context_length = 0;  // Longest sequence (prompt + generated) the model was trained for.
  int64_t rope_dim = 0;        // Leading dimensions of each head that RoPE rotates (= head_dim usually).
  float rope_theta = 10000.0f; // RoPE frequency base.
  float rms_eps = 1e-5f;       // RMSNorm epsilon.
};

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_MODEL_MODEL_CONFIG_H_
