#include "engine/model/gguf_reader.h"

#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/model/gguf_model.h"
#include "engine/model/gguf_writer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/model/test_util.h"

namespace kvserve::engine {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;

TEST(GgufReaderTest, ReadsTheBundledModel) {
  auto f = GgufFile::Open(testing::BundledGguf());
  ASSERT_TRUE(f.ok()) << f.status();
  const GgufFile& g = **f;
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(g.alignment(), 32u);
  EXPECT_EQ(*g.GetString("general.architecture"), "llama");
  EXPECT_EQ(*g.GetString("general.name"), "stories260K");
  EXPECT_EQ(*g.GetInt("llama.embedding_length"), 64);
  EXPECT_EQ(*g.GetInt("llama.block_count"), 5);
  EXPECT_EQ(*g.GetInt("llama.attention.head_count"), 8);
  EXPECT_EQ(*g.GetInt("llama.attention.head_count_kv"), 4);
  EXPECT_EQ(*g.GetInt("llama.feed_forward_length"), 172);
  EXPECT_EQ(*g.GetInt("llama.context_length"), 512);
  EXPECT_EQ(*g.GetInt("llama.rope.dimension_count"), 8);
  EXPECT_FLOAT_EQ(static_cast<float>(*g.GetFloat("llama.attention.layer_norm_rms_epsilon")),
                  1e-5f);
  EXPECT_EQ(*g.GetFloat("llama.rope.freq_base"), 10000.0);
  EXPECT_TRUE(*g.GetBool("tokenizer.ggml.add_bos_token"));
  EXPECT_EQ(g.KeyType("tokenizer.ggml.tokens"), GgufValueType::kArray);
  EXPECT_EQ(g.GetStringArray("tokenizer.ggml.tokens")->size(), 512u);

  EXPECT_EQ(g.tensors().size(), 3u + 5u * 9u);
  const GgufTensorInfo* embd = g.FindTensor("token_embd.weight");
  ASSERT_NE(embd, nullptr);
  EXPECT_EQ(embd->dims, (std::vector<int64_t>{64, 512}));
  EXPECT_EQ(embd->ggml_type, 0u);
  auto t = g.GetTensor("blk.4.ffn_down.weight");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->shape, (std::vector<int64_t>{64, 172}));
  EXPECT_EQ(t->type, TensorType::kF32);
  EXPECT_EQ(t->size_bytes, 64u * 172u * 4u);
  EXPECT_EQ(g.GetTensor("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(g.FindTensor("nope"), nullptr);
}

TEST(GgufReaderTest, MissingFileIsNotFound) {
  auto f = GgufFile::Open(testing::ModelPath("no_such_model.gguf"));
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(f.status().message()), HasSubstr("no_such_model.gguf"));
}

// Little-endian byte builder for hand-made headers.
class Bytes {
 public:
  Bytes& U32(uint32_t v) { return Raw(&v, 4); }
  Bytes& U64(uint64_t v) { return Raw(&v, 8); }
  Bytes& Str(const std::string& s) {
    U64(s.size());
    return Raw(s.data(), s.size());
  }
  Bytes& Raw(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    bytes_.insert(bytes_.end(), b, b + n);
    return *this;
  }
  Bytes& Pad(size_t alignment) {
    while (bytes_.size() % alignment != 0) bytes_.push_back(0);
    return *this;
  }
  Bytes& Zeros(size_t n) {
    bytes_.resize(bytes_.size() + n, 0);
    return *this;
  }
  const std::vector<uint8_t>& get() const { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
};

Bytes Header(uint64_t tensors, uint64_t kvs, uint32_t version = 3) {
  Bytes b;
  b.Raw("GGUF", 4).U32(version).U64(tensors).U64(kvs);
  return b;
}

struct MalformedCase {
  const char* name;
  std::vector<uint8_t> bytes;
  const char* message;  // Expected in the error.
};

class MalformedGgufTest : public ::testing::TestWithParam<MalformedCase> {};

TEST_P(MalformedGgufTest, IsRejectedWithAClearError) {
  const std::string path = testing::TempDir("bad") + "/" + GetParam().name + ".gguf";
  testing::WriteBytes(path, GetParam().bytes);
  auto f = GgufFile::Open(path);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(f.status().message()), AllOf(StartsWith(path), HasSubstr(GetParam().message)));
}

std::vector<MalformedCase> MalformedCases() {
  std::vector<MalformedCase> cases;
  cases.push_back({"Empty", {}, "truncated: GGUF magic"});
  cases.push_back({"BadMagic", Bytes().Raw("GGML", 4).U32(3).get(), "not a GGUF file"});
  cases.push_back({"VersionOne", Header(0, 0, 1).get(), "unsupported GGUF version 1"});
  cases.push_back({"BigEndian", Header(0, 0, 0x03000000).get(), "big-endian"});
  cases.push_back({"HugeKvCount", Header(0, uint64_t{1} << 60).get(), "metadata count"});
  cases.push_back({"HugeTensorCount", Header(uint64_t{1} << 60, 0).get(), "tensor count"});
  cases.push_back({"HugeKeyLength", Header(0, 1).U64(uint64_t{1} << 40).Zeros(8).get(),
                   "key of metadata entry 0"});
  cases.push_back({"StringPastEnd",
                   Header(0, 1).Str("k").U32(8).U64(1000).Raw("abc", 3).get(),
                   "truncated: value of metadata key 'k'"});
  cases.push_back({"UnknownValueType", Header(0, 1).Str("k").U32(13).U32(0).get(),
                   "unknown value type 13"});
  cases.push_back({"HugeArray",
                   Header(0, 1).Str("k").U32(9).U32(4).U64(uint64_t{1} << 62).get(),
                   "declares 4611686018427387904 UINT32 elements"});
  {
    Bytes b = Header(0, 1).Str("deep").U32(9);
    for (int i = 0; i < 9; ++i) b.U32(9).U64(1);
    b.U32(4).U64(0);
    cases.push_back({"ArraysTooDeep", b.get(), "nested deeper than 8"});
  }
  cases.push_back({"DuplicateKey",
                   Header(0, 2).Str("k").U32(4).U32(1).Str("k").U32(4).U32(2).get(),
                   "duplicate metadata key 'k'"});
  cases.push_back({"AlignmentNotPowerOfTwo",
                   Header(0, 1).Str("general.alignment").U32(4).U32(48).get(),
                   "general.alignment 48 is not a power of two"});
  cases.push_back({"AlignmentWrongType",
                   Header(0, 1).Str("general.alignment").U32(8).Str("x").get(),
                   "expected an integer"});
  cases.push_back({"FiveDims",
                   Header(1, 0).Str("t").U32(5).U64(1).U64(1).U64(1).U64(1).U64(1).U32(0).U64(0)
                       .get(),
                   "tensor t has 5 dimensions"});
  cases.push_back({"ShapeOverflow",
                   Header(1, 0).Str("t").U32(2).U64(uint64_t{1} << 40).U64(uint64_t{1} << 40)
                       .U32(0).U64(0).Zeros(8).get(),
                   "tensor t has an impossible shape"});
  cases.push_back({"UnalignedOffset",
                   Header(1, 0).Str("t").U32(1).U64(4).U32(0).U64(4).Pad(32).Zeros(64).get(),
                   "not a multiple of the alignment 32"});
  cases.push_back({"OffsetOverflow",
                   Header(1, 0).Str("t").U32(1).U64(4).U32(0).U64(~uint64_t{0} - 31).Pad(32)
                       .Zeros(16).get(),
                   "impossible offset"});
  cases.push_back({"TensorPastEnd",
                   Header(1, 0).Str("blk.3.ffn_up.weight").U32(1).U64(64).U32(0).U64(0).Pad(32)
                       .Zeros(100).get(),
                   "truncated: tensor data of blk.3.ffn_up.weight ends at byte 352 but the file "
                   "has 196 bytes"});
  cases.push_back({"DuplicateTensor",
                   Header(2, 0).Str("t").U32(1).U64(4).U32(0).U64(0).Str("t").U32(1).U64(4)
                       .U32(0).U64(32).Pad(32).Zeros(64).get(),
                   "duplicate tensor name t"});
  cases.push_back({"Q8_0RowNotMultipleOf32",
                   Header(1, 0).Str("q").U32(1).U64(40).U32(8).U64(0).Pad(32).Zeros(64).get(),
                   "row length 40 is not a multiple of 32"});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Cases, MalformedGgufTest, ::testing::ValuesIn(MalformedCases()),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(GgufReaderTest, TensorPastEndMessageHasBothSizes) {
  // 64 f32 = 256 bytes from offset 64 (header 56 + pad), file has 64 + 100 bytes.
  const std::vector<uint8_t> bytes =
      Header(1, 0).Str("blk.3.ffn_up.weight").U32(1).U64(64).U32(0).U64(0).Pad(32).Zeros(100).get();
  const std::string path = testing::TempDir("past") + "/p.gguf";
  testing::WriteBytes(path, bytes);
  auto f = GgufFile::Open(path);
  EXPECT_THAT(std::string(f.status().message()),
              HasSubstr(absl::StrCat("truncated: tensor data of blk.3.ffn_up.weight ends at byte ",
                                     bytes.size() - 100 + 256, " but the file has ", bytes.size(),
                                     " bytes")));
}

TEST(GgufReaderTest, AcceptsVersionTwo) {
  std::vector<uint8_t> bytes = Header(1, 1, 2).Str("general.architecture").U32(8).Str("llama")
                                   .Str("t").U32(1).U64(8).U32(0).U64(0).Pad(32).Zeros(32).get();
  const std::string path = testing::TempDir("v2") + "/v2.gguf";
  testing::WriteBytes(path, bytes);
  auto f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->version(), 2u);
  EXPECT_EQ((*f)->GetTensor("t")->num_elements(), 8);
}

struct TypeCase {
  uint32_t ggml_type;
  const char* name;
};

class UnsupportedTypeTest : public ::testing::TestWithParam<TypeCase> {};

TEST_P(UnsupportedTypeTest, ErrorNamesTensorAndType) {
  testing::GgufEdits edits;
  edits.retype_tensors["blk.2.attn_v.weight"] = GetParam().ggml_type;
  const std::string path = testing::TempDir("type") + "/t.gguf";
  ASSERT_TRUE(testing::CopyGguf(testing::BundledGguf(), path, edits).ok());
  auto f = GgufFile::Open(path);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(f.status().message()),
              AllOf(HasSubstr("blk.2.attn_v.weight"),
                    HasSubstr(absl::StrCat("has type ", GetParam().name)),
                    HasSubstr("supported: F32, F16, BF16, Q8_0")));
}

