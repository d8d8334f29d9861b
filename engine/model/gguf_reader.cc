#include "engine/model/gguf_reader.h"

#include <cstring>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "engine/common/status_macros.h"

namespace kvserve::engine {
namespace {

// Caps that keep a corrupt header from driving huge allocations or loops. Real models have a
// few dozen keys and at most a few thousand tensors.
constexpr uint64_t kMaxKeyValues = 1 << 20;
constexpr uint64_t kMaxTensors = 1 << 20;
constexpr uint64_t kMaxKeyLength = 1 << 16;
constexpr uint64_t kMaxTensorNameLength = 1 << 10;
constexpr int kMaxArrayDepth = 8;
constexpr uint64_t kMaxValueElements = 1 << 22;  // GetValue's materialisation limit.

// Smallest encoding of one value of `type` (arrays: type + count).
uint64_t MinValueBytes(GgufValueType type) {
  switch (type) {
    case GgufValueType::kUint8:
    case GgufValueType::kInt8:
    case GgufValueType::kBool:
      return 1;
    case GgufValueType::kUint16:
    case GgufValueType::kInt16:
      return 2;
    case GgufValueType::kUint32:
    case GgufValueType::kInt32:
    case GgufValueType::kFloat32:
      return 4;
    case GgufValueType::kUint64:
    case GgufValueType::kInt64:
    case GgufValueType::kFloat64:
    case GgufValueType::kString:
      return 8;
    case GgufValueType::kArray:
      return 12;
  }
  return 1;
}

bool IsFixedSize(GgufValueType type) {
  return type != GgufValueType::kString && type != GgufValueType::kArray;
}

bool IsInteger(GgufValueType type) {
  switch (type) {
    case GgufValueType::kUint8:
    case GgufValueType::kInt8:
    case GgufValueType::kUint16:
    case GgufValueType::kInt16:
    case GgufValueType::kUint32:
    case GgufValueType::kInt32:
    case GgufValueType::kUint64:
    case GgufValueType::kInt64:
      return true;
    default:
      return false;
  }
}

bool IsFloat(GgufValueType type) {
  return type == GgufValueType::kFloat32 || type == GgufValueType::kFloat64;
}

constexpr absl::string_view kSupportedTypes = "F32, F16, BF16, Q8_0, Q4_0";

// Bounds-checked little-endian reads over the mapped bytes.
class Reader {
 public:
  explicit Reader(const MappedFile& file) : file_(file), data_(file.data()), size_(file.size()) {}

  size_t pos() const { return pos_; }
  void set_pos(size_t pos) { pos_ = pos; }
  size_t remaining() const { return size_ - pos_; }

  absl::Status Error(absl::string_view message) const {
    return absl::InvalidArgumentError(absl::StrCat(file_.path(), ": ", message));
  }

  absl::Status Need(uint64_t n, absl::string_view what) const {
    if (n > remaining()) {
      return Error(absl::StrCat("truncated: ", what, " at byte ", pos_, " needs ", n,
                                " bytes but the file has ", size_, " bytes"));
    }
    return absl::OkStatus();
  }

