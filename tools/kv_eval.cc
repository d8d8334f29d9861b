#include "tools/kv_eval.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <random>
#include <sstream>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "engine/common/status_macros.h"
#include "engine/policy/kv_policy.h"
#include "engine/policy/scoring_policy.h"

namespace kvserve::tools {
namespace {

using engine::Engine;
using engine::SequenceId;
using engine::StepPlan;
using engine::StepResult;
using engine::TokenId;
using Clock = std::chrono::steady_clock;

// Runs `plan` split into steps of at most the engine's batch token limit (prefill chunks).
absl::StatusOr<std::vector<StepResult::Output>> StepAll(Engine& engine,
                                                         const std::vector<SequenceId>& ids,
                                                         bool return_logits,
                                                         std::vector<std::vector<float>>* logits) {
  std::vector<StepResult::Output> outputs;
  for (SequenceId id : ids) {
    // Each sequence's pending tokens go in one step when they fit, else in chunks.
    while (engine.PendingTokens(id) > 0) {
      StepPlan plan;
      plan.return_logits = return_logits;
      plan.entries.push_back(
          {.sequence = id,
           .num_tokens = std::min(engine.PendingTokens(id), engine.options().max_batch_tokens)});
      KV_ASSIGN_OR_RETURN(StepResult r, engine.Step(plan));
      if (r.outputs[0].token.has_value()) {
        outputs.push_back(r.outputs[0]);
        if (logits != nullptr) {
          logits->emplace_back(r.outputs[0].logits.begin(), r.outputs[0].logits.end());
        }
        break;
      }
    }
  }
  return outputs;
}

// log-softmax of `logits` in double.
void LogSoftmax(absl::Span<const float> logits, std::vector<double>& out) {
  out.resize(logits.size());
  double max = -INFINITY;
  for (float v : logits) max = std::max<double>(max, v);
  double sum = 0;
  for (float v : logits) sum += std::exp(v - max);
  const double log_z = max + std::log(sum);
  for (size_t i = 0; i < logits.size(); ++i) out[i] = logits[i] - log_z;
}

TokenId Argmax(absl::Span<const float> logits) {
  // Lowest id on ties, as the greedy sampler.
  return static_cast<TokenId>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

// Per corpus sequence sums; the unit the bootstrap resamples.
struct SequenceStats {
  double nll_full = 0;
  double nll_policy = 0;
  double kl = 0;
  double agree = 0;
  double first_agree = 0;  // The first scored position (the prefill's logits) agreed.
  double retained = 0;  // Sum over positions of the retained attention mass.
  int64_t tokens = 0;
  int32_t first_divergence = 0;
  bool diverged = false;
  int64_t kv_bytes = 0;
  int64_t kv_bytes_full = 0;
  int32_t kv_slots = 0;
  double ttft_s = 0;
  double ttft_full_s = 0;
};

struct Totals {
  double delta_ppl = 0;
  double kl = 0;
  double top1 = 0;
};

Totals Summarise(absl::Span<const SequenceStats> stats, absl::Span<const int32_t> pick) {
  double nll_full = 0, nll_policy = 0, kl = 0, agree = 0;
  int64_t tokens = 0;
  for (int32_t i : pick) {
    nll_full += stats[i].nll_full;
    nll_policy += stats[i].nll_policy;
    kl += stats[i].kl;
    agree += stats[i].agree;
    tokens += stats[i].tokens;
  }
  const double n = std::max<int64_t>(tokens, 1);
  return {.delta_ppl = 100.0 * (std::exp((nll_policy - nll_full) / n) - 1.0),
          .kl = kl / n,
          .top1 = agree / n};
}

double Percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double pos = q * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (pos - static_cast<double>(lo)) * (v[hi] - v[lo]);
}

// Removes the listed engine sequences when it goes out of scope, so an evaluation that
// fails half way leaves the engine clean for the next one (unknown ids are ignored).
class SequenceCleanup {
 public:
  SequenceCleanup() = default;
  SequenceCleanup(const SequenceCleanup&) = delete;
  SequenceCleanup& operator=(const SequenceCleanup&) = delete;
  ~SequenceCleanup() {
    for (auto [engine, id] : ids_) engine->RemoveSequence(id);
  }
  void Add(Engine& engine, SequenceId id) { ids_.push_back({&engine, id}); }

