#include "engine/runtime/model_runner.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "engine/common/status_macros.h"
#include "engine/compute/ops.h"

namespace kvserve::engine {
namespace {

absl::StatusOr<std::vector<float>> DecodeVector(const TensorData& tensor) {
  std::vector<float> out(tensor.num_elements());
  KV_RETURN_IF_ERROR(DecodeToF32(tensor, 0, absl::MakeSpan(out)));
  return out;
}

AttentionGeometry GeometryOf(const ModelConfig& c) {
  return {.n_heads = c.n_heads, .n_kv_heads = c.n_kv_heads, .head_dim = c.head_dim,
          .max_context = c.context_length};
}

}  // namespace

ModelRunner::ModelRunner(PrivateKey, const ModelFile& model, const ModelRunnerOptions& options)
    : model_(model), config_(model.config), options_(options), attention_(GeometryOf(model.config)) {
  const int64_t rows = options.max_batch_tokens;
  const int64_t q_dim = config_.n_heads * config_.head_dim;
  const int64_t kv_dim = config_.n_kv_heads * config_.head_dim;
  x_.resize(rows * config_.dim);
  xn_.resize(rows * config_.dim);
  q_.resize(rows * q_dim);
  k_.resize(rows * kv_dim);
  v_.resize(rows * kv_dim);
  att_.resize(rows * q_dim);
  proj_.resize(rows * config_.dim);
  gate_.resize(rows * config_.ffn_dim);
  up_.resize(rows * config_.ffn_dim);
  queries_.resize(rows);
  positions_.resize(rows);
}

absl::StatusOr<std::unique_ptr<ModelRunner>> ModelRunner::Create(
    const ModelFile& model, Device& device, const ModelRunnerOptions& options) {
  if (options.max_batch_tokens <= 0) {
    return absl::InvalidArgumentError("max_batch_tokens must be positive");
  }
  auto runner = std::make_unique<ModelRunner>(PrivateKey{}, model, options);
  const ModelWeights& w = model.weights;
  const WeightType type = options.weight_type;
  for (const LayerWeights& lw : w.layers) {
    Layer layer;
    KV_ASSIGN_OR_RETURN(layer.attn_norm, DecodeVector(lw.attn_norm));
    KV_ASSIGN_OR_RETURN(layer.ffn_norm, DecodeVector(lw.ffn_norm));
    KV_ASSIGN_OR_RETURN(layer.wq, Linear::Create(device, lw.wq, type));
    KV_ASSIGN_OR_RETURN(layer.wk, Linear::Create(device, lw.wk, type));
    KV_ASSIGN_OR_RETURN(layer.wv, Linear::Create(device, lw.wv, type));
    KV_ASSIGN_OR_RETURN(layer.wo, Linear::Create(device, lw.wo, type));
    KV_ASSIGN_OR_RETURN(layer.gate, Linear::Create(device, lw.ffn_gate, type));
    KV_ASSIGN_OR_RETURN(layer.up, Linear::Create(device, lw.ffn_up, type));
    KV_ASSIGN_OR_RETURN(layer.down, Linear::Create(device, lw.ffn_down, type));
    runner->layers_.push_back(std::move(layer));
  }
  KV_ASSIGN_OR_RETURN(runner->output_norm_, DecodeVector(w.output_norm));
  KV_ASSIGN_OR_RETURN(runner->output_, Linear::Create(device, w.output, type));
  return runner;
}

absl::StatusOr<absl::Span<const float>> ModelRunner::Forward(const ForwardBatch& batch,
                                                             KvCache& cache) {
  const ModelConfig& c = config_;
  const int64_t n = static_cast<int64_t>(batch.tokens.size());
  if (n == 0 || n > options_.max_batch_tokens) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "batch of %d tokens; this runner takes 1..%d", n, options_.max_batch_tokens));
  }
  const int64_t dim = c.dim;
  const int64_t q_dim = c.n_heads * c.head_dim;
  const int64_t kv_dim = c.n_kv_heads * c.head_dim;
  const int32_t block_size = cache.block_size();

  // Embeddings, positions and attention queries of every packed token.
  int64_t logit_rows = 0;
  for (const ForwardBatch::Entry& e : batch.entries) {
    for (int32_t i = 0; i < e.count; ++i) {
      const int32_t t = e.first + i;
      positions_[t] = e.start_position + i;
      queries_[t] = {.blocks = e.blocks, .position = positions_[t]};
      KV_RETURN_IF_ERROR(DecodeToF32(model_.weights.token_embedding,
                                     static_cast<int64_t>(batch.tokens[t]) * dim,
                                     absl::MakeSpan(x_.data() + t * dim, dim)));
    }
    if (e.want_logits) ++logit_rows;
  }

  for (size_t l = 0; l < layers_.size(); ++l) {
    Layer& layer = layers_[l];
    RmsNormRows(x_.data(), layer.attn_norm.data(), n, dim, c.rms_eps, xn_.data());
    KV_RETURN_IF_ERROR(layer.wq->Forward(xn_.data(), n, q_.data()));
    KV_RETURN_IF_ERROR(layer.wk->Forward(xn_.data(), n, k_.data()));
    KV_RETURN_IF_ERROR(layer.wv->Forward(xn_.data(), n, v_.data()));
    // RoPE, then every token's K and V go to its slot before any token attends: a prefill
    // chunk attends to its own earlier tokens.
    for (int64_t t = 0; t < n; ++t) {
      const int32_t pos = positions_[t];
      ApplyRope(q_.data() + t * q_dim, c.n_heads, c.head_dim, c.rope_dim, pos, c.rope_theta);
      ApplyRope(k_.data() + t * kv_dim, c.n_kv_heads, c.head_dim, c.rope_dim, pos, c.rope_theta);
      const BlockId block = (*queries_[t].blocks)[pos / block_size];
      std::copy_n(k_.data() + t * kv_dim, kv_dim, cache.Key(block, l, pos % block_size));
      std::copy_n(v_.data() + t * kv_dim, kv_dim, cache.Value(block, l, pos % block_size));
    }
    attention_.Forward(cache, l, absl::MakeConstSpan(queries_.data(), n), q_.data(), att_.data());
    KV_RETURN_IF_ERROR(layer.wo->Forward(att_.data(), n, proj_.data()));
    Add(x_.data(), proj_.data(), n * dim);

    RmsNormRows(x_.data(), layer.ffn_norm.data(), n, dim, c.rms_eps, xn_.data());
    KV_RETURN_IF_ERROR(layer.gate->Forward(xn_.data(), n, gate_.data()));
    KV_RETURN_IF_ERROR(layer.up->Forward(xn_.data(), n, up_.data()));
    SiluMul(gate_.data(), up_.data(), n * c.ffn_dim, gate_.data());
    KV_RETURN_IF_ERROR(layer.down->Forward(gate_.data(), n, proj_.data()));
    Add(x_.data(), proj_.data(), n * dim);
  }

  if (logit_rows == 0) return absl::Span<const float>();
  // Only the rows that are sampled go through the (large) output projection.
  if (logits_in_.size() < static_cast<size_t>(logit_rows * dim)) {
    logits_in_.resize(logit_rows * dim);
    logits_.resize(logit_rows * c.vocab_size);
  }
  int64_t row = 0;
  for (const ForwardBatch::Entry& e : batch.entries) {
    if (!e.want_logits) continue;
    const int64_t last = e.first + e.count - 1;
    RmsNorm(x_.data() + last * dim, output_norm_.data(), dim, c.rms_eps,
            logits_in_.data() + row * dim);
    ++row;
  }
  KV_RETURN_IF_ERROR(output_->Forward(logits_in_.data(), logit_rows, logits_.data()));
  return absl::MakeConstSpan(logits_.data(), logit_rows * c.vocab_size);
}

}  // namespace kvserve::engine
