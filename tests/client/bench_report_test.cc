#include "client/bench_report.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace kvserve::client {
namespace {

RequestRecord Completed(int prompt_tokens, int output_tokens, double ttft_s, double decode_s,
                        double e2e_s) {
  RequestRecord record;
  record.prompt_tokens = prompt_tokens;
  record.output_tokens = output_tokens;
  record.ttft_s = ttft_s;
  record.decode_s = decode_s;
  record.e2e_s = e2e_s;
  for (int i = 1; i < output_tokens; ++i) record.itl_s.push_back(decode_s / (output_tokens - 1));
  return record;
}

RequestRecord Failed(absl::Status status) {
  RequestRecord record;
  record.status = std::move(status);
  record.e2e_s = 99;  // Must not reach the latency summaries.
  return record;
}

BenchConfig Config() {
  BenchConfig config;
  config.target = "grpc 127.0.0.1:1";
  config.model = "m";
  config.mode = "closed";
  config.concurrency = 2;
  config.prompt_tokens = 10;
  config.max_tokens = 5;
  return config;
}

std::vector<RequestRecord> MixedRecords() {
  return {Completed(10, 5, 0.1, 0.4, 0.5), Completed(10, 3, 0.3, 0.2, 0.5),
          Failed(absl::UnavailableError("queue full")),
          Failed(absl::DeadlineExceededError("too slow")),
          Failed(absl::UnavailableError("draining"))};
}

TEST(SummarizeRunTest, CountsOutcomesAndErrorsByCode) {
  const BenchReport report = SummarizeRun(Config(), MixedRecords(), /*issued=*/5, 2.0);
  EXPECT_EQ(report.issued, 5);
  EXPECT_EQ(report.completed, 2);
  EXPECT_EQ(report.errored, 3);
  EXPECT_EQ(report.lost, 0);
  EXPECT_EQ(report.errors.at("UNAVAILABLE"), 2);
  EXPECT_EQ(report.errors.at("DEADLINE_EXCEEDED"), 1);
  EXPECT_EQ(report.first_error, "UNAVAILABLE: queue full");
}

TEST(SummarizeRunTest, MissingRecordsShowAsLost) {
  const BenchReport report = SummarizeRun(Config(), MixedRecords(), /*issued=*/7, 2.0);
  EXPECT_EQ(report.lost, 2);
}

TEST(SummarizeRunTest, ThroughputsFollowTheirDefinitions) {
  const BenchReport report = SummarizeRun(Config(), MixedRecords(), 5, 2.0);
  EXPECT_EQ(report.total_prompt_tokens, 20);
  EXPECT_EQ(report.total_output_tokens, 8);
  EXPECT_DOUBLE_EQ(report.requests_per_s, 2 / 2.0);
  EXPECT_DOUBLE_EQ(report.output_tokens_per_s, 8 / 2.0);
  // Sum of prompt tokens over sum of TTFT.
  EXPECT_DOUBLE_EQ(report.prefill_tokens_per_s, 20 / (0.1 + 0.3));
  // Tokens after the first over decode time.
  EXPECT_DOUBLE_EQ(report.decode_tokens_per_s, (4 + 2) / (0.4 + 0.2));
  EXPECT_EQ(report.ttft_s.count, 2u);
  EXPECT_DOUBLE_EQ(report.ttft_s.mean, 0.2);
  EXPECT_DOUBLE_EQ(report.ttft_s.max, 0.3);
  EXPECT_EQ(report.e2e_s.count, 2u);
  EXPECT_DOUBLE_EQ(report.e2e_s.max, 0.5);
  EXPECT_EQ(report.itl_s.count, 6u);
  EXPECT_DOUBLE_EQ(report.itl_s.max, 0.1);
}

TEST(SummarizeRunTest, NoRecordsGivesZerosNotNaN) {
  const BenchReport report = SummarizeRun(Config(), {}, 0, 0);
  EXPECT_EQ(report.requests_per_s, 0);
  EXPECT_EQ(report.prefill_tokens_per_s, 0);
  EXPECT_EQ(report.decode_tokens_per_s, 0);
  EXPECT_EQ(report.ttft_s.p99, 0);
}

TEST(BenchReportToJsonTest, HasEveryDocumentedField) {
  const nlohmann::ordered_json json =
      BenchReportToJson(SummarizeRun(Config(), MixedRecords(), 5, 2.0));
  for (const char* key :
       {"target", "model", "mode", "concurrency", "rate", "prompt_tokens",
        "shared_prefix_tokens", "max_tokens",
        "temperature", "warmup_requests", "kv_policy", "issued", "completed", "errored", "lost", "errors",
        "first_error", "duration_s", "total_prompt_tokens", "total_output_tokens",
        "requests_per_s", "output_tokens_per_s", "prefill_tokens_per_s",
        "decode_tokens_per_s", "ttft_s", "itl_s", "e2e_s"}) {
    EXPECT_TRUE(json.contains(key)) << key;
  }
  for (const char* summary : {"ttft_s", "itl_s", "e2e_s"}) {
    for (const char* stat : {"p50", "p90", "p99", "mean", "max", "min", "count"}) {
      EXPECT_TRUE(json[summary].contains(stat)) << summary << "." << stat;
    }
  }
  EXPECT_EQ(json["completed"], 2);
  EXPECT_EQ(json["lost"], 0);
  EXPECT_EQ(json["errors"], (nlohmann::ordered_json{{"DEADLINE_EXCEEDED", 1}, {"UNAVAILABLE", 2}}));
}

TEST(BenchReportToJsonTest, NoErrorsIsAnEmptyObject) {
  const nlohmann::ordered_json json = BenchReportToJson(SummarizeRun(Config(), {}, 0, 0));
  EXPECT_TRUE(json["errors"].is_object());
  EXPECT_TRUE(json["errors"].empty());
}

TEST(FormatBenchReportTableTest, ShowsCountsErrorsAndLatencies) {
  const std::string table =
      FormatBenchReportTable(SummarizeRun(Config(), MixedRecords(), 5, 2.0));
  EXPECT_NE(table.find("completed 2"), std::string::npos) << table;
  EXPECT_NE(table.find("lost 0"), std::string::npos) << table;
  EXPECT_NE(table.find("UNAVAILABLE=2"), std::string::npos) << table;
  EXPECT_NE(table.find("ttft"), std::string::npos) << table;
  EXPECT_NE(table.find("itl"), std::string::npos) << table;
  EXPECT_NE(table.find("e2e"), std::string::npos) << table;
}

}  // namespace
}  // namespace kvserve::client
