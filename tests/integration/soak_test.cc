// Soak / load: the real `kvserve` binary on loopback, driven by 64 concurrent clients with a
// mix of prompt lengths, output lengths, KV policies, sampling, stop strings, client
// cancellations and deadlines too short to meet, for a bounded time. Checks that
//   - no request is lost: every call ends OK (with a consistent result) or with the status
//     its client provoked (CANCELLED, DEADLINE_EXCEEDED), nothing else;
//   - greedy full-KV requests still give the llama.cpp reference tokens under load;
//   - nothing deadlocks: every call ends within its own deadline and the run within a bound;
//   - the server's resident memory (VmRSS) is flat after warm-up;
//   - afterwards the server still serves and exits 0 on SIGTERM.
//
// KVSERVE_SOAK_SECONDS sets the load time (default 60, the CI version); the long run is
// KVSERVE_SOAK_SECONDS=1800 (see docs/TESTING.md).
#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvserve/v1/kvserve.grpc.pb.h"
#include "tests/e2e/subprocess.h"
#include "tests/integration/test_client.h"

namespace kvserve {
namespace {

using ::kvserve::testing::Connect;
using ::kvserve::testing::SubprocessServer;
using ::testing::ElementsAreArray;

// Under ASan the server's resident size says nothing about leaks (the allocator quarantines
// up to 256 MiB of freed memory on purpose, and shadow memory comes on top); there LSan checks
// the server's exit instead, and a shorter default run keeps the sanitizer stage in budget.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

constexpr int kConcurrency = 64;
constexpr int kChannels = 4;  // Clients spread over several connections, as real ones are.

int SoakSeconds() {
  const char* env = std::getenv("KVSERVE_SOAK_SECONDS");
  int seconds = 0;
  if (env != nullptr && absl::SimpleAtoi(env, &seconds) && seconds > 0) return seconds;
  return kSanitized ? 20 : 60;
}

// The server's resident set in KiB (VmRSS in /proc/PID/status), or -1.
int64_t ResidentKib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      int64_t kib = -1;
      const std::string digits = line.substr(line.find_first_of("0123456789"));
      if (absl::SimpleAtoi(digits.substr(0, digits.find(' ')), &kib)) return kib;
    }
  }
  return -1;
}

// What a client did to its call.
enum class Mode { kStream, kComplete, kCancelMidStream, kShortDeadline, kReference };

// Tally of outcomes per (mode, status code), and any call that ended unexpectedly.
class Tally {
 public:
  void Record(Mode mode, grpc::StatusCode code, bool expected, const std::string& what) {
    absl::MutexLock lock(&mu_);
    ++counts_[{static_cast<int>(mode), static_cast<int>(code)}];
    ++ended_;
    if (!expected && unexpected_.size() < 20) unexpected_.push_back(what);
    if (!expected) ++unexpected_count_;
  }
  void Started() {
    absl::MutexLock lock(&mu_);
    ++started_;
  }
  int64_t started() {
    absl::MutexLock lock(&mu_);
    return started_;
  }
  int64_t ended() {
    absl::MutexLock lock(&mu_);
    return ended_;
  }
  int64_t unexpected_count() {
    absl::MutexLock lock(&mu_);
    return unexpected_count_;
  }
  std::string Summary() {
    absl::MutexLock lock(&mu_);
    static constexpr const char* kModes[] = {"stream", "complete", "cancel", "short_deadline",
                                             "reference"};
    std::string out;
    for (const auto& [key, n] : counts_) {
      absl::StrAppend(&out, kModes[key.first], "/code", key.second, "=", n, " ");
    }
    for (const std::string& u : unexpected_) absl::StrAppend(&out, "\n  unexpected: ", u);
    return out;
  }

 private:
  absl::Mutex mu_;
  std::map<std::pair<int, int>, int64_t> counts_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> unexpected_ ABSL_GUARDED_BY(mu_);
  int64_t started_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t ended_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t unexpected_count_ ABSL_GUARDED_BY(mu_) = 0;
};

const std::vector<std::string>& Policies() {
  static const auto* policies = new std::vector<std::string>{
      "", "full", "window:keep=0.5", "h2o:keep=0.5,recent=0.5",
      "keyformer:keep=0.3,recent=0.3", "snapkv:keep=0.5,window=8", "lazyllm"};
  return *policies;
}