 private:
  std::vector<std::pair<Engine*, SequenceId>> ids_;
};

// The per-step state of one corpus sequence under evaluation.
struct Item {
  const CorpusSequence* corpus = nullptr;
  SequenceId tf_policy = 0;
  SequenceId tf_full = 0;
  SequenceId greedy_policy = 0;
  SequenceId greedy_full = 0;
  int32_t target = 0;          // Corpus index the teacher-forced pair predicts next.
  int32_t greedy_done = 0;     // Greedy tokens compared so far.
  // The policy cache the next teacher-forced query attends to: the live slots' positions
  // before the step, plus the positions the step computes (from computed_before on).
  std::vector<std::vector<int32_t>> kept_before;  // Per layer.
  int32_t computed_before = 0;
  bool tf_active = true;
  bool greedy_active = true;
  SequenceStats stats;
};

}  // namespace

engine::EngineOptions EvalEngineOptions(const std::string& model_path, int32_t batch) {
  engine::EngineOptions options;
  options.model_path = model_path;
  options.num_threads = 1;
  options.enable_prefix_cache = false;
  options.default_kv_sequences = 4 * std::max(batch, 1) + 4;
  options.max_batch_tokens = 512;
  return options;
}

absl::Status CheckKvDtype(std::string_view kv_dtype) {
  return engine::ParseKvDtype(kv_dtype).status();
}

absl::StatusOr<std::vector<CorpusSequence>> MakeCorpus(Engine& engine,
                                                       const CorpusOptions& options) {
  const int64_t context = engine.config().context_length;
  if (options.sequences < 1 || options.tokens < 2 || options.tokens >= context) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "corpus needs >= 1 sequence of 2..%d tokens; got %d of %d", context - 1,
        options.sequences, options.tokens));
  }
  std::vector<CorpusSequence> corpus(options.sequences);
  const int32_t batch = std::max(options.batch, 1);
  for (int32_t b0 = 0; b0 < options.sequences; b0 += batch) {
    const int32_t b1 = std::min(options.sequences, b0 + batch);
    std::vector<SequenceId> ids;
    SequenceCleanup cleanup;
    for (int32_t i = b0; i < b1; ++i) {
      corpus[i].seed = options.first_seed + static_cast<uint64_t>(i);
      corpus[i].tokens = {engine.vocab().bos_id};
      engine::SequenceSpec spec;
      spec.prompt = corpus[i].tokens;
      spec.sampling = {.temperature = options.temperature, .top_p = options.top_p,
                       .seed = corpus[i].seed};
      spec.max_new_tokens = options.tokens - 1;
      KV_RETURN_IF_ERROR(engine.AddSequence(static_cast<SequenceId>(i), std::move(spec)));
      ids.push_back(static_cast<SequenceId>(i));
      cleanup.Add(engine, static_cast<SequenceId>(i));
    }
    while (true) {
      StepPlan plan;
      for (SequenceId id : ids) {
        if (static_cast<int32_t>(corpus[id].tokens.size()) < options.tokens) {
          plan.entries.push_back({.sequence = id, .num_tokens = engine.PendingTokens(id)});
        }
      }
      if (plan.empty()) break;
      KV_ASSIGN_OR_RETURN(StepResult r, engine.Step(plan));
      for (const StepResult::Output& out : r.outputs) {
        if (out.token.has_value()) corpus[out.sequence].tokens.push_back(*out.token);
      }
    }
  }
  return corpus;
}

std::string CorpusToJsonLines(absl::Span<const CorpusSequence> corpus) {
  std::string out;
  for (const CorpusSequence& s : corpus) {
    nlohmann::json line = {{"seed", s.seed}, {"tokens", s.tokens}};
    out += line.dump();
    out += '\n';
  }
  return out;
}

