#include "engine/model/llama2c_reader.h"

#include <cstring>
#include <filesystem>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"
#include "engine/common/mapped_file.h"
#include "engine/common/status_macros.h"
#include "engine/model/model_validation.h"

namespace kvserve::engine {
namespace {

constexpr int kHeaderBytes = 7 * 4;
constexpr uint32_t kVersionedExportMagic = 0x616b3432;  // "ak42": llama2.c's newer exports.

absl::Status Invalid(absl::string_view path, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", message));
}

bool IsBytePiece(absl::string_view s) {
  auto hex = [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f');
  };
  return s.size() == 6 && s.substr(0, 3) == "<0x" && hex(s[3]) && hex(s[4]) && s[5] == '>';
}

// Lays f32 tensors out one after another in the mapped checkpoint.
class TensorCursor {
 public:
  TensorCursor(const MappedFile& file, uint64_t offset) : file_(file), offset_(offset) {}

  // The next tensor of `shape`; the caller has checked the total size beforehand.
  TensorData Next(std::string name, std::vector<int64_t> shape) {
    TensorData t;
    t.name = std::move(name);
    t.type = TensorType::kF32;
    t.shape = std::move(shape);
    t.size_bytes = static_cast<size_t>(t.num_elements()) * sizeof(float);
    t.data = file_.data() + offset_;
    offset_ += t.size_bytes;
    return t;
  }
  void Skip(uint64_t bytes) { offset_ += bytes; }
  uint64_t offset() const { return offset_; }

 private:
  const MappedFile& file_;
  uint64_t offset_;
};

}  // namespace

absl::StatusOr<Vocab> ReadLlama2cTokenizer(const std::string& path) {
  KV_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path));
  const uint8_t* data = file->data();
  const uint64_t size = file->size();
  if (size < 4) {
    return Invalid(path, absl::StrCat("truncated: a llama2.c tokenizer needs a 4-byte header "
                                      "but the file has ", size, " bytes"));
  }
  int32_t max_token_length;
  std::memcpy(&max_token_length, data, 4);
  if (max_token_length < 0) {
    return Invalid(path, absl::StrCat("max_token_length is ", max_token_length));
  }
  Vocab v;
  uint64_t pos = 4;
  while (pos < size) {
    const size_t id = v.pieces.size();
    if (size - pos < 8) {
      return Invalid(path, absl::StrCat("truncated: token ", id, " at byte ", pos,
                                        " needs 8 bytes but the file has ", size, " bytes"));
    }
    float score;
    int32_t length;
    std::memcpy(&score, data + pos, 4);
    std::memcpy(&length, data + pos + 4, 4);
    pos += 8;
    if (length < 0 || static_cast<uint64_t>(length) > size - pos) {
      return Invalid(path, absl::StrCat("truncated: token ", id, " at byte ", pos - 4,
                                        " claims ", length, " bytes but the file has ", size,
                                        " bytes"));
    }
    std::string piece(reinterpret_cast<const char*>(data + pos), static_cast<size_t>(length));
    pos += static_cast<uint64_t>(length);
    TokenKind kind = TokenKind::kNormal;
    if (id == 0) {
      kind = TokenKind::kUnknown;
    } else if (id == 1 || id == 2) {
      kind = TokenKind::kControl;
      // llama2.c stores BOS/EOS as "\n<s>\n" and "\n</s>\n".
      const size_t first = piece.find_first_not_of('\n');
      const size_t last = piece.find_last_not_of('\n');
      piece = first == std::string::npos ? "" : piece.substr(first, last - first + 1);
    } else if (IsBytePiece(piece)) {
      kind = TokenKind::kByte;
    }
    if (kind != TokenKind::kByte) piece = absl::StrReplaceAll(piece, {{" ", "\xE2\x96\x81"}});
    v.pieces.push_back(std::move(piece));
    v.scores.push_back(score);
    v.kinds.push_back(kind);
  }
  v.unk_id = 0;
  v.bos_id = 1;
  v.eos_id = 2;
  v.add_bos = true;
  v.add_space_prefix = true;
  if (v.pieces.size() < 3) {
    return Invalid(path, absl::StrCat("the tokenizer has ", v.pieces.size(),
                                      " tokens; it needs at least <unk>, BOS and EOS"));
  }
  KV_RETURN_IF_ERROR(ValidateVocab(v, path));
  return v;
}

