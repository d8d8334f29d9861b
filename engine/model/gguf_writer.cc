#include "engine/model/gguf_writer.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/common/status_macros.h"

namespace kvserve::engine {
namespace {

constexpr int64_t kChunkElements = 1 << 20;  // f32 values converted per write.

template <typename T>
void Append(std::string& out, T v) {
  char buf[sizeof(T)];
  std::memcpy(buf, &v, sizeof(T));
  out.append(buf, sizeof(T));
}

void AppendString(std::string& out, const std::string& s) {
  Append<uint64_t>(out, s.size());
  out.append(s);
}

absl::Status AppendValue(std::string& out, const GgufValue& v) {
  switch (v.type) {
    case GgufValueType::kUint8:
      Append<uint8_t>(out, static_cast<uint8_t>(v.uint_value));
      break;
    case GgufValueType::kInt8:
      Append<int8_t>(out, static_cast<int8_t>(v.int_value));
      break;
    case GgufValueType::kUint16:
      Append<uint16_t>(out, static_cast<uint16_t>(v.uint_value));
      break;
    case GgufValueType::kInt16:
      Append<int16_t>(out, static_cast<int16_t>(v.int_value));
      break;
    case GgufValueType::kUint32:
      Append<uint32_t>(out, static_cast<uint32_t>(v.uint_value));
      break;
    case GgufValueType::kInt32:
      Append<int32_t>(out, static_cast<int32_t>(v.int_value));
      break;
    case GgufValueType::kUint64:
      Append<uint64_t>(out, v.uint_value);
      break;
    case GgufValueType::kInt64:
      Append<int64_t>(out, v.int_value);
      break;
    case GgufValueType::kFloat32:
      Append<float>(out, static_cast<float>(v.float_value));
      break;
    case GgufValueType::kFloat64:
      Append<double>(out, v.float_value);
      break;
    case GgufValueType::kBool:
      Append<uint8_t>(out, v.bool_value ? 1 : 0);
      break;
    case GgufValueType::kString:
      AppendString(out, v.string_value);
      break;
    case GgufValueType::kArray:
      Append<uint32_t>(out, static_cast<uint32_t>(v.array_type));
      Append<uint64_t>(out, v.array.size());
      for (const GgufValue& e : v.array) {
        if (e.type != v.array_type) {
          return absl::InvalidArgumentError(
              absl::StrCat("array of ", GgufValueTypeName(static_cast<uint32_t>(v.array_type)),
                           " holds a ", GgufValueTypeName(static_cast<uint32_t>(e.type))));
        }
        KV_RETURN_IF_ERROR(AppendValue(out, e));
      }
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("unknown GGUF value type ", static_cast<uint32_t>(v.type)));
  }
  return absl::OkStatus();
}

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

}  // namespace

void QuantizeRowQ8_0(const float* x, int64_t n, uint8_t* out) {
  for (int64_t b = 0; b < n / kQ8_0BlockSize; ++b) {
    const float* block = x + b * kQ8_0BlockSize;
    float amax = 0.0f;
    for (int64_t j = 0; j < kQ8_0BlockSize; ++j) amax = std::max(amax, std::fabs(block[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    uint8_t* dst = out + b * kQ8_0BlockBytes;
    const uint16_t dh = FloatToHalf(d);
    std::memcpy(dst, &dh, 2);
    for (int64_t j = 0; j < kQ8_0BlockSize; ++j) {
      dst[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::roundf(block[j] * id)));
    }
  }
}

void QuantizeRowQ4_0(const float* x, int64_t n, uint8_t* out) {
  for (int64_t b = 0; b < n / kQ4_0BlockSize; ++b) {
    const float* block = x + b * kQ4_0BlockSize;
    // ggml's reference: the value of largest magnitude maps to -8 exactly.
    float amax = 0.0f, max = 0.0f;
    for (int64_t j = 0; j < kQ4_0BlockSize; ++j) {
      if (std::fabs(block[j]) > amax) {
        amax = std::fabs(block[j]);
        max = block[j];
      }
    }
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    uint8_t* dst = out + b * kQ4_0BlockBytes;
    const uint16_t dh = FloatToHalf(d);
    std::memcpy(dst, &dh, 2);
    const auto nibble = [&](float v) {
      return static_cast<uint8_t>(std::min(15, static_cast<int>(v * id + 8.5f)));
    };
    for (int64_t j = 0; j < kQ4_0BlockSize / 2; ++j) {
      dst[2 + j] = nibble(block[j]) | static_cast<uint8_t>(nibble(block[j + 16]) << 4);
    }
  }
}

std::vector<uint8_t> EncodeTensorValues(TensorType type, absl::Span<const float> values) {
  const int64_t n = static_cast<int64_t>(values.size());
  std::vector<uint8_t> out(TensorBytes(type, static_cast<uint64_t>(n)));
  switch (type) {
    case TensorType::kF32:
      std::memcpy(out.data(), values.data(), out.size());
      break;
    case TensorType::kF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = FloatToHalf(values[i]);
        std::memcpy(out.data() + 2 * i, &h, 2);
      }
      break;
    case TensorType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = FloatToBf16(values[i]);
        std::memcpy(out.data() + 2 * i, &h, 2);
      }
      break;
    case TensorType::kQ8_0:
      QuantizeRowQ8_0(values.data(), n, out.data());
      break;
    case TensorType::kQ4_0:
      QuantizeRowQ4_0(values.data(), n, out.data());
      break;
  }
  return out;
}

