// How the decode GEMV kernels (bf16_gemv.cc, int8_gemv.cc) split their weight column blocks
// over OpenMP threads: one contiguous range of blocks per thread, so each streams its own part
// of the packed weights; small matrices stay on the calling thread.
#ifndef KVSERVE_ENGINE_COMPUTE_GEMV_PARTITION_H_
#define KVSERVE_ENGINE_COMPUTE_GEMV_PARTITION_H_

#include <omp.h>

#include <algorithm>
#include <cstdint>

namespace kvserve::engine {

// Below this many weight bytes a second thread costs more (waking it, ~5-50 us) than it saves.
inline constexpr int64_t kGemvMinParallelBytes = 128 * 1024;

// Calls run(begin_block, end_block) over [0, blocks), split statically across threads.
template <typename Run>
void ForEachGemvBlockRange(int64_t blocks, int64_t weight_bytes, const Run& run) {
  const int threads = weight_bytes < kGemvMinParallelBytes
                          ? 1
                          : static_cast<int>(std::min<int64_t>(omp_get_max_threads(), blocks));
  if (threads <= 1) {
    run(int64_t{0}, blocks);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const int64_t t = omp_get_thread_num();
    const int64_t nt = omp_get_num_threads();
    run(blocks * t / nt, blocks * (t + 1) / nt);
  }
}

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_COMPUTE_GEMV_PARTITION_H_