absl::StatusOr<std::vector<CorpusSequence>> ParseCorpus(std::string_view text) {
  std::vector<CorpusSequence> corpus;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(absl::string_view(text.data(), text.size()), '\n')) {
    ++line_number;
    if (line.empty() || line.front() == '#') continue;
    nlohmann::json j = nlohmann::json::parse(line.begin(), line.end(), nullptr,
                                             /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object() || !j.contains("seed") || !j.contains("tokens") ||
        !j["seed"].is_number_unsigned() || !j["tokens"].is_array() || j["tokens"].empty()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "corpus line %d: expected {\"seed\": N, \"tokens\": [ids...]}", line_number));
    }
    CorpusSequence s;
    s.seed = j["seed"].get<uint64_t>();
    for (const nlohmann::json& t : j["tokens"]) {
      if (!t.is_number_integer()) {
        return absl::InvalidArgumentError(
            absl::StrFormat("corpus line %d: token ids must be integers", line_number));
      }
      s.tokens.push_back(t.get<TokenId>());
    }
    corpus.push_back(std::move(s));
  }
  return corpus;
}

absl::StatusOr<std::vector<CorpusSequence>> ReadCorpus(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read corpus file ", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return ParseCorpus(buffer.str());
}

absl::StatusOr<EvalResult> EvaluatePolicy(Engine& engine,
                                          absl::Span<const CorpusSequence> corpus,
                                          const EvalOptions& options) {
  const Clock::time_point start = Clock::now();
  KV_ASSIGN_OR_RETURN(const engine::KvDtype kv_dtype, engine::ParseKvDtype(options.kv_dtype));
  KV_ASSIGN_OR_RETURN(std::shared_ptr<const engine::KvPolicy> policy,
                      engine::CreateKvPolicy(options.policy_spec, options.policy_context));
  if (options.sequences < 1 || options.sequences > static_cast<int32_t>(corpus.size())) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "asked for %d sequences; the corpus has %d", options.sequences, corpus.size()));
  }
  const int32_t p = options.prompt_tokens;
  const int64_t context = engine.config().context_length;
  int32_t forced = -1;
  for (int32_t i = 0; i < options.sequences; ++i) {
    const int32_t n = static_cast<int32_t>(corpus[i].tokens.size());
    if (p < 1 || n <= p || n > context) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "corpus sequence %d has %d tokens; need more than --prompt-tokens %d and at most %d",
          i, n, p, context));
    }
    forced = forced < 0 ? n - p : std::min(forced, n - p);
  }
  const int32_t greedy_tokens = std::min<int64_t>(
      options.greedy_tokens < 0 ? forced : options.greedy_tokens, context - p);

  EvalResult result;
  result.policy = policy->spec().ToString();
  result.policy_name = std::string(policy->name());
  if (const auto* scoring = dynamic_cast<const engine::ScoringPolicy*>(policy.get())) {
    result.keep = scoring->params().keep;
  }
  result.kv_dtype = options.kv_dtype;
  result.sequences = options.sequences;
  result.prompt_tokens = p;
  result.policy_seed = options.policy_seed;
  result.greedy_tokens = greedy_tokens;

  // The full-cache reference runs on `engine`; the policy sequences on an engine storing KV
  // as kv_dtype: `engine` itself when it already does, else a second engine like it.
  std::unique_ptr<Engine> own_policy_engine;
  if (kv_dtype != engine.options().kv_dtype) {
    engine::EngineOptions policy_options = engine.options();
    policy_options.kv_dtype = kv_dtype;
    KV_ASSIGN_OR_RETURN(own_policy_engine, Engine::Create(policy_options));
  }
  Engine& pe = own_policy_engine != nullptr ? *own_policy_engine : engine;
  // Ids come four per corpus sequence (base = 4 * index): tf_policy, tf_full, greedy_policy,
  // greedy_full; the policy ones (even offsets) live on `pe`.
  auto engine_of = [&](SequenceId id) -> Engine& { return id % 2 == 0 ? pe : engine; };

  std::vector<SequenceStats> all_stats;
  std::vector<double> lp_policy, lp_full;
  std::vector<int32_t> attending;
  const int32_t batch = std::max(options.batch, 1);
  for (int32_t b0 = 0; b0 < options.sequences; b0 += batch) {
    const int32_t b1 = std::min(options.sequences, b0 + batch);
    std::vector<Item> items(b1 - b0);
    SequenceCleanup cleanup;
    for (int32_t k = 0; k < b1 - b0; ++k) {
      Item& it = items[k];
      it.corpus = &corpus[b0 + k];
      it.target = p;
      const SequenceId base = 4 * static_cast<SequenceId>(b0 + k);
      it.tf_policy = base;
      it.tf_full = base + 1;
      it.greedy_policy = base + 2;
      it.greedy_full = base + 3;
      const int32_t n = static_cast<int32_t>(it.corpus->tokens.size());
      for (SequenceId id : {it.tf_policy, it.tf_full, it.greedy_policy, it.greedy_full}) {
        engine::SequenceSpec spec;
        spec.prompt.assign(it.corpus->tokens.begin(), it.corpus->tokens.begin() + p);
        spec.sampling = {.temperature = 0.0f,
                         .seed = options.policy_seed * 1000000ULL + it.corpus->seed};
        const bool with_policy = id == it.tf_policy || id == it.greedy_policy;
        if (with_policy) spec.kv_policy = policy;
        spec.max_new_tokens = id == it.tf_policy || id == it.tf_full ? n - p : greedy_tokens;
        spec.record_attention = id == it.tf_policy || id == it.tf_full;
        KV_RETURN_IF_ERROR(engine_of(id).AddSequence(id, std::move(spec)));
        cleanup.Add(engine_of(id), id);
      }
    }
    // Teacher-forced prefills one at a time, timed (TTFT); the logits are scored below.
    absl::flat_hash_map<SequenceId, std::vector<float>> pending_logits;
    for (Item& it : items) {
      for (SequenceId id : {it.tf_policy, it.tf_full}) {
        std::vector<std::vector<float>> logits;
        const Clock::time_point t0 = Clock::now();
        KV_ASSIGN_OR_RETURN(auto outs, StepAll(engine_of(id), {id}, true, &logits));
        const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
        (id == it.tf_policy ? it.stats.ttft_s : it.stats.ttft_full_s) = seconds;
        pending_logits[id] = std::move(logits.at(0));
      }
    }

    // Scores one teacher-forced position; returns false when the pair is finished.
    auto score_tf = [&](Item& it, absl::Span<const float> policy_logits,
                        absl::Span<const float> full_logits) -> absl::StatusOr<bool> {
      const TokenId target = it.corpus->tokens[it.target];
      LogSoftmax(policy_logits, lp_policy);
      LogSoftmax(full_logits, lp_full);
      double kl = 0;
      for (size_t v = 0; v < lp_full.size(); ++v) {
        kl += std::exp(lp_full[v]) * (lp_full[v] - lp_policy[v]);
      }
      it.stats.kl += std::max(kl, 0.0);
      it.stats.nll_policy -= lp_policy[target];
      it.stats.nll_full -= lp_full[target];
      const double same = Argmax(policy_logits) == Argmax(full_logits) ? 1 : 0;
      it.stats.agree += same;
      if (it.stats.tokens == 0) it.stats.first_agree = same;
      // Per layer (a per-layer policy keeps different tokens in each), averaged over layers.
      if (it.kept_before.empty()) it.kept_before.resize(engine.config().n_layers);  // Prefill.
      double retained = 0;
      for (size_t l = 0; l < it.kept_before.size(); ++l) {
        attending.assign(it.kept_before[l].begin(), it.kept_before[l].end());
        for (int32_t k = it.computed_before; k < it.target; ++k) attending.push_back(k);
        retained += RetainedAttentionMass(engine.LastQueryAttention(it.tf_full, l), attending);
      }
      it.stats.retained += retained / static_cast<double>(it.kept_before.size());
      ++it.stats.tokens;
      ++it.target;
      if (it.target == static_cast<int32_t>(it.corpus->tokens.size())) {
        it.stats.kv_bytes = pe.SequenceKvBytes(it.tf_policy);
        it.stats.kv_bytes_full = engine.SequenceKvBytes(it.tf_full);
        it.stats.kv_slots = pe.KvSlots(it.tf_policy);
        pe.RemoveSequence(it.tf_policy);
        engine.RemoveSequence(it.tf_full);
        return false;
      }
      // The sampled tokens are replaced by the corpus token just scored (teacher forcing).
      KV_RETURN_IF_ERROR(pe.ForceNextToken(it.tf_policy, target));
      KV_RETURN_IF_ERROR(engine.ForceNextToken(it.tf_full, target));
      return true;
    };
    // Greedy pairs: compare the tokens of the same position; stop at the first difference.
    auto step_greedy = [&](Item& it, TokenId a, TokenId b) {
      if (a != b) {
        it.stats.first_divergence = it.greedy_done;
        it.stats.diverged = true;
      } else if (++it.greedy_done >= greedy_tokens) {
        it.stats.first_divergence = it.greedy_done;
      } else {
        return true;
      }
      pe.RemoveSequence(it.greedy_policy);
      engine.RemoveSequence(it.greedy_full);
      return false;
    };
    for (Item& it : items) {
      KV_ASSIGN_OR_RETURN(it.tf_active, score_tf(it, pending_logits[it.tf_policy],
                                                 pending_logits[it.tf_full]));
      KV_ASSIGN_OR_RETURN(auto first_policy, StepAll(pe, {it.greedy_policy},
                                                     /*return_logits=*/false, nullptr));
      KV_ASSIGN_OR_RETURN(auto first_full, StepAll(engine, {it.greedy_full},
                                                   /*return_logits=*/false, nullptr));
      it.greedy_active = step_greedy(it, *first_policy.at(0).token, *first_full.at(0).token);
    }

    while (true) {
      // One plan per engine (a single plan when both are the same engine).
      StepPlan plan, policy_plan;
      plan.return_logits = true;
      policy_plan.return_logits = true;
      StepPlan& pp = &pe == &engine ? plan : policy_plan;
      for (Item& it : items) {
        if (it.tf_active) {
          it.kept_before.resize(pe.config().n_layers);
          for (int64_t l = 0; l < pe.config().n_layers; ++l) {
            const absl::Span<const int32_t> kept = pe.SlotPositions(it.tf_policy, l);
            it.kept_before[l].assign(kept.begin(), kept.end());
          }
          it.computed_before = pe.TotalTokens(it.tf_policy) - pe.PendingTokens(it.tf_policy);
          pp.entries.push_back({.sequence = it.tf_policy, .num_tokens = 1});
          plan.entries.push_back({.sequence = it.tf_full, .num_tokens = 1});
        }
        if (it.greedy_active) {
          pp.entries.push_back({.sequence = it.greedy_policy, .num_tokens = 1});
          plan.entries.push_back({.sequence = it.greedy_full, .num_tokens = 1});
        }
      }
      if (plan.empty() && policy_plan.empty()) break;
      StepResult r, policy_r;
      if (!plan.empty()) {
        KV_ASSIGN_OR_RETURN(r, engine.Step(plan));
      }
      if (!policy_plan.empty()) {
        KV_ASSIGN_OR_RETURN(policy_r, pe.Step(policy_plan));
      }
      absl::flat_hash_map<SequenceId, const StepResult::Output*> by_id;
      for (const StepResult::Output& out : r.outputs) by_id[out.sequence] = &out;
      for (const StepResult::Output& out : policy_r.outputs) by_id[out.sequence] = &out;
      for (Item& it : items) {
        if (it.tf_active && by_id.contains(it.tf_policy)) {
          KV_ASSIGN_OR_RETURN(it.tf_active, score_tf(it, by_id[it.tf_policy]->logits,
                                                     by_id[it.tf_full]->logits));
        }
        if (it.greedy_active && by_id.contains(it.greedy_policy)) {
          it.greedy_active = step_greedy(it, *by_id[it.greedy_policy]->token,
                                         *by_id[it.greedy_full]->token);
        }
      }
    }
    for (Item& it : items) all_stats.push_back(it.stats);
  }

  // Aggregates and paired bootstrap CIs over sequences.
  std::vector<int32_t> everyone(all_stats.size());
  for (size_t i = 0; i < everyone.size(); ++i) everyone[i] = static_cast<int32_t>(i);
  const Totals point = Summarise(all_stats, everyone);
  double nll_full = 0, nll_policy = 0, bytes = 0, bytes_full = 0, slots = 0, ttft = 0,
         ttft_full = 0, divergence = 0, diverged = 0, retained = 0, first_agree = 0;
  for (const SequenceStats& s : all_stats) {
    first_agree += s.first_agree;
    result.scored_tokens += s.tokens;
    retained += s.retained;
    nll_full += s.nll_full;
    nll_policy += s.nll_policy;
    bytes += static_cast<double>(s.kv_bytes);
    bytes_full += static_cast<double>(s.kv_bytes_full);
    slots += s.kv_slots;
    ttft += s.ttft_s;
    ttft_full += s.ttft_full_s;
    divergence += s.first_divergence;
    diverged += s.diverged ? 1 : 0;
  }
  const double n = static_cast<double>(all_stats.size());
  const double tokens = static_cast<double>(std::max<int64_t>(result.scored_tokens, 1));
  result.ppl_full = std::exp(nll_full / tokens);
  result.ppl_policy = std::exp(nll_policy / tokens);
  result.delta_ppl = {point.delta_ppl, point.delta_ppl, point.delta_ppl};
  result.mean_kl = {point.kl, point.kl, point.kl};
  result.top1_agreement = {point.top1, point.top1, point.top1};
  result.retained_attention_mass = retained / tokens;
  result.first_token_agreement = first_agree / n;
  result.kv_bytes_per_sequence = bytes / n;
  result.kv_bytes_full_per_sequence = bytes_full / n;
  result.kv_slots_per_sequence = slots / n;
  result.ttft_s = ttft / n;
  result.ttft_full_s = ttft_full / n;
  result.first_divergence = divergence / n;
  result.diverged_fraction = diverged / n;
  if (options.bootstrap_samples > 0) {
    std::mt19937_64 rng(options.bootstrap_seed);
    std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(all_stats.size()) - 1);
    std::vector<double> d, k, t;
    std::vector<int32_t> sample(all_stats.size());
    for (int32_t r = 0; r < options.bootstrap_samples; ++r) {
      for (int32_t& i : sample) i = pick(rng);
      const Totals boot = Summarise(all_stats, sample);
      d.push_back(boot.delta_ppl);
      k.push_back(boot.kl);
      t.push_back(boot.top1);
    }
    result.delta_ppl.lo = Percentile(d, 0.025);
    result.delta_ppl.hi = Percentile(d, 0.975);
    result.mean_kl.lo = Percentile(k, 0.025);
    result.mean_kl.hi = Percentile(k, 0.975);
    result.top1_agreement.lo = Percentile(t, 0.025);
    result.top1_agreement.hi = Percentile(t, 0.975);
  }
  result.wall_s = std::chrono::duration<double>(Clock::now() - start).count();
  return result;
}

