#include "engine/runtime/engine.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "engine/common/logging.h"
#include "engine/common/status_macros.h"
#include "engine/runtime/kv_cache.h"
#include "engine/runtime/lazy_tokens.h"
#include "engine/compute/ops.h"
#include "engine/runtime/model_runner.h"

namespace kvserve::engine {

// Everything the engine knows about one live sequence.
struct Engine::SequenceState {
  explicit SequenceState(const SamplingParams& params) : sampler(params) {}

  // The policy state that sees `layer`'s attention and plans its evictions.
  PolicyState& policy_state(int64_t layer) {
    return policy_states[policy_states.size() == 1 ? 0 : layer];
  }
  bool per_layer() const { return policy_states.size() > 1; }

  std::vector<TokenId> tokens;   // Prompt followed by generated tokens.
  int32_t prompt_length = 0;
  int32_t num_computed = 0;      // Leading tokens that went through the model.
  // Live KV slots per layer (= num_computed unless a policy evicted; equal in every layer
  // unless the policy is per-layer).
  std::vector<int32_t> slots;
  // Block table per layer: layer l's slot i is in blocks[l][i / block_size].
  std::vector<std::vector<BlockId>> blocks;
  std::vector<uint64_t> block_hashes;  // Prefix-cache hashes of the leading full blocks.
  int32_t cached_prompt_tokens = 0;
  Sampler sampler;
  std::shared_ptr<const KvPolicy> policy;  // Null: keep everything.
  // One state (layer-shared policies) or one per layer (per-layer policies); empty without a
  // policy.
  std::vector<PolicyState> policy_states;
  std::unique_ptr<LazyTokens> lazy;  // LazyLLM policies only.
  int32_t max_new_tokens = 0;
  bool record_attention = false;
  // record_attention: original position of each slot, per layer; the last query's attention
  // per layer (by that layer's slots) and averaged over layers (see LastQueryAttention).
  std::vector<std::vector<int32_t>> positions;
  std::vector<std::vector<float>> layer_attention;
  std::vector<float> last_attention;
};

// Feeds each policy the attention rows it asked for, computed from the layer's queries and
// the cached keys (the same q.k/sqrt(d) logits the attention kernel used), and records the
// last query's attention of sequences that asked for it (record_attention).
class Engine::PolicyObserver : public LayerQueryObserver {
 public:
  struct Item {
    SequenceState* sequence;
    int32_t entry;            // Index in the batch.
    int32_t first;            // Batch rows of the entry.
    int32_t count;
    int32_t first_token;      // Token index of the entry's first row.
    bool want_logits;         // The entry's last row is sampled.
  };
  PolicyObserver(const ModelConfig& config) : config_(config) {}

  std::vector<Item>& items() { return items_; }

  void OnLayerQueries(int64_t layer, const float* q, const KvCache& cache,
                      absl::Span<const int32_t> last_rows) override {
    const int64_t hd = config_.head_dim;
    const int64_t group = config_.n_heads / config_.n_kv_heads;
    for (const Item& item : items_) {
      SequenceState& s = *item.sequence;
      if (s.record_attention && item.want_logits) {
        RecordAttention(layer, q, cache, item, last_rows[item.entry]);
      }
      // LazyLLM wants no rows (needs() is kNone), and only its last row stays put.
      if (s.policy == nullptr || s.lazy != nullptr) continue;
      const KvPolicy::Needs needs = s.policy->needs();
      PolicyState& state = s.policy_state(layer);
      // The sequence's slot counts are still those before this step.
      const int32_t start_slot = s.slots[layer];
      for (int32_t r = 0; r < item.count; ++r) {
        const int32_t token = item.first_token + r;
        const bool prefill = token < s.prompt_length;
        bool wanted = needs == KvPolicy::Needs::kAll || !prefill;
        if (needs == KvPolicy::Needs::kLastPromptRows && prefill) {
          wanted = token >= s.prompt_length - s.policy->ObservationWindow();
        }
        if (needs == KvPolicy::Needs::kNone || !wanted) continue;
        const int32_t slot = start_slot + r;
        logits_.resize(slot + 1);
        for (int64_t h = 0; h < config_.n_heads; ++h) {
          const float* qh = q + (item.first + r) * config_.n_heads * hd + h * hd;
          ComputeLogits(layer, qh, (h / group) * hd, cache, s, slot);
          s.policy->Observe({.layer = layer,
                             .head = h,
                             .query_slot = slot,
                             .prefill = prefill,
                             .logits = absl::MakeConstSpan(logits_)},
                            state);
        }
      }
    }
  }

