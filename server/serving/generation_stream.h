// GenerationStream: the channel between the engine thread, which produces one request's
// tokens, and the gRPC side, which sends them to the client.
//
// Thread-safe. The engine thread calls Append/Finish/Fail and reads cancelled(); the reader
// (a gRPC reactor, a unary handler or an in-process client) calls SetNotify/TryTake/WaitTake/
// Cancel. Nothing here blocks the engine thread on a slow reader: pending output simply
// accumulates (bounded by the request's max_tokens).
#ifndef KVSERVE_SERVER_SERVING_GENERATION_STREAM_H_
#define KVSERVE_SERVER_SERVING_GENERATION_STREAM_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "engine/model/vocab.h"

namespace kvserve::server {

using engine::TokenId;

enum class FinishReason {
  kUnspecified,
  kStop,           // The model produced EOS.
  kLength,         // max_tokens reached.
  kStopString,     // A stop string was reached (not included in the text).
  kContextLength,  // The sequence filled the model's context.
};

struct Usage {
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  int32_t cached_prompt_tokens = 0;  // Prompt tokens served from the prefix cache.
};

// What a reader takes from the stream: all output produced since its last take.
struct StreamEvent {
  std::string text;                 // Whole UTF-8 characters only.
  std::vector<TokenId> token_ids;   // Tokens generated since the previous event.
  bool final = false;               // No more events follow.
  // Meaningful when final:
  absl::Status status;              // OK, or why the request failed (DEADLINE_EXCEEDED, ...).
  FinishReason finish_reason = FinishReason::kUnspecified;  // When status is OK.
  Usage usage;
  // Timestamps for metrics and benchmarks (engine clock).
  absl::Time first_token_time = absl::InfinitePast();  // Set on the event carrying the first token.
};

class GenerationStream {
 public:
  GenerationStream() = default;
  GenerationStream(const GenerationStream&) = delete;
  GenerationStream& operator=(const GenerationStream&) = delete;

  // --- Engine side ---------------------------------------------------------------------
  // Adds generated tokens and the text they completed (may be empty when a token only
  // completed part of a character or is held back by a stop-string check).
  void Append(absl::Span<const TokenId> token_ids, std::string_view text);
  // Ends the stream successfully. Later Append/Finish/Fail calls are ignored.
  void Finish(FinishReason reason, const Usage& usage);
  // Ends the stream with an error status (not OK). Later calls are ignored.
  void Fail(absl::Status status, const Usage& usage);
  // True once the reader cancelled (client gone, deadline): the engine drops the request.
  bool cancelled() const;
  bool finished() const;

  // --- Reader side ---------------------------------------------------------------------
  // `notify` runs after each Append/Finish/Fail, on the calling (engine) thread, without
  // this stream's lock held; it must be quick and must not block (a reactor uses it to start
  // a write). Set it before the request is enqueued; it is called at most once per
  // engine-side call.
  void SetNotify(absl::AnyInvocable<void()> notify);
  // Moves everything pending into `*event` and returns true, or returns false when nothing
  // is pending. After the final event has been taken, always returns false.
  bool TryTake(StreamEvent* event);
  // Like TryTake, but waits up to `deadline` for something to be pending.
  bool WaitTake(StreamEvent* event, absl::Time deadline);
  // Asks the engine to stop this request; it frees its resources at its next step and then
  // ends the stream with CANCELLED (if it had not finished already).
  void Cancel();

 private:
  mutable absl::Mutex mu_;
  StreamEvent pending_ ABSL_GUARDED_BY(mu_);
  bool has_pending_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;        // Engine side ended the stream.
  bool final_taken_ ABSL_GUARDED_BY(mu_) = false;     // Reader took the final event.
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool any_token_ ABSL_GUARDED_BY(mu_) = false;
  absl::AnyInvocable<void()> notify_;  // Set before enqueue; immutable afterwards.
};

}  // namespace kvserve::server

#endif  // KVSERVE_SERVER_SERVING_GENERATION_STREAM_H_
