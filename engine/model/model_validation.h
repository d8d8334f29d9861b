// Consistency checks shared by the model readers: hyperparameters in sane ranges, a
// vocabulary whose arrays agree, and every weight tensor shaped as the hyperparameters say.
// Pure functions; thread-safe. Errors are INVALID_ARGUMENT and start with `path`.
#ifndef KVSERVE_ENGINE_MODEL_MODEL_VALIDATION_H_
#define KVSERVE_ENGINE_MODEL_MODEL_VALIDATION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "engine/model/model_config.h"
#include "engine/model/model_file.h"
#include "engine/model/tensor_data.h"
#include "engine/model/vocab.h"

namespace kvserve::engine {

// Positive sizes within generous caps, dim divisible by n_heads, n_heads by n_kv_heads,
// head_dim == dim / n_heads, an even rope_dim <= head_dim, finite positive theta and eps.
absl::Status ValidateConfig(const ModelConfig& config, absl::string_view path);

// Equal-length pieces/scores/kinds, at least one token, BOS/EOS/UNK ids in range.
absl::Status ValidateVocab(const Vocab& vocab, absl::string_view path);

// "<path>: tensor blk.0.attn_q.weight has shape [64, 32] but the model needs [64, 64]".
absl::Status CheckShape(const TensorData& tensor, const std::vector<int64_t>& expected,
                        absl::string_view path);

// Checks every tensor of `weights` (and the layer count) against `config`.
absl::Status ValidateWeights(const ModelWeights& weights, const ModelConfig& config,
                             absl::string_view path);

// Formats a shape as "[a, b]".
std::string ShapeString(const std::vector<int64_t>& shape);

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_MODEL_MODEL_VALIDATION_H_