  template <typename T>
  absl::StatusOr<T> Read(absl::string_view what) {
    KV_RETURN_IF_ERROR(Need(sizeof(T), what));
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  absl::Status Skip(uint64_t n, absl::string_view what) {
    KV_RETURN_IF_ERROR(Need(n, what));
    pos_ += n;
    return absl::OkStatus();
  }

  absl::StatusOr<absl::string_view> ReadString(absl::string_view what, uint64_t max_length) {
    KV_ASSIGN_OR_RETURN(const uint64_t length, Read<uint64_t>(what));
    if (length > max_length) {
      return Error(absl::StrCat(what, " at byte ", pos_ - 8, " claims ", length,
                                " bytes (limit ", max_length, ")"));
    }
    KV_RETURN_IF_ERROR(Need(length, what));
    absl::string_view s(reinterpret_cast<const char*>(data_ + pos_), length);
    pos_ += length;
    return s;
  }

  // Reads an array header, checking that `count` elements can fit in the rest of the file.
  absl::StatusOr<std::pair<GgufValueType, uint64_t>> ReadArrayHeader(absl::string_view what) {
    KV_ASSIGN_OR_RETURN(const uint32_t raw_type, Read<uint32_t>(what));
    if (raw_type > static_cast<uint32_t>(GgufValueType::kFloat64)) {
      return Error(absl::StrCat(what, ": unknown array element type ", raw_type));
    }
    const auto type = static_cast<GgufValueType>(raw_type);
    KV_ASSIGN_OR_RETURN(const uint64_t count, Read<uint64_t>(what));
    if (count > remaining() / MinValueBytes(type)) {
      return Error(absl::StrCat("truncated: ", what, " at byte ", pos_, " declares ", count, " ",
                                GgufValueTypeName(raw_type), " elements but the file has ",
                                size_, " bytes"));
    }
    return std::make_pair(type, count);
  }

  // Steps over one value of `type`, validating its structure.
  absl::Status SkipValue(GgufValueType type, int depth, absl::string_view what) {
    if (IsFixedSize(type)) return Skip(MinValueBytes(type), what);
    if (type == GgufValueType::kString) {
      return ReadString(what, std::numeric_limits<uint64_t>::max()).status();
    }
    if (depth >= kMaxArrayDepth) {
      return Error(absl::StrCat(what, ": arrays nested deeper than ", kMaxArrayDepth));
    }
    KV_ASSIGN_OR_RETURN(const auto header, ReadArrayHeader(what));
    const auto [element_type, count] = header;
    if (IsFixedSize(element_type)) return Skip(count * MinValueBytes(element_type), what);
    for (uint64_t i = 0; i < count; ++i) KV_RETURN_IF_ERROR(SkipValue(element_type, depth + 1, what));
    return absl::OkStatus();
  }

  // Materialises one value; `budget` counts the elements still allowed.
  absl::StatusOr<GgufValue> ReadValue(GgufValueType type, int depth, uint64_t& budget,
                                      absl::string_view what) {
    GgufValue v;
    v.type = type;
    switch (type) {
      case GgufValueType::kUint8: {
        KV_ASSIGN_OR_RETURN(v.uint_value, Read<uint8_t>(what));
        break;
      }
      case GgufValueType::kInt8: {
        KV_ASSIGN_OR_RETURN(v.int_value, Read<int8_t>(what));
        break;
      }
      case GgufValueType::kUint16: {
        KV_ASSIGN_OR_RETURN(v.uint_value, Read<uint16_t>(what));
        break;
      }
      case GgufValueType::kInt16: {
        KV_ASSIGN_OR_RETURN(v.int_value, Read<int16_t>(what));
        break;
      }
      case GgufValueType::kUint32: {
        KV_ASSIGN_OR_RETURN(v.uint_value, Read<uint32_t>(what));
        break;
      }
      case GgufValueType::kInt32: {
        KV_ASSIGN_OR_RETURN(v.int_value, Read<int32_t>(what));
        break;
      }
      case GgufValueType::kUint64: {
        KV_ASSIGN_OR_RETURN(v.uint_value, Read<uint64_t>(what));
        break;
      }
      case GgufValueType::kInt64: {
        KV_ASSIGN_OR_RETURN(v.int_value, Read<int64_t>(what));
        break;
      }
      case GgufValueType::kFloat32: {
        KV_ASSIGN_OR_RETURN(v.float_value, Read<float>(what));
        break;
      }
      case GgufValueType::kFloat64: {
        KV_ASSIGN_OR_RETURN(v.float_value, Read<double>(what));
        break;
      }
      case GgufValueType::kBool: {
        KV_ASSIGN_OR_RETURN(const uint8_t b, Read<uint8_t>(what));
        v.bool_value = b != 0;
        break;
      }
      case GgufValueType::kString: {
        KV_ASSIGN_OR_RETURN(const absl::string_view s,
                            ReadString(what, std::numeric_limits<uint64_t>::max()));
        v.string_value = std::string(s);
        break;
      }
      case GgufValueType::kArray: {
        if (depth >= kMaxArrayDepth) {
          return Error(absl::StrCat(what, ": arrays nested deeper than ", kMaxArrayDepth));
        }
        KV_ASSIGN_OR_RETURN(const auto header, ReadArrayHeader(what));
        const auto [element_type, count] = header;
        if (count > budget) {
          return Error(absl::StrCat(what, ": more than ", kMaxValueElements,
                                    " elements to materialise"));
        }
        budget -= count;
        v.array_type = element_type;
        v.array.reserve(count);
        for (uint64_t i = 0; i < count; ++i) {
          KV_ASSIGN_OR_RETURN(GgufValue element, ReadValue(element_type, depth + 1, budget, what));
          v.array.push_back(std::move(element));
        }
        break;
      }
    }
    return v;
  }

  // Reads one integer of any integer type as int64.
  absl::StatusOr<int64_t> ReadInteger(GgufValueType type, absl::string_view what) {
    switch (type) {
      case GgufValueType::kUint8:
        return Read<uint8_t>(what);
      case GgufValueType::kInt8:
        return Read<int8_t>(what);
      case GgufValueType::kUint16:
        return Read<uint16_t>(what);
      case GgufValueType::kInt16:
        return Read<int16_t>(what);
      case GgufValueType::kUint32:
        return Read<uint32_t>(what);
      case GgufValueType::kInt32:
        return Read<int32_t>(what);
      case GgufValueType::kInt64:
        return Read<int64_t>(what);
      case GgufValueType::kUint64: {
        KV_ASSIGN_OR_RETURN(const uint64_t u, Read<uint64_t>(what));
        if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
          return Error(absl::StrCat(what, ": value ", u, " does not fit in int64"));
        }
        return static_cast<int64_t>(u);
      }
      default:
        return Error(absl::StrCat(what, ": not an integer"));
    }
  }

