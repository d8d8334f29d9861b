// The workload driver of kvserve-bench: issues generation requests to a GenerationTarget in a
// closed loop (fixed concurrency) or an open loop (Poisson arrivals), bounded by a request
// count and/or a duration, records what each request saw and summarizes it (bench_report.h).
//
// Threading: RunLoad() blocks the calling thread, which is the only one that issues requests;
// the target's callbacks only record and wake it. Free functions are thread-safe.
#ifndef KVSERVE_CLIENT_LOAD_GENERATOR_H_
#define KVSERVE_CLIENT_LOAD_GENERATOR_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/bench_report.h"
#include "client/generation_target.h"

namespace kvserve::client {

// Prompt token ids are drawn from [kFirstPromptTokenId, vocab_size): LLaMA vocabularies keep
// 0..2 for <unk>, <s> and </s>, which would end or confuse a prompt.
inline constexpr int kFirstPromptTokenId = 3;

struct LoadGenOptions {
  // Closed loop (rate == 0): this many workers, each issuing its next request as soon as its
  // previous one finishes. >= 1. Also the concurrency of the warmup phase.
  int concurrency = 1;
  // Open loop when > 0: requests arrive as a Poisson process of this many per second,
  // whether or not earlier ones finished (up to max_in_flight).
  double rate = 0;
  // Open loop only: at most this many requests in flight; an arrival beyond it waits. >= 1.
  int max_in_flight = 256;
  // Stop issuing after this many measured requests; 0 = no count bound.
  int64_t requests = 0;
  // Stop issuing this many seconds after the first measured request; 0 = no time bound.
  // At least one of requests and duration_s must be set.
  double duration_s = 0;
  // Exact prompt length in tokens (random ids, see BuildPromptTokenIds). >= 1.
  int prompt_tokens = 16;
  // The first this many prompt ids are the same in every request of the run, warmup
  // included (a shared system prompt: what prefix caching serves); the remaining
  // prompt_tokens - shared_prefix_tokens stay random per request. 0..prompt_tokens.
  int shared_prefix_tokens = 0;
  // max_tokens of every request. >= 1.
  int max_tokens = 16;
  // Sampling temperature of every request; 0 = greedy. Finite, >= 0.
  float temperature = 0;
  // Seeds prompts, sampling and arrivals: equal seeds replay the same workload.
  uint64_t seed = 0;
  // Unmeasured requests run (closed loop, `concurrency` at once) before measuring. >= 0.
  int warmup_requests = 0;
  // Deadline of each request, in seconds. > 0.
  double timeout_s = 60;
  // KV policy spec of every request (engine/policy/kv_policy.h, e.g. "lazyllm"); empty = the
  // target's default. Must parse (CreateKvPolicy); one that needs state of the target
  // (scalekv's budget file: FAILED_PRECONDITION) is left to the target to accept or refuse.
  std::string kv_policy;
};

// INVALID_ARGUMENT naming the first bad field (and the flag that sets it).
absl::Status ValidateLoadGenOptions(const LoadGenOptions& options);

// `num_tokens` ids drawn uniformly from [kFirstPromptTokenId, vocab_size) by a generator
// seeded with `seed` (same arguments, same ids). INVALID_ARGUMENT if num_tokens < 1 or
// vocab_size <= kFirstPromptTokenId.
absl::StatusOr<std::vector<int32_t>> BuildPromptTokenIds(int num_tokens, int vocab_size,
                                                         uint64_t seed);

// The prompt of request `index` of a stream (warmup or measured) under `options`: the run's
// shared prefix (options.shared_prefix_tokens ids, seeded by options.seed alone), then random
// ids seeded by (options.seed, stream, index) up to options.prompt_tokens. Same arguments, same
// ids. `options` must be valid (ValidateLoadGenOptions); INVALID_ARGUMENT as
// BuildPromptTokenIds otherwise.
absl::StatusOr<std::vector<int32_t>> BuildWorkloadPrompt(const LoadGenOptions& options,
                                                         int vocab_size, bool warmup,
                                                         int64_t index);

// Runs warmup then the measured workload against `target` and returns the report of the
// measured phase. Fails (without sending load) if the options are invalid or the target
// cannot describe its model; individual request failures are counted in the report, not
// returned. Every issued request is waited for, so report.lost is 0.
absl::StatusOr<BenchReport> RunLoad(GenerationTarget& target, const LoadGenOptions& options);

}  // namespace kvserve::client

#endif  // KVSERVE_CLIENT_LOAD_GENERATOR_H_