 private:
  // logits_[j] = q_h . k_j / sqrt(head_dim) for slots j <= slot (keys of KV head offset
  // `kv_offset`, as the attention kernel saw them: decoded from the storage type).
  void ComputeLogits(int64_t layer, const float* qh, int64_t kv_offset, const KvCache& cache,
                     const SequenceState& s, int32_t slot) {
    const int64_t hd = config_.head_dim;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    const int32_t bs = cache.block_size();
    const std::vector<BlockId>& blocks = s.blocks[layer];
    logits_.resize(slot + 1);
    if (s.lazy != nullptr) {  // LazyLLM: slots without KV in this layer were not attended.
      key_.resize(hd);
      for (int32_t j = 0; j <= slot; ++j) {
        if (s.lazy->depth(j) <= layer) {
          logits_[j] = -INFINITY;
          continue;
        }
        cache.ReadKey(blocks[j / bs], j % bs, kv_offset, hd, key_.data());
        logits_[j] = Dot(qh, key_.data(), hd) * scale;
      }
      return;
    }
    if (cache.dtype() == KvDtype::kF32) {
      for (int32_t j = 0; j <= slot; ++j) {
        logits_[j] = Dot(qh, cache.Key(blocks[j / bs], j % bs) + kv_offset, hd) * scale;
      }
      return;
    }
    key_.resize(hd);
    for (int32_t j = 0; j <= slot; ++j) {
      cache.ReadKey(blocks[j / bs], j % bs, kv_offset, hd, key_.data());
      logits_[j] = Dot(qh, key_.data(), hd) * scale;
    }
  }

  // Sets the sequence's layer_attention[layer] to the entry's last query's softmax averaged
  // over heads, and adds it / layers to last_attention (reset at layer 0).
  void RecordAttention(int64_t layer, const float* q, const KvCache& cache, const Item& item,
                       int32_t row) {
    SequenceState& s = *item.sequence;
    const int64_t hd = config_.head_dim;
    const int64_t group = config_.n_heads / config_.n_kv_heads;
    const int32_t slot = s.slots[layer] + item.count - 1;
    if (layer == 0) s.last_attention.assign(slot + 1, 0.0f);
    std::vector<float>& mine = s.layer_attention[layer];
    mine.assign(slot + 1, 0.0f);
    const double weight = 1.0 / static_cast<double>(config_.n_heads);
    for (int64_t h = 0; h < config_.n_heads; ++h) {
      const float* qh = q + static_cast<int64_t>(row) * config_.n_heads * hd + h * hd;
      ComputeLogits(layer, qh, (h / group) * hd, cache, s, slot);
      const float max = *std::max_element(logits_.begin(), logits_.end());
      double sum = 0;
      for (float& x : logits_) sum += (x = std::exp(x - max));
      for (int32_t j = 0; j <= slot; ++j) mine[j] += static_cast<float>(logits_[j] / sum * weight);
    }
    // The layer average is by slot: meaningful when every layer keeps the same tokens.
    const size_t n = std::min(mine.size(), s.last_attention.size());
    for (size_t j = 0; j < n; ++j) s.last_attention[j] += mine[j] / config_.n_layers;
  }

