#include "tests/fuzz/fuzz_file.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/model/gguf_format.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#include <sanitizer/asan_interface.h>
#define KVSERVE_FUZZ_HAS_ASAN 1
#endif
#endif

namespace kvserve::fuzz {

void Fail(const std::string& message) {
  std::fprintf(stderr, "kvserve fuzz invariant broken: %s\n", message.c_str());
  std::fflush(stderr);
  std::abort();
}

FuzzFile::FuzzFile(const char* name) {
  fd_ = ::memfd_create(name, MFD_CLOEXEC);
  if (fd_ < 0) Fail("memfd_create failed");
  path_ = absl::StrCat("/proc/self/fd/", fd_);
}

FuzzFile::~FuzzFile() {
  if (fd_ >= 0) ::close(fd_);
}

const std::string& FuzzFile::Write(const uint8_t* data, size_t size) {
  if (::ftruncate(fd_, 0) != 0) Fail("ftruncate failed");
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::pwrite(fd_, data + done, size - done, static_cast<off_t>(done));
    if (n <= 0) Fail("pwrite to the memfd failed");
    done += static_cast<size_t>(n);
  }
  return path_;
}

PoisonedTail::PoisonedTail(const engine::MappedFile& file) {
#ifdef KVSERVE_FUZZ_HAS_ASAN
  if (file.data() == nullptr) return;
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  const size_t mapped = (file.size() + page - 1) / page * page;
  begin_ = file.data() + file.size();
  size_ = mapped - file.size();
  if (size_ > 0) ASAN_POISON_MEMORY_REGION(begin_, size_);
#else
  (void)file;
#endif
}

PoisonedTail::~PoisonedTail() {
#ifdef KVSERVE_FUZZ_HAS_ASAN
  if (size_ > 0) ASAN_UNPOISON_MEMORY_REGION(begin_, size_);
#endif
}

void CheckTensorView(const engine::TensorData& tensor, const uint8_t* begin, size_t size) {
  const int64_t n = tensor.num_elements();
  if (n < 0) Fail(absl::StrCat(tensor.name, ": negative element count ", n));
  for (int64_t d : tensor.shape) {
    // GGUF (like ggml) allows empty tensors; a model's shape checks reject them later.
    if (d < 0) Fail(absl::StrCat(tensor.name, ": dimension ", d));
  }
  const uint64_t want = engine::TensorBytes(tensor.type, static_cast<uint64_t>(n));
  if (tensor.size_bytes != want) {
    Fail(absl::StrCat(tensor.name, ": size_bytes ", tensor.size_bytes, " but shape and type give ",
                      want));
  }
  if (n == 0) return;
  const uintptr_t lo = reinterpret_cast<uintptr_t>(begin);
  const uintptr_t p = reinterpret_cast<uintptr_t>(tensor.data);
  if (tensor.data == nullptr || p < lo || p - lo > size || tensor.size_bytes > size - (p - lo)) {
    Fail(absl::StrCat(tensor.name, ": view of ", tensor.size_bytes, " bytes at mapping offset ",
                      static_cast<int64_t>(p - lo), " outside a ", size, "-byte mapping"));
  }
  // Decode the first and the last few elements (q8_0 blocks included).
  std::vector<float> out(static_cast<size_t>(std::min<int64_t>(n, 40)));
  if (!engine::DecodeToF32(tensor, 0, absl::MakeSpan(out)).ok() ||
      !engine::DecodeToF32(tensor, n - static_cast<int64_t>(out.size()), absl::MakeSpan(out))
           .ok()) {
    Fail(absl::StrCat(tensor.name, ": DecodeToF32 rejects an in-range element range"));
  }
}

void CheckModelWeights(const engine::ModelFile& model) {
  if (model.storage.empty() || model.storage.front() == nullptr) Fail("a model without storage");
  const engine::MappedFile& map = *model.storage.front();
  const engine::ModelWeights& w = model.weights;
  std::vector<const engine::TensorData*> all = {&w.token_embedding, &w.output_norm, &w.output};
  for (const engine::LayerWeights& l : w.layers) {
    all.insert(all.end(), {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.ffn_norm, &l.ffn_gate,
                           &l.ffn_up, &l.ffn_down});
  }
  if (static_cast<int64_t>(w.layers.size()) != model.config.n_layers) {
    Fail(absl::StrCat(w.layers.size(), " layers of weights for n_layers ", model.config.n_layers));
  }
  for (const engine::TensorData* t : all) {
    if (t->num_elements() <= 0) Fail(absl::StrCat("weight ", t->name, " is empty"));
    CheckTensorView(*t, map.data(), map.size());
  }
}

}  // namespace kvserve::fuzz
