// The engine thread with the real engine and the bundled model: continuous batching,
// preemption, cancellation, deadlines and drain, observed through GenerationStreams.
#include "server/serving/engine_loop.h"

#include <random>
#include <thread>

#include "gtest/gtest.h"

namespace kvserve::server {
namespace {

using engine::TokenId;

std::string ModelPath() { return std::string(KVSERVE_SOURCE_DIR) + "/models/stories260K.gguf"; }

struct Harness {
  explicit Harness(engine::EngineOptions engine_options = {},
                   EngineLoopOptions loop_options = {}) {
    engine_options.model_path = ModelPath();
    engine = engine::Engine::Create(engine_options).value();
    queue = std::make_unique<RequestQueue>(RequestQueueOptions{});
    loop = EngineLoop::Create(engine.get(), queue.get(), loop_options).value();
    loop->Start();
  }
  ~Harness() { loop->Stop(); }

  std::shared_ptr<GenerationStream> Submit(std::vector<TokenId> prompt, int max_tokens,
                                           absl::Time deadline = absl::InfiniteFuture(),
                                           std::vector<std::string> stop = {}) {
    auto request = std::make_unique<PendingRequest>();
    request->prompt_ids = std::move(prompt);
    request->max_tokens = max_tokens;
    request->deadline = deadline;
    request->stop_strings = std::move(stop);
    request->stream = std::make_shared<GenerationStream>();
    auto stream = request->stream;
    EXPECT_TRUE(queue->Push(std::move(request)).ok());
    return stream;
  }

