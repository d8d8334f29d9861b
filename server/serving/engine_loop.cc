#include "server/serving/engine_loop.h"

#include <algorithm>
#include <deque>
#include <optional>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "engine/common/logging.h"
#include "engine/compute/device.h"
#include "engine/sampling/stop_string_matcher.h"
#include "engine/tokenizer/incremental_detokenizer.h"

namespace kvserve::server {
namespace {

constexpr absl::Duration kIdleWait = absl::Milliseconds(50);

}  // namespace

// A request the loop has admitted: it has a sequence in the engine.
struct RunningRequest {
  RunningRequest(std::unique_ptr<PendingRequest> r, const engine::BpeTokenizer& tokenizer)
      : request(std::move(r)), detokenizer(tokenizer), stop_matcher(request->stop_strings) {}

  engine::SequenceId sequence() const { return request->id; }

  std::unique_ptr<PendingRequest> request;
  engine::IncrementalDetokenizer detokenizer;
  engine::StopStringMatcher stop_matcher;
  int32_t generated = 0;  // Tokens delivered to the stream.
  int32_t cached_prompt_tokens = 0;  // Prompt tokens served from the prefix cache.
  absl::Time admit_time = absl::InfinitePast();
  absl::Time first_token_time = absl::InfinitePast();
  absl::Time last_token_time = absl::InfinitePast();
};

// Forwards to the configured observer, or does nothing.
class ObserverProxy {
 public:
  explicit ObserverProxy(ServingObserver* observer) : observer_(observer) {}
  ServingObserver* operator->() const { return observer_ != nullptr ? observer_ : &null_; }

 private:
  class NullObserver : public ServingObserver {
   public:
    void OnRejected(RejectReason) override {}
    void OnFirstToken(absl::Duration) override {}
    void OnInterTokenLatency(absl::Duration) override {}
    void OnRequestFinished(const RequestObservation&) override {}
    void OnStep(const StepObservation&) override {}
    void OnPreemption() override {}
    void OnGauges(const GaugeObservation&) override {}
    void OnTokensEvicted(std::string_view, int64_t) override {}
  };
  ServingObserver* observer_;
  static inline NullObserver null_;
};

class EngineLoop::Impl {
 public:
  Impl(engine::Engine* engine, RequestQueue* queue, const EngineLoopOptions& options)
      : engine_(engine), queue_(queue), options_(options), observer_(options.observer) {}

  ~Impl() { Stop(); }

  void Start() {
    alive_.store(true);
    thread_ = std::thread([this] { Run(); });
  }

  void Drain(absl::Time deadline) {
    {
      absl::MutexLock lock(&control_mu_);
      drain_deadline_ = deadline;
      draining_ = true;
    }
    queue_->Wake();
    Join();
  }

  void Stop() {
    {
      absl::MutexLock lock(&control_mu_);
      stop_requested_ = true;
    }
    queue_->Wake();
    Join();
  }

  bool alive() const { return alive_.load(); }

  EngineLoopStats stats() const {
    absl::MutexLock lock(&stats_mu_);
    return stats_;
  }

 private:
  void Join() {
    if (thread_.joinable()) thread_.join();
  }

  void Run() {
    // OpenMP teams are per calling thread: size this thread's team once.
    engine::SetComputeThreads(engine_->options().num_threads);
    while (true) {
      bool stop = false, draining = false;
      absl::Time drain_deadline;
      {
        absl::MutexLock lock(&control_mu_);
        stop = stop_requested_;
        draining = draining_;
        drain_deadline = drain_deadline_;
      }
      const absl::Time now = absl::Now();
      if (stop) {
        FailAll(absl::UnavailableError("the server stopped before the request finished"));
        break;
      }
      if (draining && now >= drain_deadline) {
        FailAll(absl::UnavailableError(
            "the server shut down (drain timeout) before the request finished; retry"));
        break;
      }
      DropCancelledAndExpired(now);
      if (draining && running_.empty() && preempted_.empty() && queue_->size() == 0) break;

      Admit();
      const engine::StepPlan plan = Schedule();
      if (plan.empty()) {
        PublishStats();
        if (running_.empty()) queue_->WaitForWork(kIdleWait);
        continue;
      }
      const absl::Time step_start = absl::Now();
      absl::StatusOr<engine::StepResult> result = engine_->Step(plan);
      if (!result.ok()) {
        KV_LOG_ERROR("engine step failed: {}", result.status().ToString());
        for (const engine::StepPlan::Entry& e : plan.entries) {
          Finish(e.sequence, absl::InternalError(absl::StrCat("engine step failed: ",
                                                              result.status().message())));
        }
        continue;
      }
      last_step_time_ = absl::Now();
      ObserveStep(plan, *result, last_step_time_ - step_start);
      Publish(*result);
      ++steps_;
      PublishStats();
    }
    PublishStats();
    alive_.store(false);
  }

