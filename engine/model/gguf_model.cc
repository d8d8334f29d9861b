#include "engine/model/gguf_model.h"

#include <filesystem>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "engine/common/status_macros.h"
#include "engine/model/model_validation.h"

namespace kvserve::engine {
namespace {

absl::Status Invalid(const GgufFile& file, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(file.path(), ": ", message));
}

absl::StatusOr<int64_t> IntOr(const GgufFile& file, absl::string_view key, int64_t fallback) {
  if (!file.HasKey(key)) return fallback;
  return file.GetInt(key);
}

absl::StatusOr<double> FloatOr(const GgufFile& file, absl::string_view key, double fallback) {
  if (!file.HasKey(key)) return fallback;
  return file.GetFloat(key);
}

absl::StatusOr<bool> BoolOr(const GgufFile& file, absl::string_view key, bool fallback) {
  if (!file.HasKey(key)) return fallback;
  return file.GetBool(key);
}

// An int metadata value that must be present, converted to a vocab id or a size.
absl::StatusOr<int64_t> RequiredInt(const GgufFile& file, absl::string_view key) {
  absl::StatusOr<int64_t> v = file.GetInt(key);
  if (absl::IsNotFound(v.status())) {
    return Invalid(file, absl::StrCat("required metadata key '", key, "' is missing"));
  }
  return v;
}

absl::Status CheckArchitecture(const GgufFile& file) {
  absl::StatusOr<std::string> arch = file.GetString("general.architecture");
  if (absl::IsNotFound(arch.status())) {
    return Invalid(file, "general.architecture is missing");
  }
  KV_RETURN_IF_ERROR(arch.status());
  if (*arch != "llama") {
    return Invalid(file, absl::StrCat("architecture '", *arch,
                                      "' is not supported (kvserve serves 'llama' models)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<TensorData> RequiredTensor(const GgufFile& file, const std::string& name) {
  absl::StatusOr<TensorData> t = file.GetTensor(name);
  if (absl::IsNotFound(t.status())) {
    return Invalid(file, absl::StrCat("required tensor ", name, " is missing"));
  }
  return t;
}

}  // namespace

absl::StatusOr<ModelConfig> ReadLlamaConfig(const GgufFile& file) {
  KV_RETURN_IF_ERROR(CheckArchitecture(file));
  ModelConfig c;
  c.architecture = "llama";
  if (file.HasKey("general.name")) {
    KV_ASSIGN_OR_RETURN(c.name, file.GetString("general.name"));
  } else {
    c.name = std::filesystem::path(file.path()).stem().string();
  }
  KV_ASSIGN_OR_RETURN(c.dim, RequiredInt(file, "llama.embedding_length"));
  KV_ASSIGN_OR_RETURN(c.n_layers, RequiredInt(file, "llama.block_count"));
  KV_ASSIGN_OR_RETURN(c.n_heads, RequiredInt(file, "llama.attention.head_count"));
  KV_ASSIGN_OR_RETURN(c.n_kv_heads, IntOr(file, "llama.attention.head_count_kv", c.n_heads));
  KV_ASSIGN_OR_RETURN(c.ffn_dim, RequiredInt(file, "llama.feed_forward_length"));
  KV_ASSIGN_OR_RETURN(c.context_length, RequiredInt(file, "llama.context_length"));
  c.head_dim = c.n_heads > 0 ? c.dim / c.n_heads : 0;
  KV_ASSIGN_OR_RETURN(c.rope_dim, IntOr(file, "llama.rope.dimension_count", c.head_dim));
  KV_ASSIGN_OR_RETURN(const double theta, FloatOr(file, "llama.rope.freq_base", 10000.0));
  KV_ASSIGN_OR_RETURN(const double eps,
                      FloatOr(file, "llama.attention.layer_norm_rms_epsilon", 1e-5));
  c.rope_theta = static_cast<float>(theta);
  c.rms_eps = static_cast<float>(eps);
  absl::StatusOr<std::vector<std::string>> tokens = file.GetStringArray("tokenizer.ggml.tokens");
  if (absl::IsNotFound(tokens.status())) return Invalid(file, "tokenizer.ggml.tokens is missing");
  KV_RETURN_IF_ERROR(tokens.status());
  c.vocab_size = static_cast<int64_t>(tokens->size());
  if (file.HasKey("llama.vocab_size")) {
    KV_ASSIGN_OR_RETURN(const int64_t declared, file.GetInt("llama.vocab_size"));
    if (declared != c.vocab_size) {
      return Invalid(file, absl::StrCat("llama.vocab_size is ", declared, " but ",
                                        "tokenizer.ggml.tokens has ", c.vocab_size, " tokens"));
    }
  }
  KV_RETURN_IF_ERROR(ValidateConfig(c, file.path()));
  return c;
}

absl::StatusOr<Vocab> ReadGgufVocab(const GgufFile& file) {
  absl::StatusOr<std::string> model = file.GetString("tokenizer.ggml.model");
  if (absl::IsNotFound(model.status())) return Invalid(file, "tokenizer.ggml.model is missing");
  KV_RETURN_IF_ERROR(model.status());
  if (*model != "llama") {
    return Invalid(file, absl::StrCat("tokenizer '", *model,
                                      "' is not supported (kvserve reads SentencePiece "
                                      "vocabularies, tokenizer.ggml.model = 'llama')"));
  }
  Vocab v;
  absl::StatusOr<std::vector<std::string>> pieces = file.GetStringArray("tokenizer.ggml.tokens");
  if (absl::IsNotFound(pieces.status())) return Invalid(file, "tokenizer.ggml.tokens is missing");
  KV_RETURN_IF_ERROR(pieces.status());
  v.pieces = *std::move(pieces);
  const size_t n = v.pieces.size();
  if (file.HasKey("tokenizer.ggml.scores")) {
    KV_ASSIGN_OR_RETURN(v.scores, file.GetFloatArray("tokenizer.ggml.scores"));
  } else {
    v.scores.assign(n, 0.0f);
  }
  if (file.HasKey("tokenizer.ggml.token_type")) {
    KV_ASSIGN_OR_RETURN(const std::vector<int64_t> types,
                        file.GetIntArray("tokenizer.ggml.token_type"));
    v.kinds.reserve(types.size());
    for (size_t i = 0; i < types.size(); ++i) {
      const int64_t t = types[i];
      if (t == 0) {
        v.kinds.push_back(TokenKind::kNormal);  // llama.cpp's UNDEFINED.
      } else if (t >= 1 && t <= 6) {
        v.kinds.push_back(static_cast<TokenKind>(t));
      } else {
        return Invalid(file, absl::StrCat("token ", i, " has unknown token type ", t));
      }
    }
  } else {
    v.kinds.assign(n, TokenKind::kNormal);
  }
  KV_ASSIGN_OR_RETURN(const int64_t bos, IntOr(file, "tokenizer.ggml.bos_token_id", 1));
  KV_ASSIGN_OR_RETURN(const int64_t eos, IntOr(file, "tokenizer.ggml.eos_token_id", 2));
  KV_ASSIGN_OR_RETURN(const int64_t unk, IntOr(file, "tokenizer.ggml.unknown_token_id", 0));
  const auto in_range = [&](absl::string_view what, int64_t id) -> absl::Status {
    if (id < 0 || id >= static_cast<int64_t>(n)) {
      return Invalid(file, absl::StrCat(what, " ", id, " is outside the vocabulary of ", n,
                                        " tokens"));
    }
    return absl::OkStatus();
  };
  KV_RETURN_IF_ERROR(in_range("tokenizer.ggml.bos_token_id", bos));
  KV_RETURN_IF_ERROR(in_range("tokenizer.ggml.eos_token_id", eos));
  KV_RETURN_IF_ERROR(in_range("tokenizer.ggml.unknown_token_id", unk));
  v.bos_id = static_cast<TokenId>(bos);
  v.eos_id = static_cast<TokenId>(eos);
  v.unk_id = static_cast<TokenId>(unk);
  KV_ASSIGN_OR_RETURN(v.add_bos, BoolOr(file, "tokenizer.ggml.add_bos_token", true));
  KV_ASSIGN_OR_RETURN(v.add_space_prefix, BoolOr(file, "tokenizer.ggml.add_space_prefix", true));
  KV_RETURN_IF_ERROR(ValidateVocab(v, file.path()));
  return v;
}

absl::StatusOr<std::unique_ptr<ModelFile>> LoadGgufModel(std::unique_ptr<GgufFile> file) {
  auto model = std::make_unique<ModelFile>();
  model->format = "gguf";
  KV_ASSIGN_OR_RETURN(model->config, ReadLlamaConfig(*file));
  KV_ASSIGN_OR_RETURN(model->vocab, ReadGgufVocab(*file));
  const ModelConfig& c = model->config;
  ModelWeights& w = model->weights;
  KV_ASSIGN_OR_RETURN(w.token_embedding, RequiredTensor(*file, "token_embd.weight"));
  KV_ASSIGN_OR_RETURN(w.output_norm, RequiredTensor(*file, "output_norm.weight"));
  if (file->FindTensor("output.weight") != nullptr) {
    KV_ASSIGN_OR_RETURN(w.output, file->GetTensor("output.weight"));
    w.tied_output = false;
  } else {
    w.output = w.token_embedding;
    w.tied_output = true;
  }
  w.layers.resize(static_cast<size_t>(c.n_layers));
  for (int64_t i = 0; i < c.n_layers; ++i) {
    LayerWeights& l = w.layers[static_cast<size_t>(i)];
    const std::string p = absl::StrCat("blk.", i, ".");
    KV_ASSIGN_OR_RETURN(l.attn_norm, RequiredTensor(*file, p + "attn_norm.weight"));
    KV_ASSIGN_OR_RETURN(l.wq, RequiredTensor(*file, p + "attn_q.weight"));
    KV_ASSIGN_OR_RETURN(l.wk, RequiredTensor(*file, p + "attn_k.weight"));
    KV_ASSIGN_OR_RETURN(l.wv, RequiredTensor(*file, p + "attn_v.weight"));
    KV_ASSIGN_OR_RETURN(l.wo, RequiredTensor(*file, p + "attn_output.weight"));
    KV_ASSIGN_OR_RETURN(l.ffn_norm, RequiredTensor(*file, p + "ffn_norm.weight"));
    KV_ASSIGN_OR_RETURN(l.ffn_gate, RequiredTensor(*file, p + "ffn_gate.weight"));
    KV_ASSIGN_OR_RETURN(l.ffn_down, RequiredTensor(*file, p + "ffn_down.weight"));
    KV_ASSIGN_OR_RETURN(l.ffn_up, RequiredTensor(*file, p + "ffn_up.weight"));
  }
  KV_RETURN_IF_ERROR(ValidateWeights(w, c, file->path()));
  if (model->vocab.size() != c.vocab_size) {
    return Invalid(*file, absl::StrCat("vocabulary has ", model->vocab.size(),
                                       " tokens but the model has ", c.vocab_size));
  }
  model->storage.push_back(file->TakeMapping());
  return model;
}

void SetLlamaMetadata(const ModelConfig& c, const Vocab& v, TensorType dtype,
                      GgufWriter& writer) {
  // llama.cpp's llama_ftype: ALL_F32 0, MOSTLY_F16 1, MOSTLY_Q4_0 2, MOSTLY_Q8_0 7,
  // MOSTLY_BF16 32.
  uint32_t file_type = 0;
  switch (dtype) {
    case TensorType::kF32:
      file_type = 0;
      break;
    case TensorType::kF16:
      file_type = 1;
      break;
    case TensorType::kQ8_0:
      file_type = 7;
      break;
    case TensorType::kQ4_0:
      file_type = 2;
      break;
    case TensorType::kBF16:
      file_type = 32;
      break;
  }
  const auto u32 = [](int64_t x) { return GgufValue::Uint32(static_cast<uint32_t>(x)); };
  writer.SetMetadata("general.architecture", GgufValue::String("llama"));
  writer.SetMetadata("general.name", GgufValue::String(c.name));
  writer.SetMetadata("general.file_type", GgufValue::Uint32(file_type));
  writer.SetMetadata("llama.context_length", u32(c.context_length));
  writer.SetMetadata("llama.embedding_length", u32(c.dim));
  writer.SetMetadata("llama.block_count", u32(c.n_layers));
  writer.SetMetadata("llama.feed_forward_length", u32(c.ffn_dim));
  writer.SetMetadata("llama.attention.head_count", u32(c.n_heads));
  writer.SetMetadata("llama.attention.head_count_kv", u32(c.n_kv_heads));
  writer.SetMetadata("llama.rope.dimension_count", u32(c.rope_dim));
  writer.SetMetadata("llama.rope.freq_base", GgufValue::Float32(c.rope_theta));
  writer.SetMetadata("llama.attention.layer_norm_rms_epsilon", GgufValue::Float32(c.rms_eps));
  writer.SetMetadata("llama.vocab_size", u32(v.size()));
  writer.SetMetadata("tokenizer.ggml.model", GgufValue::String("llama"));
  writer.SetMetadata("tokenizer.ggml.tokens", GgufValue::StringArray(v.pieces));
  writer.SetMetadata("tokenizer.ggml.scores", GgufValue::Float32Array(v.scores));
  std::vector<int32_t> kinds;
  kinds.reserve(v.kinds.size());
  for (TokenKind k : v.kinds) kinds.push_back(static_cast<int32_t>(k));
  writer.SetMetadata("tokenizer.ggml.token_type", GgufValue::Int32Array(kinds));
  writer.SetMetadata("tokenizer.ggml.unknown_token_id", u32(v.unk_id));
  writer.SetMetadata("tokenizer.ggml.bos_token_id", u32(v.bos_id));
  writer.SetMetadata("tokenizer.ggml.eos_token_id", u32(v.eos_id));
  writer.SetMetadata("tokenizer.ggml.add_bos_token", GgufValue::Bool(v.add_bos));
  writer.SetMetadata("tokenizer.ggml.add_space_prefix", GgufValue::Bool(v.add_space_prefix));
}

TensorType LlamaStorageType(TensorType dtype, const std::vector<int64_t>& shape) {
  if (shape.size() < 2) return TensorType::kF32;
  if (shape.back() % TensorBlockValues(dtype) != 0) return TensorType::kF16;
  return dtype;
}

std::vector<LlamaTensorSpec> LlamaTensorSpecs(const ModelConfig& c, bool with_output) {
  const int64_t q_dim = c.n_heads * c.head_dim;
  const int64_t kv_dim = c.n_kv_heads * c.head_dim;
  std::vector<LlamaTensorSpec> specs;
  specs.push_back({"token_embd.weight", {c.vocab_size, c.dim}});
  specs.push_back({"output_norm.weight", {c.dim}});
  if (with_output) specs.push_back({"output.weight", {c.vocab_size, c.dim}});
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string p = absl::StrCat("blk.", i, ".");
    specs.push_back({p + "attn_norm.weight", {c.dim}});
    specs.push_back({p + "attn_q.weight", {q_dim, c.dim}});
    specs.push_back({p + "attn_k.weight", {kv_dim, c.dim}});
    specs.push_back({p + "attn_v.weight", {kv_dim, c.dim}});
    specs.push_back({p + "attn_output.weight", {c.dim, q_dim}});
    specs.push_back({p + "ffn_norm.weight", {c.dim}});
    specs.push_back({p + "ffn_gate.weight", {c.ffn_dim, c.dim}});
    specs.push_back({p + "ffn_down.weight", {c.dim, c.ffn_dim}});
    specs.push_back({p + "ffn_up.weight", {c.ffn_dim, c.dim}});
  }
  return specs;
}

absl::Status WriteLlamaGguf(const ModelFile& model, const LlamaGgufOptions& options,
                            const std::string& path) {
  GgufWriter writer;
  SetLlamaMetadata(model.config, model.vocab, options.dtype, writer);
  const ModelWeights& w = model.weights;
  // Tensor views by GGUF name (the ModelFile's views may carry llama2.c-style names).
  std::vector<std::pair<std::string, const TensorData*>> views = {
      {"token_embd.weight", &w.token_embedding},
      {"output_norm.weight", &w.output_norm},
      {"output.weight", &w.output}};
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const LayerWeights& l = w.layers[i];
    const std::string p = absl::StrCat("blk.", i, ".");
    views.insert(views.end(), {{p + "attn_norm.weight", &l.attn_norm},
                               {p + "attn_q.weight", &l.wq},
                               {p + "attn_k.weight", &l.wk},
                               {p + "attn_v.weight", &l.wv},
                               {p + "attn_output.weight", &l.wo},
                               {p + "ffn_norm.weight", &l.ffn_norm},
                               {p + "ffn_gate.weight", &l.ffn_gate},
                               {p + "ffn_down.weight", &l.ffn_down},
                               {p + "ffn_up.weight", &l.ffn_up}});
  }
  for (const LlamaTensorSpec& spec : LlamaTensorSpecs(model.config, options.write_output)) {
    const TensorData* view = nullptr;
    for (const auto& [name, t] : views) {
      if (name == spec.name) view = t;
    }
    if (view == nullptr || view->shape != spec.shape) {
      return absl::InvalidArgumentError(absl::StrCat("model has no tensor ", spec.name,
                                                     " of shape ", ShapeString(spec.shape)));
    }
    const TensorData t = *view;  // The view outlives the write (the model owns the data).
    const int64_t cols = t.cols();
    KV_RETURN_IF_ERROR(writer.AddTensor(
        spec.name, LlamaStorageType(options.dtype, spec.shape), spec.shape,
        [t, cols](int64_t first_row, absl::Span<float> out) {
          return DecodeToF32(t, first_row * cols, out);
        }));
  }
  return writer.WriteFile(path);
}

}  // namespace kvserve::engine