absl::StatusOr<std::unique_ptr<ModelFile>> LoadLlama2cModel(const std::string& checkpoint_path,
                                                            const std::string& tokenizer_path) {
  KV_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(checkpoint_path));
  const std::string& path = file->path();
  const uint64_t size = file->size();
  if (size >= 4) {
    uint32_t magic;
    std::memcpy(&magic, file->data(), 4);
    if (magic == kVersionedExportMagic) {
      return Invalid(path, "llama2.c versioned exports (magic \"ak42\") are not supported; "
                           "export with --version 0 (legacy) or convert to GGUF");
    }
  }
  if (size < kHeaderBytes) {
    return Invalid(path, absl::StrCat("truncated: a llama2.c checkpoint needs a ", kHeaderBytes,
                                      "-byte header but the file has ", size, " bytes"));
  }
  Llama2cHeader h;
  std::memcpy(&h, file->data(), kHeaderBytes);
  const bool tied = h.vocab_size > 0;

  ModelConfig c;
  c.architecture = "llama";
  c.name = std::filesystem::path(path).stem().string();
  c.dim = h.dim;
  c.ffn_dim = h.hidden_dim;
  c.n_layers = h.n_layers;
  c.n_heads = h.n_heads;
  c.n_kv_heads = h.n_kv_heads;
  c.vocab_size = h.vocab_size < 0 ? -static_cast<int64_t>(h.vocab_size) : h.vocab_size;
  c.context_length = h.seq_len;
  c.head_dim = h.n_heads > 0 ? h.dim / h.n_heads : 0;
  c.rope_dim = c.head_dim;
  c.rope_theta = 10000.0f;
  c.rms_eps = 1e-5f;
  // ValidateConfig's caps bound every product below far from overflow.
  KV_RETURN_IF_ERROR(ValidateConfig(c, path));

  const int64_t kv_dim = c.n_kv_heads * c.head_dim;
  const int64_t L = c.n_layers;
  const int64_t floats = c.vocab_size * c.dim +                 // token embedding
                         L * c.dim * 2 +                        // rms_att, rms_ffn
                         L * c.dim * c.dim * 2 +                // wq, wo
                         L * kv_dim * c.dim * 2 +               // wk, wv
                         L * c.ffn_dim * c.dim * 3 +            // w1, w2, w3
                         c.dim +                                // rms_final
                         c.context_length * c.head_dim +        // RoPE cos + sin tables
                         (tied ? 0 : c.vocab_size * c.dim);     // wcls
  const uint64_t expected = kHeaderBytes + static_cast<uint64_t>(floats) * 4;
  if (size != expected) {
    return Invalid(path, absl::StrCat(size < expected ? "truncated: " : "",
                                      "a llama2.c checkpoint with this header (dim ", h.dim,
                                      ", hidden_dim ", h.hidden_dim, ", ", h.n_layers,
                                      " layers, ", h.n_heads, " heads, ", h.n_kv_heads,
                                      " KV heads, vocab ", h.vocab_size, ", seq_len ", h.seq_len,
                                      ") has ", expected, " bytes but the file has ", size,
                                      " bytes"));
  }

  auto model = std::make_unique<ModelFile>();
  model->format = "llama2c";
  model->config = c;
  ModelWeights& w = model->weights;
  w.layers.resize(static_cast<size_t>(L));
  TensorCursor cur(*file, kHeaderBytes);
  w.token_embedding = cur.Next("token_embd.weight", {c.vocab_size, c.dim});
  auto per_layer = [&](const char* name, std::vector<int64_t> shape,
                       TensorData LayerWeights::*field) {
    for (int64_t i = 0; i < L; ++i) {
      w.layers[static_cast<size_t>(i)].*field = cur.Next(absl::StrCat("blk.", i, ".", name), shape);
    }
  };
  per_layer("attn_norm.weight", {c.dim}, &LayerWeights::attn_norm);
  per_layer("attn_q.weight", {c.dim, c.dim}, &LayerWeights::wq);
  per_layer("attn_k.weight", {kv_dim, c.dim}, &LayerWeights::wk);
  per_layer("attn_v.weight", {kv_dim, c.dim}, &LayerWeights::wv);
  per_layer("attn_output.weight", {c.dim, c.dim}, &LayerWeights::wo);
  per_layer("ffn_norm.weight", {c.dim}, &LayerWeights::ffn_norm);
  per_layer("ffn_gate.weight", {c.ffn_dim, c.dim}, &LayerWeights::ffn_gate);
  per_layer("ffn_down.weight", {c.dim, c.ffn_dim}, &LayerWeights::ffn_down);
  per_layer("ffn_up.weight", {c.ffn_dim, c.dim}, &LayerWeights::ffn_up);
  w.output_norm = cur.Next("output_norm.weight", {c.dim});
  cur.Skip(static_cast<uint64_t>(c.context_length * c.head_dim) * 4);
  if (tied) {
    w.output = w.token_embedding;
    w.tied_output = true;
  } else {
    w.output = cur.Next("output.weight", {c.vocab_size, c.dim});
    w.tied_output = false;
  }
  KV_RETURN_IF_ERROR(ValidateWeights(w, c, path));

  const std::string tok_path =
      tokenizer_path.empty()
          ? (std::filesystem::path(path).parent_path() / "tokenizer.bin").string()
          : tokenizer_path;
  KV_ASSIGN_OR_RETURN(model->vocab, ReadLlama2cTokenizer(tok_path));
  if (model->vocab.size() != c.vocab_size) {
    return Invalid(tok_path, absl::StrCat("the tokenizer has ", model->vocab.size(),
                                          " tokens but the model ", path, " has a vocabulary of ",
                                          c.vocab_size));
  }
  model->storage.push_back(std::move(file));
  return model;
}

}  // namespace kvserve::engine