  const ModelConfig& config_;
  std::vector<Item> items_;
  std::vector<float> logits_;
  std::vector<float> key_;  // One decoded key head (non-f32 caches).
};

namespace {

int64_t BlocksFor(int64_t tokens, int32_t block_size) {
  return (tokens + block_size - 1) / block_size;
}

// The prefix-cache key of one layer's block of a prefix block with chain hash `hash`.
uint64_t LayerHash(uint64_t hash, int64_t layer) {
  uint64_t h = hash ^ (static_cast<uint64_t>(layer + 1) * 0x9e3779b97f4a7c15ULL);
  h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ULL;
  return h ^ (h >> 31);
}

// Prefix-cache hash of a block: its tokens chained with the previous block's hash, so equal
// hashes mean equal prefixes (up to a 64-bit collision) and equal positions.
uint64_t ChainHash(uint64_t previous, const TokenId* tokens, int32_t n) {
  uint64_t h = previous ^ 0x9e3779b97f4a7c15ULL;
  for (int32_t i = 0; i < n; ++i) {
    h ^= static_cast<uint32_t>(tokens[i]);
    h *= 0xbf58476d1ce4e5b9ULL;  // splitmix64 finaliser steps: every input bit reaches every output bit.
    h ^= h >> 31;
  }
  h *= 0x94d049bb133111ebULL;
  return h ^ (h >> 29);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const EngineOptions& options) {
  if (options.kv_block_size <= 0) {
    return absl::InvalidArgumentError("kv_block_size must be positive");
  }
  if (options.max_batch_tokens <= 0) {
    return absl::InvalidArgumentError("max_batch_tokens must be positive");
  }
  KV_ASSIGN_OR_RETURN(std::unique_ptr<ModelFile> model,
                      LoadModelFile(options.model_path, options.tokenizer_path));
  KV_ASSIGN_OR_RETURN(std::unique_ptr<BpeTokenizer> tokenizer, BpeTokenizer::Create(model->vocab));
  KV_ASSIGN_OR_RETURN(std::unique_ptr<Device> device, Device::Create(options.device));
  SetComputeThreads(options.num_threads);

  const ModelConfig& c = model->config;
  KV_ASSIGN_OR_RETURN(
      std::unique_ptr<ModelRunner> runner,
      ModelRunner::Create(*model, *device,
                          {.weight_type = options.weight_type,
                           .max_batch_tokens = options.max_batch_tokens}));

  const int64_t kv_dim = c.n_kv_heads * c.head_dim;
  // A block is one layer's slab (kv_cache.h): a context needs n_layers tables of blocks.
  const int64_t block_bytes = KvCache::BlockBytes(1, kv_dim, options.kv_block_size, options.kv_dtype);
  const int64_t context_blocks = c.n_layers * BlocksFor(c.context_length, options.kv_block_size);
  int64_t num_blocks = 0;
  if (options.kv_cache_bytes > 0) {
    num_blocks = options.kv_cache_bytes / block_bytes;
  } else {
    num_blocks = std::max<int64_t>(1, options.default_kv_sequences) * context_blocks;
  }
  // At least one full context must fit, or a maximal request could never run.
  const int64_t min_blocks = context_blocks;
  if (num_blocks < min_blocks) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "KV cache of %d blocks (%d bytes each) cannot hold one full context of %d tokens; "
        "give at least %d MiB",
        num_blocks, block_bytes, c.context_length, (min_blocks * block_bytes >> 20) + 1));
  }
  KV_ASSIGN_OR_RETURN(std::unique_ptr<KvCache> kv_cache,
                      KvCache::Create({.kv_dim = kv_dim,
                                       .block_size = options.kv_block_size,
                                       .num_blocks = num_blocks,
                                       .dtype = options.kv_dtype}));
  KV_LOG_INFO("model {}: {} layers, dim {}, {} heads ({} KV), vocab {}, context {}; {} weights; KV "
              "cache {} blocks (one layer each) x {} tokens, {} ({} MiB); device {}",
              c.name, c.n_layers, c.dim, c.n_heads, c.n_kv_heads, c.vocab_size,
              c.context_length, WeightTypeName(runner->weight_type()), num_blocks,
              options.kv_block_size, KvDtypeName(options.kv_dtype),
              (num_blocks * block_bytes) >> 20, device->Describe());
  return std::make_unique<Engine>(PrivateKey{}, options, std::move(model), std::move(tokenizer),
                                  std::move(device), std::move(runner), std::move(kv_cache));
}

Engine::Engine(PrivateKey, EngineOptions options, std::unique_ptr<ModelFile> model,
               std::unique_ptr<BpeTokenizer> tokenizer, std::unique_ptr<Device> device,
               std::unique_ptr<ModelRunner> runner, std::unique_ptr<KvCache> kv_cache)
    : options_(std::move(options)),
      model_(std::move(model)),
      tokenizer_(std::move(tokenizer)),
      device_(std::move(device)),
      runner_(std::move(runner)),
      kv_cache_(std::move(kv_cache)),
      policy_observer_(std::make_unique<PolicyObserver>(model_->config)) {}