void GgufWriter::SetMetadata(const std::string& key, GgufValue value) {
  for (auto& [k, v] : metadata_) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  metadata_.emplace_back(key, std::move(value));
}

void GgufWriter::RemoveMetadata(const std::string& key) {
  std::erase_if(metadata_, [&](const auto& kv) { return kv.first == key; });
}

absl::Status GgufWriter::SetAlignment(uint64_t alignment) {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0 || alignment > (1u << 30)) {
    return absl::InvalidArgumentError(absl::StrCat("alignment ", alignment,
                                                   " is not a power of two"));
  }
  alignment_ = alignment;
  if (alignment != kGgufDefaultAlignment) {
    SetMetadata("general.alignment", GgufValue::Uint32(static_cast<uint32_t>(alignment)));
  } else {
    RemoveMetadata("general.alignment");
  }
  return absl::OkStatus();
}

absl::Status GgufWriter::AddTensor(const std::string& name, TensorType type,
                                   std::vector<int64_t> shape, GgufRowSource source) {
  if (shape.empty() || shape.size() > static_cast<size_t>(kGgufMaxDims)) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, ": ", shape.size(),
                                                   " dimensions (expected 1 to 4)"));
  }
  Tensor t;
  t.name = name;
  t.type = type;
  t.ggml_type = GgmlTypeOf(type);
  t.cols = shape.back();
  t.rows = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", name, ": dimension ", i,
                                                     " is ", shape[i]));
    }
    if (i + 1 < shape.size()) t.rows *= shape[i];
  }
  if (const int64_t block = TensorBlockValues(type); t.cols % block != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor ", name, ": ", std::string(TensorTypeName(type)), " rows of ",
                     t.cols, " values are not a multiple of ", block));
  }
  t.dims.assign(shape.rbegin(), shape.rend());
  t.size_bytes = TensorBytes(type, static_cast<uint64_t>(t.rows * t.cols));
  t.source = std::move(source);
  tensors_.push_back(std::move(t));
  return absl::OkStatus();
}

absl::Status GgufWriter::AddTensor(const std::string& name, TensorType type,
                                   std::vector<int64_t> shape, std::vector<float> values) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  if (n != static_cast<int64_t>(values.size())) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, ": ", values.size(),
                                                   " values for ", n, " elements"));
  }
  const int64_t cols = shape.empty() ? 1 : shape.back();
  auto data = std::make_shared<std::vector<float>>(std::move(values));
  return AddTensor(name, type, std::move(shape),
                   [data, cols](int64_t first_row, absl::Span<float> out) {
                     std::memcpy(out.data(), data->data() + first_row * cols,
                                 out.size() * sizeof(float));
                     return absl::OkStatus();
                   });
}

