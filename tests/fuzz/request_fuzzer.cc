// libFuzzer target: arbitrary bytes as a serialized kvserve.v1.GenerateRequest, then the
// server's validation and conversion (server/grpc/proto_convert.h) with the bundled model's
// tokenizer and limits like the server's. Every input must give either a request that obeys
// the limits (ids in range, room for one generated token, max_tokens in [1, limit], valid
// sampling, bounded stop strings) or INVALID_ARGUMENT / NOT_FOUND with a message; never a
// crash or a sanitizer report. The KV-policy spec parser (engine/policy) is reached through
// GenerationParams.kv_policy. The same prompt also goes through Tokenize(), whose response
// must pair every id with a piece. `prompt` is `bytes`, so ill-formed UTF-8 in it parses and
// reaches the conversion's own UTF-8 check; bytes that do not parse at all (protobuf refuses,
// among others, `string` fields that are not UTF-8, as the gRPC server does) are used as a
// raw prompt instead, so the UTF-8 and size checks see arbitrary bytes too.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/stubs/logging.h"
#include "engine/model/llama2c_reader.h"
#include "engine/sampling/sampler.h"
#include "engine/tokenizer/bpe_tokenizer.h"
#include "kvserve/v1/kvserve.pb.h"
#include "server/grpc/proto_convert.h"
#include "tests/fuzz/fuzz_file.h"

namespace kvserve::fuzz {
namespace {

std::unique_ptr<engine::BpeTokenizer> MakeTokenizer() {
  absl::StatusOr<engine::Vocab> vocab =
      engine::ReadLlama2cTokenizer(KVSERVE_SOURCE_DIR "/models/tok512.bin");
  if (!vocab.ok()) Fail("cannot read models/tok512.bin: " + vocab.status().ToString());
  absl::StatusOr<std::unique_ptr<engine::BpeTokenizer>> tok =
      engine::BpeTokenizer::Create(*vocab);
  if (!tok.ok()) Fail("cannot make the tokenizer: " + tok.status().ToString());
  return std::move(*tok);
}

server::RequestLimits Limits() {
  server::RequestLimits limits;
  limits.model_name = "stories260K";
  limits.vocab_size = 512;
  limits.context_length = 512;
  limits.default_max_tokens = 256;
  limits.max_tokens_limit = 384;
  limits.max_prompt_bytes = 4096;  // Small, so inputs can reach the limit.
  limits.max_stop_strings = 8;
  limits.max_stop_string_bytes = 16;
  return limits;
}

void CheckCleanError(const absl::Status& status, const char* what) {
  if (status.ok()) return;
  if (!absl::IsInvalidArgument(status) && !absl::IsNotFound(status)) {
    Fail(absl::StrCat(what, " returned an unexpected code: ", status.ToString()));
  }
  if (status.message().empty()) Fail(absl::StrCat(what, " returned an error without a message"));
}

void CheckPending(const server::PendingRequest& r, const server::RequestLimits& limits) {
  if (r.prompt_ids.empty()) Fail("accepted an empty prompt");
  if (static_cast<int64_t>(r.prompt_ids.size()) + 1 > limits.context_length) {
    Fail(absl::StrCat("accepted a ", r.prompt_ids.size(), "-token prompt for context ",
                      limits.context_length));
  }
  for (engine::TokenId id : r.prompt_ids) {
    if (id < 0 || id >= limits.vocab_size) Fail(absl::StrCat("accepted token id ", id));
  }
  if (r.max_tokens < 1 || r.max_tokens > limits.max_tokens_limit) {
    Fail(absl::StrCat("accepted max_tokens ", r.max_tokens));
  }
  if (!engine::ValidateSamplingParams(r.sampling).ok()) Fail("accepted invalid sampling");
  if (static_cast<int>(r.stop_strings.size()) > limits.max_stop_strings) {
    Fail("accepted too many stop strings");
  }
  for (const std::string& s : r.stop_strings) {
    if (s.empty() || s.size() > limits.max_stop_string_bytes) {
      Fail(absl::StrCat("accepted a ", s.size(), "-byte stop string"));
    }
  }
}

}  // namespace
}  // namespace kvserve::fuzz

// Protobuf logs every string field that is not UTF-8; quiet, the fuzzer runs faster.
extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvserve;  // NOLINT(build/namespaces): a C entry point.
  static const std::unique_ptr<engine::BpeTokenizer> tokenizer = fuzz::MakeTokenizer();
  static const server::RequestLimits limits = fuzz::Limits();

  v1::GenerateRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) {
    request.Clear();
    request.mutable_params()->set_prompt(reinterpret_cast<const char*>(data), size);
  }
  const v1::GenerationParams& params = request.params();

  absl::StatusOr<std::unique_ptr<server::PendingRequest>> pending =
      server::ToPendingRequest(params, limits, *tokenizer);
  fuzz::CheckCleanError(pending.status(), "ToPendingRequest");
  if (pending.ok()) fuzz::CheckPending(**pending, limits);

  (void)server::FromProto(params.sampling());

  v1::TokenizeRequest tokenize;
  tokenize.set_model(params.model());
  tokenize.set_text(params.prompt());
  if (params.has_add_bos()) tokenize.set_add_bos(params.add_bos());
  v1::TokenizeResponse response;
  const absl::Status status = server::Tokenize(tokenize, limits, *tokenizer, &response);
  fuzz::CheckCleanError(status, "Tokenize");
  if (status.ok() && response.token_ids_size() != response.pieces_size()) {
    fuzz::Fail("Tokenize returned ids and pieces of different counts");
  }
  return 0;
}