Engine::~Engine() = default;

const ModelConfig& Engine::config() const { return model_->config; }
const Vocab& Engine::vocab() const { return model_->vocab; }
const BpeTokenizer& Engine::tokenizer() const { return *tokenizer_; }
const ModelFile& Engine::model() const { return *model_; }
const Device& Engine::device() const { return *device_; }
const EngineOptions& Engine::options() const { return options_; }

WeightType Engine::weight_type() const { return runner_->weight_type(); }

int64_t Engine::parameter_count() const {
  const ModelWeights& w = model_->weights;
  int64_t n = w.token_embedding.num_elements() + w.output_norm.num_elements();
  if (!w.tied_output) n += w.output.num_elements();
  for (const LayerWeights& l : w.layers) {
    for (const TensorData* t : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.ffn_norm,
                                &l.ffn_gate, &l.ffn_up, &l.ffn_down}) {
      n += t->num_elements();
    }
  }
  return n;
}

absl::Status Engine::AddSequence(SequenceId id, SequenceSpec spec) {
  const ModelConfig& c = model_->config;
  if (sequences_.contains(id)) {
    return absl::AlreadyExistsError(absl::StrFormat("sequence %d already exists", id));
  }
  if (spec.prompt.empty()) return absl::InvalidArgumentError("the prompt has no tokens");
  if (static_cast<int64_t>(spec.prompt.size()) >= c.context_length) {
    return absl::InvalidArgumentError(
        absl::StrFormat("prompt has %d tokens; this model's context is %d tokens",
                        spec.prompt.size(), c.context_length));
  }
  for (size_t i = 0; i < spec.prompt.size(); ++i) {
    if (spec.prompt[i] < 0 || spec.prompt[i] >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "prompt token %d (at index %d) is outside the vocabulary [0, %d)", spec.prompt[i], i,
          c.vocab_size));
    }
  }
  KV_RETURN_IF_ERROR(ValidateSamplingParams(spec.sampling));
  auto state = std::make_unique<SequenceState>(spec.sampling);
  state->prompt_length = static_cast<int32_t>(spec.prompt.size());
  state->tokens = std::move(spec.prompt);
  state->tokens.reserve(c.context_length);
  state->max_new_tokens = spec.max_new_tokens;
  state->record_attention = spec.record_attention;
  state->slots.assign(c.n_layers, 0);
  state->blocks.resize(c.n_layers);
  if (state->record_attention) {
    state->positions.resize(c.n_layers);
    state->layer_attention.resize(c.n_layers);
  }
  // "full" is the same as no policy: no statistics, no eviction, bit-identical output.
  if (spec.kv_policy != nullptr && spec.kv_policy->name() != "full") {
    const int32_t policy_layers = spec.kv_policy->num_layers();
    if (policy_layers != 0 && policy_layers != c.n_layers) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "KV policy %s has budgets for %d layers; this model has %d (calibrate it for this "
          "model)", spec.kv_policy->spec().ToString(), policy_layers, c.n_layers));
    }
    state->policy = std::move(spec.kv_policy);
    state->policy_states.resize(policy_layers == 0 ? 1 : policy_layers);
    for (PolicyState& ps : state->policy_states) {
      ps.seed = spec.sampling.seed;
      ps.max_new_tokens = spec.max_new_tokens;
    }
    std::vector<LazyStage> stages = state->policy->LazyStages(c.n_layers);
    if (!stages.empty()) {
      state->lazy = std::make_unique<LazyTokens>(c.n_layers, c.dim, state->prompt_length,
                                                 std::move(stages));
    }
  }
  // Compressed sequences hold slots that are not their prompt's prefix: no sharing for them.
  if (options_.enable_prefix_cache && state->policy == nullptr) MatchCachedPrefix(*state);
  sequences_.emplace(id, std::move(state));
  return absl::OkStatus();
}