  absl::StatusOr<double> ReadFloat(GgufValueType type, absl::string_view what) {
    if (type == GgufValueType::kFloat32) return Read<float>(what);
    if (type == GgufValueType::kFloat64) return Read<double>(what);
    return Error(absl::StrCat(what, ": not a float"));
  }

 private:
  const MappedFile& file_;
  const uint8_t* const data_;
  const size_t size_;
  size_t pos_ = 0;
};

}  // namespace

GgufFile::~GgufFile() = default;

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::Open(const std::string& path) {
  KV_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path));
  return Parse(std::move(file));
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::Parse(std::unique_ptr<MappedFile> file) {
  if (file == nullptr) return absl::InvalidArgumentError("GgufFile::Parse: no file");
  auto gguf = std::make_unique<GgufFile>(PrivateKey{}, std::move(file));
  KV_RETURN_IF_ERROR(gguf->ParseAll());
  return gguf;
}

absl::Status GgufFile::ParseAll() {
  Reader r(*file_);
  KV_ASSIGN_OR_RETURN(const uint32_t magic, r.Read<uint32_t>("GGUF magic"));
  if (magic != kGgufMagic) return r.Error("not a GGUF file (its first 4 bytes are not \"GGUF\")");
  KV_ASSIGN_OR_RETURN(version_, r.Read<uint32_t>("GGUF version"));
  if (version_ != 2 && version_ != 3) {
    if ((version_ & 0xffff) == 0 && version_ != 0) {
      return r.Error(absl::StrCat("big-endian GGUF files are not supported (version field ",
                                  version_, ")"));
    }
    return r.Error(absl::StrCat("unsupported GGUF version ", version_, " (supported: 2, 3)"));
  }
  KV_ASSIGN_OR_RETURN(const uint64_t tensor_count, r.Read<uint64_t>("tensor count"));
  KV_ASSIGN_OR_RETURN(const uint64_t kv_count, r.Read<uint64_t>("metadata count"));
  if (kv_count > kMaxKeyValues || kv_count > r.remaining() / 13) {
    return r.Error(absl::StrCat("metadata count ", kv_count, " is impossible for a file of ",
                                file_->size(), " bytes"));
  }

  kvs_.reserve(kv_count);
  for (uint64_t i = 0; i < kv_count; ++i) {
    const std::string what = absl::StrCat("key of metadata entry ", i);
    KV_ASSIGN_OR_RETURN(const absl::string_view key, r.ReadString(what, kMaxKeyLength));
    const std::string value_what = absl::StrCat("value of metadata key '", key, "'");
    KV_ASSIGN_OR_RETURN(const uint32_t raw_type, r.Read<uint32_t>(value_what));
    if (raw_type > static_cast<uint32_t>(GgufValueType::kFloat64)) {
      return r.Error(absl::StrCat("metadata key '", key, "' has unknown value type ", raw_type));
    }
    const auto type = static_cast<GgufValueType>(raw_type);
    const size_t value_offset = r.pos();
    KV_RETURN_IF_ERROR(r.SkipValue(type, 0, value_what));
    if (!kv_index_.emplace(std::string(key), kvs_.size()).second) {
      return r.Error(absl::StrCat("duplicate metadata key '", key, "'"));
    }
    kvs_.push_back(KeyValue{std::string(key), type, value_offset});
  }

  if (HasKey("general.alignment")) {
    const KeyValue& kv = kvs_[kv_index_.find("general.alignment")->second];
    if (!IsInteger(kv.type)) return TypeError(kv, "an integer");
    KV_ASSIGN_OR_RETURN(const int64_t alignment, GetInt("general.alignment"));
    if (alignment <= 0 || alignment > (1 << 30) || (alignment & (alignment - 1)) != 0) {
      return r.Error(absl::StrCat("general.alignment ", alignment, " is not a power of two"));
    }
    alignment_ = static_cast<uint64_t>(alignment);
  }

  // Smallest tensor info: name length, n_dims, one dimension, type, offset.
  if (tensor_count > kMaxTensors || tensor_count > r.remaining() / 32) {
    return r.Error(absl::StrCat("tensor count ", tensor_count, " is impossible for a file of ",
                                file_->size(), " bytes"));
  }
  tensors_.reserve(tensor_count);
  for (uint64_t i = 0; i < tensor_count; ++i) {
    GgufTensorInfo info;
    KV_ASSIGN_OR_RETURN(const absl::string_view name,
                        r.ReadString(absl::StrCat("name of tensor ", i), kMaxTensorNameLength));
    info.name = std::string(name);
    const std::string what = absl::StrCat("tensor info of ", info.name);
    KV_ASSIGN_OR_RETURN(const uint32_t n_dims, r.Read<uint32_t>(what));
    if (n_dims < 1 || n_dims > kGgufMaxDims) {
      return r.Error(absl::StrCat("tensor ", info.name, " has ", n_dims,
                                  " dimensions (expected 1 to ", kGgufMaxDims, ")"));
    }
    uint64_t elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      KV_ASSIGN_OR_RETURN(const uint64_t dim, r.Read<uint64_t>(what));
      // Keep the element count (and so the byte count) far from overflow.
      if (dim > (uint64_t{1} << 40) ||
          __builtin_mul_overflow(elements, dim, &elements) || elements > (uint64_t{1} << 52)) {
        return r.Error(absl::StrCat("tensor ", info.name, " has an impossible shape (dimension ",
                                    d, " = ", dim, ")"));
      }
      info.dims.push_back(static_cast<int64_t>(dim));
    }
    KV_ASSIGN_OR_RETURN(info.ggml_type, r.Read<uint32_t>(what));
    KV_ASSIGN_OR_RETURN(info.offset, r.Read<uint64_t>(what));
    const std::optional<TensorType> type = TensorTypeFromGgml(info.ggml_type);
    if (!type.has_value()) {
      return r.Error(absl::StrCat("tensor ", info.name, " has type ", GgmlTypeName(info.ggml_type),
                                  " (ggml type ", info.ggml_type,
                                  "), which kvserve does not support (supported: ",
                                  kSupportedTypes, ")"));
    }
    info.type = *type;
    if (const int64_t block = TensorBlockValues(info.type); info.dims[0] % block != 0) {
      return r.Error(absl::StrCat("tensor ", info.name, " is ", GgmlTypeName(info.ggml_type),
                                  " but its row length ", info.dims[0],
                                  " is not a multiple of ", block));
    }
    info.size_bytes = TensorBytes(info.type, elements);
    if (!tensor_index_.emplace(info.name, tensors_.size()).second) {
      return r.Error(absl::StrCat("duplicate tensor name ", info.name));
    }
    tensors_.push_back(std::move(info));
  }

  const uint64_t size = file_->size();
  const uint64_t header_end = r.pos();
  data_offset_ = (header_end + alignment_ - 1) / alignment_ * alignment_;
  for (GgufTensorInfo& info : tensors_) {
    if (info.offset % alignment_ != 0) {
      return r.Error(absl::StrCat("tensor ", info.name, " has offset ", info.offset,
                                  ", not a multiple of the alignment ", alignment_));
    }
    uint64_t start = 0;
    uint64_t end = 0;
    if (__builtin_add_overflow(data_offset_, info.offset, &start) ||
        __builtin_add_overflow(start, info.size_bytes, &end)) {
      return r.Error(absl::StrCat("tensor ", info.name, " has an impossible offset ",
                                  info.offset));
    }
    if (end > size) {
      return r.Error(absl::StrCat("truncated: tensor data of ", info.name, " ends at byte ", end,
                                  " but the file has ", size, " bytes"));
    }
    info.data = file_->data() + start;
  }
  return absl::OkStatus();
}

