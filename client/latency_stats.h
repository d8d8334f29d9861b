// Percentiles and summaries of latency samples (seconds).
//
// Percentiles use LINEAR INTERPOLATION between closest ranks (Hyndman & Fan type 7, the
// default of numpy.percentile and of vLLM's benchmark): for n sorted samples x[0..n-1] and
// p in [0, 100], rank r = p/100 * (n - 1), result = x[floor(r)] + (r - floor(r)) *
// (x[floor(r)+1] - x[floor(r)]). So p0 is the minimum, p100 the maximum, and p50 of an even
// count is the mean of the two middle samples.
//
// LatencyRecorder is thread-compatible (one writer, or external locking); the free functions
// are thread-safe.
#ifndef KVSERVE_CLIENT_LATENCY_STATS_H_
#define KVSERVE_CLIENT_LATENCY_STATS_H_

#include <cstddef>
#include <vector>

#include "absl/types/span.h"

namespace kvserve::client {

// Summary of a sample set. Every field is 0 when there are no samples.
struct LatencySummary {
  size_t count = 0;  // Number of samples.
  double mean = 0;   // Arithmetic mean.
  double min = 0;    // Smallest sample.
  double max = 0;    // Largest sample.
  double p50 = 0;    // Median.
  double p90 = 0;    // 90th percentile.
  double p99 = 0;    // 99th percentile.
};

// The p-th percentile (p in [0, 100], clamped) of `sorted` by linear interpolation, as
// described above. REQUIRES: `sorted` is sorted ascending. Returns 0 for an empty span.
double PercentileOfSorted(absl::Span<const double> sorted, double p);

// Summarizes `samples` (any order).
LatencySummary Summarize(absl::Span<const double> samples);

// Accumulates samples, then summarizes them.
class LatencyRecorder {
 public:
  void Add(double seconds) { samples_.push_back(seconds); }
  // Adds `count` copies of `seconds` (e.g. one inter-token gap shared by several tokens).
  void AddRepeated(double seconds, size_t count) { samples_.insert(samples_.end(), count, seconds); }
  size_t count() const { return samples_.size(); }
  LatencySummary Summary() const { return Summarize(samples_); }

 private:
  std::vector<double> samples_;
};

}  // namespace kvserve::client

#endif  // KVSERVE_CLIENT_LATENCY_STATS_H_
