#include "server/grpc/proto_convert.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "engine/common/status_macros.h"
#include "engine/tokenizer/utf8.h"

namespace kvserve::server {
namespace {

absl::Status CheckTextSize(std::string_view what, size_t bytes, const RequestLimits& limits) {
  if (bytes > limits.max_prompt_bytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s is %d bytes; the limit is %d bytes", what, bytes, limits.max_prompt_bytes));
  }
  return absl::OkStatus();
}

// The prompt is a proto `bytes` field (a `string` that is not UTF-8 would fail to parse and
// reach the client as INTERNAL), so its encoding is checked here, before tokenizing.
absl::Status CheckPromptUtf8(std::string_view prompt) {
  size_t pos = 0;
  while (pos < prompt.size()) {
    const engine::Utf8Unit unit = engine::NextUtf8Unit(prompt, pos);
    if (unit.kind != engine::Utf8Unit::Kind::kValid) {
      return absl::InvalidArgumentError(
          absl::StrFormat("prompt is not valid UTF-8 (byte offset %d)", pos));
    }
    pos += unit.length;
  }
  return absl::OkStatus();
}

absl::StatusOr<int32_t> ResolveMaxTokens(int32_t requested, const RequestLimits& limits) {
  if (requested == 0) return std::min(limits.default_max_tokens, limits.max_tokens_limit);
  if (requested < 0 || requested > limits.max_tokens_limit) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "max_tokens is %d; it must be in [1, %d] (0 selects the server default, %d)", requested,
        limits.max_tokens_limit, limits.default_max_tokens));
  }
  return requested;
}

absl::Status CheckStopStrings(const v1::GenerationParams& params, const RequestLimits& limits) {
  if (params.stop_size() > limits.max_stop_strings) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%d stop strings given; at most %d are allowed", params.stop_size(),
        limits.max_stop_strings));
  }
  for (int i = 0; i < params.stop_size(); ++i) {
    const std::string& stop = params.stop(i);
    if (stop.empty()) {
      return absl::InvalidArgumentError(absl::StrFormat("stop[%d] is empty", i));
    }
    if (stop.size() > limits.max_stop_string_bytes) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "stop[%d] is %d bytes; a stop string may be at most %d bytes", i, stop.size(),
          limits.max_stop_string_bytes));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<engine::TokenId>> PromptTokens(
    const v1::GenerationParams& params, const RequestLimits& limits,
    const engine::BpeTokenizer& tokenizer) {
  const bool has_text = !params.prompt().empty();
  const bool has_ids = params.prompt_token_ids_size() > 0;
  if (has_text && has_ids) {
    return absl::InvalidArgumentError(
        "both prompt and prompt_token_ids are set; set exactly one of them");
  }
  if (!has_text && !has_ids) {
    return absl::InvalidArgumentError(
        "the prompt is empty; set prompt (text) or prompt_token_ids");
  }
  if (has_ids) {
    for (int i = 0; i < params.prompt_token_ids_size(); ++i) {
      const int32_t id = params.prompt_token_ids(i);
      if (id < 0 || id >= limits.vocab_size) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "prompt_token_ids[%d] = %d is out of range; this model's token ids are 0..%d", i,
            id, limits.vocab_size - 1));
      }
    }
    return std::vector<engine::TokenId>(params.prompt_token_ids().begin(),
                                        params.prompt_token_ids().end());
  }
  KV_RETURN_IF_ERROR(CheckTextSize("prompt", params.prompt().size(), limits));
  KV_RETURN_IF_ERROR(CheckPromptUtf8(params.prompt()));
  const bool add_bos = params.has_add_bos() ? params.add_bos() : true;
  return tokenizer.Encode(params.prompt(), add_bos);
}

absl::string_view PieceView(const engine::BpeTokenizer& tokenizer, engine::TokenId id) {
  const std::string_view piece = tokenizer.Piece(id);
  return absl::string_view(piece.data(), piece.size());
}

}  // namespace

absl::Status CheckModelName(std::string_view requested, std::string_view served) {
  if (requested.empty() || requested == served) return absl::OkStatus();
  return absl::NotFoundError(std::string("model '")
                                 .append(requested)
                                 .append("' is not served; this server serves '")
                                 .append(served)
                                 .append("'"));
}

engine::SamplingParams FromProto(const v1::SamplingParams& proto) {
  engine::SamplingParams params;
  params.temperature = proto.temperature();
  params.top_k = proto.top_k();
  params.top_p = proto.top_p() == 0.0f ? 1.0f : proto.top_p();
  params.seed = proto.seed();
  return params;
}