// A prompt of 1 to ~300 tokens of story-like text.
std::string RandomPrompt(std::mt19937& rng) {
  static constexpr const char* kWords[] = {"Once", "upon", "a", "time", "there", "was", "a",
                                           "little", "girl", "named", "Lily", "who", "liked",
                                           "to", "play", "in", "the", "park", "with", "her",
                                           "dog", "."};
  const int n = std::uniform_int_distribution<int>(1, 4)(rng) == 1
                    ? std::uniform_int_distribution<int>(60, 250)(rng)
                    : std::uniform_int_distribution<int>(1, 40)(rng);
  std::string out;
  for (int i = 0; i < n; ++i) {
    if (i > 0) out += ' ';
    out += kWords[rng() % std::size(kWords)];
  }
  return out;
}

// One client call; records its outcome.
void RunOne(v1::Inference::Stub& stub, const testing::Reference& reference, std::mt19937& rng,
            Tally& tally) {
  const int pick = std::uniform_int_distribution<int>(0, 99)(rng);
  const Mode mode = pick < 45   ? Mode::kStream
                    : pick < 65 ? Mode::kComplete
                    : pick < 77 ? Mode::kCancelMidStream
                    : pick < 89 ? Mode::kShortDeadline
                                : Mode::kReference;
  v1::GenerationParams params;
  if (mode == Mode::kReference) {
    params.set_prompt(reference.prompt);
    params.set_max_tokens(static_cast<int32_t>(reference.generated_ids.size()));
    params.set_kv_policy("full");
  } else {
    params.set_prompt(RandomPrompt(rng));
    params.set_max_tokens(std::uniform_int_distribution<int>(1, 160)(rng));
    params.set_kv_policy(Policies()[rng() % Policies().size()]);
    if (rng() % 2 == 0) {
      params.mutable_sampling()->set_temperature(0.8f);
      params.mutable_sampling()->set_top_p(0.9f);
      params.mutable_sampling()->set_seed(rng());
    }
    if (rng() % 5 == 0) params.add_stop(".");
  }
  tally.Started();

  grpc::ClientContext context;
  // No call may take longer than this: a call still running then is a deadlock or a lost
  // request, and ends as an unexpected DEADLINE_EXCEEDED.
  absl::Duration deadline = absl::Seconds(120);
  if (mode == Mode::kShortDeadline) {
    deadline = absl::Milliseconds(std::uniform_int_distribution<int>(1, 80)(rng));
  }
  context.set_deadline(absl::ToChronoTime(absl::Now() + deadline));

  grpc::Status status;
  int tokens = 0;
  std::vector<int32_t> ids;
  v1::FinishReason finish = v1::FINISH_REASON_UNSPECIFIED;
  v1::Usage usage;
  if (mode == Mode::kComplete) {
    v1::CompleteRequest request;
    *request.mutable_params() = params;
    v1::CompleteResponse response;
    status = stub.Complete(&context, request, &response);
    ids.assign(response.token_ids().begin(), response.token_ids().end());
    tokens = static_cast<int>(ids.size());
    finish = response.finish_reason();
    usage = response.usage();
  } else {
    v1::GenerateRequest request;
    *request.mutable_params() = params;
    auto reader = stub.Generate(&context, request);
    const int cancel_after = std::uniform_int_distribution<int>(1, 6)(rng);
    int chunks = 0;
    v1::GenerateResponse chunk;
    while (reader->Read(&chunk)) {
      ids.insert(ids.end(), chunk.token_ids().begin(), chunk.token_ids().end());
      if (chunk.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
        finish = chunk.finish_reason();
        usage = chunk.usage();
      }
      if (mode == Mode::kCancelMidStream && ++chunks == cancel_after) context.TryCancel();
    }
    status = reader->Finish();
    tokens = static_cast<int>(ids.size());
  }

  bool expected = false;
  std::string what = absl::StrCat("mode ", static_cast<int>(mode), " code ",
                                  static_cast<int>(status.error_code()), " '",
                                  status.error_message(), "' policy '", params.kv_policy(),
                                  "' max_tokens ", params.max_tokens());
  if (status.ok()) {
    // A finished call must be complete and consistent.
    // (A stop string may hold back the ids of the text it swallowed.)
    const bool stopped_by_string = finish == v1::FINISH_REASON_STOP_STRING;
    expected = finish != v1::FINISH_REASON_UNSPECIFIED && tokens <= params.max_tokens() &&
               usage.completion_tokens() <= params.max_tokens() &&
               (stopped_by_string || (tokens >= 1 && usage.completion_tokens() == tokens)) &&
               (finish != v1::FINISH_REASON_LENGTH || tokens == params.max_tokens());
    if (mode == Mode::kReference && ids != reference.generated_ids) {
      expected = false;
      absl::StrAppend(&what, " (greedy tokens differ from the reference)");
    }
    absl::StrAppend(&what, " tokens ", tokens, " finish ", static_cast<int>(finish),
                    " usage ", usage.completion_tokens());
  } else if (status.error_code() == grpc::StatusCode::CANCELLED) {
    expected = mode == Mode::kCancelMidStream;
  } else if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    expected = mode == Mode::kShortDeadline;
  }
  tally.Record(mode, status.error_code(), expected, what);
}