INSTANTIATE_TEST_SUITE_P(
    Types, UnsupportedTypeTest,
    ::testing::Values(TypeCase{3, "Q4_1"}, TypeCase{6, "Q5_0"}, TypeCase{9, "Q8_1"},
                      TypeCase{12, "Q4_K"}, TypeCase{14, "Q6_K"}, TypeCase{16, "IQ2_XXS"},
                      TypeCase{26, "I32"}, TypeCase{28, "F64"}, TypeCase{999, "type 999"}),
    [](const auto& info) { return absl::StrCat("ggml_type_", info.param.ggml_type); });

// The last byte any tensor of the bundled file occupies.
uint64_t DataEnd(const GgufFile& g) {
  uint64_t end = 0;
  for (const GgufTensorInfo& t : g.tensors()) {
    end = std::max(end, g.data_offset() + t.offset + t.size_bytes);
  }
  return end;
}

TEST(GgufReaderTest, EveryTruncationIsACleanError) {
  const std::vector<uint8_t> bytes = testing::ReadBytes(testing::BundledGguf());
  auto full = GgufFile::Open(testing::BundledGguf());
  ASSERT_TRUE(full.ok());
  const uint64_t data_offset = (*full)->data_offset();
  const uint64_t data_end = DataEnd(**full);
  ASSERT_LE(data_end, bytes.size());
  std::vector<size_t> lengths;
  for (size_t n = 0; n <= data_offset; ++n) lengths.push_back(n);  // Every header length.
  for (size_t n = data_offset; n < bytes.size(); n += 997) lengths.push_back(n);
  for (size_t n = bytes.size() - 64; n < bytes.size(); ++n) lengths.push_back(n);
  const std::string path = testing::TempDir("trunc") + "/t.gguf";
  for (size_t n : lengths) {
    testing::WriteBytes(path, bytes, n);
    auto f = GgufFile::Open(path);
    if (n >= data_end) {
      EXPECT_TRUE(f.ok()) << n << ": " << f.status();  // Only trailing padding is missing.
      continue;
    }
    ASSERT_FALSE(f.ok()) << "prefix of " << n << " bytes opened";
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << n;
    EXPECT_THAT(std::string(f.status().message()), HasSubstr(path)) << n;
    if (n > data_offset) {
      EXPECT_THAT(std::string(f.status().message()), HasSubstr("truncated: tensor data of"));
    }
  }
}