std::vector<std::string> GgufFile::Keys() const {
  std::vector<std::string> keys;
  keys.reserve(kvs_.size());
  for (const KeyValue& kv : kvs_) keys.push_back(kv.key);
  return keys;
}

bool GgufFile::HasKey(absl::string_view key) const { return kv_index_.contains(key); }

std::optional<GgufValueType> GgufFile::KeyType(absl::string_view key) const {
  auto it = kv_index_.find(key);
  if (it == kv_index_.end()) return std::nullopt;
  return kvs_[it->second].type;
}

absl::Status GgufFile::TypeError(const KeyValue& kv, absl::string_view wanted) const {
  std::string actual = GgufValueTypeName(static_cast<uint32_t>(kv.type));
  if (kv.type == GgufValueType::kArray) {
    Reader r(*file_);
    r.set_pos(kv.value_offset);
    auto element = r.Read<uint32_t>("array type");
    if (element.ok()) absl::StrAppend(&actual, " of ", GgufValueTypeName(*element));
  }
  return absl::InvalidArgumentError(absl::StrCat(path(), ": metadata key '", kv.key, "' is ",
                                                 actual, ", expected ", wanted));
}

absl::StatusOr<const GgufFile::KeyValue*> GgufFile::Find(absl::string_view key,
                                                        GgufValueType want) const {
  auto it = kv_index_.find(key);
  if (it == kv_index_.end()) {
    return absl::NotFoundError(absl::StrCat(path(), ": metadata key '", key, "' is missing"));
  }
  const KeyValue& kv = kvs_[it->second];
  if (kv.type != want) return TypeError(kv, GgufValueTypeName(static_cast<uint32_t>(want)));
  return &kv;
}

