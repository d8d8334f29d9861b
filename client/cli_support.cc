#include "client/cli_support.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace kvserve::client {

using kvserve::v1::FinishReason;

kvserve::v1::GenerationParams BuildGenerationParams(const GenerateFlags& flags) {
  kvserve::v1::GenerationParams params;
  params.set_prompt(flags.prompt);
  params.set_max_tokens(flags.max_tokens);
  params.mutable_sampling()->set_temperature(flags.temperature);
  params.mutable_sampling()->set_top_k(flags.top_k);
  params.mutable_sampling()->set_top_p(flags.top_p);
  params.mutable_sampling()->set_seed(flags.seed);
  for (const std::string& stop : flags.stop) params.add_stop(stop);
  params.set_add_bos(!flags.no_bos);
  params.set_priority(flags.priority);
  params.set_kv_policy(flags.kv_policy);
  return params;
}

std::string FinishReasonName(FinishReason reason) {
  switch (reason) {
    case kvserve::v1::FINISH_REASON_STOP:
      return "stop";
    case kvserve::v1::FINISH_REASON_LENGTH:
      return "length";
    case kvserve::v1::FINISH_REASON_STOP_STRING:
      return "stop_string";
    case kvserve::v1::FINISH_REASON_CONTEXT_LENGTH:
      return "context_length";
    default:
      return "unspecified";
  }
}

nlohmann::ordered_json UsageToJson(const kvserve::v1::Usage& usage) {
  return nlohmann::ordered_json{{"prompt_tokens", usage.prompt_tokens()},
                        {"completion_tokens", usage.completion_tokens()},
                        {"cached_prompt_tokens", usage.cached_prompt_tokens()}};
}

nlohmann::ordered_json GenerateChunkToJson(const kvserve::v1::GenerateResponse& chunk) {
  nlohmann::ordered_json line{{"text", chunk.text()},
                      {"token_ids", std::vector<int32_t>(chunk.token_ids().begin(),
                                                         chunk.token_ids().end())}};
  if (chunk.finish_reason() != kvserve::v1::FINISH_REASON_UNSPECIFIED) {
    line["finish_reason"] = FinishReasonName(chunk.finish_reason());
    line["usage"] = UsageToJson(chunk.usage());
  }
  return line;
}

nlohmann::ordered_json CompleteResponseToJson(const kvserve::v1::CompleteResponse& response) {
  return nlohmann::ordered_json{
      {"text", response.text()},
      {"token_ids",
       std::vector<int32_t>(response.token_ids().begin(), response.token_ids().end())},
      {"finish_reason", FinishReasonName(response.finish_reason())},
      {"usage", UsageToJson(response.usage())}};
}

nlohmann::ordered_json TokenizeResponseToJson(const kvserve::v1::TokenizeResponse& response) {
  return nlohmann::ordered_json{
      {"token_ids",
       std::vector<int32_t>(response.token_ids().begin(), response.token_ids().end())},
      {"pieces", std::vector<std::string>(response.pieces().begin(), response.pieces().end())}};
}

nlohmann::ordered_json ModelInfoToJson(const kvserve::v1::GetModelInfoResponse& info) {
  return nlohmann::ordered_json{{"name", info.name()},
                        {"architecture", info.architecture()},
                        {"format", info.format()},
                        {"vocab_size", info.vocab_size()},
                        {"context_length", info.context_length()},
                        {"embedding_dim", info.embedding_dim()},
                        {"layers", info.layers()},
                        {"heads", info.heads()},
                        {"kv_heads", info.kv_heads()},
                        {"ffn_dim", info.ffn_dim()},
                        {"parameters", info.parameters()},
                        {"bos_token_id", info.bos_token_id()},
                        {"eos_token_id", info.eos_token_id()},
                        {"device", info.device()},
                        {"max_tokens_limit", info.max_tokens_limit()},
                        {"weight_type", info.weight_type()},
                        {"kv_dtype", info.kv_dtype()},
                        {"default_kv_policy", info.default_kv_policy()}};
}

std::string FormatModelInfo(const kvserve::v1::GetModelInfoResponse& info) {
  std::string out;
  const nlohmann::ordered_json json = ModelInfoToJson(info);
  for (auto it = json.begin(); it != json.end(); ++it) {
    absl::StrAppend(&out, it.key(), ": ",
                    it->is_string() ? it->get<std::string>() : it->dump(), "\n");
  }
  return out;
}

std::string FormatTokenIds(absl::Span<const int32_t> ids) {
  return absl::StrCat("[", absl::StrJoin(ids, ", "), "]");
}

std::string JsonLine(const nlohmann::ordered_json& value) {
  return value.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

std::string FormatGenerationSummary(FinishReason reason, const kvserve::v1::Usage& usage,
                                    double elapsed_s) {
  const double tokens_per_s = elapsed_s > 0 ? usage.completion_tokens() / elapsed_s : 0;
  return absl::StrFormat(
      "finish_reason=%s prompt_tokens=%d completion_tokens=%d cached_prompt_tokens=%d "
      "elapsed_s=%.3f tokens_per_s=%.1f",
      FinishReasonName(reason), usage.prompt_tokens(), usage.completion_tokens(),
      usage.cached_prompt_tokens(), elapsed_s, tokens_per_s);
}

}  // namespace kvserve::client
