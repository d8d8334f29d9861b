// Helpers shared by the model tests: paths of the bundled model, temporary files, and a
// GGUF copier that applies edits (to craft wrong-architecture, missing-tensor, bad-shape
// variants of the bundled model). Not thread-safe (tests are single-threaded).
#ifndef KVSERVE_TESTS_ENGINE_MODEL_TEST_UTIL_H_
#define KVSERVE_TESTS_ENGINE_MODEL_TEST_UTIL_H_

#include <cstdint>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <system_error>
#include <vector>

#include "absl/status/status.h"
#include "engine/common/status_macros.h"
#include "engine/model/gguf_reader.h"
#include "engine/model/gguf_writer.h"

namespace kvserve::engine::testing {

inline std::string ModelPath(const std::string& name) {
  return std::string(KVSERVE_SOURCE_DIR) + "/models/" + name;
}
inline std::string BundledGguf() { return ModelPath("stories260K.gguf"); }
inline std::string BundledCheckpoint() { return ModelPath("stories260K.bin"); }
inline std::string BundledTokenizer() { return ModelPath("tok512.bin"); }

// A fresh directory under this process's scratch root, unique per call. The root is removed
// when the test binary exits.
inline std::string TempDir(const std::string& tag) {
  struct Root {
    std::filesystem::path path;
    ~Root() {
      std::error_code ignored;
      std::filesystem::remove_all(path, ignored);
    }
  };
  static const Root root{[] {
    const char* base = std::getenv("TEST_TMPDIR");
    return std::filesystem::path(base != nullptr ? base : "/tmp") /
           ("kvserve_model_test_" + std::to_string(::getpid()));
  }()};
  static int counter = 0;
  const std::filesystem::path dir = root.path / (tag + "_" + std::to_string(counter++));
  std::filesystem::create_directories(dir);
  return dir.string();
}

inline std::vector<uint8_t> ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

inline void WriteBytes(const std::string& path, const std::vector<uint8_t>& bytes, size_t n) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(n));
}
inline void WriteBytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  WriteBytes(path, bytes, bytes.size());
}

// Edits applied while copying a GGUF file.
struct GgufEdits {
  std::map<std::string, GgufValue> set_metadata;  // Added or replaced keys.
  std::set<std::string> remove_metadata;          // Dropped keys.
  std::set<std::string> remove_tensors;           // Dropped tensors.
  // Tensors whose stored dims (innermost first) are replaced; the data is zero-filled f32.
  std::map<std::string, std::vector<int64_t>> reshape_tensors;
  std::map<std::string, uint32_t> retype_tensors;  // Tensors given another ggml type id.
};

// Copies `src` to `dst` with `edits`; tensor bytes are copied verbatim.
inline absl::Status CopyGguf(const std::string& src, const std::string& dst,
                             const GgufEdits& edits) {
  KV_ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> in, GgufFile::Open(src));
  GgufWriter writer;
  for (const std::string& key : in->Keys()) {
    if (edits.remove_metadata.count(key)) continue;
    KV_ASSIGN_OR_RETURN(GgufValue value, in->GetValue(key));
    writer.SetMetadata(key, std::move(value));
  }
  for (const auto& [key, value] : edits.set_metadata) writer.SetMetadata(key, value);
  for (const GgufTensorInfo& t : in->tensors()) {
    if (edits.remove_tensors.count(t.name)) continue;
    std::vector<int64_t> dims = t.dims;
    std::vector<uint8_t> bytes(t.data, t.data + t.size_bytes);
    uint32_t type = t.ggml_type;
    if (auto it = edits.reshape_tensors.find(t.name); it != edits.reshape_tensors.end()) {
      dims = it->second;
      int64_t n = 1;
      for (int64_t d : dims) n *= d;
      bytes.assign(static_cast<size_t>(n) * 4, 0);
      type = 0;
    }
    if (auto it = edits.retype_tensors.find(t.name); it != edits.retype_tensors.end()) {
      type = it->second;
    }
    KV_RETURN_IF_ERROR(writer.AddRawTensor(t.name, type, dims, std::move(bytes)));
  }
  return writer.WriteFile(dst);
}

}  // namespace kvserve::engine::testing

#endif  // KVSERVE_TESTS_ENGINE_MODEL_TEST_UTIL_H_
