// Conversion between the kvserve.v1 protos and the engine/serving structs: the only place
// the two meet. Validation of a GenerationParams happens here, so every handler applies the
// same rules and errors read the same. Stateless functions; thread-safe.
#ifndef KVSERVE_SERVER_GRPC_PROTO_CONVERT_H_
#define KVSERVE_SERVER_GRPC_PROTO_CONVERT_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/model/model_config.h"
#include "engine/sampling/sampler.h"
#include "engine/tokenizer/bpe_tokenizer.h"
#include "kvserve/v1/kvserve.pb.h"
#include "server/serving/generation_stream.h"
#include "server/serving/request_queue.h"

namespace kvserve::server {

// What a request may ask of the served model.
struct RequestLimits {
  std::string model_name;          // The served model's name; requests may name it or leave "".
  int64_t vocab_size = 0;          // Valid token ids are [0, vocab_size).
  int64_t context_length = 0;      // Prompt tokens + 1 must fit.
  int32_t default_max_tokens = 256;  // Used when a request's max_tokens is 0.
  int32_t max_tokens_limit = 0;    // Largest max_tokens a request may ask for (>= 1).
  size_t max_prompt_bytes = 1 << 20;  // Longest prompt / Tokenize text, before tokenizing.
  int max_stop_strings = 64;          // Stop strings per request.
  size_t max_stop_string_bytes = 256; // Length of one stop string.
  std::shared_ptr<const engine::KvPolicy> default_kv_policy;  // When a request names none.
  engine::KvPolicyContext kv_policy_context;  // What request policies are built with (ScaleKV).
};

// Describes the served model for GetModelInfo (gathered once at startup).
struct ModelDescription {
  engine::ModelConfig config;
  std::string format;              // "gguf" or "llama2c".
  std::string device;              // "cpu" or "gpu".
  engine::TokenId bos_id = 1;
  engine::TokenId eos_id = 2;
  int64_t parameters = 0;
  int32_t max_tokens_limit = 0;
  std::string weight_type;         // "f32", "bf16" or "int8" (resolved, never "auto").
  std::string kv_dtype;            // "f32", "bf16" or "int8".
  std::string default_kv_policy;   // Canonical spec.
};

// OK when `requested` is empty or the served model's name; else NOT_FOUND
// "model 'x' is not served; this server serves 'y'".
absl::Status CheckModelName(std::string_view requested, std::string_view served);

// Proto sampling parameters as the engine takes them (top_p 0 means 1). Not validated.
engine::SamplingParams FromProto(const v1::SamplingParams& proto);

// Validates `params` against `limits`, tokenizes the prompt and builds the request to
// enqueue (stream and deadline left for the caller). INVALID_ARGUMENT naming the problem
// for any bad field; NOT_FOUND for another model's name.
absl::StatusOr<std::unique_ptr<PendingRequest>> ToPendingRequest(
    const v1::GenerationParams& params, const RequestLimits& limits,
    const engine::BpeTokenizer& tokenizer);

// Validates a Tokenize request's model and text size and tokenizes it into `response`.
absl::Status Tokenize(const v1::TokenizeRequest& request, const RequestLimits& limits,
                      const engine::BpeTokenizer& tokenizer, v1::TokenizeResponse* response);

v1::FinishReason ToProto(FinishReason reason);
void ToProto(const Usage& usage, v1::Usage* proto);
void ToProto(const ModelDescription& model, v1::GetModelInfoResponse* proto);

}  // namespace kvserve::server

#endif  // KVSERVE_SERVER_GRPC_PROTO_CONVERT_H_
