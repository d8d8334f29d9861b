// Writes the seed corpora of the fuzz targets into <dir>/<target>/ (the checked-in
// tests/fuzz/corpus/): small valid inputs made by kvserve's own writers plus edge cases, so
// each fuzzer starts from files that reach deep into its parser. Deterministic: running it
// again gives the same bytes. Usage: kvserve_fuzz_seeds <repo>/tests/fuzz/corpus
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "engine/model/gguf_format.h"
#include "engine/model/gguf_model.h"
#include "engine/model/gguf_writer.h"
#include "engine/model/model_config.h"
#include "engine/model/vocab.h"
#include "kvserve/v1/kvserve.pb.h"

namespace kvserve::fuzz {
namespace {

namespace fs = std::filesystem;
using engine::GgufValue;
using engine::GgufValueType;
using engine::GgufWriter;
using engine::TensorType;

using Bytes = std::string;

bool Check(const absl::Status& status) {
  if (!status.ok()) std::fprintf(stderr, "%s\n", status.ToString().c_str());
  return status.ok();
}

Bytes ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void WriteSeed(const fs::path& dir, const std::string& name, const Bytes& bytes) {
  fs::create_directories(dir);
  std::ofstream out(dir / name, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A 12-token SentencePiece vocabulary without byte pieces (BpeTokenizer accepts none or all
// 256 of them).
engine::Vocab TinyVocab() {
  engine::Vocab v;
  v.pieces = {"<unk>", "<s>", "</s>", "\u2581", "a", "b", "\u2581a", "ab", "\u2581ab", "c",
              "\xC3\xA9", "\n"};
  v.scores = {0, 0, 0, -1, -2, -3, -4, -5, -6, -7, -8, -9};
  v.kinds.assign(v.pieces.size(), engine::TokenKind::kNormal);
  v.kinds[0] = engine::TokenKind::kUnknown;
  v.kinds[1] = engine::TokenKind::kControl;
  v.kinds[2] = engine::TokenKind::kControl;
  return v;
}

engine::ModelConfig TinyConfig(int64_t dim, int64_t vocab_size) {
  engine::ModelConfig c;
  c.name = "tiny";
  c.dim = dim;
  c.n_layers = 1;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.head_dim = dim / 2;
  c.ffn_dim = dim * 2;
  c.vocab_size = vocab_size;
  c.context_length = 16;
  c.rope_dim = c.head_dim;
  return c;
}

std::vector<float> Values(int64_t n, int64_t salt) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = std::sin(0.37f * (i + salt));
  return v;
}

int64_t Elements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// A complete llama GGUF (metadata + every tensor) of the tiny model, written by GgufWriter.
bool TinyLlamaGguf(TensorType dtype, int64_t dim, bool with_output, uint64_t alignment,
                   Bytes& out) {
  const engine::Vocab vocab = TinyVocab();
  const engine::ModelConfig config = TinyConfig(dim, vocab.size());
  GgufWriter writer;
  engine::SetLlamaMetadata(config, vocab, dtype, writer);
  if (alignment != engine::kGgufDefaultAlignment && !Check(writer.SetAlignment(alignment))) {
    return false;
  }
  int64_t salt = 0;
  for (const engine::LlamaTensorSpec& spec : engine::LlamaTensorSpecs(config, with_output)) {
    if (!Check(writer.AddTensor(spec.name, engine::LlamaStorageType(dtype, spec.shape),
                                spec.shape, Values(Elements(spec.shape), salt++)))) {
      return false;
    }
  }
  const fs::path tmp = fs::temp_directory_path() / "kvserve_fuzz_seed.gguf";
  if (!Check(writer.WriteFile(tmp.string()))) return false;
  out = ReadFile(tmp);
  fs::remove(tmp);
  return true;
}

// Metadata of every GGUF value type, nested arrays included, and a few raw tensors (one of a
// type kvserve does not read); no llama keys.
bool MetadataGguf(bool unsupported_tensor, Bytes& out) {
  GgufWriter writer;
  writer.SetMetadata("general.architecture", GgufValue::String("llama"));
  writer.SetMetadata("u8", GgufValue::Uint8(255));
  writer.SetMetadata("i8", GgufValue::Int8(-128));
  writer.SetMetadata("u16", GgufValue::Uint16(65535));
  writer.SetMetadata("i16", GgufValue::Int16(-32768));
  writer.SetMetadata("u32", GgufValue::Uint32(4294967295u));
  writer.SetMetadata("i32", GgufValue::Int32(-1));
  writer.SetMetadata("u64", GgufValue::Uint64(std::numeric_limits<uint64_t>::max()));
  writer.SetMetadata("i64", GgufValue::Int64(std::numeric_limits<int64_t>::min()));
  writer.SetMetadata("f32", GgufValue::Float32(std::numeric_limits<float>::quiet_NaN()));
  writer.SetMetadata("f64", GgufValue::Float64(-0.0));
  writer.SetMetadata("bool", GgufValue::Bool(true));
  writer.SetMetadata("str", GgufValue::String("\xC3\xA9t\xC3\xA9"));
  writer.SetMetadata("strs", GgufValue::StringArray({"", "a", "\u2581b"}));
  writer.SetMetadata("f32s", GgufValue::Float32Array({1.0f, -2.5f}));
  writer.SetMetadata("i32s", GgufValue::Int32Array({1, -2, 3}));
  writer.SetMetadata(
      "nested", GgufValue::Array(GgufValueType::kArray,
                                 {GgufValue::Int32Array({7}), GgufValue::Int32Array({})}));
  if (!Check(writer.AddRawTensor("f32", 0, {3}, std::vector<uint8_t>(12, 0x3f)))) return false;
  if (!Check(writer.AddRawTensor("f16", 1, {2, 2}, std::vector<uint8_t>(8, 0x3c)))) return false;
  if (unsupported_tensor &&
      !Check(writer.AddRawTensor("q4_0", 2, {32}, std::vector<uint8_t>(18, 1)))) {
    return false;
  }
  const fs::path tmp = fs::temp_directory_path() / "kvserve_fuzz_seed_meta.gguf";
  if (!Check(writer.WriteFile(tmp.string()))) return false;
  out = ReadFile(tmp);
  fs::remove(tmp);
  return true;
}

void AppendI32(Bytes& b, int32_t v) { b.append(reinterpret_cast<const char*>(&v), 4); }
void AppendF32(Bytes& b, float v) { b.append(reinterpret_cast<const char*>(&v), 4); }

// The tiny vocabulary as a llama2.c tokenizer file (spaces as ' ', BOS/EOS wrapped in \n).
Bytes Llama2cTokenizer() {
  const engine::Vocab v = TinyVocab();
  Bytes b;
  AppendI32(b, 3);
  for (int64_t i = 0; i < v.size(); ++i) {
    std::string piece = absl::StrReplaceAll(v.pieces[static_cast<size_t>(i)], {{"\u2581", " "}});
    if (i == 1 || i == 2) piece = "\n" + piece + "\n";
    AppendF32(b, v.scores[static_cast<size_t>(i)]);
    AppendI32(b, static_cast<int32_t>(piece.size()));
    b += piece;
  }
  return b;
}

// A legacy llama2.c checkpoint: header, then exactly the floats the header implies.
Bytes Llama2cCheckpoint(int32_t dim, int32_t hidden, int32_t layers, int32_t heads,
                        int32_t kv_heads, int32_t vocab, int32_t seq_len) {
  Bytes b;
  for (int32_t v : {dim, hidden, layers, heads, kv_heads, vocab, seq_len}) AppendI32(b, v);
  const int64_t head = dim / heads;
  const int64_t kv_dim = kv_heads * head;
  const int64_t abs_vocab = vocab < 0 ? -int64_t{vocab} : vocab;
  const int64_t floats = abs_vocab * dim + layers * dim * 2 + layers * dim * dim * 2 +
                         layers * kv_dim * dim * 2 + layers * int64_t{hidden} * dim * 3 + dim +
                         int64_t{seq_len} * head + (vocab < 0 ? abs_vocab * dim : 0);
  for (int64_t i = 0; i < floats; ++i) AppendF32(b, std::cos(0.11f * i));
  return b;
}

// The llama2c fuzzer's input: uint16 tokenizer length, tokenizer, checkpoint.
Bytes Llama2cInput(const Bytes& tokenizer, const Bytes& checkpoint) {
  Bytes b;
  b.push_back(static_cast<char>(tokenizer.size() & 0xFF));
  b.push_back(static_cast<char>((tokenizer.size() >> 8) & 0xFF));
  return b + tokenizer + checkpoint;
}

// The tokenizer fuzzer reads pairs of bytes as ids: id = v % (512 + 8) - 4.
Bytes TokenIds(const std::vector<int>& ids) {
  Bytes b;
  for (int id : ids) {
    const int v = id + 4;
    b.push_back(static_cast<char>(v & 0xFF));
    b.push_back(static_cast<char>(v >> 8));
  }
  return b;
}

Bytes Request(const v1::GenerationParams& params) {
  v1::GenerateRequest request;
  *request.mutable_params() = params;
  return request.SerializeAsString();
}

bool WriteGgufSeeds(const fs::path& dir) {
  Bytes f32, q8, bf16_tied, f16_align64, meta, meta_unsupported;
  if (!TinyLlamaGguf(TensorType::kF32, 8, true, 32, f32) ||
      !TinyLlamaGguf(TensorType::kQ8_0, 32, true, 32, q8) ||
      !TinyLlamaGguf(TensorType::kBF16, 8, false, 32, bf16_tied) ||
      !TinyLlamaGguf(TensorType::kF16, 8, true, 64, f16_align64) ||
      !MetadataGguf(false, meta) || !MetadataGguf(true, meta_unsupported)) {
    return false;
  }
  WriteSeed(dir, "tiny_llama_f32.gguf", f32);
  WriteSeed(dir, "tiny_llama_q8_0.gguf", q8);
  WriteSeed(dir, "tiny_llama_bf16_tied.gguf", bf16_tied);
  WriteSeed(dir, "tiny_llama_f16_align64.gguf", f16_align64);
  WriteSeed(dir, "metadata_all_types.gguf", meta);
  WriteSeed(dir, "unsupported_tensor_type.gguf", meta_unsupported);
  Bytes v2 = f32;
  v2[4] = 2;  // GGUF v2 has the same layout.
  WriteSeed(dir, "tiny_llama_f32_v2.gguf", v2);
  WriteSeed(dir, "truncated_in_metadata.gguf", f32.substr(0, 200));
  WriteSeed(dir, "truncated_in_data.gguf", f32.substr(0, f32.size() - 7));
  Bytes empty_header = "GGUF";
  AppendI32(empty_header, 3);
  empty_header.append(16, '\0');  // Zero tensors, zero metadata entries.
  WriteSeed(dir, "header_only.gguf", empty_header);
  return true;
}

void WriteLlama2cSeeds(const fs::path& dir, const fs::path& models) {
  const Bytes tok = Llama2cTokenizer();
  WriteSeed(dir, "tiny_tied.bin", Llama2cInput(tok, Llama2cCheckpoint(8, 16, 1, 2, 1, 12, 4)));
  WriteSeed(dir, "tiny_untied.bin",
            Llama2cInput(tok, Llama2cCheckpoint(8, 16, 2, 2, 2, -12, 2)));
  const Bytes tok512 = ReadFile(models / "tok512.bin");
  const Bytes stories = ReadFile(models / "stories260K.bin");
  // The real tokenizer's first KB (the fuzzer's length prefix caps it) and the real
  // checkpoint's header with a few floats: a wrong-size checkpoint.
  WriteSeed(dir, "tok512_first_kb.bin", Llama2cInput(tok512.substr(0, 1024), ""));
  WriteSeed(dir, "tok512_and_stories_header.bin",
            Llama2cInput(tok512, stories.substr(0, 7 * 4 + 64)));
  Bytes ak42 = "ak42";
  ak42.append(64, '\0');
  WriteSeed(dir, "versioned_export.bin", Llama2cInput(tok, ak42));
}

void WriteTokenizerSeeds(const fs::path& dir) {
  const std::vector<std::pair<std::string, Bytes>> seeds = {
      {"story.txt", "Once upon a time, there was a little girl named Lily."},
      {"spaces.txt", "  two leading spaces,\ttab\nnewline   "},
      {"latin1.txt", "\xC3\xA9t\xC3\xA9 na\xC3\xAFve \xC3\x9F"},
      {"cjk_emoji.txt", "\xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x99\x82\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD"},
      {"control_words.txt", "<s></s><unk><0x41>\xE2\x96\x81"},
      {"nul.txt", Bytes("a\0b", 3)},
      {"invalid_ff.txt", "ok\xFF"},
      {"invalid_truncated.txt", "\xF0\x9F\x99"},
      {"invalid_overlong.txt", "\xC0\xAF"},
      {"invalid_surrogate.txt", "\xED\xA0\x80"},
      // As ids: the four byte tokens of U+1F642 (byte token of 0xHH is id 3 + 0xHH), BOS,
      // "▁Once"-like pieces, an out-of-range id and a cut-off character at the end.
      {"ids_emoji_bytes.ids", TokenIds({3 + 0xF0, 3 + 0x9F, 3 + 0x99, 3 + 0x82, 1, 403, 407,
                                        -3, 515, 3 + 0xE2, 3 + 0x96})},
  };
  for (const auto& [name, bytes] : seeds) WriteSeed(dir, name, bytes);
}

void WriteRequestSeeds(const fs::path& dir) {
  v1::GenerationParams text;
  text.set_prompt("Once upon a time");
  text.set_max_tokens(32);
  text.mutable_sampling()->set_temperature(0.8f);
  text.mutable_sampling()->set_top_k(40);
  text.mutable_sampling()->set_top_p(0.95f);
  text.mutable_sampling()->set_seed(42);
  text.add_stop(".");
  text.add_stop("\n\n");
  text.set_priority(3);
  WriteSeed(dir, "text_prompt.pb", Request(text));

  v1::GenerationParams ids;
  ids.set_model("stories260K");
  for (int id : {1, 403, 407, 261, 378}) ids.add_prompt_token_ids(id);
  ids.set_add_bos(false);
  WriteSeed(dir, "token_ids.pb", Request(ids));

  v1::GenerationParams both = text;
  both.add_prompt_token_ids(511);
  WriteSeed(dir, "both_prompts.pb", Request(both));

  WriteSeed(dir, "empty.pb", Request(v1::GenerationParams()));

  v1::GenerationParams other_model = text;
  other_model.set_model("llama-70b");
  WriteSeed(dir, "other_model.pb", Request(other_model));

  v1::GenerationParams bad_sampling = text;
  bad_sampling.mutable_sampling()->set_temperature(std::numeric_limits<float>::quiet_NaN());
  bad_sampling.mutable_sampling()->set_top_p(1.5f);
  bad_sampling.mutable_sampling()->set_top_k(-1);
  WriteSeed(dir, "bad_sampling.pb", Request(bad_sampling));

  v1::GenerationParams bad_limits = ids;
  bad_limits.set_max_tokens(-1);
  bad_limits.add_prompt_token_ids(512);
  bad_limits.add_prompt_token_ids(-1);
  WriteSeed(dir, "bad_ids_and_max_tokens.pb", Request(bad_limits));

  v1::GenerationParams many_stops = text;
  for (int i = 0; i < 10; ++i) many_stops.add_stop(std::string(static_cast<size_t>(i * 3), 'x'));
  WriteSeed(dir, "many_stop_strings.pb", Request(many_stops));

  // `prompt` is `bytes`: ill-formed UTF-8 parses and reaches the conversion's own check.
  v1::GenerationParams bad_utf8 = text;
  bad_utf8.set_prompt("Once \xff\xfe time");
  WriteSeed(dir, "invalid_utf8_prompt.pb", Request(bad_utf8));

  v1::GenerationParams policy = text;
  policy.set_kv_policy("keyformer:keep=0.3,recent=0.3");
  WriteSeed(dir, "kv_policy_keyformer.pb", Request(policy));
  policy.set_kv_policy("h2o:keep=1.5,unknown=x");
  WriteSeed(dir, "kv_policy_malformed.pb", Request(policy));
  policy.set_kv_policy("window:size=64");
  WriteSeed(dir, "kv_policy_window.pb", Request(policy));

  v1::GenerationParams long_prompt;
  std::string prompt;
  for (int i = 0; i < 60; ++i) prompt += "the cat sat ";
  long_prompt.set_prompt(prompt);
  long_prompt.set_max_tokens(100000);
  WriteSeed(dir, "long_prompt.pb", Request(long_prompt));
}

}  // namespace
}  // namespace kvserve::fuzz

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <corpus dir>\n", argv[0]);
    return 2;
  }
  const fs::path out = argv[1];
  const fs::path models = fs::path(KVSERVE_SOURCE_DIR) / "models";
  if (!kvserve::fuzz::WriteGgufSeeds(out / "gguf_reader_fuzzer")) return 1;
  kvserve::fuzz::WriteLlama2cSeeds(out / "llama2c_reader_fuzzer", models);
  kvserve::fuzz::WriteTokenizerSeeds(out / "tokenizer_fuzzer");
  kvserve::fuzz::WriteRequestSeeds(out / "request_fuzzer");
  return 0;
}
