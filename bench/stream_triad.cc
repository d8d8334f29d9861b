// A STREAM-like memory bandwidth probe: the triad a[i] = b[i] + s * c[i] and a read-only
// sum over arrays far larger than any cache, with OpenMP threads (OMP_NUM_THREADS). Prints
// one JSON line with the best of --reps passes (STREAM's convention: the best pass is the
// machine's capability; the others were disturbed). Bytes counted as STREAM does: triad
// 3 x 8 bytes per element (no write-allocate traffic), read 8 bytes per element.
//
// Built by bench/compare_llamacpp.sh:  c++ -O3 -march=native -fopenmp stream_triad.cc
// Usage: stream_triad [MiB per array, default 1024] [reps, default 5]
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>

int main(int argc, char** argv) {
  const size_t mib = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 1024;
  const int reps = argc > 2 ? std::atoi(argv[2]) : 5;
  const size_t n = mib * (1 << 20) / sizeof(double);  // A multiple of 8.
  std::unique_ptr<double[]> a(new double[n]), b(new double[n]), c(new double[n]);
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) {  // First touch by the thread that will use the page.
    a[i] = 0.0;
    b[i] = 1.0;
    c[i] = 2.0;
  }
  const double s = 3.0;
  double best_triad = 0, best_read = 0, sink = 0;
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; ++i) a[i] = b[i] + s * c[i];
    auto t1 = std::chrono::steady_clock::now();
    double sum = 0;
#pragma omp parallel for schedule(static) reduction(+ : sum)
    for (size_t i = 0; i < n; i += 8) {  // Eight independent sums: no add-latency chain.
      double s8[8];
      for (int k = 0; k < 8; ++k) s8[k] = b[i + k];
      sum += ((s8[0] + s8[1]) + (s8[2] + s8[3])) + ((s8[4] + s8[5]) + (s8[6] + s8[7]));
    }
    auto t2 = std::chrono::steady_clock::now();
    sink += sum + a[r];
    best_triad = std::max(best_triad, 3.0 * 8 * n / std::chrono::duration<double>(t1 - t0).count());
    best_read = std::max(best_read, 8.0 * n / std::chrono::duration<double>(t2 - t1).count());
  }
  std::printf("{\"threads\": %d, \"array_mib\": %zu, \"reps\": %d, \"triad_GBps\": %.2f, "
              "\"read_GBps\": %.2f, \"checksum\": %.1f}\n",
              omp_get_max_threads(), mib, reps, best_triad * 1e-9, best_read * 1e-9, sink);
  return 0;
}
