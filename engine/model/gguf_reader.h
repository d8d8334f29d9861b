// GgufFile: a parsed, memory-mapped GGUF file (v3, and v2 which has the same layout) —
// typed metadata lookups and zero-copy views of its tensors. See gguf_format.h for the layout.
//
// Open() validates the whole container before returning: every read and every tensor's extent
// is bounds-checked with overflow-safe arithmetic, counts and lengths are capped so a corrupt
// header cannot make it allocate more than a small multiple of the file's size, and tensors
// of a type kvserve cannot read are rejected (INVALID_ARGUMENT naming the tensor and type).
// Errors always start with the file's path.
//
// Immutable after Open(); every const method is safe to call from several threads.
#ifndef KVSERVE_ENGINE_MODEL_GGUF_READER_H_
#define KVSERVE_ENGINE_MODEL_GGUF_READER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/common/mapped_file.h"
#include "engine/model/gguf_format.h"
#include "engine/model/tensor_data.h"

namespace kvserve::engine {

// One tensor as the file describes it.
struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> dims;  // As stored: innermost (contiguous) dimension first.
  uint32_t ggml_type = 0;
  TensorType type = TensorType::kF32;
  uint64_t offset = 0;      // From the start of the data section.
  uint64_t size_bytes = 0;
  const uint8_t* data = nullptr;  // Inside the mapping.
};

class GgufFile {
 public:
  // Maps and parses `path`. NOT_FOUND if it does not exist, INVALID_ARGUMENT if it is not a
  // valid GGUF file kvserve can read.
  static absl::StatusOr<std::unique_ptr<GgufFile>> Open(const std::string& path);
  // Parses an already mapped file, taking ownership of it.
  static absl::StatusOr<std::unique_ptr<GgufFile>> Parse(std::unique_ptr<MappedFile> file);

  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& path() const { return file_->path(); }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // File offset of the data section.
  const MappedFile& mapping() const { return *file_; }

  // Metadata. Lookups return NOT_FOUND (naming the key and file) when the key is absent and
  // INVALID_ARGUMENT when its value has another type.
  std::vector<std::string> Keys() const;  // In file order.
  bool HasKey(absl::string_view key) const;
  std::optional<GgufValueType> KeyType(absl::string_view key) const;
  absl::StatusOr<std::string> GetString(absl::string_view key) const;
  // Any integer type; a UINT64 above INT64_MAX is an error.
  absl::StatusOr<int64_t> GetInt(absl::string_view key) const;
  // FLOAT32 or FLOAT64.
  absl::StatusOr<double> GetFloat(absl::string_view key) const;
  absl::StatusOr<bool> GetBool(absl::string_view key) const;
  absl::StatusOr<std::vector<std::string>> GetStringArray(absl::string_view key) const;
  absl::StatusOr<std::vector<int64_t>> GetIntArray(absl::string_view key) const;    // Integers.
  absl::StatusOr<std::vector<float>> GetFloatArray(absl::string_view key) const;    // Floats.
  // Any value, nested arrays included (INVALID_ARGUMENT above 4M elements in total).
  absl::StatusOr<GgufValue> GetValue(absl::string_view key) const;

  // Tensors, in file order.
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* FindTensor(absl::string_view name) const;  // nullptr when absent.
  // A TensorData view (shape outermost first); NOT_FOUND naming the tensor when absent.
  absl::StatusOr<TensorData> GetTensor(absl::string_view name) const;

  // Hands the mapping over (e.g. to ModelFile::storage), leaving this object unusable except
  // for destruction. Views taken earlier stay valid as long as the returned mapping lives.
  std::unique_ptr<MappedFile> TakeMapping() { return std::move(file_); }

  // Use Open() or Parse().
  class PrivateKey {
    friend class GgufFile;
    PrivateKey() = default;
  };
  GgufFile(PrivateKey, std::unique_ptr<MappedFile> file) : file_(std::move(file)) {}

 private:
  struct KeyValue {
    std::string key;
    GgufValueType type;
    size_t value_offset;  // File offset of the value (after the type id).
  };

  absl::Status ParseAll();
  absl::StatusOr<const KeyValue*> Find(absl::string_view key, GgufValueType want) const;
  absl::Status TypeError(const KeyValue& kv, absl::string_view wanted) const;

  std::unique_ptr<MappedFile> file_;
  uint32_t version_ = 0;
  uint64_t alignment_ = kGgufDefaultAlignment;
  uint64_t data_offset_ = 0;
  std::vector<KeyValue> kvs_;
  absl::flat_hash_map<std::string, size_t> kv_index_;
  std::vector<GgufTensorInfo> tensors_;
  absl::flat_hash_map<std::string, size_t> tensor_index_;
};

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_MODEL_GGUF_READER_H_
