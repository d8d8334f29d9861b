// The LLM tensor layout of kvserve's Open Inference Protocol (KServe v2) front end: reading a
// ModelInferRequest's tensors and parameters into a kvserve.v1 GenerationParams, and writing
// generated text and token ids as output tensors. The only place the KServe messages and
// kvserve's request structs meet; docs/KSERVE.md is the user-facing description.
//
// Inputs (each optional except text_input; a scalar has shape [1] or [1, 1]):
//   text_input  BYTES [1]               the prompt (UTF-8)
//   max_tokens  INT32|INT64|UINT32|UINT64 [1]
//   temperature FP32|FP64 [1]           top_p FP32|FP64 [1]
//   top_k       INT32|INT64|UINT32|UINT64 [1]
//   seed        UINT64|INT64|UINT32|INT32 [1]
//   stream      BOOL [1]
//   stop_words  BYTES [N] or [1, N]
// Request parameters: kv_policy (string), priority (int), stream (bool),
// triton_enable_empty_final_response (bool), and max_tokens/temperature/top_k/top_p/seed as
// an alternative to the tensors (giving both is an error).
// Outputs: text_output BYTES [1], output_ids INT32 [N] (a leading 1 is added to both when
// text_input had shape [1, 1]). Raw inputs get raw outputs; typed inputs get typed outputs.
//
// Stateless functions; thread-safe.
#ifndef KVSERVE_SERVER_GRPC_KSERVE_TENSORS_H_
#define KVSERVE_SERVER_GRPC_KSERVE_TENSORS_H_

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "inference/grpc_service.pb.h"
#include "kvserve/v1/kvserve.pb.h"
#include "server/grpc/proto_convert.h"
#include "server/serving/generation_stream.h"

namespace kvserve::server {

// The one model version kvserve serves ("" in a request also selects it).
inline constexpr char kKServeModelVersion[] = "1";
// Tensor and parameter names of the layout.
inline constexpr char kTextInput[] = "text_input";
inline constexpr char kTextOutput[] = "text_output";
inline constexpr char kOutputIds[] = "output_ids";
// Response parameter marking the last response of a request in ModelStreamInfer (Triton's
// convention, which its clients rely on).
inline constexpr char kFinalResponseParameter[] = "triton_final_response";

// What one ModelInferRequest asks for.
struct KServeRequest {
  v1::GenerationParams params;  // Validated later, by ToPendingRequest (same rules as v1).
  std::string id;               // The request's id, echoed in every response.
  std::optional<bool> stream;   // The stream input or parameter; unset = the RPC's default.
  bool empty_final_response = false;  // triton_enable_empty_final_response.
  bool raw_output = false;      // Answer in raw_output_contents (the request used raw inputs).
  bool batch_dim = false;       // text_input had shape [1, 1]: outputs get a leading 1 too.
  bool want_text = true;        // text_output requested (or no outputs named).
  bool want_ids = true;         // output_ids requested (or no outputs named).
  bool ids_first = false;       // output_ids was requested before text_output.
};

// OK when `name` is "" or `served` and `version` is "" or "1"; else NOT_FOUND naming what is
// served.
absl::Status CheckKServeModel(std::string_view name, std::string_view version,
                              std::string_view served);

// Reads the request's tensors and parameters. INVALID_ARGUMENT with a message naming the
// tensor and what is wrong for: a missing text_input, an unknown or repeated input or output,
// an unknown datatype string, a datatype the input does not take, a wrong shape, contents
// that do not match the shape, malformed raw contents, a parameter of the wrong type, or a
// value given both as a tensor and as a parameter. Does not check the model name.
absl::StatusOr<KServeRequest> ParseKServeRequest(const inference::ModelInferRequest& request);

// Fills `response` with the request's identity (model, version, id) and the requested
// outputs holding `text` and `token_ids`.
void FillKServeOutputs(const KServeRequest& request, std::string_view model_name,
                       std::string_view text, absl::Span<const TokenId> token_ids,
                       inference::ModelInferResponse* response);
// Only the identity, no outputs (an error or an empty final response in a stream).
void FillKServeIdentity(const KServeRequest& request, std::string_view model_name,
                        inference::ModelInferResponse* response);
// Adds the end-of-request parameters: finish_reason (string), prompt_tokens,
// completion_tokens and cached_prompt_tokens (int64).
void AddKServeFinishParameters(FinishReason reason, const Usage& usage,
                               inference::ModelInferResponse* response);
void SetKServeBoolParameter(std::string_view name, bool value,
                            inference::ModelInferResponse* response);

// ModelMetadata for the served model: inputs and outputs of the layout above, and model
// properties (architecture, context length, vocabulary, format, device, limits).
void FillKServeModelMetadata(const ModelDescription& model, const RequestLimits& limits,
                             inference::ModelMetadataResponse* response);

}  // namespace kvserve::server

#endif  // KVSERVE_SERVER_GRPC_KSERVE_TENSORS_H_