double RetainedAttentionMass(absl::Span<const float> full_attention,
                             absl::Span<const int32_t> kept) {
  double sum = 0;
  for (int32_t position : kept) {
    if (position >= 0 && position < static_cast<int32_t>(full_attention.size())) {
      sum += full_attention[position];
    }
  }
  return sum;
}

std::vector<std::string> GridSpecs() {
  std::vector<std::string> specs = {"full"};
  for (const char* name : {"window", "h2o", "keyformer", "snapkv"}) {
    for (const char* keep : {"1", "0.5", "0.3", "0.2", "0.1"}) {
      specs.push_back(absl::StrCat(name, ":keep=", keep));
    }
  }
  return specs;
}

nlohmann::json ToJson(const EvalResult& r) {
  return {
      {"policy", r.policy},
      {"policy_name", r.policy_name},
      {"keep", r.keep},
      {"kv_dtype", r.kv_dtype},
      {"sequences", r.sequences},
      {"prompt_tokens", r.prompt_tokens},
      {"policy_seed", r.policy_seed},
      {"scored_tokens", r.scored_tokens},
      {"ppl_full", r.ppl_full},
      {"ppl_policy", r.ppl_policy},
      {"delta_ppl", r.delta_ppl.value},
      {"delta_ppl_unit", "percent"},
      {"delta_ppl_ci95", {r.delta_ppl.lo, r.delta_ppl.hi}},
      {"mean_kl", r.mean_kl.value},
      {"mean_kl_ci95", {r.mean_kl.lo, r.mean_kl.hi}},
      {"top1_agreement", r.top1_agreement.value},
      {"top1_agreement_ci95", {r.top1_agreement.lo, r.top1_agreement.hi}},
      {"first_divergence", r.first_divergence},
      {"diverged_fraction", r.diverged_fraction},
      {"greedy_tokens", r.greedy_tokens},
      {"kv_bytes_per_sequence", r.kv_bytes_per_sequence},
      {"kv_bytes_full_per_sequence", r.kv_bytes_full_per_sequence},
      {"kv_slots_per_sequence", r.kv_slots_per_sequence},
      {"ttft_s", r.ttft_s},
      {"ttft_full_s", r.ttft_full_s},
      {"retained_attention_mass", r.retained_attention_mass},
      {"first_token_agreement", r.first_token_agreement},
      {"wall_s", r.wall_s},
  };
}

