// A read-only memory mapping of a whole file, unmapped on destruction (RAII).
// Thread-compatible; the mapped bytes never change, so concurrent reads are safe.
#ifndef KVSERVE_ENGINE_COMMON_MAPPED_FILE_H_
#define KVSERVE_ENGINE_COMMON_MAPPED_FILE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace kvserve::engine {

class MappedFile {
 public:
  // Maps `path` read-only. NOT_FOUND if it does not exist, INVALID_ARGUMENT if it is not a
  // regular file, INTERNAL for other system errors; the message names the path.
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(const std::string& path);

  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  // Use Open(); the constructor is public only so std::make_unique can reach it, and only
  // MappedFile can make the key.
  class PrivateKey {
    friend class MappedFile;
    PrivateKey() = default;
  };
  MappedFile(PrivateKey, std::string path, const uint8_t* data, size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}

  absl::Span<const uint8_t> bytes() const { return {data_, size_}; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  const std::string path_;
  const uint8_t* const data_;  // nullptr for an empty file.
  const size_t size_;
};

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_COMMON_MAPPED_FILE_H_
