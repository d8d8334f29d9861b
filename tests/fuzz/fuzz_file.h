// Helpers shared by the libFuzzer targets that feed bytes to path-taking readers.
//
// FuzzFile holds one fuzz input as a file without touching the disk: a memfd, which the
// readers open through its /proc/self/fd/N path like any regular file (MappedFile::Open maps
// it). The descriptor is reused across inputs. Not thread-safe: one per target, used from
// libFuzzer's single fuzzing thread.
#ifndef KVSERVE_TESTS_FUZZ_FUZZ_FILE_H_
#define KVSERVE_TESTS_FUZZ_FUZZ_FILE_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/common/mapped_file.h"
#include "engine/model/model_file.h"
#include "engine/model/tensor_data.h"

namespace kvserve::fuzz {

class FuzzFile {
 public:
  // `name` only labels the memfd (visible in /proc/self/fd). Aborts if no memfd can be made:
  // that is a broken harness, not an input.
  explicit FuzzFile(const char* name);
  ~FuzzFile();
  FuzzFile(const FuzzFile&) = delete;
  FuzzFile& operator=(const FuzzFile&) = delete;

  // Replaces the file's contents with `size` bytes at `data`; returns path().
  const std::string& Write(const uint8_t* data, size_t size);
  const std::string& path() const { return path_; }

 private:
  int fd_ = -1;
  std::string path_;
};

// A mapping's bytes past the end of the file up to the end of its last page read as zeros and
// so escape AddressSanitizer. While one of these lives, that tail is poisoned, so a parser
// reading past the end of its input is reported (use-after-poison) instead of silently
// seeing zeros. The tail is unpoisoned on destruction, which may come after the mapping is
// gone. No-op without ASan.
class PoisonedTail {
 public:
  explicit PoisonedTail(const engine::MappedFile& file);
  ~PoisonedTail();
  PoisonedTail(const PoisonedTail&) = delete;
  PoisonedTail& operator=(const PoisonedTail&) = delete;

 private:
  const uint8_t* begin_ = nullptr;
  size_t size_ = 0;
};

// Crashes (so libFuzzer records the input) unless `tensor`'s bytes lie inside
// [begin, begin + size) and its size agrees with its shape and type; then decodes its first
// and last elements, so a view that points outside the mapping faults here.
void CheckTensorView(const engine::TensorData& tensor, const uint8_t* begin, size_t size);

// CheckTensorView for every weight of a loaded model against its first mapping, and no
// weight may be empty.
void CheckModelWeights(const engine::ModelFile& model);

// Prints `message` to stderr and aborts: a broken invariant found by a fuzz target.
[[noreturn]] void Fail(const std::string& message);

}  // namespace kvserve::fuzz

#endif  // KVSERVE_TESTS_FUZZ_FUZZ_FILE_H_
