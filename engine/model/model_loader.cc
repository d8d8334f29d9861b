#include <cstring>
#include <memory>
#include <string>
#include <utility>

#include "engine/common/mapped_file.h"
#include "engine/common/status_macros.h"
#include "engine/model/gguf_format.h"
#include "engine/model/gguf_model.h"
#include "engine/model/gguf_reader.h"
#include "engine/model/llama2c_reader.h"
#include "engine/model/model_file.h"

namespace kvserve::engine {

absl::StatusOr<std::unique_ptr<ModelFile>> LoadModelFile(const std::string& path,
                                                         const std::string& tokenizer_path) {
  KV_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path));
  uint32_t magic = 0;
  if (file->size() >= 4) std::memcpy(&magic, file->data(), 4);
  if (magic == kGgufMagic) {
    KV_ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> gguf, GgufFile::Parse(std::move(file)));
    return LoadGgufModel(std::move(gguf));
  }
  file.reset();  // The llama2.c reader maps the file itself.
  return LoadLlama2cModel(path, tokenizer_path);
}

}  // namespace kvserve::engine
