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
  qkv_.resize(rows * (q_dim + 2 * kv_dim));
  q_.resize(rows * q_dim);
  att_.resize(rows * q_dim);
  proj_.resize(rows * config_.dim);
  gate_up_.resize(rows * 2 * config_.ffn_dim);
  ffn_.resize(rows * config_.ffn_dim);
  const int64_t pairs = config_.rope_dim / 2;
  rope_cos_.resize(config_.context_length * pairs);
  rope_sin_.resize(config_.context_length * pairs);
  RopeTable(config_.rope_dim, config_.context_length, config_.rope_theta, rope_cos_.data(),
            rope_sin_.data());
  queries_.resize(rows);
  positions_.resize(rows);
  slots_.resize(rows);
}

absl::StatusOr<std::unique_ptr<ModelRunner>> ModelRunner::Create(
    const ModelFile& model, Device& device, const ModelRunnerOptions& options) {
  if (options.max_batch_tokens <= 0) {
    return absl::InvalidArgumentError("max_batch_tokens must be positive");
  }
  auto runner = std::make_unique<ModelRunner>(PrivateKey{}, model, options);
  const ModelWeights& w = model.weights;
  // The file's matrix storage decides "auto" (the first layer's Q; the output matrix for a
  // model without layers).
  const WeightType type = ResolveWeightType(
      options.weight_type, w.layers.empty() ? w.output.type : w.layers.front().wq.type);
  runner->weight_type_ = type;
  for (const LayerWeights& lw : w.layers) {
    Layer layer;
    KV_ASSIGN_OR_RETURN(layer.attn_norm, DecodeVector(lw.attn_norm));
    KV_ASSIGN_OR_RETURN(layer.ffn_norm, DecodeVector(lw.ffn_norm));
    const TensorData* qkv[] = {&lw.wq, &lw.wk, &lw.wv};
    KV_ASSIGN_OR_RETURN(layer.wqkv, Linear::CreateStacked(device, qkv, type));
    KV_ASSIGN_OR_RETURN(layer.wo, Linear::Create(device, lw.wo, type));
    const TensorData* gate_up[] = {&lw.ffn_gate, &lw.ffn_up};
    KV_ASSIGN_OR_RETURN(layer.gate_up, Linear::CreateStacked(device, gate_up, type));
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
      slots_[t] = e.start_slot + i;
      // The attention kernel indexes slots: a query sees slots 0..its own.
      queries_[t] = {.blocks = e.blocks, .position = slots_[t]};
      KV_RETURN_IF_ERROR(DecodeToF32(model_.weights.token_embedding,
                                     static_cast<int64_t>(batch.tokens[t]) * dim,
                                     absl::MakeSpan(x_.data() + t * dim, dim)));
    }
    if (e.want_logits) ++logit_rows;
  }

  for (size_t l = 0; l < layers_.size(); ++l) {
    Layer& layer = layers_[l];
    RmsNormRows(x_.data(), layer.attn_norm.data(), n, dim, c.rms_eps, xn_.data());
    KV_RETURN_IF_ERROR(layer.wqkv->Forward(xn_.data(), n, qkv_.data()));
    // RoPE on the token's q and k heads (adjacent in its [q | k | v] row) in one pass, then
    // q to the attention input and k, v to the token's KV slot: every token's K and V are in
    // the cache before any token attends (a prefill chunk attends to its own earlier tokens).
    const int64_t qkv_dim = q_dim + 2 * kv_dim;
    const int64_t pairs = c.rope_dim / 2;
    for (int64_t t = 0; t < n; ++t) {
      const int32_t pos = positions_[t];
      float* row = qkv_.data() + t * qkv_dim;
      if (pos < c.context_length) {
        ApplyRopeCached(row, c.n_heads + c.n_kv_heads, c.head_dim, c.rope_dim,
                        rope_cos_.data() + pos * pairs, rope_sin_.data() + pos * pairs);
      } else {
        ApplyRope(row, c.n_heads + c.n_kv_heads, c.head_dim, c.rope_dim, pos, c.rope_theta);
      }
      std::copy_n(row, q_dim, q_.data() + t * q_dim);
      const int32_t slot = slots_[t];
      const BlockId block = (*queries_[t].blocks)[slot / block_size];
      cache.WriteKey(block, l, slot % block_size, row + q_dim);
      cache.WriteValue(block, l, slot % block_size, row + q_dim + kv_dim);
    }
    attention_.Forward(cache, l, absl::MakeConstSpan(queries_.data(), n), q_.data(), att_.data());
    if (batch.observer != nullptr) batch.observer->OnLayerQueries(l, q_.data(), cache);
    KV_RETURN_IF_ERROR(layer.wo->Forward(att_.data(), n, proj_.data()));
    Add(x_.data(), proj_.data(), n * dim);

    RmsNormRows(x_.data(), layer.ffn_norm.data(), n, dim, c.rms_eps, xn_.data());
    KV_RETURN_IF_ERROR(layer.gate_up->Forward(xn_.data(), n, gate_up_.data()));
    for (int64_t t = 0; t < n; ++t) {
      const float* gate = gate_up_.data() + t * 2 * c.ffn_dim;
      SiluMul(gate, gate + c.ffn_dim, c.ffn_dim, ffn_.data() + t * c.ffn_dim);
    }
    KV_RETURN_IF_ERROR(layer.down->Forward(ffn_.data(), n, proj_.data()));
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
