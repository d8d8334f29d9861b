#include "server/serving/generation_stream.h"

#include <atomic>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvserve::server {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

TEST(GenerationStreamTest, TryTakeOnEmptyStreamReturnsFalse) {
  GenerationStream stream;
  StreamEvent event;
  EXPECT_FALSE(stream.TryTake(&event));
}

TEST(GenerationStreamTest, AppendsAccumulateIntoOneEvent) {
  GenerationStream stream;
  stream.Append({10, 11}, "Once");
  stream.Append({12}, " upon");
  StreamEvent event;
  ASSERT_TRUE(stream.TryTake(&event));
  EXPECT_THAT(event.token_ids, ElementsAre(10, 11, 12));
  EXPECT_EQ(event.text, "Once upon");
  EXPECT_FALSE(event.final);
  EXPECT_NE(event.first_token_time, absl::InfinitePast());
  // Nothing new since the take.
  EXPECT_FALSE(stream.TryTake(&event));
}

TEST(GenerationStreamTest, FirstTokenTimeOnlyOnFirstEvent) {
  GenerationStream stream;
  StreamEvent event;
  stream.Append({1}, "a");
  ASSERT_TRUE(stream.TryTake(&event));
  EXPECT_NE(event.first_token_time, absl::InfinitePast());
  stream.Append({2}, "b");
  ASSERT_TRUE(stream.TryTake(&event));
  EXPECT_EQ(event.first_token_time, absl::InfinitePast());
}

TEST(GenerationStreamTest, TokenWithoutTextIsStillDelivered) {
  GenerationStream stream;
  stream.Append({7}, "");  // Half a UTF-8 character: text follows later.
  StreamEvent event;
  ASSERT_TRUE(stream.TryTake(&event));
  EXPECT_THAT(event.token_ids, ElementsAre(7));
  EXPECT_EQ(event.text, "");
}

TEST(GenerationStreamTest, FinishCarriesReasonUsageAndPendingOutput) {
  GenerationStream stream;
  stream.Append({5}, "x");
  stream.Finish(FinishReason::kLength, Usage{.prompt_tokens = 3, .completion_tokens = 1});
  EXPECT_TRUE(stream.finished());
  StreamEvent event;
  ASSERT_TRUE(stream.TryTake(&event));
  EXPECT_TRUE(event.final);
  EXPECT_TRUE(event.status.ok());
  EXPECT_EQ(event.finish_reason, FinishReason::kLength);
  EXPECT_EQ(event.usage.prompt_tokens, 3);
  EXPECT_EQ(event.usage.completion_tokens, 1);
  EXPECT_THAT(event.token_ids, ElementsAre(5));
  EXPECT_EQ(event.text, "x");
  // After the final event nothing more is ever taken.
  EXPECT_FALSE(stream.TryTake(&event));
}

TEST(GenerationStreamTest, CallsAfterFinishAreIgnored) {
  GenerationStream stream;
  stream.Finish(FinishReason::kStop, Usage{});
  stream.Append({1}, "late");
  stream.Fail(absl::InternalError("late"), Usage{});
  stream.Finish(FinishReason::kLength, Usage{});
  StreamEvent event;
  ASSERT_TRUE(stream.TryTake(&event));
  EXPECT_TRUE(event.final);
  EXPECT_EQ(event.finish_reason, FinishReason::kStop);
  EXPECT_THAT(event.token_ids, IsEmpty());
  EXPECT_FALSE(stream.TryTake(&event));
}

TEST(GenerationStreamTest, FailCarriesStatus) {
  GenerationStream stream;
  stream.Fail(absl::DeadlineExceededError("deadline passed"), Usage{.prompt_tokens = 4});
  StreamEvent event;
  ASSERT_TRUE(stream.TryTake(&event));
  EXPECT_TRUE(event.final);
  EXPECT_EQ(event.status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(event.usage.prompt_tokens, 4);
}

TEST(GenerationStreamTest, FailWithOkStatusBecomesInternal) {
  GenerationStream stream;
  stream.Fail(absl::OkStatus(), Usage{});
  StreamEvent event;
  ASSERT_TRUE(stream.TryTake(&event));
  EXPECT_EQ(event.status.code(), absl::StatusCode::kInternal);
}

TEST(GenerationStreamTest, CancelSetsFlag) {
  GenerationStream stream;
  EXPECT_FALSE(stream.cancelled());
  stream.Cancel();
  EXPECT_TRUE(stream.cancelled());
  EXPECT_FALSE(stream.finished());
}

TEST(GenerationStreamTest, NotifyRunsOncePerEngineCallAndCanTake) {
  GenerationStream stream;
  int calls = 0;
  std::vector<TokenId> seen;
  // The notify callback may take from the stream: the stream lock is not held.
  stream.SetNotify([&] {
    ++calls;
    StreamEvent event;
    while (stream.TryTake(&event)) {
      seen.insert(seen.end(), event.token_ids.begin(), event.token_ids.end());
    }
  });
  stream.Append({1}, "a");
  stream.Append({2, 3}, "bc");
  stream.Finish(FinishReason::kStop, Usage{});
  stream.Append({4}, "ignored");  // After finish: no notify.
  EXPECT_EQ(calls, 3);
  EXPECT_THAT(seen, ElementsAre(1, 2, 3));
}

TEST(GenerationStreamTest, WaitTakeTimesOutWhenNothingPending) {
  GenerationStream stream;
  StreamEvent event;
  const absl::Time start = absl::Now();
  EXPECT_FALSE(stream.WaitTake(&event, start + absl::Milliseconds(30)));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(25));
}

TEST(GenerationStreamTest, WaitTakeWakesOnAppendFromAnotherThread) {
  GenerationStream stream;
  std::thread producer([&] {
    absl::SleepFor(absl::Milliseconds(20));
    stream.Append({42}, "z");
  });
  StreamEvent event;
  EXPECT_TRUE(stream.WaitTake(&event, absl::Now() + absl::Seconds(10)));
  EXPECT_THAT(event.token_ids, ElementsAre(42));
  producer.join();
}

TEST(GenerationStreamTest, WaitTakeAfterFinalReturnsFalse) {
  GenerationStream stream;
  stream.Finish(FinishReason::kStop, Usage{});
  StreamEvent event;
  ASSERT_TRUE(stream.WaitTake(&event, absl::Now() + absl::Seconds(1)));
  EXPECT_FALSE(stream.WaitTake(&event, absl::Now() + absl::Milliseconds(10)));
}

TEST(GenerationStreamTest, ConcurrentProducerAndReaderLoseNothing) {
  GenerationStream stream;
  constexpr int kTokens = 5000;
  std::thread producer([&] {
    for (int i = 0; i < kTokens; ++i) stream.Append({i}, "t");
    stream.Finish(FinishReason::kLength, Usage{.completion_tokens = kTokens});
  });
  std::vector<TokenId> got;
  std::string text;
  bool final = false;
  while (!final) {
    StreamEvent event;
    ASSERT_TRUE(stream.WaitTake(&event, absl::Now() + absl::Seconds(30)));
    got.insert(got.end(), event.token_ids.begin(), event.token_ids.end());
    text += event.text;
    final = event.final;
  }
  producer.join();
  ASSERT_EQ(got.size(), static_cast<size_t>(kTokens));
  for (int i = 0; i < kTokens; ++i) ASSERT_EQ(got[i], i);
  EXPECT_EQ(text.size(), static_cast<size_t>(kTokens));
}

}  // namespace
}  // namespace kvserve::server