absl::StatusOr<std::string> GgufFile::GetString(absl::string_view key) const {
  KV_ASSIGN_OR_RETURN(const KeyValue* kv, Find(key, GgufValueType::kString));
  Reader r(*file_);
  r.set_pos(kv->value_offset);
  KV_ASSIGN_OR_RETURN(const absl::string_view s,
                      r.ReadString(key, std::numeric_limits<uint64_t>::max()));
  return std::string(s);
}

absl::StatusOr<int64_t> GgufFile::GetInt(absl::string_view key) const {
  auto it = kv_index_.find(key);
  if (it == kv_index_.end()) {
    return absl::NotFoundError(absl::StrCat(path(), ": metadata key '", key, "' is missing"));
  }
  const KeyValue& kv = kvs_[it->second];
  if (!IsInteger(kv.type)) return TypeError(kv, "an integer");
  Reader r(*file_);
  r.set_pos(kv.value_offset);
  return r.ReadInteger(kv.type, key);
}

absl::StatusOr<double> GgufFile::GetFloat(absl::string_view key) const {
  auto it = kv_index_.find(key);
  if (it == kv_index_.end()) {
    return absl::NotFoundError(absl::StrCat(path(), ": metadata key '", key, "' is missing"));
  }
  const KeyValue& kv = kvs_[it->second];
  if (!IsFloat(kv.type)) return TypeError(kv, "FLOAT32 or FLOAT64");
  Reader r(*file_);
  r.set_pos(kv.value_offset);
  return r.ReadFloat(kv.type, key);
}

