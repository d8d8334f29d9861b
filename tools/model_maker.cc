#include "tools/model_maker.h"

#include <cmath>
#include <memory>
#include <numbers>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "engine/common/status_macros.h"
#include "engine/model/gguf_model.h"
#include "engine/model/gguf_reader.h"
#include "engine/model/gguf_writer.h"
#include "engine/model/model_config.h"
#include "engine/model/model_validation.h"

namespace kvserve::tools {
namespace {

using engine::GgufFile;
using engine::GgufWriter;
using engine::ModelConfig;
using engine::TensorType;
using engine::TokenKind;
using engine::Vocab;

constexpr int64_t kSpecialTokens = 3;
constexpr int64_t kByteTokens = 256;
constexpr const char* kSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's space.

// splitmix64: tiny, fast and the same on every platform (unlike std::normal_distribution).
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in (0, 1].
  double Uniform() { return (static_cast<double>(Next() >> 11) + 1.0) * 0x1.0p-53; }
  // Standard normal (Box-Muller, both outputs used).
  float Normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    const double r = std::sqrt(-2.0 * std::log(Uniform()));
    const double theta = 2.0 * std::numbers::pi * Uniform();
    spare_ = static_cast<float>(r * std::sin(theta));
    has_spare_ = true;
    return static_cast<float>(r * std::cos(theta));
  }

 private:
  uint64_t state_;
  bool has_spare_ = false;
  float spare_ = 0;
};

}  // namespace

absl::StatusOr<ModelMakerOptions> PresetOptions(absl::string_view preset) {
  ModelMakerOptions o;
  if (preset == "tinyllama-1.1b") {
    o.name = "tinyllama-1.1b-random";
    o.dim = 2048;
    o.layers = 22;
    o.heads = 32;
    o.kv_heads = 4;
    o.ffn = 5632;
    o.vocab = 32000;
    o.context = 2048;
    return o;
  }
  if (preset == "stories260k") {
    o.name = "stories260k-random";
    o.dim = 64;
    o.layers = 5;
    o.heads = 8;
    o.kv_heads = 4;
    o.ffn = 172;
    o.vocab = 512;
    o.context = 512;
    return o;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown preset '", preset,
                                                 "' (known: tinyllama-1.1b, stories260k)"));
}

absl::StatusOr<engine::TensorType> ParseDType(absl::string_view name) {
  if (name == "f32") return TensorType::kF32;
  if (name == "f16") return TensorType::kF16;
  if (name == "bf16") return TensorType::kBF16;
  if (name == "q8_0") return TensorType::kQ8_0;
  if (name == "q4_0") return TensorType::kQ4_0;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown dtype '", name, "' (known: f32, f16, bf16, q8_0, q4_0)"));
}

absl::StatusOr<Vocab> SynthesizeVocab(int64_t size) {
  if (size < kSpecialTokens + kByteTokens || size > (1 << 24)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a synthesised vocabulary needs ", kSpecialTokens + kByteTokens,
        " to 16777216 tokens (<unk>, <s>, </s> and 256 byte tokens first), not ", size));
  }
  Vocab v;
  v.pieces = {"<unk>", "<s>", "</s>"};
  v.kinds = {TokenKind::kUnknown, TokenKind::kControl, TokenKind::kControl};
  for (int b = 0; b < kByteTokens; ++b) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    v.pieces.push_back(absl::StrCat("<0x", std::string(1, kHex[b >> 4]),
                                    std::string(1, kHex[b & 15]), ">"));
    v.kinds.push_back(TokenKind::kByte);
  }
  v.scores.assign(v.pieces.size(), 0.0f);

  // Printable pieces in layers (single characters, then ▁ + character, then pairs, then
  // ▁ + pair, then lower-case triples), so every longer piece can be built by merging two
  // shorter ones, as a BPE vocabulary can.
  std::vector<std::string> chars = {kSpace};
  for (char c = '!'; c <= '~'; ++c) chars.emplace_back(1, c);
  std::vector<std::string> letters;
  for (char c = 'a'; c <= 'z'; ++c) letters.emplace_back(1, c);
  for (char c = 'A'; c <= 'Z'; ++c) letters.emplace_back(1, c);
  absl::flat_hash_set<std::string> seen(v.pieces.begin(), v.pieces.end());
  float score = 0.0f;
  auto add = [&](std::string piece) {
    if (static_cast<int64_t>(v.pieces.size()) >= size || !seen.insert(piece).second) return;
    v.pieces.push_back(std::move(piece));
    v.kinds.push_back(TokenKind::kNormal);
    v.scores.push_back(score);
    score -= 1.0f;
  };
  for (const std::string& c : chars) add(c);
  for (const std::string& c : letters) add(kSpace + c);
  for (const std::string& a : letters) {
    for (const std::string& b : letters) add(a + b);
  }
  for (const std::string& a : letters) {
    for (const std::string& b : letters) add(kSpace + a + b);
  }
  for (const std::string& a : chars) {
    for (const std::string& b : chars) add(a + b);
  }
  for (const std::string& a : letters) {
    for (const std::string& b : letters) {
      for (const std::string& c : letters) add(a + b + c);
    }
  }
  for (const std::string& a : letters) {
    for (const std::string& b : letters) {
      for (const std::string& c : letters) add(kSpace + a + b + c);
    }
  }
  // Beyond ~300k tokens: numbered filler pieces (never produced by merges, but valid).
  for (int64_t i = 0; static_cast<int64_t>(v.pieces.size()) < size; ++i) {
    add(absl::StrCat("<extra_", i, ">"));
  }
  return v;
}

