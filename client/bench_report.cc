#include "client/bench_report.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/grpc_status.h"

namespace kvserve::client {
namespace {

double SafeDivide(double numerator, double denominator) {
  return denominator > 0 ? numerator / denominator : 0;
}

nlohmann::ordered_json SummaryToJson(const LatencySummary& summary) {
  return nlohmann::ordered_json{{"p50", summary.p50},   {"p90", summary.p90}, {"p99", summary.p99},
                        {"mean", summary.mean}, {"max", summary.max}, {"min", summary.min},
                        {"count", summary.count}};
}

std::string SummaryRow(const char* name, const LatencySummary& s) {
  return absl::StrFormat("  %-8s %10.2f %10.2f %10.2f %10.2f %10.2f %8d\n", name, s.p50 * 1e3,
                         s.p90 * 1e3, s.p99 * 1e3, s.mean * 1e3, s.max * 1e3, s.count);
}

}  // namespace

BenchReport SummarizeRun(const BenchConfig& config, absl::Span<const RequestRecord> records,
                         int64_t issued, double duration_s) {
  BenchReport report;
  report.config = config;
  report.issued = issued;
  report.duration_s = duration_s;
  LatencyRecorder ttft;
  LatencyRecorder itl;
  LatencyRecorder e2e;
  int64_t prefill_prompt_tokens = 0;
  double prefill_time = 0;
  int64_t decode_tokens = 0;
  double decode_time = 0;
  for (const RequestRecord& record : records) {
    if (!record.status.ok()) {
      ++report.errored;
      ++report.errors[StatusCodeName(record.status.code())];
      if (report.first_error.empty()) report.first_error = FormatStatus(record.status);
      continue;
    }
    ++report.completed;
    report.total_prompt_tokens += record.prompt_tokens;
    report.total_output_tokens += record.output_tokens;
    e2e.Add(record.e2e_s);
    if (record.ttft_s >= 0) {
      ttft.Add(record.ttft_s);
      prefill_prompt_tokens += record.prompt_tokens;
      prefill_time += record.ttft_s;
    }
    if (record.output_tokens >= 2) {
      decode_tokens += record.output_tokens - 1;
      decode_time += record.decode_s;
    }
    for (double gap : record.itl_s) itl.Add(gap);
  }
  report.lost = report.issued - report.completed - report.errored;
  report.requests_per_s = SafeDivide(static_cast<double>(report.completed), duration_s);
  report.output_tokens_per_s =
      SafeDivide(static_cast<double>(report.total_output_tokens), duration_s);
  report.prefill_tokens_per_s = SafeDivide(static_cast<double>(prefill_prompt_tokens),
                                           prefill_time);
  report.decode_tokens_per_s = SafeDivide(static_cast<double>(decode_tokens), decode_time);
  report.ttft_s = ttft.Summary();
  report.itl_s = itl.Summary();
  report.e2e_s = e2e.Summary();
  return report;
}

nlohmann::ordered_json BenchReportToJson(const BenchReport& report) {
  const BenchConfig& c = report.config;
  nlohmann::ordered_json errors = nlohmann::ordered_json::object();
  for (const auto& [code, count] : report.errors) errors[code] = count;
  return nlohmann::ordered_json{
      {"target", c.target},
      {"model", c.model},
      {"mode", c.mode},
      {"concurrency", c.concurrency},
      {"rate", c.rate},
      {"prompt_tokens", c.prompt_tokens},
      {"shared_prefix_tokens", c.shared_prefix_tokens},
      {"max_tokens", c.max_tokens},
      {"temperature", c.temperature},
      {"warmup_requests", c.warmup_requests},
      {"kv_policy", c.kv_policy},
      {"issued", report.issued},
      {"completed", report.completed},
      {"errored", report.errored},
      {"lost", report.lost},
      {"errors", errors},
      {"first_error", report.first_error},
      {"duration_s", report.duration_s},
      {"total_prompt_tokens", report.total_prompt_tokens},
      {"total_output_tokens", report.total_output_tokens},
      {"requests_per_s", report.requests_per_s},
      {"output_tokens_per_s", report.output_tokens_per_s},
      {"prefill_tokens_per_s", report.prefill_tokens_per_s},
      {"decode_tokens_per_s", report.decode_tokens_per_s},
      {"ttft_s", SummaryToJson(report.ttft_s)},
      {"itl_s", SummaryToJson(report.itl_s)},
      {"e2e_s", SummaryToJson(report.e2e_s)},
  };
}

std::string FormatBenchReportTable(const BenchReport& report) {
  const BenchConfig& c = report.config;
  std::string out;
  absl::StrAppend(&out, "target      ", c.target, " (model ", c.model, ")\n");
  if (c.mode == "open") {
    absl::StrAppendFormat(&out, "load        open loop, %.2f req/s (Poisson)\n", c.rate);
  } else {
    absl::StrAppendFormat(&out, "load        closed loop, concurrency %d\n", c.concurrency);
  }
  absl::StrAppendFormat(&out,
                        "requests    prompt %d tokens, max_tokens %d, temperature %g, warmup %d\n",
                        c.prompt_tokens, c.max_tokens, c.temperature, c.warmup_requests);
  if (!c.kv_policy.empty()) absl::StrAppend(&out, "            KV policy ", c.kv_policy, "\n");
  if (c.shared_prefix_tokens > 0) {
    absl::StrAppendFormat(&out, "            first %d prompt tokens shared by every request\n",
                          c.shared_prefix_tokens);
  }
  absl::StrAppendFormat(&out, "issued      %d  completed %d  errored %d  lost %d\n",
                        report.issued, report.completed, report.errored, report.lost);
  if (!report.errors.empty()) {
    std::string by_code;
    for (const auto& [code, count] : report.errors) {
      absl::StrAppend(&by_code, by_code.empty() ? "" : ", ", code, "=", count);
    }
    absl::StrAppend(&out, "errors      ", by_code, "\n");
    absl::StrAppend(&out, "first error ", report.first_error, "\n");
  }
  absl::StrAppendFormat(&out, "duration    %.3f s\n", report.duration_s);
  absl::StrAppendFormat(&out, "throughput  %.2f req/s, %.1f output tok/s\n",
                        report.requests_per_s, report.output_tokens_per_s);
  absl::StrAppendFormat(&out, "per request prefill %.1f tok/s, decode %.1f tok/s\n",
                        report.prefill_tokens_per_s, report.decode_tokens_per_s);
  absl::StrAppendFormat(&out, "  %-8s %10s %10s %10s %10s %10s %8s\n", "(ms)", "p50", "p90",
                        "p99", "mean", "max", "count");
  absl::StrAppend(&out, SummaryRow("ttft", report.ttft_s));
  absl::StrAppend(&out, SummaryRow("itl", report.itl_s));
  absl::StrAppend(&out, SummaryRow("e2e", report.e2e_s));
  return out;
}

}  // namespace kvserve::client