  std::unique_ptr<engine::Engine> engine;
  std::unique_ptr<RequestQueue> queue;
  std::unique_ptr<EngineLoop> loop;
};

struct Outcome {
  std::vector<TokenId> tokens;
  std::string text;
  StreamEvent last;
};

// Stats are published after the step that finished the streams: poll briefly.
bool EventuallyNoKvInUse(const EngineLoop& loop) {
  for (int i = 0; i < 500; ++i) {
    const EngineLoopStats s = loop.stats();
    if (s.kv_blocks_used == 0 && s.running == 0) return true;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return false;
}

Outcome Collect(GenerationStream& stream, absl::Duration timeout = absl::Seconds(60)) {
  Outcome out;
  const absl::Time deadline = absl::Now() + timeout;
  StreamEvent event;
  while (stream.WaitTake(&event, deadline)) {
    out.tokens.insert(out.tokens.end(), event.token_ids.begin(), event.token_ids.end());
    out.text += event.text;
    if (event.final) {
      out.last = event;
      return out;
    }
  }
  ADD_FAILURE() << "stream did not finish in time";
  return out;
}

std::vector<std::vector<TokenId>> RandomPrompts(int n, int max_len, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::vector<TokenId>> prompts;
  for (int i = 0; i < n; ++i) {
    std::vector<TokenId> p = {1};
    const int len = 1 + static_cast<int>(rng() % max_len);
    for (int t = 0; t < len; ++t) p.push_back(static_cast<TokenId>(259 + rng() % 253));
    prompts.push_back(std::move(p));
  }
  return prompts;
}

TEST(EngineLoopTest, GeneratesTheReferenceContinuation) {
  Harness h;
  auto stream = h.Submit({1, 403, 407, 261, 378}, 64);
  Outcome out = Collect(*stream);
  ASSERT_TRUE(out.last.status.ok()) << out.last.status;
  EXPECT_EQ(out.last.finish_reason, FinishReason::kLength);
  EXPECT_EQ(out.tokens.size(), 64u);
  EXPECT_EQ(out.text.substr(0, 42), ", there was a little girl named Lily. She ");
  EXPECT_EQ(out.last.usage.prompt_tokens, 5);
  EXPECT_EQ(out.last.usage.completion_tokens, 64);
}

TEST(EngineLoopTest, StopStringEndsGenerationWithoutTheStopText) {
  Harness h;
  auto stream = h.Submit({1, 403, 407, 261, 378}, 64, absl::InfiniteFuture(), {"Lily"});
  Outcome out = Collect(*stream);
  EXPECT_EQ(out.last.finish_reason, FinishReason::kStopString);
  EXPECT_EQ(out.text, ", there was a little girl named ");
}

// Every request completes with the tokens it produces alone, although the KV cache holds
// only a few sequences and the loop must preempt and recompute.
TEST(EngineLoopTest, PreemptionLosesNothingAndChangesNoToken) {
  const auto prompts = RandomPrompts(12, 120, 3);
  std::vector<std::vector<TokenId>> alone;
  {
    Harness h;
    for (const auto& p : prompts) alone.push_back(Collect(*h.Submit(p, 48)).tokens);
  }
  engine::EngineOptions tiny;
  tiny.kv_cache_bytes = 40 * engine::KvCache::BlockBytes(5, 32, 16);  // 640 tokens in all.
  Harness h(tiny, {.max_batch_tokens = 256, .max_running = 12});
  std::vector<std::shared_ptr<GenerationStream>> streams;
  for (const auto& p : prompts) streams.push_back(h.Submit(p, 48));
  for (size_t i = 0; i < prompts.size(); ++i) {
    Outcome out = Collect(*streams[i]);
    ASSERT_TRUE(out.last.status.ok()) << out.last.status;
    EXPECT_EQ(out.tokens, alone[i]) << "request " << i;
  }
  EXPECT_GT(h.loop->stats().preemptions, 0);
  EXPECT_TRUE(EventuallyNoKvInUse(*h.loop));
}

TEST(EngineLoopTest, CancelledRequestStopsAndFreesItsKv) {
  Harness h;
  auto stream = h.Submit({1, 403, 407, 261, 378}, 400);
  StreamEvent event;
  ASSERT_TRUE(stream->WaitTake(&event, absl::Now() + absl::Seconds(30)));
  stream->Cancel();
  Outcome out = Collect(*stream);
  EXPECT_EQ(out.last.status.code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(EventuallyNoKvInUse(*h.loop));
}

TEST(EngineLoopTest, DeadlineEndsARunningRequest) {
  Harness h;
  auto stream = h.Submit({1, 403}, 500, absl::Now() + absl::Milliseconds(30));
  Outcome out = Collect(*stream);
  // Either it finished (context/EOS) before the deadline or it was cut with DEADLINE_EXCEEDED.
  if (!out.last.status.ok()) {
    EXPECT_EQ(out.last.status.code(), absl::StatusCode::kDeadlineExceeded);
  }
  auto expired = h.Submit({1, 403}, 10, absl::Now() - absl::Seconds(1));
  EXPECT_EQ(Collect(*expired).last.status.code(), absl::StatusCode::kDeadlineExceeded);
}

TEST(EngineLoopTest, DrainFinishesInFlightRequests) {
  Harness h;
  std::vector<std::shared_ptr<GenerationStream>> streams;
  for (const auto& p : RandomPrompts(6, 40, 9)) streams.push_back(h.Submit(p, 32));
  h.queue->Close();
  h.loop->Drain(absl::Now() + absl::Seconds(60));
  for (auto& s : streams) {
    Outcome out = Collect(*s, absl::Seconds(1));
    EXPECT_TRUE(out.last.status.ok()) << out.last.status;
    EXPECT_EQ(out.tokens.size(), 32u);
  }
  EXPECT_FALSE(h.loop->alive());
}

TEST(EngineLoopTest, DrainTimeoutFailsWhatIsLeftWithUnavailable) {
  Harness h;
  auto stream = h.Submit({1, 403}, 500);
  h.queue->Close();
  h.loop->Drain(absl::Now());
  Outcome out = Collect(*stream, absl::Seconds(5));
  EXPECT_EQ(out.last.status.code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace kvserve::server
