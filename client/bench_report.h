// kvserve-bench's measurements: what is recorded per request, and the report computed from
// those records (human-readable table or one JSON object). Pure functions; thread-safe.
//
// Definitions (all times in seconds, measured by the client on a monotonic clock):
//   ttft_s   per completed request that produced a token: first token-carrying chunk - start.
//   itl_s    per generated token after the first: the gap between its chunk and the previous
//            token-carrying chunk, divided evenly among the chunk's tokens (a chunk of k tokens
//            after a gap g contributes k samples of g/k). Tokens that arrive in the same chunk
//            as the first token contribute no sample (their wait is part of ttft).
//   e2e_s    per completed request: completion (end of the stream) - start.
//   requests_per_s        completed / duration_s.
//   output_tokens_per_s   total tokens received by completed requests / duration_s.
//   prefill_tokens_per_s  sum of prompt tokens / sum of ttft_s, both over completed requests
//                         with a first token: the prompt throughput one request sees, including
//                         queueing and network time (a lower bound on the server's prefill rate).
//   decode_tokens_per_s   sum of (output tokens - 1) / sum of (last token time - first token
//                         time), over completed requests with >= 2 tokens: per-request decode
//                         speed weighted by tokens (NOT the aggregate across concurrent requests;
//                         output_tokens_per_s is that).
//   duration_s            first measured request start -> last measured request end.
//   lost = issued - completed - errored; the driver guarantees 0.
// Only completed (status OK) requests feed latencies and throughputs; failed ones are counted
// in `errors` by canonical code name.
#ifndef KVSERVE_CLIENT_BENCH_REPORT_H_
#define KVSERVE_CLIENT_BENCH_REPORT_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "client/latency_stats.h"
#include "nlohmann/json.hpp"

namespace kvserve::client {

// What the client observed for one request.
struct RequestRecord {
  absl::Status status;         // Final status of the request.
  int prompt_tokens = 0;       // Prompt length (usage if reported, else what was sent).
  int output_tokens = 0;       // Tokens received.
  double ttft_s = -1;          // Start -> first token chunk; < 0 if no token arrived.
  double decode_s = 0;         // First token chunk -> last token chunk.
  double e2e_s = 0;            // Start -> end of the stream.
  std::vector<double> itl_s;   // Inter-token samples (see the definitions above).
};

// The run's settings, echoed in the report.
struct BenchConfig {
  std::string target;          // GenerationTarget::Describe().
  std::string model;           // Model name the target reported.
  std::string mode;            // "closed" or "open".
  int concurrency = 0;         // Closed loop workers (0 in open loop).
  double rate = 0;             // Open loop arrivals per second (0 in closed loop).
  int prompt_tokens = 0;       // Prompt length asked for.
  int shared_prefix_tokens = 0;  // Leading prompt ids shared by every request.
  int max_tokens = 0;          // max_tokens of every request.
  float temperature = 0;       // Sampling temperature of every request.
  int warmup_requests = 0;     // Unmeasured requests run first.
  std::string kv_policy;       // KV policy spec of every request; empty = the target's default.
};

struct BenchReport {
  BenchConfig config;
  int64_t issued = 0;                    // Measured requests started.
  int64_t completed = 0;                 // Finished with status OK.
  int64_t errored = 0;                   // Finished with an error.
  int64_t lost = 0;                      // issued - completed - errored (always 0).
  std::map<std::string, int64_t> errors; // Errors by canonical code name, e.g. "UNAVAILABLE".
  std::string first_error;               // "<CODE>: <message>" of the first error, if any.
  double duration_s = 0;
  int64_t total_prompt_tokens = 0;       // Over completed requests.
  int64_t total_output_tokens = 0;       // Over completed requests.
  double requests_per_s = 0;
  double output_tokens_per_s = 0;
  double prefill_tokens_per_s = 0;
  double decode_tokens_per_s = 0;
  LatencySummary ttft_s;
  LatencySummary itl_s;
  LatencySummary e2e_s;
};

// Computes the report from the measured requests' records. `issued` counts requests started
// (records of unfinished requests are simply absent, which shows as lost > 0).
BenchReport SummarizeRun(const BenchConfig& config, absl::Span<const RequestRecord> records,
                         int64_t issued, double duration_s);

// The report as one JSON object; field names are those of BenchReport, latency summaries as
// {"p50","p90","p99","mean","max","min","count"}.
nlohmann::ordered_json BenchReportToJson(const BenchReport& report);

// The report as an aligned, human-readable table (several lines, ends with a newline).
std::string FormatBenchReportTable(const BenchReport& report);

}  // namespace kvserve::client

#endif  // KVSERVE_CLIENT_BENCH_REPORT_H_