void Engine::MatchCachedPrefix(SequenceState& s) {
  const int32_t bs = options_.kv_block_size;
  // The block holding the last prompt token is always computed (its logits are needed), so
  // a shared block is never written.
  const int32_t max_blocks = (s.prompt_length - 1) / bs;
  const int64_t n_layers = static_cast<int64_t>(s.blocks.size());
  uint64_t hash = 0;
  for (int32_t k = 0; k < max_blocks; ++k) {
    const TokenId* tokens = s.tokens.data() + static_cast<int64_t>(k) * bs;
    hash = ChainHash(hash, tokens, bs);
    // Every layer's block must still be cached (each was LRU-evicted on its own).
    int64_t found = 0;
    for (; found < n_layers; ++found) {
      std::optional<BlockId> block = kv_cache_->Lookup(LayerHash(hash, found), tokens);
      if (!block.has_value()) break;
      s.blocks[found].push_back(*block);
    }
    if (found < n_layers) {
      for (int64_t l = 0; l < found; ++l) {
        kv_cache_->Free(s.blocks[l].back());
        s.blocks[l].pop_back();
      }
      break;
    }
    s.block_hashes.push_back(hash);
  }
  s.num_computed = static_cast<int32_t>(s.block_hashes.size()) * bs;
  std::fill(s.slots.begin(), s.slots.end(), s.num_computed);
  if (s.record_attention) {
    for (std::vector<int32_t>& p : s.positions) {
      for (int32_t k = 0; k < s.num_computed; ++k) p.push_back(k);
    }
  }
  s.cached_prompt_tokens = s.num_computed;
  stats_.prefix_cache_query_tokens += s.prompt_length;
  stats_.prefix_cache_hit_tokens += s.cached_prompt_tokens;
}

void Engine::RegisterFullBlocks(SequenceState& s) {
  const int32_t bs = options_.kv_block_size;
  const int32_t full = s.num_computed / bs;
  for (int32_t k = static_cast<int32_t>(s.block_hashes.size()); k < full; ++k) {
    const uint64_t previous = k == 0 ? 0 : s.block_hashes[k - 1];
    const TokenId* tokens = s.tokens.data() + static_cast<int64_t>(k) * bs;
    const uint64_t hash = ChainHash(previous, tokens, bs);
    s.block_hashes.push_back(hash);
    for (size_t l = 0; l < s.blocks.size(); ++l) {
      kv_cache_->RegisterFull(s.blocks[l][k], LayerHash(hash, l), tokens);
    }
  }
}

void Engine::RemoveSequence(SequenceId id) {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) return;
  for (const std::vector<BlockId>& table : it->second->blocks) {
    for (BlockId b : table) kv_cache_->Free(b);
  }
  sequences_.erase(it);
}

void Engine::Preempt(SequenceId id) {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) return;
  SequenceState& s = *it->second;
  for (std::vector<BlockId>& table : s.blocks) {
    for (BlockId b : table) kv_cache_->Free(b);
    table.clear();
  }
  s.block_hashes.clear();
  s.num_computed = 0;
  std::fill(s.slots.begin(), s.slots.end(), 0);
  for (std::vector<int32_t>& p : s.positions) p.clear();
  for (std::vector<float>& a : s.layer_attention) a.clear();
  s.last_attention.clear();
  // Policy state restarts with the recomputation (as OpenVINO does).
  for (PolicyState& ps : s.policy_states) {
    ps = PolicyState{.seed = ps.seed, .max_new_tokens = ps.max_new_tokens};
  }
  if (s.lazy != nullptr) s.lazy->Reset();
}

absl::Status Engine::ForceNextToken(SequenceId id, TokenId token) {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) {
    return absl::NotFoundError(absl::StrFormat("no sequence %d", id));
  }
  SequenceState& s = *it->second;
  if (token < 0 || token >= model_->config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrFormat("token %d is outside the vocabulary", token));
  }
  if (static_cast<int32_t>(s.tokens.size()) <= s.prompt_length ||
      static_cast<int32_t>(s.tokens.size()) - s.num_computed != 1) {
    return absl::FailedPreconditionError("ForceNextToken needs a sampled, not yet computed token");
  }
  s.tokens.back() = token;
  return absl::OkStatus();
}