absl::StatusOr<bool> GgufFile::GetBool(absl::string_view key) const {
  KV_ASSIGN_OR_RETURN(const KeyValue* kv, Find(key, GgufValueType::kBool));
  Reader r(*file_);
  r.set_pos(kv->value_offset);
  KV_ASSIGN_OR_RETURN(const uint8_t b, r.Read<uint8_t>(key));
  return b != 0;
}

absl::StatusOr<std::vector<std::string>> GgufFile::GetStringArray(absl::string_view key) const {
  KV_ASSIGN_OR_RETURN(const KeyValue* kv, Find(key, GgufValueType::kArray));
  Reader r(*file_);
  r.set_pos(kv->value_offset);
  KV_ASSIGN_OR_RETURN(const auto header, r.ReadArrayHeader(key));
  if (header.first != GgufValueType::kString) return TypeError(*kv, "ARRAY of STRING");
  std::vector<std::string> out;
  out.reserve(header.second);
  for (uint64_t i = 0; i < header.second; ++i) {
    KV_ASSIGN_OR_RETURN(const absl::string_view s,
                        r.ReadString(key, std::numeric_limits<uint64_t>::max()));
    out.emplace_back(s);
  }
  return out;
}

absl::StatusOr<std::vector<int64_t>> GgufFile::GetIntArray(absl::string_view key) const {
  KV_ASSIGN_OR_RETURN(const KeyValue* kv, Find(key, GgufValueType::kArray));
  Reader r(*file_);
  r.set_pos(kv->value_offset);
  KV_ASSIGN_OR_RETURN(const auto header, r.ReadArrayHeader(key));
  if (!IsInteger(header.first)) return TypeError(*kv, "ARRAY of an integer type");
  std::vector<int64_t> out;
  out.reserve(header.second);
  for (uint64_t i = 0; i < header.second; ++i) {
    KV_ASSIGN_OR_RETURN(const int64_t v, r.ReadInteger(header.first, key));
    out.push_back(v);
  }
  return out;
}

absl::StatusOr<std::vector<float>> GgufFile::GetFloatArray(absl::string_view key) const {
  KV_ASSIGN_OR_RETURN(const KeyValue* kv, Find(key, GgufValueType::kArray));
  Reader r(*file_);
  r.set_pos(kv->value_offset);
  KV_ASSIGN_OR_RETURN(const auto header, r.ReadArrayHeader(key));
  if (!IsFloat(header.first)) return TypeError(*kv, "ARRAY of FLOAT32 or FLOAT64");
  std::vector<float> out;
  out.reserve(header.second);
  for (uint64_t i = 0; i < header.second; ++i) {
    KV_ASSIGN_OR_RETURN(const double v, r.ReadFloat(header.first, key));
    out.push_back(static_cast<float>(v));
  }
  return out;
}

absl::StatusOr<GgufValue> GgufFile::GetValue(absl::string_view key) const {
  auto it = kv_index_.find(key);
  if (it == kv_index_.end()) {
    return absl::NotFoundError(absl::StrCat(path(), ": metadata key '", key, "' is missing"));
  }
  const KeyValue& kv = kvs_[it->second];
  Reader r(*file_);
  r.set_pos(kv.value_offset);
  uint64_t budget = kMaxValueElements;
  return r.ReadValue(kv.type, 0, budget, key);
}

const GgufTensorInfo* GgufFile::FindTensor(absl::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<TensorData> GgufFile::GetTensor(absl::string_view name) const {
  const GgufTensorInfo* info = FindTensor(name);
  if (info == nullptr) {
    return absl::NotFoundError(absl::StrCat(path(), ": tensor ", name, " is missing"));
  }
  TensorData t;
  t.name = info->name;
  t.type = info->type;
  t.shape.assign(info->dims.rbegin(), info->dims.rend());
  t.data = info->data;
  t.size_bytes = info->size_bytes;
  return t;
}

}  // namespace kvserve::engine
