#include "engine/model/model_validation.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "engine/common/status_macros.h"

namespace kvserve::engine {
namespace {

absl::Status Invalid(absl::string_view path, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", message));
}

absl::Status CheckRange(absl::string_view path, absl::string_view what, int64_t value,
                        int64_t max) {
  if (value < 1 || value > max) {
    return Invalid(path, absl::StrCat(what, " is ", value, " (expected 1 to ", max, ")"));
  }
  return absl::OkStatus();
}

}  // namespace

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::Status ValidateConfig(const ModelConfig& c, absl::string_view path) {
  KV_RETURN_IF_ERROR(CheckRange(path, "embedding length (dim)", c.dim, 1 << 16));
  KV_RETURN_IF_ERROR(CheckRange(path, "block count", c.n_layers, 1 << 10));
  KV_RETURN_IF_ERROR(CheckRange(path, "head count", c.n_heads, c.dim));
  KV_RETURN_IF_ERROR(CheckRange(path, "KV head count", c.n_kv_heads, c.n_heads));
  KV_RETURN_IF_ERROR(CheckRange(path, "feed-forward length", c.ffn_dim, 1 << 20));
  KV_RETURN_IF_ERROR(CheckRange(path, "vocabulary size", c.vocab_size, 1 << 24));
  KV_RETURN_IF_ERROR(CheckRange(path, "context length", c.context_length, 1 << 24));
  if (c.dim % c.n_heads != 0) {
    return Invalid(path, absl::StrCat("embedding length ", c.dim, " is not a multiple of the ",
                                      c.n_heads, " heads"));
  }
  if (c.n_heads % c.n_kv_heads != 0) {
    return Invalid(path, absl::StrCat(c.n_heads, " heads do not divide into ", c.n_kv_heads,
                                      " KV heads"));
  }
  if (c.head_dim != c.dim / c.n_heads) {
    return Invalid(path, absl::StrCat("head_dim ", c.head_dim, " != dim / heads = ",
                                      c.dim / c.n_heads));
  }
  if (c.rope_dim < 2 || c.rope_dim > c.head_dim || c.rope_dim % 2 != 0) {
    return Invalid(path, absl::StrCat("RoPE dimension count ", c.rope_dim,
                                      " must be even and between 2 and the head size ",
                                      c.head_dim));
  }
  if (!std::isfinite(c.rope_theta) || c.rope_theta <= 0) {
    return Invalid(path, absl::StrCat("RoPE frequency base ", c.rope_theta, " is not positive"));
  }
  if (!std::isfinite(c.rms_eps) || c.rms_eps <= 0 || c.rms_eps > 1) {
    return Invalid(path, absl::StrCat("RMSNorm epsilon ", c.rms_eps, " is not in (0, 1]"));
  }
  return absl::OkStatus();
}

absl::Status ValidateVocab(const Vocab& v, absl::string_view path) {
  const size_t n = v.pieces.size();
  if (n == 0) return Invalid(path, "the vocabulary is empty");
  if (v.scores.size() != n || v.kinds.size() != n) {
    return Invalid(path, absl::StrCat("the vocabulary has ", n, " tokens but ", v.scores.size(),
                                      " scores and ", v.kinds.size(), " token types"));
  }
  const auto check_id = [&](absl::string_view what, TokenId id) -> absl::Status {
    if (id < 0 || static_cast<size_t>(id) >= n) {
      return Invalid(path, absl::StrCat(what, " token id ", id, " is outside the vocabulary of ",
                                        n, " tokens"));
    }
    return absl::OkStatus();
  };
  KV_RETURN_IF_ERROR(check_id("BOS", v.bos_id));
  KV_RETURN_IF_ERROR(check_id("EOS", v.eos_id));
  KV_RETURN_IF_ERROR(check_id("unknown", v.unk_id));
  return absl::OkStatus();
}

absl::Status CheckShape(const TensorData& tensor, const std::vector<int64_t>& expected,
                        absl::string_view path) {
  if (tensor.shape != expected) {
    return Invalid(path, absl::StrCat("tensor ", tensor.name, " has shape ",
                                      ShapeString(tensor.shape), " but the model needs ",
                                      ShapeString(expected), " (outermost dimension first)"));
  }
  return absl::OkStatus();
}

absl::Status ValidateWeights(const ModelWeights& w, const ModelConfig& c, absl::string_view path) {
  const int64_t q_dim = c.n_heads * c.head_dim;
  const int64_t kv_dim = c.n_kv_heads * c.head_dim;
  KV_RETURN_IF_ERROR(CheckShape(w.token_embedding, {c.vocab_size, c.dim}, path));
  KV_RETURN_IF_ERROR(CheckShape(w.output_norm, {c.dim}, path));
  KV_RETURN_IF_ERROR(CheckShape(w.output, {c.vocab_size, c.dim}, path));
  if (static_cast<int64_t>(w.layers.size()) != c.n_layers) {
    return Invalid(path, absl::StrCat(w.layers.size(), " layers of weights for a ", c.n_layers,
                                      "-layer model"));
  }
  for (const LayerWeights& l : w.layers) {
    KV_RETURN_IF_ERROR(CheckShape(l.attn_norm, {c.dim}, path));
    KV_RETURN_IF_ERROR(CheckShape(l.wq, {q_dim, c.dim}, path));
    KV_RETURN_IF_ERROR(CheckShape(l.wk, {kv_dim, c.dim}, path));
    KV_RETURN_IF_ERROR(CheckShape(l.wv, {kv_dim, c.dim}, path));
    KV_RETURN_IF_ERROR(CheckShape(l.wo, {c.dim, q_dim}, path));
    KV_RETURN_IF_ERROR(CheckShape(l.ffn_norm, {c.dim}, path));
    KV_RETURN_IF_ERROR(CheckShape(l.ffn_gate, {c.ffn_dim, c.dim}, path));
    KV_RETURN_IF_ERROR(CheckShape(l.ffn_up, {c.ffn_dim, c.dim}, path));
    KV_RETURN_IF_ERROR(CheckShape(l.ffn_down, {c.dim, c.ffn_dim}, path));
  }
  return absl::OkStatus();
}

}  // namespace kvserve::engine