int32_t Engine::PendingTokens(SequenceId id) const {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) return 0;
  return static_cast<int32_t>(it->second->tokens.size()) - it->second->num_computed;
}

int32_t Engine::TotalTokens(SequenceId id) const {
  auto it = sequences_.find(id);
  return it == sequences_.end() ? 0 : static_cast<int32_t>(it->second->tokens.size());
}

int64_t Engine::BlocksNeeded(SequenceId id, int32_t n) const {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) return 0;
  const SequenceState& s = *it->second;
  int64_t needed = 0;
  for (size_t l = 0; l < s.blocks.size(); ++l) {
    needed += std::max<int64_t>(0, BlocksFor(s.slots[l] + n, options_.kv_block_size) -
                                       static_cast<int64_t>(s.blocks[l].size()));
  }
  return needed;
}

int32_t Engine::KvSlots(SequenceId id) const {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) return 0;
  const std::vector<int32_t>& slots = it->second->slots;
  int64_t sum = 0;
  for (int32_t n : slots) sum += n;
  return static_cast<int32_t>((sum + slots.size() - 1) / slots.size());
}

int32_t Engine::KvSlots(SequenceId id, int64_t layer) const {
  auto it = sequences_.find(id);
  if (it == sequences_.end() || layer < 0 || layer >= model_->config.n_layers) return 0;
  return it->second->slots[layer];
}

int64_t Engine::SequenceKvBytes(SequenceId id) const {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) return 0;
  const SequenceState& s = *it->second;
  int64_t bytes = s.lazy != nullptr ? s.lazy->bytes() : 0;
  for (const std::vector<BlockId>& table : s.blocks) {
    bytes += static_cast<int64_t>(table.size()) * kv_cache_->block_bytes();
  }
  for (const PolicyState& ps : s.policy_states) {
    bytes += static_cast<int64_t>(ps.scores.capacity() * sizeof(float));
  }
  return bytes;
}

int32_t Engine::CompactLayer(SequenceState& s, int64_t layer, const std::vector<int32_t>& keep) {
  const int32_t bs = options_.kv_block_size;
  std::vector<BlockId>& blocks = s.blocks[layer];
  for (size_t i = 0; i < keep.size(); ++i) {
    const int32_t src = keep[i];
    const int32_t dst = static_cast<int32_t>(i);
    if (src == dst) continue;  // keep is ascending, so dst < src: a forward copy is safe.
    kv_cache_->CopySlot(blocks[src / bs], src % bs, blocks[dst / bs], dst % bs);
  }
  if (s.record_attention) {
    std::vector<int32_t>& positions = s.positions[layer];
    for (size_t i = 0; i < keep.size(); ++i) positions[i] = positions[keep[i]];
    positions.resize(keep.size());
  }
  const int32_t evicted = s.slots[layer] - static_cast<int32_t>(keep.size());
  s.slots[layer] = static_cast<int32_t>(keep.size());
  const size_t blocks_needed = static_cast<size_t>(BlocksFor(s.slots[layer], bs));
  while (blocks.size() > blocks_needed) {
    kv_cache_->Free(blocks.back());
    blocks.pop_back();
  }
  return evicted;
}

void Engine::ApplyPolicy(SequenceState& s) {
  const int64_t n_layers = static_cast<int64_t>(s.blocks.size());
  int64_t evicted_slots = 0;  // Summed over layers.
  for (size_t i = 0; i < s.policy_states.size(); ++i) {
    PolicyState& state = s.policy_states[i];
    const int64_t layer = static_cast<int64_t>(i);
    const SequenceKvView view{.num_slots = s.slots[layer],
                              .prompt_length = s.prompt_length,
                              .max_new_tokens = s.max_new_tokens,
                              .prompt_done = s.num_computed >= s.prompt_length};
    const std::vector<int32_t> keep = s.per_layer() ? s.policy->PlanLayer(view, layer, state)
                                                    : s.policy->Plan(view, state);
    if (keep.empty() || static_cast<int32_t>(keep.size()) >= view.num_slots) continue;
    std::vector<float>& scores = state.scores;
    for (size_t k = 0; k < keep.size(); ++k) scores[k] = scores[keep[k]];
    scores.resize(keep.size());
    state.evicted_tokens += view.num_slots - static_cast<int32_t>(keep.size());
    if (s.per_layer()) {
      evicted_slots += CompactLayer(s, layer, keep);
    } else {  // One plan for every layer.
      for (int64_t l = 0; l < n_layers; ++l) evicted_slots += CompactLayer(s, l, keep);
    }
  }
  // Tokens: slots averaged over layers (a per-layer policy evicts different tokens per layer).
  if (evicted_slots > 0) {
    stats_.evicted_tokens_by_policy[std::string(s.policy->name())] += evicted_slots / n_layers;
  }
}