  // Ends every request the loop knows of with `status`.
  void FailAll(const absl::Status& status) {
    while (!running_.empty()) Finish(running_.back()->sequence(), status);
    for (auto& r : preempted_) {
      engine_->RemoveSequence(r->sequence());
      ObserveEnd(*r, status, FinishReason::kUnspecified);
      r->request->stream->Fail(status, UsageOf(*r));
    }
    preempted_.clear();
    while (std::unique_ptr<PendingRequest> r = queue_->Pop()) FailQueued(*r, status);
  }

  static absl::Status ExpiredStatus(const PendingRequest& r) {
    if (r.stream->cancelled()) return absl::CancelledError("the request was cancelled");
    return absl::DeadlineExceededError("the request's deadline passed before it finished");
  }

  static bool Expired(const PendingRequest& r, absl::Time now) {
    return r.stream->cancelled() || now >= r.deadline;
  }

  void DropCancelledAndExpired(absl::Time now) {
    for (std::unique_ptr<PendingRequest>& r : queue_->TakeExpired(now)) {
      FailQueued(*r, ExpiredStatus(*r));
    }
    std::vector<engine::SequenceId> expired;
    for (const auto& r : running_) {
      if (Expired(*r->request, now)) expired.push_back(r->sequence());
    }
    for (engine::SequenceId id : expired) Finish(id, ExpiredStatus(*by_sequence_.at(id)->request));
    for (auto it = preempted_.begin(); it != preempted_.end();) {
      if (Expired(*(*it)->request, now)) {
        engine_->RemoveSequence((*it)->sequence());
        const absl::Status status = ExpiredStatus(*(*it)->request);
        ObserveEnd(**it, status, FinishReason::kUnspecified);
        (*it)->request->stream->Fail(status, UsageOf(**it));
        it = preempted_.erase(it);
      } else {
        ++it;
      }
    }
  }

  // Ends a request that never left the queue.
  void FailQueued(const PendingRequest& r, const absl::Status& status) {
    const absl::Duration waited = absl::Now() - r.enqueue_time;
    observer_->OnRequestFinished({.status = status,
                                  .prompt_tokens = static_cast<int32_t>(r.prompt_ids.size()),
                                  .queue_time = waited,
                                  .e2e_time = waited});
    r.stream->Fail(status, Usage{.prompt_tokens = static_cast<int32_t>(r.prompt_ids.size())});
  }

  void ObserveEnd(const RunningRequest& r, const absl::Status& status, FinishReason reason) {
    const absl::Time now = absl::Now();
    const absl::Time enqueued = r.request->enqueue_time;
    RequestObservation o{.status = status,
                         .finish_reason = reason,
                         .prompt_tokens = static_cast<int32_t>(r.request->prompt_ids.size()),
                         .completion_tokens = r.generated,
                         .e2e_time = now - enqueued};
    if (r.admit_time != absl::InfinitePast()) o.queue_time = r.admit_time - enqueued;
    if (r.first_token_time != absl::InfinitePast()) {
      o.prefill_time = r.first_token_time - r.admit_time;
      o.decode_time = now - r.first_token_time;
    }
    observer_->OnRequestFinished(o);
  }

  void ObserveStep(const engine::StepPlan& plan, const engine::StepResult& result,
                   absl::Duration duration) {
    StepObservation o{.duration = duration,
                      .sequences = static_cast<int32_t>(plan.entries.size()),
                      .tokens = result.batch_tokens};
    for (const engine::StepPlan::Entry& e : plan.entries) {
      if (decodes_.contains(e.sequence)) {
        o.decode_tokens += e.num_tokens;
      } else {
        o.prefill_tokens += e.num_tokens;
      }
    }
    observer_->OnStep(o);
  }

