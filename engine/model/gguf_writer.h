// GgufWriter: writes GGUF v3 files — metadata of any GGUF value type and tensors stored as
// f32, f16, bf16 or q8_0, converted from f32 values (q8_0 quantised exactly as ggml's
// quantize_row_q8_0_ref does). Tensor values are pulled from a callback a chunk of rows at a
// time while the file is written, so a multi-gigabyte model never sits in memory.
// Used by tests (to craft files) and by the kvserve-make-model tool.
//
// Not thread-safe: build and write one file from one thread.
//
//   GgufWriter writer;
//   writer.SetMetadata("general.architecture", GgufValue::String("llama"));
//   KV_RETURN_IF_ERROR(writer.AddTensor("output_norm.weight", TensorType::kF32, {64}, values));
//   KV_RETURN_IF_ERROR(writer.WriteFile("/tmp/model.gguf"));
#ifndef KVSERVE_ENGINE_MODEL_GGUF_WRITER_H_
#define KVSERVE_ENGINE_MODEL_GGUF_WRITER_H_

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "engine/model/gguf_format.h"
#include "engine/model/tensor_data.h"

namespace kvserve::engine {

// Fills `out` (a whole number of rows) with the tensor's values starting at row `first_row`,
// row-major. Called with consecutive row ranges, in order, exactly once per range.
using GgufRowSource = std::function<absl::Status(int64_t first_row, absl::Span<float> out)>;

// Quantises one row of q8_0 blocks (n a multiple of 32) into n / 32 * 34 bytes at `out`.
void QuantizeRowQ8_0(const float* x, int64_t n, uint8_t* out);
// The same for q4_0 (ggml's quantize_row_q4_0_ref: d = the block's largest-magnitude value / -8,
// values round to q in [0, 15] stored as q - 8 in nibbles).
void QuantizeRowQ4_0(const float* x, int64_t n, uint8_t* out);

// Encodes f32 values as `type` (for q8_0, values.size() a multiple of 32).
std::vector<uint8_t> EncodeTensorValues(TensorType type, absl::Span<const float> values);

class GgufWriter {
 public:
  GgufWriter() = default;
  GgufWriter(const GgufWriter&) = delete;
  GgufWriter& operator=(const GgufWriter&) = delete;

  // Adds or replaces a metadata entry (a replaced key keeps its position).
  void SetMetadata(const std::string& key, GgufValue value);
  // Removes a metadata entry if present.
  void RemoveMetadata(const std::string& key);

  // Data alignment (a power of two); a value other than 32 is also recorded as
  // general.alignment.
  absl::Status SetAlignment(uint64_t alignment);

  // Declares a tensor of `shape` (outermost first, 1 to 4 dimensions, rows of q8_0 a multiple
  // of 32), stored as `type`, whose values `source` yields when the file is written.
  absl::Status AddTensor(const std::string& name, TensorType type, std::vector<int64_t> shape,
                         GgufRowSource source);
  // The same with the values in memory (values.size() must equal the element count).
  absl::Status AddTensor(const std::string& name, TensorType type, std::vector<int64_t> shape,
                         std::vector<float> values);
  // A tensor written verbatim: any ggml type id (even invalid ones), dims innermost first
  // as GGUF stores them. For tests that craft malformed or unsupported files.
  absl::Status AddRawTensor(const std::string& name, uint32_t ggml_type,
                            std::vector<int64_t> dims_innermost_first, std::vector<uint8_t> bytes);

  // Writes the file (to `path`.tmp, renamed over `path` on success). Calls every tensor's
  // source; call once.
  absl::Status WriteFile(const std::string& path);

 private:
  absl::Status WriteTo(const std::string& tmp_path);

  struct Tensor {
    std::string name;
    uint32_t ggml_type = 0;
    std::vector<int64_t> dims;  // Innermost first.
    bool raw = false;
    TensorType type = TensorType::kF32;
    int64_t rows = 1;
    int64_t cols = 1;
    GgufRowSource source;        // When !raw.
    std::vector<uint8_t> bytes;  // When raw.
    uint64_t size_bytes = 0;
    uint64_t offset = 0;         // Within the data section.
  };

  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::vector<Tensor> tensors_;
  uint64_t alignment_ = kGgufDefaultAlignment;
};

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_MODEL_GGUF_WRITER_H_
