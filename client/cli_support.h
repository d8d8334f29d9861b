// kvserve-cli's request building and output formatting, kept out of main() so tests can check
// the exact lines other tools parse. Pure functions; thread-safe.
//
// JSON lines of `generate --json` (one per response chunk):
//   {"text": "...", "token_ids": [..]}
// and on the last chunk also
//   "finish_reason": "stop|length|stop_string|context_length",
//   "usage": {"prompt_tokens": N, "completion_tokens": N, "cached_prompt_tokens": N}
#ifndef KVSERVE_CLIENT_CLI_SUPPORT_H_
#define KVSERVE_CLIENT_CLI_SUPPORT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "kvserve/v1/kvserve.pb.h"
#include "nlohmann/json.hpp"

namespace kvserve::client {

// What `generate` and `complete` were asked for on the command line. Values are sent as given:
// the server validates them (and names the bad one).
struct GenerateFlags {
  std::string prompt;               // Prompt text.
  int max_tokens = 0;               // 0 = the server's default.
  float temperature = 0;            // 0 = greedy.
  int top_k = 0;                    // 0 = off.
  float top_p = 0;                  // 0 = off (means 1).
  uint64_t seed = 0;                // Sampler seed.
  std::vector<std::string> stop;    // Stop strings.
  int priority = 0;                 // Scheduling priority; higher runs first.
  bool no_bos = false;              // Do not prepend BOS.
  std::string kv_policy;            // KV policy spec; "" = the server's default.
};

kvserve::v1::GenerationParams BuildGenerationParams(const GenerateFlags& flags);

// "stop", "length", "stop_string", "context_length"; "unspecified" for anything else.
std::string FinishReasonName(kvserve::v1::FinishReason reason);

nlohmann::ordered_json UsageToJson(const kvserve::v1::Usage& usage);

// One streamed chunk as described above; finish_reason and usage only when the chunk has a
// finish reason.
nlohmann::ordered_json GenerateChunkToJson(const kvserve::v1::GenerateResponse& chunk);

// A unary Complete response: text, token_ids, finish_reason and usage.
nlohmann::ordered_json CompleteResponseToJson(const kvserve::v1::CompleteResponse& response);

// {"token_ids": [..], "pieces": [..]}.
nlohmann::ordered_json TokenizeResponseToJson(const kvserve::v1::TokenizeResponse& response);

// Every GetModelInfoResponse field under its proto name.
nlohmann::ordered_json ModelInfoToJson(const kvserve::v1::GetModelInfoResponse& info);

// "name: value" lines, one per field, ending with a newline.
std::string FormatModelInfo(const kvserve::v1::GetModelInfoResponse& info);

// "[1, 403, 407]".
std::string FormatTokenIds(absl::Span<const int32_t> ids);

// Serializes `value` on one line; invalid UTF-8 is replaced instead of throwing.
std::string JsonLine(const nlohmann::ordered_json& value);

// The one-line stderr summary of a generation, e.g.
// "finish_reason=length prompt_tokens=5 completion_tokens=64 cached_prompt_tokens=0
//  elapsed_s=0.052 tokens_per_s=1230.8" (on one line, no trailing newline).
std::string FormatGenerationSummary(kvserve::v1::FinishReason reason,
                                    const kvserve::v1::Usage& usage, double elapsed_s);

}  // namespace kvserve::client

#endif  // KVSERVE_CLIENT_CLI_SUPPORT_H_