absl::Span<const int32_t> Engine::SlotPositions(SequenceId id) const {
  return SlotPositions(id, 0);
}

const Engine::SequenceState* Engine::RecordingSequence(SequenceId id, int64_t layer) const {
  auto it = sequences_.find(id);
  if (it == sequences_.end() || !it->second->record_attention || layer < 0 ||
      layer >= model_->config.n_layers) {
    return nullptr;
  }
  return it->second.get();
}

absl::Span<const int32_t> Engine::SlotPositions(SequenceId id, int64_t layer) const {
  const SequenceState* s = RecordingSequence(id, layer);
  return s == nullptr ? absl::Span<const int32_t>() : s->positions[layer];
}

absl::Span<const float> Engine::LastQueryAttention(SequenceId id, int64_t layer) const {
  const SequenceState* s = RecordingSequence(id, layer);
  return s == nullptr ? absl::Span<const float>() : s->layer_attention[layer];
}

absl::Span<const float> Engine::LastQueryAttention(SequenceId id) const {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) return {};
  return it->second->last_attention;
}

int32_t Engine::CachedPromptTokens(SequenceId id) const {
  auto it = sequences_.find(id);
  return it == sequences_.end() ? 0 : it->second->cached_prompt_tokens;
}

int64_t Engine::free_kv_blocks() const { return kv_cache_->free_blocks(); }
int64_t Engine::total_kv_blocks() const { return kv_cache_->total_blocks(); }
int64_t Engine::kv_block_bytes() const { return kv_cache_->block_bytes(); }