absl::StatusOr<std::unique_ptr<PendingRequest>> ToPendingRequest(
    const v1::GenerationParams& params, const RequestLimits& limits,
    const engine::BpeTokenizer& tokenizer) {
  KV_RETURN_IF_ERROR(CheckModelName(params.model(), limits.model_name));
  // Cheap checks first: tokenizing is the only costly step.
  KV_ASSIGN_OR_RETURN(const int32_t max_tokens, ResolveMaxTokens(params.max_tokens(), limits));
  const engine::SamplingParams sampling = FromProto(params.sampling());
  KV_RETURN_IF_ERROR(engine::ValidateSamplingParams(sampling));
  KV_RETURN_IF_ERROR(CheckStopStrings(params, limits));
  KV_ASSIGN_OR_RETURN(std::vector<engine::TokenId> prompt,
                      PromptTokens(params, limits, tokenizer));
  if (prompt.empty()) {
    return absl::InvalidArgumentError("the prompt has no tokens");
  }
  // One more token must fit: the model has to generate something.
  if (static_cast<int64_t>(prompt.size()) + 1 > limits.context_length) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "prompt has %d tokens; this model's context is %d tokens (the prompt must leave room "
        "for at least one generated token)",
        prompt.size(), limits.context_length));
  }

  auto request = std::make_unique<PendingRequest>();
  request->prompt_ids = std::move(prompt);
  request->sampling = sampling;
  request->max_tokens = max_tokens;
  request->stop_strings.assign(params.stop().begin(), params.stop().end());
  request->priority = params.priority();
  if (params.kv_policy().empty()) {
    request->kv_policy = limits.default_kv_policy;
  } else {
    KV_ASSIGN_OR_RETURN(request->kv_policy, engine::CreateKvPolicy(params.kv_policy(), limits.kv_policy_context));
  }
  return request;
}

absl::Status Tokenize(const v1::TokenizeRequest& request, const RequestLimits& limits,
                      const engine::BpeTokenizer& tokenizer, v1::TokenizeResponse* response) {
  KV_RETURN_IF_ERROR(CheckModelName(request.model(), limits.model_name));
  KV_RETURN_IF_ERROR(CheckTextSize("text", request.text().size(), limits));
  const bool add_bos = request.has_add_bos() ? request.add_bos() : true;
  KV_ASSIGN_OR_RETURN(std::vector<engine::TokenId> ids,
                      tokenizer.Encode(request.text(), add_bos));
  response->mutable_token_ids()->Reserve(static_cast<int>(ids.size()));
  for (const engine::TokenId id : ids) {
    response->add_token_ids(id);
    // Vocabulary pieces write spaces as U+2581; clients want the text.
    response->add_pieces(absl::StrReplaceAll(PieceView(tokenizer, id), {{"\u2581", " "}}));
  }
  return absl::OkStatus();
}

v1::FinishReason ToProto(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop: return v1::FINISH_REASON_STOP;
    case FinishReason::kLength: return v1::FINISH_REASON_LENGTH;
    case FinishReason::kStopString: return v1::FINISH_REASON_STOP_STRING;
    case FinishReason::kContextLength: return v1::FINISH_REASON_CONTEXT_LENGTH;
    case FinishReason::kUnspecified: break;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

void ToProto(const Usage& usage, v1::Usage* proto) {
  proto->set_prompt_tokens(usage.prompt_tokens);
  proto->set_completion_tokens(usage.completion_tokens);
  proto->set_cached_prompt_tokens(usage.cached_prompt_tokens);
}

void ToProto(const ModelDescription& model, v1::GetModelInfoResponse* proto) {
  const engine::ModelConfig& config = model.config;
  proto->set_name(config.name);
  proto->set_architecture(config.architecture);
  proto->set_format(model.format);
  proto->set_vocab_size(static_cast<int32_t>(config.vocab_size));
  proto->set_context_length(static_cast<int32_t>(config.context_length));
  proto->set_embedding_dim(static_cast<int32_t>(config.dim));
  proto->set_layers(static_cast<int32_t>(config.n_layers));
  proto->set_heads(static_cast<int32_t>(config.n_heads));
  proto->set_kv_heads(static_cast<int32_t>(config.n_kv_heads));
  proto->set_ffn_dim(static_cast<int32_t>(config.ffn_dim));
  proto->set_parameters(model.parameters);
  proto->set_bos_token_id(model.bos_id);
  proto->set_eos_token_id(model.eos_id);
  proto->set_device(model.device);
  proto->set_max_tokens_limit(model.max_tokens_limit);
  proto->set_weight_type(model.weight_type);
  proto->set_kv_dtype(model.kv_dtype);
  proto->set_default_kv_policy(model.default_kv_policy);
}

}  // namespace kvserve::server