  // Moves waiting requests into the running set while sequences and KV allow: preempted
  // ones first (they were admitted earlier), then the queue in priority order.
  void Admit() {
    while (static_cast<int>(running_.size()) < options_.max_running) {
      if (!preempted_.empty()) {
        RunningRequest& next = *preempted_.front();
        if (!KvRoomFor(engine_->PendingTokens(next.sequence()))) return;
        AddRunning(std::move(preempted_.front()));
        preempted_.pop_front();
        continue;
      }
      const PendingRequest* head = queue_->Peek();
      if (head == nullptr) return;
      if (!KvRoomFor(static_cast<int32_t>(head->prompt_ids.size()))) return;
      std::unique_ptr<PendingRequest> request = queue_->Pop();
      auto running = std::make_unique<RunningRequest>(std::move(request), engine_->tokenizer());
      const absl::Status added = engine_->AddSequence(
          running->sequence(), {.prompt = running->request->prompt_ids,
                                .sampling = running->request->sampling,
                                .kv_policy = running->request->kv_policy,
                                .max_new_tokens = running->request->max_tokens});
      if (!added.ok()) {
        running->request->stream->Fail(added, UsageOf(*running));
        continue;
      }
      running->cached_prompt_tokens = engine_->CachedPromptTokens(running->sequence());
      AddRunning(std::move(running));
    }
  }

  // Admission keeps a watermark: the first prefill chunk must fit, plus one block per
  // running sequence so their decodes do not immediately force preemption.
  bool KvRoomFor(int32_t pending_tokens) const {
    const int32_t first_chunk = std::min(pending_tokens, options_.max_batch_tokens);
    const int64_t block_size = engine_->options().kv_block_size;
    const int64_t need = (first_chunk + block_size - 1) / block_size +
                         static_cast<int64_t>(running_.size());
    return running_.empty() || engine_->free_kv_blocks() >= need;
  }

  void AddRunning(std::unique_ptr<RunningRequest> r) {
    if (r->admit_time == absl::InfinitePast()) r->admit_time = absl::Now();
    by_sequence_[r->sequence()] = r.get();
    running_.push_back(std::move(r));
  }

  // One ragged batch under the token budget: decodes first (one token each, so running
  // streams never stall behind a long prompt), then prefill chunks in admission order.
  // Preempts the most recently admitted sequences when KV blocks run out.
  engine::StepPlan Schedule() {
    engine::StepPlan plan;
    decodes_.clear();
    int32_t budget = options_.max_batch_tokens;
    int64_t planned_blocks = 0;
    absl::flat_hash_map<engine::SequenceId, bool> in_plan;
    for (int pass = 0; pass < 2 && budget > 0; ++pass) {
      for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
        const engine::SequenceId id = running_[i]->sequence();
        const int32_t pending = engine_->PendingTokens(id);
        const bool is_decode = pending == 1;
        if (pending == 0 || is_decode != (pass == 0) || in_plan.contains(id)) continue;
        const int32_t n = std::min(pending, budget);
        const int64_t need = engine_->BlocksNeeded(id, n);
        // Free blocks by preempting the newest sequences not in this plan.
        while (need > engine_->free_kv_blocks() - planned_blocks) {
          const std::optional<engine::SequenceId> victim = NewestNotIn(in_plan, id);
          if (!victim.has_value()) break;
          PreemptSequence(*victim);
        }
        if (need > engine_->free_kv_blocks() - planned_blocks) {
          // Nothing newer left to preempt: this one waits (preempted) for blocks.
          if (!plan.empty()) {
            PreemptSequence(id);
            --i;  // running_ shrank at or after i; re-examine this index.
            continue;
          }
          continue;  // Cannot happen with >= one context of KV; skip defensively.
        }
        plan.entries.push_back({.sequence = id, .num_tokens = n});
        in_plan[id] = true;
        if (is_decode && running_[i]->generated > 0) decodes_.insert(id);
        planned_blocks += need;
        budget -= n;
      }
    }
    return plan;
  }

  // The most recently admitted running sequence that is neither planned nor `except`.
  std::optional<engine::SequenceId> NewestNotIn(const absl::flat_hash_map<engine::SequenceId, bool>& in_plan,
                                 engine::SequenceId except) const {
    for (auto it = running_.rbegin(); it != running_.rend(); ++it) {
      const engine::SequenceId id = (*it)->sequence();
      if (id != except && !in_plan.contains(id)) return id;
    }
    return std::nullopt;
  }