absl::Status MakeModel(const ModelMakerOptions& o) {
  if (o.out.empty()) return absl::InvalidArgumentError("no output path (--out)");
  Vocab vocab;
  if (!o.vocab_from.empty()) {
    KV_ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> source, GgufFile::Open(o.vocab_from));
    KV_ASSIGN_OR_RETURN(vocab, engine::ReadGgufVocab(*source));
    if (o.vocab != 0 && o.vocab != vocab.size()) {
      return absl::InvalidArgumentError(absl::StrCat("--vocab ", o.vocab, " but ", o.vocab_from,
                                                     " has ", vocab.size(), " tokens"));
    }
  } else {
    KV_ASSIGN_OR_RETURN(vocab, SynthesizeVocab(o.vocab));
  }

  ModelConfig c;
  c.name = o.name;
  c.dim = o.dim;
  c.n_layers = o.layers;
  c.n_heads = o.heads;
  c.n_kv_heads = o.kv_heads;
  c.head_dim = o.heads > 0 ? o.dim / o.heads : 0;
  c.ffn_dim = o.ffn;
  c.vocab_size = vocab.size();
  c.context_length = o.context;
  c.rope_dim = c.head_dim;
  c.rope_theta = o.rope_theta;
  c.rms_eps = o.rms_eps;
  KV_RETURN_IF_ERROR(engine::ValidateConfig(c, o.out));
  if (!(o.init_std > 0.0f) || !std::isfinite(o.init_std)) {
    return absl::InvalidArgumentError(absl::StrCat("init_std ", o.init_std, " is not positive"));
  }

  GgufWriter writer;
  engine::SetLlamaMetadata(c, vocab, o.dtype, writer);
  const std::vector<engine::LlamaTensorSpec> specs = engine::LlamaTensorSpecs(c, true);
  for (size_t i = 0; i < specs.size(); ++i) {
    const engine::LlamaTensorSpec& spec = specs[i];
    const TensorType type = engine::LlamaStorageType(o.dtype, spec.shape);
    if (spec.shape.size() == 1) {
      KV_RETURN_IF_ERROR(writer.AddTensor(spec.name, type, spec.shape,
                                          [](int64_t, absl::Span<float> out) {
                                            for (float& x : out) x = 1.0f;
                                            return absl::OkStatus();
                                          }));
      continue;
    }
    // One generator per tensor, seeded from (seed, tensor index): the values do not depend on
    // how the writer chunks the rows.
    auto rng = std::make_shared<Rng>(o.seed * 0x100000001B3ull + i * 0x9E3779B97F4A7C15ull);
    const float scale = o.init_std;
    KV_RETURN_IF_ERROR(writer.AddTensor(spec.name, type, spec.shape,
                                        [rng, scale](int64_t, absl::Span<float> out) {
                                          for (float& x : out) x = scale * rng->Normal();
                                          return absl::OkStatus();
                                        }));
  }
  return writer.WriteFile(o.out);
}

absl::Status ConvertModel(const std::string& from, engine::TensorType dtype,
                          const std::string& out) {
  KV_ASSIGN_OR_RETURN(std::unique_ptr<engine::ModelFile> model, engine::LoadModelFile(from));
  return engine::WriteLlamaGguf(
      *model, {.dtype = dtype, .write_output = !model->weights.tied_output}, out);
}

}  // namespace kvserve::tools
