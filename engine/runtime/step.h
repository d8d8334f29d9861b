// The plan one engine step executes and what it produced. Plain value types.
#ifndef KVSERVE_ENGINE_RUNTIME_STEP_H_
#define KVSERVE_ENGINE_RUNTIME_STEP_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/types/span.h"
#include "engine/model/vocab.h"

namespace kvserve::engine {

using SequenceId = uint64_t;

// {sequence: tokens to process} for one step: prefill chunks and single-token decodes alike
// (there is no prefill or decode "phase"; each sequence just has pending tokens).
struct StepPlan {
  struct Entry {
    SequenceId sequence = 0;
    int32_t num_tokens = 0;  // 1..PendingTokens(sequence).
  };
  std::vector<Entry> entries;
  // Also return the logits each sampled token was drawn from (evaluation tools).
  bool return_logits = false;
  bool empty() const { return entries.empty(); }
};

struct StepResult {
  struct Output {
    SequenceId sequence = 0;
    std::optional<TokenId> token;  // Sampled when the entry finished its pending tokens.
    // With StepPlan::return_logits: the vocab_size logits `token` was sampled from; valid
    // until the next Step.
    absl::Span<const float> logits;
  };
  std::vector<Output> outputs;  // One per plan entry, same order.
  int32_t batch_tokens = 0;     // Tokens processed in this step.
};

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_RUNTIME_STEP_H_