TEST(SoakTest, MixedLoadLosesNothingAndMemoryStaysFlat) {
  const absl::StatusOr<testing::Reference> reference = testing::LoadReference();
  ASSERT_TRUE(reference.ok()) << reference.status();
  const int seconds = SoakSeconds();
  const absl::Duration warm_up = absl::Seconds(std::max(seconds / 4, std::min(10, seconds / 2)));

  // A small KV cache (2 MiB: some 1,600 tokens for 64 sequences of up to ~400) keeps the
  // scheduler preempting and the policies compressing the whole time.
  absl::StatusOr<std::unique_ptr<SubprocessServer>> server = SubprocessServer::Start({
      .argv = {std::string(KVSERVE_BINARY_DIR) + "/kvserve", "--model",
               std::string(KVSERVE_SOURCE_DIR) + "/models/stories260K.gguf", "--listen",
               "127.0.0.1:0", "--metrics-listen", "", "--kv-cache-mb", "2", "--max-running",
               "64"},
  });
  ASSERT_TRUE(server.ok()) << server.status();
  const pid_t pid = (*server)->pid();

  std::vector<std::unique_ptr<v1::Inference::Stub>> stubs;
  for (int i = 0; i < kChannels; ++i) {
    stubs.push_back(v1::Inference::NewStub(Connect((*server)->address())));
  }

  Tally tally;
  const absl::Time start = absl::Now();
  const absl::Time stop_at = start + absl::Seconds(seconds);
  std::vector<std::thread> clients;
  for (int c = 0; c < kConcurrency; ++c) {
    clients.emplace_back([&, c] {
      std::mt19937 rng(1000 + c);
      while (absl::Now() < stop_at) RunOne(*stubs[c % kChannels], *reference, rng, tally);
    });
  }

  // Resident memory at the end of the warm-up and at the end of the load (both under load).
  absl::SleepFor(warm_up);
  const int64_t warm_kib = ResidentKib(pid);
  int64_t peak_kib = warm_kib;
  while (absl::Now() < stop_at) {
    absl::SleepFor(std::min(absl::Seconds(1), stop_at - absl::Now()));
    peak_kib = std::max(peak_kib, ResidentKib(pid));
  }
  const int64_t end_kib = ResidentKib(pid);
  for (std::thread& client : clients) client.join();
  const absl::Duration wall = absl::Now() - start;

  RecordProperty("requests", static_cast<int>(tally.ended()));
  RecordProperty("rss_warm_kib", static_cast<int>(warm_kib));
  RecordProperty("rss_end_kib", static_cast<int>(end_kib));
  std::cout << "soak: " << seconds << " s, " << tally.ended() << " requests, VmRSS "
            << warm_kib << " KiB after warm-up, " << end_kib << " KiB at the end (peak "
            << peak_kib << "), wall " << absl::FormatDuration(wall) << "\n  "
            << tally.Summary() << std::endl;

  // Nothing lost, nothing unexpected, no deadlock (a call waits at most 120 s).
  EXPECT_EQ(tally.ended(), tally.started());
  EXPECT_EQ(tally.unexpected_count(), 0) << tally.Summary();
  EXPECT_GT(tally.ended(), 4 * kConcurrency) << tally.Summary();
  EXPECT_LT(wall, absl::Seconds(seconds + 125));
  // Flat memory: at most 10% (or 8 MiB on a small footprint) above the warmed-up size.
  ASSERT_GT(warm_kib, 0);
  if (!kSanitized) {
    EXPECT_LE(end_kib - warm_kib, std::max<int64_t>(warm_kib / 10, 8 << 10))
        << "VmRSS grew from " << warm_kib << " KiB to " << end_kib << " KiB";
  }

  // Still serving the reference, then a clean exit on SIGTERM (no crash, nothing stuck).
  v1::GenerationParams params;
  params.set_prompt(reference->prompt);
  params.set_max_tokens(static_cast<int32_t>(reference->generated_ids.size()));
  const testing::CompleteResult after = testing::Complete(*stubs[0], params);
  ASSERT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_THAT(after.response.token_ids(), ElementsAreArray(reference->generated_ids));
  const SubprocessServer::StopResult stopped = (*server)->Stop(60);
  EXPECT_EQ(stopped.exit_code, 0) << (*server)->output();
  EXPECT_FALSE(stopped.killed);
}

}  // namespace
}  // namespace kvserve
