// ScaleKV calibration (the library behind `kvserve-eval --calibrate-scalekv`): runs held-out
// text through the model, measures every layer's mean Attention Selectivity Index over the
// queries it sees (engine/policy/scalekv_budgets.h) and classifies the layers into drafters
// and refiners. Engine thread only (the calling thread).
#ifndef KVSERVE_TOOLS_SCALEKV_CALIBRATION_H_
#define KVSERVE_TOOLS_SCALEKV_CALIBRATION_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/policy/scalekv_budgets.h"
#include "engine/runtime/engine.h"
#include "tools/kv_eval.h"

namespace kvserve::tools {

struct CalibrationOptions {
  int32_t sequences = 16;     // Calibration texts (the first N of the corpus given).
  int32_t prompt_tokens = 16; // Prefilled; every later token is one teacher-forced query.
  int32_t window = 16;        // Current map: the last `window` positions a query sees.
  int32_t top_k = 16;         // K' of the history top-K' ratio.
  int32_t drafters = 0;       // Drafter layers; 0 = max(1, round(8% of the layers)).
};

// INVALID_ARGUMENT for bad options or texts too short for the prompt.
absl::StatusOr<engine::ScaleKvBudgets> CalibrateScaleKv(engine::Engine& engine,
                                                        absl::Span<const CorpusSequence> corpus,
                                                        const CalibrationOptions& options);

}  // namespace kvserve::tools

#endif  // KVSERVE_TOOLS_SCALEKV_CALIBRATION_H_
