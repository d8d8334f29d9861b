#include "client/load_generator.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <random>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "engine/policy/kv_policy.h"

namespace kvserve::client {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsBetween(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

// SplitMix64 finalizer: turns (seed, stream, index) into well-spread generator seeds, so
// request i's prompt does not depend on how many requests came before in other streams.
uint64_t MixSeed(uint64_t seed, uint64_t stream, uint64_t index) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ULL * (stream * 0x100000001ULL + index + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

constexpr uint64_t kWarmupStream = 1;
constexpr uint64_t kMeasuredStream = 2;
constexpr uint64_t kArrivalStream = 3;
constexpr uint64_t kSharedPrefixStream = 4;

bool Finite(double value) { return std::isfinite(value); }

// What the callbacks of one request see; they never overlap, so no lock.
struct RequestState {
  Clock::time_point start;
  Clock::time_point first_token;
  Clock::time_point last_token;
  int tokens = 0;
  int sent_prompt_tokens = 0;
  std::vector<double> itl_s;
};

// One RunLoad() call: issues from the calling thread; callbacks record under mu_.
class LoadRun {
 public:
  LoadRun(GenerationTarget& target, const LoadGenOptions& options, int vocab_size)
      : target_(target), options_(options), vocab_size_(vocab_size) {}

  void RunWarmup() {
    for (int64_t i = 0; i < options_.warmup_requests; ++i) {
      WaitForInFlightBelow(options_.concurrency, absl::InfiniteFuture());
      Issue(kWarmupStream, i);
    }
    WaitForInFlightBelow(1, absl::InfiniteFuture());
  }

  void RunMeasured() {
    measure_start_ = Clock::now();
    const absl::Time deadline = options_.duration_s > 0
                                    ? absl::Now() + absl::Seconds(options_.duration_s)
                                    : absl::InfiniteFuture();
    if (options_.rate > 0) {
      RunOpenLoop(deadline);
    } else {
      RunClosedLoop(deadline);
    }
    WaitForInFlightBelow(1, absl::InfiniteFuture());
  }

  BenchReport Report(const BenchConfig& config) {
    absl::MutexLock lock(&mu_);
    const double duration =
        records_.empty() ? 0 : SecondsBetween(measure_start_, last_measured_end_);
    return SummarizeRun(config, records_, issued_, duration);
  }

 private:
  bool CountBoundReached(int64_t index) const {
    return options_.requests > 0 && index >= options_.requests;
  }

  void RunClosedLoop(absl::Time deadline) {
    for (int64_t i = 0; !CountBoundReached(i); ++i) {
      // Waiting ends early at the deadline: no request is issued after it.
      WaitForInFlightBelow(options_.concurrency, deadline);
      if (absl::Now() >= deadline) break;
      Issue(kMeasuredStream, i);
    }
  }

  void RunOpenLoop(absl::Time deadline) {
    std::mt19937_64 rng(MixSeed(options_.seed, kArrivalStream, 0));
    std::exponential_distribution<double> gap_s(options_.rate);
    absl::Time next_arrival = absl::Now();
    for (int64_t i = 0; !CountBoundReached(i); ++i) {
      next_arrival += absl::Seconds(gap_s(rng));
      if (next_arrival >= deadline) break;
      absl::SleepFor(next_arrival - absl::Now());  // No-op when already late.
      WaitForInFlightBelow(options_.max_in_flight, absl::InfiniteFuture());
      Issue(kMeasuredStream, i);
    }
  }

  // Blocks until fewer than `limit` requests are in flight, or until `deadline`.
  void WaitForInFlightBelow(int64_t limit, absl::Time deadline) {
    struct Args {
      const int64_t* in_flight;
      int64_t limit;
    };
    absl::MutexLock lock(&mu_);
    Args args{&in_flight_, limit};
    mu_.AwaitWithDeadline(
        absl::Condition(+[](Args* a) { return *a->in_flight < a->limit; }, &args), deadline);
  }

  void Issue(uint64_t stream, int64_t index) {
    const bool measured = stream == kMeasuredStream;
    WorkItem item;
    item.index = index;
    // Arguments were validated in RunLoad(), so this cannot fail.
    item.prompt_token_ids =
        BuildWorkloadPrompt(options_, vocab_size_, /*warmup=*/!measured, index).value();
    item.max_tokens = options_.max_tokens;
    item.temperature = options_.temperature;
    item.seed = MixSeed(options_.seed, stream + 100, static_cast<uint64_t>(index));
    item.timeout_s = options_.timeout_s;
    item.kv_policy = options_.kv_policy;

    auto state = std::make_shared<RequestState>();
    state->sent_prompt_tokens = options_.prompt_tokens;
    {
      absl::MutexLock lock(&mu_);
      ++in_flight_;
      if (measured) ++issued_;
    }
    GenerationCallbacks callbacks;
    callbacks.on_tokens = [state](int num_tokens) {
      const Clock::time_point now = Clock::now();
      if (state->tokens == 0) {
        state->first_token = now;
      } else {
        const double gap = SecondsBetween(state->last_token, now) / num_tokens;
        state->itl_s.insert(state->itl_s.end(), static_cast<size_t>(num_tokens), gap);
      }
      state->last_token = now;
      state->tokens += num_tokens;
    };
    callbacks.on_done = [this, state, measured](const GenerationOutcome& outcome) {
      const Clock::time_point now = Clock::now();
      RequestRecord record;
      record.status = outcome.status;
      record.prompt_tokens =
          outcome.prompt_tokens > 0 ? outcome.prompt_tokens : state->sent_prompt_tokens;
      record.output_tokens = state->tokens;
      if (state->tokens > 0) {
        record.ttft_s = SecondsBetween(state->start, state->first_token);
        record.decode_s = SecondsBetween(state->first_token, state->last_token);
      }
      record.e2e_s = SecondsBetween(state->start, now);
      record.itl_s = std::move(state->itl_s);
      absl::MutexLock lock(&mu_);
      --in_flight_;
      if (measured) {
        records_.push_back(std::move(record));
        last_measured_end_ = std::max(last_measured_end_, now);
      }
    };
    state->start = Clock::now();
    target_.StartGenerate(item, std::move(callbacks));
  }

  GenerationTarget& target_;
  const LoadGenOptions options_;
  const int vocab_size_;
  // Written by the issuing thread before any measured request starts.
  Clock::time_point measure_start_;

  absl::Mutex mu_;
  int64_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t issued_ ABSL_GUARDED_BY(mu_) = 0;  // Measured requests started.
  std::vector<RequestRecord> records_ ABSL_GUARDED_BY(mu_);
  Clock::time_point last_measured_end_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::Status ValidateLoadGenOptions(const LoadGenOptions& o) {
  auto invalid = [](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat(parts...));
  };
  if (!Finite(o.rate) || o.rate < 0) return invalid("--rate must be finite and >= 0, got ", o.rate);
  if (o.concurrency < 1) return invalid("--concurrency must be >= 1, got ", o.concurrency);
  if (o.max_in_flight < 1) return invalid("--max-in-flight must be >= 1, got ", o.max_in_flight);
  if (o.requests < 0) return invalid("--requests must be >= 0, got ", o.requests);
  if (!Finite(o.duration_s) || o.duration_s < 0) {
    return invalid("--duration must be finite and >= 0, got ", o.duration_s);
  }
  if (o.requests == 0 && o.duration_s == 0) {
    return invalid("the run needs a bound: give --requests N and/or --duration SECONDS");
  }
  if (o.prompt_tokens < 1) return invalid("--prompt-tokens must be >= 1, got ", o.prompt_tokens);
  if (o.shared_prefix_tokens < 0 || o.shared_prefix_tokens > o.prompt_tokens) {
    return invalid("--shared-prefix-tokens must be in [0, --prompt-tokens ", o.prompt_tokens,
                   "], got ", o.shared_prefix_tokens);
  }
  if (o.max_tokens < 1) return invalid("--max-tokens must be >= 1, got ", o.max_tokens);
  if (!std::isfinite(o.temperature) || o.temperature < 0) {
    return invalid("--temperature must be finite and >= 0, got ", o.temperature);
  }
  if (o.warmup_requests < 0) return invalid("--warmup must be >= 0, got ", o.warmup_requests);
  if (!Finite(o.timeout_s) || o.timeout_s <= 0) {
    return invalid("--timeout must be finite and > 0, got ", o.timeout_s);
  }
  if (!o.kv_policy.empty()) {
    absl::StatusOr<std::shared_ptr<const engine::KvPolicy>> policy =
        engine::CreateKvPolicy(o.kv_policy);
    if (!policy.ok() && !absl::IsFailedPrecondition(policy.status())) {
      return invalid("--kv-policy: ", policy.status().message());
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> BuildPromptTokenIds(int num_tokens, int vocab_size,
                                                         uint64_t seed) {
  if (num_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("a prompt needs at least 1 token, asked for ", num_tokens));
  }
  if (vocab_size <= kFirstPromptTokenId) {
    return absl::InvalidArgumentError(absl::StrCat(
        "vocabulary of ", vocab_size, " tokens has no ordinary tokens (ids >= ",
        kFirstPromptTokenId, ")"));
  }
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> id(kFirstPromptTokenId, vocab_size - 1);
  std::vector<int32_t> ids(static_cast<size_t>(num_tokens));
  for (int32_t& token : ids) token = id(rng);
  return ids;
}

absl::StatusOr<std::vector<int32_t>> BuildWorkloadPrompt(const LoadGenOptions& options,
                                                         int vocab_size, bool warmup,
                                                         int64_t index) {
  const int shared = options.shared_prefix_tokens;
  const int own = options.prompt_tokens - shared;
  std::vector<int32_t> ids;
  ids.reserve(static_cast<size_t>(std::max(options.prompt_tokens, 0)));
  if (shared > 0) {
    absl::StatusOr<std::vector<int32_t>> prefix =
        BuildPromptTokenIds(shared, vocab_size, MixSeed(options.seed, kSharedPrefixStream, 0));
    if (!prefix.ok()) return prefix.status();
    ids = *std::move(prefix);
  }
  if (own > 0 || shared <= 0) {
    const uint64_t stream = warmup ? kWarmupStream : kMeasuredStream;
    absl::StatusOr<std::vector<int32_t>> rest =
        BuildPromptTokenIds(own, vocab_size, MixSeed(options.seed, stream,
                                                     static_cast<uint64_t>(index)));
    if (!rest.ok()) return rest.status();
    ids.insert(ids.end(), rest->begin(), rest->end());
  }
  return ids;
}

absl::StatusOr<BenchReport> RunLoad(GenerationTarget& target, const LoadGenOptions& options) {
  if (absl::Status status = ValidateLoadGenOptions(options); !status.ok()) return status;
  absl::StatusOr<TargetInfo> info = target.GetInfo(options.timeout_s);
  if (!info.ok()) return info.status();
  if (info->vocab_size <= kFirstPromptTokenId) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the model reports a vocabulary of ", info->vocab_size, " tokens; need more than ",
        kFirstPromptTokenId));
  }
  LoadRun run(target, options, info->vocab_size);
  run.RunWarmup();
  run.RunMeasured();

  BenchConfig config;
  config.target = target.Describe();
  config.model = info->model_name;
  config.mode = options.rate > 0 ? "open" : "closed";
  config.concurrency = options.rate > 0 ? 0 : options.concurrency;
  config.rate = options.rate;
  config.prompt_tokens = options.prompt_tokens;
  config.shared_prefix_tokens = options.shared_prefix_tokens;
  config.max_tokens = options.max_tokens;
  config.temperature = options.temperature;
  config.warmup_requests = options.warmup_requests;
  config.kv_policy = options.kv_policy;
  return run.Report(config);
}

}  // namespace kvserve::client