absl::Status GgufWriter::AddRawTensor(const std::string& name, uint32_t ggml_type,
                                      std::vector<int64_t> dims_innermost_first,
                                      std::vector<uint8_t> bytes) {
  Tensor t;
  t.name = name;
  t.ggml_type = ggml_type;
  t.dims = std::move(dims_innermost_first);
  t.raw = true;
  t.size_bytes = bytes.size();
  t.bytes = std::move(bytes);
  tensors_.push_back(std::move(t));
  return absl::OkStatus();
}

absl::Status GgufWriter::WriteFile(const std::string& path) {
  const std::string tmp_path = path + ".tmp";
  absl::Status status = WriteTo(tmp_path);
  if (status.ok() && std::rename(tmp_path.c_str(), path.c_str()) != 0) {
    status = absl::InternalError(absl::StrCat("cannot rename ", tmp_path, " to ", path, ": ",
                                              std::strerror(errno)));
  }
  if (!status.ok()) std::remove(tmp_path.c_str());
  return status;
}

absl::Status GgufWriter::WriteTo(const std::string& tmp_path) {
  // Header, metadata and tensor infos are small: build them in memory.
  std::string head;
  Append<uint32_t>(head, kGgufMagic);
  Append<uint32_t>(head, kGgufVersion);
  Append<uint64_t>(head, tensors_.size());
  Append<uint64_t>(head, metadata_.size());
  for (const auto& [key, value] : metadata_) {
    AppendString(head, key);
    Append<uint32_t>(head, static_cast<uint32_t>(value.type));
    absl::Status s = AppendValue(head, value);
    if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat("metadata ", key, ": ", s.message()));
  }
  uint64_t offset = 0;
  for (Tensor& t : tensors_) {
    t.offset = offset;
    offset += (t.size_bytes + alignment_ - 1) / alignment_ * alignment_;
    AppendString(head, t.name);
    Append<uint32_t>(head, static_cast<uint32_t>(t.dims.size()));
    for (int64_t d : t.dims) Append<uint64_t>(head, static_cast<uint64_t>(d));
    Append<uint32_t>(head, t.ggml_type);
    Append<uint64_t>(head, t.offset);
  }
  head.resize((head.size() + alignment_ - 1) / alignment_ * alignment_, '\0');

  std::unique_ptr<std::FILE, FileCloser> file(std::fopen(tmp_path.c_str(), "wb"));
  if (file == nullptr) {
    return absl::InternalError(absl::StrCat("cannot create ", tmp_path, ": ",
                                            std::strerror(errno)));
  }
  auto write = [&](const void* p, size_t n) -> absl::Status {
    if (n > 0 && std::fwrite(p, 1, n, file.get()) != n) {
      return absl::InternalError(absl::StrCat("cannot write ", tmp_path, ": ",
                                              std::strerror(errno)));
    }
    return absl::OkStatus();
  };
  KV_RETURN_IF_ERROR(write(head.data(), head.size()));

  const std::vector<uint8_t> padding(alignment_, 0);
  std::vector<float> values;
  for (Tensor& t : tensors_) {
    if (t.raw) {
      KV_RETURN_IF_ERROR(write(t.bytes.data(), t.bytes.size()));
    } else {
      const int64_t rows_per_chunk = std::max<int64_t>(1, kChunkElements / t.cols);
      for (int64_t row = 0; row < t.rows; row += rows_per_chunk) {
        const int64_t n_rows = std::min(rows_per_chunk, t.rows - row);
        values.resize(static_cast<size_t>(n_rows * t.cols));
        absl::Status s = t.source(row, absl::MakeSpan(values));
        if (!s.ok()) {
          return absl::Status(s.code(), absl::StrCat("tensor ", t.name, ": ", s.message()));
        }
        const std::vector<uint8_t> bytes = EncodeTensorValues(t.type, values);
        KV_RETURN_IF_ERROR(write(bytes.data(), bytes.size()));
      }
      t.source = nullptr;  // Release whatever the source holds.
    }
    const uint64_t pad = (alignment_ - t.size_bytes % alignment_) % alignment_;
    KV_RETURN_IF_ERROR(write(padding.data(), pad));
  }
  std::FILE* raw = file.release();
  if (std::fclose(raw) != 0) {
    return absl::InternalError(absl::StrCat("cannot write ", tmp_path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace kvserve::engine