  void PreemptSequence(engine::SequenceId id) {
    engine_->Preempt(id);
    auto it = std::find_if(running_.begin(), running_.end(),
                           [id](const auto& r) { return r->sequence() == id; });
    std::unique_ptr<RunningRequest> r = std::move(*it);
    running_.erase(it);
    by_sequence_.erase(id);
    preempted_.push_front(std::move(r));
    ++preemptions_;
    observer_->OnPreemption();
  }

  void Publish(const engine::StepResult& result) {
    const engine::TokenId eos = engine_->vocab().eos_id;
    const int64_t context = engine_->config().context_length;
    for (const engine::StepResult::Output& out : result.outputs) {
      if (!out.token.has_value()) continue;
      RunningRequest& r = *by_sequence_.at(out.sequence);
      const engine::TokenId token = *out.token;
      ObserveToken(r);
      if (token == eos) {
        FinishWithText(r, {}, r.stop_matcher.Push(r.detokenizer.Flush()), FinishReason::kStop);
        continue;
      }
      ++r.generated;
      const engine::TokenId ids[] = {token};
      engine::StopStringMatcher::Result text = r.stop_matcher.Push(r.detokenizer.Push(token));
      if (text.stopped) {
        FinishWithText(r, ids, std::move(text), FinishReason::kStopString);
      } else if (r.generated >= r.request->max_tokens) {
        FinishWithText(r, ids, MergeTail(r, std::move(text)), FinishReason::kLength);
      } else if (engine_->TotalTokens(out.sequence) >= context) {
        FinishWithText(r, ids, MergeTail(r, std::move(text)), FinishReason::kContextLength);
      } else {
        r.request->stream->Append(ids, text.text);
      }
    }
  }

  void ObserveToken(RunningRequest& r) {
    const absl::Time now = absl::Now();
    if (r.first_token_time == absl::InfinitePast()) {
      r.first_token_time = now;
      observer_->OnFirstToken(now - r.request->enqueue_time);
    } else {
      observer_->OnInterTokenLatency(now - r.last_token_time);
    }
    r.last_token_time = now;
  }

  // At the end of generation: text still held back by the detokenizer or the stop matcher.
  static engine::StopStringMatcher::Result MergeTail(RunningRequest& r,
                                                     engine::StopStringMatcher::Result text) {
    engine::StopStringMatcher::Result tail = r.stop_matcher.Push(r.detokenizer.Flush());
    text.text += tail.text;
    text.stopped = tail.stopped;
    return text;
  }

  void FinishWithText(RunningRequest& r, absl::Span<const engine::TokenId> ids,
                      engine::StopStringMatcher::Result text, FinishReason reason) {
    if (text.stopped) {
      reason = FinishReason::kStopString;
    } else {
      text.text += r.stop_matcher.Flush();
    }
    r.request->stream->Append(ids, text.text);
    ObserveEnd(r, absl::OkStatus(), reason);
    r.request->stream->Finish(reason, UsageOf(r));
    Remove(r.sequence());
    ++completed_;
  }

  // Ends a running request with an error status and frees its sequence.
  void Finish(engine::SequenceId id, const absl::Status& status) {
    auto it = by_sequence_.find(id);
    if (it == by_sequence_.end()) return;
    ObserveEnd(*it->second, status, FinishReason::kUnspecified);
    it->second->request->stream->Fail(status, UsageOf(*it->second));
    Remove(id);
  }

  void Remove(engine::SequenceId id) {
    engine_->RemoveSequence(id);
    by_sequence_.erase(id);
    running_.erase(std::remove_if(running_.begin(), running_.end(),
                                  [id](const auto& r) { return r->sequence() == id; }),
                   running_.end());
  }

  static Usage UsageOf(const RunningRequest& r) {
    return {.prompt_tokens = static_cast<int32_t>(r.request->prompt_ids.size()),
            .completion_tokens = r.generated,
            .cached_prompt_tokens = r.cached_prompt_tokens};
  }