TEST(GgufReaderTest, RandomHeaderCorruptionNeverCrashes) {
  const std::vector<uint8_t> original = testing::ReadBytes(testing::BundledGguf());
  auto full = GgufFile::Open(testing::BundledGguf());
  ASSERT_TRUE(full.ok());
  const size_t header = (*full)->data_offset();
  std::mt19937 rng(1234);
  const std::string path = testing::TempDir("corrupt") + "/c.gguf";
  int opened = 0, loaded = 0;
  for (int variant = 0; variant < 400; ++variant) {
    std::vector<uint8_t> bytes = original;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int i = 0; i < flips; ++i) {
      // Half the variants hit the first 64 bytes (counts, first key), where damage bites.
      const size_t limit = variant % 2 == 0 ? 64 : header;
      bytes[rng() % limit] = static_cast<uint8_t>(rng());
    }
    testing::WriteBytes(path, bytes);
    auto f = GgufFile::Open(path);
    if (!f.ok()) {
      EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
      continue;
    }
    ++opened;
    // Whatever parsed must also map (or fail cleanly) as a model.
    auto model = LoadGgufModel(*std::move(f));
    if (model.ok()) ++loaded;
  }
  // Most single-byte hits in the vocabulary strings leave a valid file; the counts are a
  // sanity check that both outcomes were exercised.
  EXPECT_GT(opened, 0);
  EXPECT_LT(opened, 400);
  EXPECT_GT(loaded, 0);
}

}  // namespace
}  // namespace kvserve::engine