std::string MarkdownTable(absl::Span<const EvalResult> results) {
  std::string out =
      "| policy | keep | KV | ΔPPL % [95% CI] | mean KL (nats) [95% CI] | top-1 agree [95% CI] | "
      "retained attn | first div. (greedy) | KV bytes/seq | vs full | TTFT ms | seqs |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const EvalResult& r : results) {
    absl::StrAppendFormat(
        &out,
        "| %s | %.2g | %s | %.3f [%.3f, %.3f] | %.5f [%.5f, %.5f] | %.4f [%.4f, %.4f] | "
        "%.4f | %.1f / %d | %.0f | %.3f | %.3f | %d |\n",
        r.policy_name, r.keep, r.kv_dtype, r.delta_ppl.value, r.delta_ppl.lo, r.delta_ppl.hi,
        r.mean_kl.value, r.mean_kl.lo, r.mean_kl.hi, r.top1_agreement.value,
        r.top1_agreement.lo, r.top1_agreement.hi, r.retained_attention_mass,
        r.first_divergence, r.greedy_tokens,
        r.kv_bytes_per_sequence,
        r.kv_bytes_full_per_sequence > 0 ? r.kv_bytes_per_sequence / r.kv_bytes_full_per_sequence
                                         : 0.0,
        1000.0 * r.ttft_s, r.sequences);
  }
  return out;
}

MeanSd MeanAndSd(absl::Span<const double> values) {
  MeanSd m;
  if (values.empty()) return m;
  for (double v : values) m.mean += v;
  m.mean /= static_cast<double>(values.size());
  if (values.size() < 2) return m;
  double ss = 0;
  for (double v : values) ss += (v - m.mean) * (v - m.mean);
  m.sd = std::sqrt(ss / static_cast<double>(values.size() - 1));
  return m;
}

}  // namespace kvserve::tools