  void PublishStats() {
    EngineLoopStats s;
    s.running = static_cast<int64_t>(running_.size());
    s.waiting = queue_->size() + static_cast<int64_t>(preempted_.size());
    s.kv_blocks_total = engine_->total_kv_blocks();
    s.kv_blocks_used = s.kv_blocks_total - engine_->free_kv_blocks();
    s.steps = steps_;
    s.preemptions = preemptions_;
    s.completed = completed_;
    s.last_step_time = last_step_time_;
    s.heartbeat = absl::Now();
    const engine::EngineStats& es = engine_->stats();
    for (const auto& [policy, total] : es.evicted_tokens_by_policy) {
      int64_t& reported = evicted_reported_[policy];
      if (total > reported) observer_->OnTokensEvicted(policy, total - reported);
      reported = total;
    }
    observer_->OnGauges({.running = s.running,
                         .waiting = s.waiting,
                         .kv_blocks_used = s.kv_blocks_used,
                         .kv_blocks_total = s.kv_blocks_total,
                         .kv_block_bytes = engine_->kv_block_bytes(),
                         .kv_dtype = engine::KvDtypeName(engine_->options().kv_dtype),
                         .prefix_cache_query_tokens = es.prefix_cache_query_tokens,
                         .prefix_cache_hit_tokens = es.prefix_cache_hit_tokens,
                         .computed_token_layers = es.computed_token_layers,
                         .pruned_token_layers =
                             es.computed_tokens * engine_->config().n_layers -
                             es.computed_token_layers});
    absl::MutexLock lock(&stats_mu_);
    stats_ = s;
  }

  engine::Engine* const engine_;
  RequestQueue* const queue_;
  const EngineLoopOptions options_;
  const ObserverProxy observer_;
  std::thread thread_;
  std::atomic<bool> alive_{false};

  // Control flags, set by Drain/Stop from the controlling thread.
  absl::Mutex control_mu_;
  bool stop_requested_ ABSL_GUARDED_BY(control_mu_) = false;
  bool draining_ ABSL_GUARDED_BY(control_mu_) = false;
  absl::Time drain_deadline_ ABSL_GUARDED_BY(control_mu_) = absl::InfiniteFuture();

  // Engine-thread state.
  std::vector<std::unique_ptr<RunningRequest>> running_;  // Admission order.
  std::deque<std::unique_ptr<RunningRequest>> preempted_;  // Resume order.
  absl::flat_hash_map<engine::SequenceId, RunningRequest*> by_sequence_;  // Running only.
  absl::flat_hash_set<engine::SequenceId> decodes_;  // Decode entries of the current plan.
  absl::flat_hash_map<std::string, int64_t> evicted_reported_;  // Evictions already observed.
  int64_t steps_ = 0;
  int64_t preemptions_ = 0;
  int64_t completed_ = 0;
  absl::Time last_step_time_ = absl::InfinitePast();

  mutable absl::Mutex stats_mu_;
  EngineLoopStats stats_ ABSL_GUARDED_BY(stats_mu_);
};

absl::StatusOr<std::unique_ptr<EngineLoop>> EngineLoop::Create(engine::Engine* engine,
                                                               RequestQueue* queue,
                                                               const EngineLoopOptions& options) {
  if (engine == nullptr || queue == nullptr) {
    return absl::InvalidArgumentError("EngineLoop needs an engine and a queue");
  }
  if (options.max_batch_tokens <= 0 || options.max_running <= 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "max_batch_tokens (%d) and max_running (%d) must be positive", options.max_batch_tokens,
        options.max_running));
  }
  if (options.max_batch_tokens > engine->options().max_batch_tokens) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "max_batch_tokens %d exceeds the engine's %d", options.max_batch_tokens,
        engine->options().max_batch_tokens));
  }
  return std::make_unique<EngineLoop>(PrivateKey{}, engine, queue, options);
}

EngineLoop::EngineLoop(PrivateKey, engine::Engine* engine, RequestQueue* queue,
                       const EngineLoopOptions& options)
    : impl_(std::make_unique<Impl>(engine, queue, options)) {}

EngineLoop::~EngineLoop() = default;

void EngineLoop::Start() { impl_->Start(); }
void EngineLoop::Drain(absl::Time deadline) { impl_->Drain(deadline); }
void EngineLoop::Stop() { impl_->Stop(); }
bool EngineLoop::alive() const { return impl_->alive(); }
EngineLoopStats EngineLoop::stats() const { return impl_->stats(); }

}  // namespace kvserve::server
