#include "engine/runtime/model_runner.h"

#include <algorithm>
#include <cmath>
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
  row_entry_.resize(rows);
  lazy_rows_.reserve(64);
  slot_score_.resize(config_.context_length);
  head_logits_.resize(config_.context_length);
  key_row_.resize(kv_dim);
  candidates_.reserve(rows);
  keep_row_.resize(rows);
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
  last_rows_.resize(batch.entries.size());
  lazy_rows_.clear();
  for (size_t i = 0; i < batch.entries.size(); ++i) {
    const ForwardBatch::Entry& e = batch.entries[i];
    if (e.lazy == nullptr && !lazy_rows_.empty()) {
      return absl::InvalidArgumentError("LazyLLM batch entries must come after all others");
    }
    if (e.tables == nullptr || e.tables->size() != layers_.size()) {
      return absl::InvalidArgumentError("every batch entry needs one block table per layer");
    }
    if (e.lazy != nullptr && e.layer_start_slots != nullptr) {
      return absl::InvalidArgumentError("LazyLLM entries cannot have per-layer slots");
    }
    const int16_t* depth = nullptr;
    if (e.lazy != nullptr) {
      LazyTokens& lazy = *e.lazy;
      lazy.EnsureSlots(e.start_slot + e.count);
      for (int32_t k = 0; k < e.count; ++k) lazy.Revive(e.start_slot + k);  // Full depth.
      depth = lazy.depth_data();
      LazyRows lr{.entry = static_cast<int32_t>(i), .first = e.first, .count = e.count};
      const int32_t prompt_left = lazy.prompt_length() - e.start_position;
      lr.prompt_rows = std::clamp(prompt_left, 0, e.count);
      if (lr.prompt_rows > 0) lr.rank_row = e.first + lr.prompt_rows - 1;
      lazy_rows_.push_back(lr);
    }
    for (int32_t k = 0; k < e.count; ++k) {
      const int32_t t = e.first + k;
      positions_[t] = e.start_position + k;
      slots_[t] = e.start_slot + k;
      // The attention kernel indexes slots: a query sees slots 0..its own.
      queries_[t] = {.blocks = nullptr, .position = slots_[t], .depth = depth};
      row_entry_[t] = static_cast<int32_t>(i);
      KV_RETURN_IF_ERROR(DecodeToF32(model_.weights.token_embedding,
                                     static_cast<int64_t>(batch.tokens[t]) * dim,
                                     absl::MakeSpan(x_.data() + t * dim, dim)));
    }
    last_rows_[i] = e.first + e.count - 1;
    if (e.want_logits) ++logit_rows;
  }

  // Rows shrink as LazyLLM entries drop pruned tokens (they are last, so the rows of every
  // other entry never move).
  int64_t rows = n;
  last_token_layers_ = 0;
  for (size_t l = 0; l < layers_.size(); ++l) {
    const int64_t n = rows;  // This layer's rows (shadows the batch size on purpose).
    last_token_layers_ += n;
    Layer& layer = layers_[l];
    // Each row reads and writes its sequence's block table of this layer, at the slots it
    // has there (per-layer policies keep different tokens per layer).
    for (int64_t t = 0; t < n; ++t) {
      const ForwardBatch::Entry& e = batch.entries[row_entry_[t]];
      queries_[t].blocks = &(*e.tables)[l];
      if (e.layer_start_slots != nullptr) {  // Never lazy: its rows stay where they started.
        slots_[t] = e.layer_start_slots[l] + static_cast<int32_t>(t - e.first);
        queries_[t].position = slots_[t];
      }
    }
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
      cache.WriteKey(block, slot % block_size, row + q_dim);
      cache.WriteValue(block, slot % block_size, row + q_dim + kv_dim);
    }
    attention_.Forward(cache, l, absl::MakeConstSpan(queries_.data(), n), q_.data(), att_.data());
    if (batch.observer != nullptr) {
      batch.observer->OnLayerQueries(l, q_.data(), cache, last_rows_);
    }
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
    if (!lazy_rows_.empty()) rows = PruneLazyRows(l, cache, batch);
  }

  if (logit_rows == 0) return absl::Span<const float>();
  // Only the rows that are sampled go through the (large) output projection.
  if (logits_in_.size() < static_cast<size_t>(logit_rows * dim)) {
    logits_in_.resize(logit_rows * dim);
    logits_.resize(logit_rows * c.vocab_size);
  }
  int64_t row = 0;
  for (size_t i = 0; i < batch.entries.size(); ++i) {
    if (!batch.entries[i].want_logits) continue;
    const int64_t last = last_rows_[i];
    RmsNorm(x_.data() + last * dim, output_norm_.data(), dim, c.rms_eps,
            logits_in_.data() + row * dim);
    ++row;
  }
  KV_RETURN_IF_ERROR(output_->Forward(logits_in_.data(), logit_rows, logits_.data()));
  return absl::MakeConstSpan(logits_.data(), logit_rows * c.vocab_size);
}

