// ModelRunner: the LLaMA forward pass over one ragged, padding-free batch of tokens from
// any number of sequences (prefill chunks and decodes alike), reading and writing the paged
// KV cache. Matrix products run on oneDNN (Linear); the rest are fused CPU loops.
//
// Thread-compatible; engine thread only. Buffers are sized once for `max_batch_tokens`:
// Forward does not allocate.
#ifndef KVSERVE_ENGINE_RUNTIME_MODEL_RUNNER_H_
#define KVSERVE_ENGINE_RUNTIME_MODEL_RUNNER_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/compute/device.h"
#include "engine/compute/linear.h"
#include "engine/model/model_file.h"
#include "engine/runtime/kv_cache.h"
#include "engine/runtime/paged_attention.h"

namespace kvserve::engine {

// The tokens of one step, packed: entry e covers tokens [first, first + count).
struct ForwardBatch {
  struct Entry {
    int32_t first = 0;
    int32_t count = 0;
    int32_t start_position = 0;                // Position of the entry's first token.
    const std::vector<BlockId>* blocks = nullptr;  // Covers every position up to the last.
    bool want_logits = false;                  // Logits of the entry's last token.
  };
  std::vector<TokenId> tokens;
  std::vector<Entry> entries;
};

struct ModelRunnerOptions {
  WeightType weight_type = WeightType::kF32;
  int32_t max_batch_tokens = 512;  // Largest ForwardBatch this runner accepts.
};

class ModelRunner {
 public:
  static absl::StatusOr<std::unique_ptr<ModelRunner>> Create(const ModelFile& model,
                                                             Device& device,
                                                             const ModelRunnerOptions& options);

  // Runs the batch; writes every token's keys and values into `cache`. Returns the logits of
  // the entries that want them, one row of vocab_size per such entry in entry order; valid
  // until the next call.
  absl::StatusOr<absl::Span<const float>> Forward(const ForwardBatch& batch, KvCache& cache);

  struct Layer {
    std::vector<float> attn_norm, ffn_norm;
    std::unique_ptr<Linear> wq, wk, wv, wo, gate, up, down;
  };
  struct PrivateKey {
   private:
    friend class ModelRunner;
    PrivateKey() = default;
  };
  ModelRunner(PrivateKey, const ModelFile& model, const ModelRunnerOptions& options);

 private:
  const ModelFile& model_;
  const ModelConfig& config_;
  const ModelRunnerOptions options_;
  std::vector<Layer> layers_;
  std::vector<float> output_norm_;
  std::unique_ptr<Linear> output_;
  PagedAttention attention_;

  // Scratch, sized for max_batch_tokens rows.
  std::vector<float> x_, xn_, q_, k_, v_, att_, proj_, gate_, up_, logits_in_, logits_;
  std::vector<AttentionQuery> queries_;
  std::vector<int32_t> positions_;
};

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_RUNTIME_MODEL_RUNNER_H_
