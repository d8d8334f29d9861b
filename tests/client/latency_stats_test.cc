#include "client/latency_stats.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace kvserve::client {
namespace {

struct PercentileCase {
  std::string name;
  std::vector<double> sorted;
  double p;
  double expected;
};

class PercentileTest : public ::testing::TestWithParam<PercentileCase> {};

TEST_P(PercentileTest, InterpolatesLinearlyBetweenClosestRanks) {
  const PercentileCase& c = GetParam();
  EXPECT_DOUBLE_EQ(PercentileOfSorted(c.sorted, c.p), c.expected);
}

std::vector<double> OneTo(int n) {
  std::vector<double> values;
  for (int i = 1; i <= n; ++i) values.push_back(i);
  return values;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, PercentileTest,
    ::testing::Values(PercentileCase{"empty_is_zero", {}, 50, 0},
                      PercentileCase{"single_sample", {5}, 99, 5},
                      PercentileCase{"median_of_even_count_is_mid_mean", {1, 2, 3, 4}, 50, 2.5},
                      PercentileCase{"median_of_odd_count", {1, 2, 10}, 50, 2},
                      PercentileCase{"p0_is_min", {1, 2, 3, 4}, 0, 1},
                      PercentileCase{"p100_is_max", {1, 2, 3, 4}, 100, 4},
                      // rank = 0.9 * 9 = 8.1 -> 9 + 0.1 * (10 - 9).
                      PercentileCase{"p90_of_1_to_10", OneTo(10), 90, 9.1},
                      // rank = 0.99 * 99 = 98.01 -> 99 + 0.01 * (100 - 99).
                      PercentileCase{"p99_of_1_to_100", OneTo(100), 99, 99.01},
                      PercentileCase{"p25_between_samples", {0, 4}, 25, 1},
                      PercentileCase{"above_100_clamps_to_max", {1, 2, 3}, 150, 3},
                      PercentileCase{"below_0_clamps_to_min", {1, 2, 3}, -5, 1}),
    [](const ::testing::TestParamInfo<PercentileCase>& info) { return info.param.name; });

TEST(SummarizeTest, EmptyGivesAllZero) {
  const LatencySummary s = Summarize({});
  EXPECT_EQ(s.count, 0u);
  EXPECT_EQ(s.mean, 0);
  EXPECT_EQ(s.p50, 0);
  EXPECT_EQ(s.p99, 0);
  EXPECT_EQ(s.max, 0);
}

TEST(SummarizeTest, SortsUnorderedSamples) {
  const std::vector<double> samples = {0.3, 0.1, 0.4, 0.2};
  const LatencySummary s = Summarize(samples);
  EXPECT_EQ(s.count, 4u);
  EXPECT_DOUBLE_EQ(s.mean, 0.25);
  EXPECT_DOUBLE_EQ(s.min, 0.1);
  EXPECT_DOUBLE_EQ(s.max, 0.4);
  EXPECT_DOUBLE_EQ(s.p50, 0.25);
  // rank = 0.9 * 3 = 2.7 -> 0.3 + 0.7 * 0.1.
  EXPECT_DOUBLE_EQ(s.p90, 0.37);
}

TEST(LatencyRecorderTest, AddRepeatedAddsCopies) {
  LatencyRecorder recorder;
  recorder.Add(1.0);
  recorder.AddRepeated(0.5, 3);
  EXPECT_EQ(recorder.count(), 4u);
  const LatencySummary s = recorder.Summary();
  EXPECT_DOUBLE_EQ(s.mean, (1.0 + 3 * 0.5) / 4);
  EXPECT_DOUBLE_EQ(s.p50, 0.5);
  EXPECT_DOUBLE_EQ(s.max, 1.0);
}

}  // namespace
}  // namespace kvserve::client