absl::StatusOr<StepResult> Engine::Step(const StepPlan& plan) {
  // Validate the whole plan and its KV needs before changing anything.
  int64_t total_tokens = 0;
  int64_t blocks_needed = 0;
  absl::flat_hash_set<SequenceId> seen;
  for (const StepPlan::Entry& e : plan.entries) {
    auto it = sequences_.find(e.sequence);
    if (it == sequences_.end()) {
      return absl::InvalidArgumentError(absl::StrFormat("plan names unknown sequence %d", e.sequence));
    }
    if (!seen.insert(e.sequence).second) {
      return absl::InvalidArgumentError(absl::StrFormat("plan names sequence %d twice", e.sequence));
    }
    const int32_t pending = PendingTokens(e.sequence);
    if (e.num_tokens < 1 || e.num_tokens > pending) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "plan asks for %d tokens of sequence %d, which has %d pending", e.num_tokens,
          e.sequence, pending));
    }
    if (it->second->num_computed + e.num_tokens > model_->config.context_length) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "sequence %d would exceed the context length %d", e.sequence,
          model_->config.context_length));
    }
    total_tokens += e.num_tokens;
    blocks_needed += BlocksNeeded(e.sequence, e.num_tokens);
  }
  if (total_tokens > options_.max_batch_tokens) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "plan has %d tokens; the step limit is %d", total_tokens, options_.max_batch_tokens));
  }
  if (blocks_needed > kv_cache_->free_blocks()) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "plan needs %d KV blocks; %d are free", blocks_needed, kv_cache_->free_blocks()));
  }

  // Allocate blocks and pack the ragged batch, LazyLLM entries last (the runner compacts
  // their rows between layers). batch_entry_[i]: the batch entry of plan entry i.
  ForwardBatch& batch = batch_;
  batch.tokens.clear();
  batch.entries.clear();
  policy_observer_->items().clear();
  batch_order_.clear();
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t i = 0; i < plan.entries.size(); ++i) {
      const bool lazy = sequences_.at(plan.entries[i].sequence)->lazy != nullptr;
      if (lazy == (pass == 1)) batch_order_.push_back(static_cast<int32_t>(i));
    }
  }
  batch_entry_.resize(plan.entries.size());
  for (const int32_t plan_index : batch_order_) {
    const StepPlan::Entry& e = plan.entries[plan_index];
    batch_entry_[plan_index] = static_cast<int32_t>(batch.entries.size());
    SequenceState& s = *sequences_.at(e.sequence);
    for (size_t l = 0; l < s.blocks.size(); ++l) {
      const int64_t need = BlocksFor(s.slots[l] + e.num_tokens, options_.kv_block_size) -
                           static_cast<int64_t>(s.blocks[l].size());
      for (int64_t i = 0; i < need; ++i) s.blocks[l].push_back(*kv_cache_->Allocate());
    }
    ForwardBatch::Entry entry;
    entry.first = static_cast<int32_t>(batch.tokens.size());
    entry.count = e.num_tokens;
    entry.start_position = s.num_computed;
    entry.start_slot = s.slots[0];
    // s.slots keeps the step's start values until the runner is done.
    if (s.per_layer()) entry.layer_start_slots = s.slots.data();
    entry.tables = &s.blocks;
    entry.want_logits = s.num_computed + e.num_tokens == static_cast<int32_t>(s.tokens.size());
    entry.lazy = s.lazy.get();
    for (size_t i = 0; i < s.policy_states.size(); ++i) {
      s.policy_states[i].scores.resize(s.slots[i] + e.num_tokens, 0.0f);
    }
    if (s.policy != nullptr || s.record_attention) {
      policy_observer_->items().push_back({.sequence = &s,
                                           .entry = static_cast<int32_t>(batch.entries.size()),
                                           .first = entry.first,
                                           .count = e.num_tokens,
                                           .first_token = s.num_computed,
                                           .want_logits = entry.want_logits});
    }
    batch.tokens.insert(batch.tokens.end(), s.tokens.begin() + s.num_computed,
                        s.tokens.begin() + s.num_computed + e.num_tokens);
    batch.entries.push_back(entry);
  }

  batch.observer = policy_observer_->items().empty() ? nullptr : policy_observer_.get();
  KV_ASSIGN_OR_RETURN(absl::Span<const float> logits, runner_->Forward(batch, *kv_cache_));

  stats_.computed_tokens += total_tokens;
  stats_.computed_token_layers += runner_->last_token_layers();
  StepResult result;
  result.batch_tokens = static_cast<int32_t>(total_tokens);
  result.outputs.reserve(plan.entries.size());
  const int64_t vocab = model_->config.vocab_size;
  // Logit rows come in batch order.
  logit_row_.assign(batch.entries.size(), -1);
  int64_t rows_so_far = 0;
  for (size_t b = 0; b < batch.entries.size(); ++b) {
    if (batch.entries[b].want_logits) logit_row_[b] = rows_so_far++;
  }
  for (size_t i = 0; i < plan.entries.size(); ++i) {
    SequenceState& s = *sequences_.at(plan.entries[i].sequence);
    if (s.record_attention) {
      for (std::vector<int32_t>& p : s.positions) {
        for (int32_t k = 0; k < plan.entries[i].num_tokens; ++k) p.push_back(s.num_computed + k);
      }
    }
    s.num_computed += plan.entries[i].num_tokens;
    for (int32_t& n : s.slots) n += plan.entries[i].num_tokens;
    if (options_.enable_prefix_cache && s.policy == nullptr) RegisterFullBlocks(s);
    StepResult::Output out{.sequence = plan.entries[i].sequence, .token = std::nullopt};
    const int64_t row = logit_row_[batch_entry_[i]];
    if (row >= 0) {
      const absl::Span<const float> row_logits = logits.subspan(row * vocab, vocab);
      const TokenId token = s.sampler.Sample(row_logits);
      if (plan.return_logits) out.logits = row_logits;
      s.tokens.push_back(token);
      out.token = token;
    }
    if (s.policy != nullptr) {
      ApplyPolicy(s);
      if (out.token.has_value()) {
        for (PolicyState& ps : s.policy_states) ++ps.decode_step;
      }
    }
    result.outputs.push_back(out);
  }
  return result;
}

}  // namespace kvserve::engine