void ModelRunner::ScoreSlots(int64_t layer, const KvCache& cache,
                             const ForwardBatch::Entry& entry, int32_t row, int32_t pool) {
  const ModelConfig& c = config_;
  const int64_t hd = c.head_dim;
  const int64_t group = c.n_heads / c.n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int32_t bs = cache.block_size();
  const int32_t last = slots_[row];
  const LazyTokens& lazy = *entry.lazy;
  const float* q = q_.data() + static_cast<int64_t>(row) * c.n_heads * hd;
  std::fill(slot_score_.begin(), slot_score_.begin() + last + 1, 0.0f);
  const float weight = 1.0f / static_cast<float>(c.n_heads);
  for (int64_t h = 0; h < c.n_heads; ++h) {
    const int64_t kv_offset = (h / group) * hd;
    float max = -INFINITY;
    for (int32_t j = 0; j <= last; ++j) {
      if (lazy.depth(j) <= layer) {  // No KV here: the kernel did not attend to it either.
        head_logits_[j] = -INFINITY;
        continue;
      }
      // Dtype-aware: the key as the attention kernel saw it.
      cache.ReadKey((*entry.tables)[layer][j / bs], j % bs, kv_offset, hd, key_row_.data());
      head_logits_[j] = Dot(q + h * hd, key_row_.data(), hd) * scale;
      max = std::max(max, head_logits_[j]);
    }
    double sum = 0;
    for (int32_t j = 0; j <= last; ++j) sum += std::exp(head_logits_[j] - max);
    const float inv = static_cast<float>(1.0 / sum) * weight;
    for (int32_t j = 0; j <= last; ++j) slot_score_[j] += std::exp(head_logits_[j] - max) * inv;
  }
  if (pool > 1) {
    std::copy_n(slot_score_.begin(), last + 1, head_logits_.begin());
    PoolLazyScores(absl::MakeConstSpan(head_logits_.data(), last + 1), lazy.depth_data(), layer,
                   pool, absl::MakeSpan(slot_score_.data(), last + 1));
  }
}

int64_t ModelRunner::PruneLazyRows(int64_t layer, const KvCache& cache,
                                   const ForwardBatch& batch) {
  const int64_t dim = config_.dim;
  int32_t write = lazy_rows_.front().first;
  for (LazyRows& lr : lazy_rows_) {
    const ForwardBatch::Entry& e = batch.entries[lr.entry];
    LazyTokens& lazy = *e.lazy;
    const std::vector<LazyStage>& stages = lazy.stages();
    const LazyStage* stage = nullptr;
    if (lr.next_stage < stages.size() && stages[lr.next_stage].after_layer == layer) {
      stage = &stages[lr.next_stage++];
    }
    const int32_t end = lr.first + lr.count;
    // Prompt rows still running (the ranking row included).
    int32_t active = 0;
    for (int32_t r = lr.first; r < end; ++r) active += positions_[r] < lazy.prompt_length();
    int32_t target = active;
    if (stage != nullptr && lr.rank_row >= 0) {
      // Tolerance: keep is a float, and ceil(0.3f * 100) must be 30.
      const double want = std::ceil(static_cast<double>(stage->keep) * lr.prompt_rows *
                                    (1.0 - 1e-6));
      target = std::max(1, std::min(active, static_cast<int32_t>(want)));
    }
    std::fill(keep_row_.begin() + lr.first, keep_row_.begin() + end, uint8_t{1});
    if (target < active) {
      ScoreSlots(layer, cache, e, lr.rank_row, stage->pool);
      candidates_.clear();
      for (int32_t r = lr.first; r < end; ++r) {
        if (positions_[r] < lazy.prompt_length() && r != lr.rank_row) candidates_.push_back(r);
      }
      // Best score first; ties to the earlier slot (a total order: deterministic, and
      // std::sort needs no buffer where std::stable_sort would allocate one).
      std::sort(candidates_.begin(), candidates_.end(), [this](int32_t a, int32_t b) {
        const float sa = slot_score_[slots_[a]], sb = slot_score_[slots_[b]];
        return sa != sb ? sa > sb : slots_[a] < slots_[b];
      });
      for (size_t i = target - 1; i < candidates_.size(); ++i) {
        const int32_t r = candidates_[i];
        keep_row_[r] = 0;
        lazy.Prune(slots_[r], static_cast<int16_t>(layer + 1), x_.data() + r * dim);
      }
    }
    // Compact: kept rows move down, in order (write <= r, so rows are never overwritten
    // before they are read).
    const int32_t first = write;
    for (int32_t r = lr.first; r < end; ++r) {
      if (!keep_row_[r]) continue;
      if (r == lr.rank_row) lr.rank_row = write;
      if (write != r) {
        std::copy_n(x_.data() + static_cast<int64_t>(r) * dim, dim,
                    x_.data() + static_cast<int64_t>(write) * dim);
        positions_[write] = positions_[r];
        slots_[write] = slots_[r];
        queries_[write] = queries_[r];
        row_entry_[write] = row_entry_[r];
      }
      ++write;
    }
    lr.first = first;
    lr.count = write - first;
    last_rows_[lr.entry] = write - 1;
  }
  return write;
}

}  // namespace kvserve::engine
