#include "client/latency_stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace kvserve::client {

double PercentileOfSorted(absl::Span<const double> sorted, double p) {
  if (sorted.empty()) return 0;
  // NaN compares false both ways; treat it as 0 rather than index with it.
  if (!(p >= 0)) p = 0;
  if (p > 100) p = 100;
  const double rank = p / 100.0 * static_cast<double>(sorted.size() - 1);
  const size_t lower = static_cast<size_t>(std::floor(rank));
  const size_t upper = std::min(lower + 1, sorted.size() - 1);
  const double fraction = rank - static_cast<double>(lower);
  return sorted[lower] + fraction * (sorted[upper] - sorted[lower]);
}

LatencySummary Summarize(absl::Span<const double> samples) {
  LatencySummary summary;
  if (samples.empty()) return summary;
  std::vector<double> sorted(samples.begin(), samples.end());
  std::sort(sorted.begin(), sorted.end());
  summary.count = sorted.size();
  summary.mean =
      std::accumulate(sorted.begin(), sorted.end(), 0.0) / static_cast<double>(sorted.size());
  summary.min = sorted.front();
  summary.max = sorted.back();
  summary.p50 = PercentileOfSorted(sorted, 50);
  summary.p90 = PercentileOfSorted(sorted, 90);
  summary.p99 = PercentileOfSorted(sorted, 99);
  return summary;
}

}  // namespace kvserve::client
