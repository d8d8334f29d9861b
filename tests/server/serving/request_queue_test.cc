#include "server/serving/request_queue.h"

#include <algorithm>
#include <memory>
#include <set>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvserve::server {
namespace {

using ::testing::HasSubstr;

// A request with `prompt_tokens` prompt tokens and a marker in max_tokens to identify it.
std::unique_ptr<PendingRequest> MakeRequest(int32_t marker, int32_t priority = 0,
                                            int prompt_tokens = 1) {
  auto request = std::make_unique<PendingRequest>();
  request->prompt_ids.assign(prompt_tokens, 1);
  request->max_tokens = marker;
  request->priority = priority;
  request->stream = std::make_shared<GenerationStream>();
  return request;
}

std::vector<int32_t> DrainMarkers(RequestQueue& queue) {
  std::vector<int32_t> markers;
  while (auto request = queue.Pop()) markers.push_back(request->max_tokens);
  return markers;
}

TEST(RequestQueueTest, EmptyQueuePopsAndPeeksNothing) {
  RequestQueue queue(RequestQueueOptions{});
  EXPECT_EQ(queue.Pop(), nullptr);
  EXPECT_EQ(queue.Peek(), nullptr);
  EXPECT_EQ(queue.size(), 0);
}

TEST(RequestQueueTest, FcfsWithinOnePriority) {
  RequestQueue queue(RequestQueueOptions{});
  for (int i = 1; i <= 4; ++i) ASSERT_TRUE(queue.Push(MakeRequest(i)).ok());
  EXPECT_EQ(DrainMarkers(queue), (std::vector<int32_t>{1, 2, 3, 4}));
}

TEST(RequestQueueTest, HigherPriorityFirstThenArrival) {
  RequestQueue queue(RequestQueueOptions{});
  ASSERT_TRUE(queue.Push(MakeRequest(1, /*priority=*/0)).ok());
  ASSERT_TRUE(queue.Push(MakeRequest(2, /*priority=*/5)).ok());
  ASSERT_TRUE(queue.Push(MakeRequest(3, /*priority=*/-3)).ok());
  ASSERT_TRUE(queue.Push(MakeRequest(4, /*priority=*/5)).ok());
  ASSERT_TRUE(queue.Push(MakeRequest(5, /*priority=*/0)).ok());
  ASSERT_NE(queue.Peek(), nullptr);
  EXPECT_EQ(queue.Peek()->max_tokens, 2);
  EXPECT_EQ(DrainMarkers(queue), (std::vector<int32_t>{2, 4, 1, 5, 3}));
}

TEST(RequestQueueTest, PushFrontGoesFirstWithinItsPriorityOnly) {
  RequestQueue queue(RequestQueueOptions{});
  ASSERT_TRUE(queue.Push(MakeRequest(1, /*priority=*/0)).ok());
  ASSERT_TRUE(queue.Push(MakeRequest(2, /*priority=*/1)).ok());
  queue.PushFront(MakeRequest(3, /*priority=*/0));
  queue.PushFront(MakeRequest(4, /*priority=*/0));  // Preempted later: runs before 3.
  EXPECT_EQ(DrainMarkers(queue), (std::vector<int32_t>{2, 4, 3, 1}));
}

TEST(RequestQueueTest, PushAssignsUniqueIdsAndEnqueueTime) {
  RequestQueue queue(RequestQueueOptions{});
  const absl::Time before = absl::Now();
  ASSERT_TRUE(queue.Push(MakeRequest(1)).ok());
  ASSERT_TRUE(queue.Push(MakeRequest(2)).ok());
  auto a = queue.Pop();
  auto b = queue.Pop();
  EXPECT_NE(a->id, 0u);
  EXPECT_NE(a->id, b->id);
  EXPECT_GE(a->enqueue_time, before);
}

TEST(RequestQueueTest, PushFrontKeepsIdAndIsNeverRefused) {
  RequestQueue queue(RequestQueueOptions{.max_queued_requests = 1});
  ASSERT_TRUE(queue.Push(MakeRequest(1)).ok());
  auto first = queue.Pop();
  const uint64_t id = first->id;
  ASSERT_TRUE(queue.Push(MakeRequest(2)).ok());
  queue.Close();
  queue.PushFront(std::move(first));  // Full and closed, yet accepted.
  EXPECT_EQ(queue.size(), 2);
  auto again = queue.Pop();
  EXPECT_EQ(again->id, id);
}

TEST(RequestQueueTest, RefusesBeyondRequestLimitAsRetryable) {
  RequestQueue queue(RequestQueueOptions{.max_queued_requests = 2});
  ASSERT_TRUE(queue.Push(MakeRequest(1)).ok());
  ASSERT_TRUE(queue.Push(MakeRequest(2)).ok());
  auto request = MakeRequest(3);
  const absl::Status status = queue.Push(std::move(request));
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(status.message(), HasSubstr("queue full"));
  EXPECT_THAT(status.message(), HasSubstr("retry"));
  EXPECT_EQ(queue.size(), 2);
  // Room again after a pop.
  queue.Pop();
  EXPECT_TRUE(queue.Push(MakeRequest(4)).ok());
}

TEST(RequestQueueTest, RefusesBeyondPromptTokenLimit) {
  RequestQueue queue(
      RequestQueueOptions{.max_queued_requests = 100, .max_queued_prompt_tokens = 10});
  ASSERT_TRUE(queue.Push(MakeRequest(1, 0, /*prompt_tokens=*/6)).ok());
  EXPECT_EQ(queue.queued_prompt_tokens(), 6);
  const absl::Status status = queue.Push(MakeRequest(2, 0, /*prompt_tokens=*/5));
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(status.message(), HasSubstr("6 prompt tokens"));
  EXPECT_TRUE(queue.Push(MakeRequest(3, 0, /*prompt_tokens=*/4)).ok());
  EXPECT_EQ(queue.queued_prompt_tokens(), 10);
  queue.Pop();
  EXPECT_EQ(queue.queued_prompt_tokens(), 4);
}

TEST(RequestQueueTest, LoneRequestLargerThanTokenLimitIsAdmitted) {
  RequestQueue queue(RequestQueueOptions{.max_queued_prompt_tokens = 10});
  EXPECT_TRUE(queue.Push(MakeRequest(1, 0, /*prompt_tokens=*/50)).ok());
}

TEST(RequestQueueTest, CloseRefusesNewButKeepsWaiting) {
  RequestQueue queue(RequestQueueOptions{});
  ASSERT_TRUE(queue.Push(MakeRequest(1)).ok());
  EXPECT_FALSE(queue.closed());
  queue.Close();
  EXPECT_TRUE(queue.closed());
  const absl::Status status = queue.Push(MakeRequest(2));
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(status.message(), "server is shutting down");
  EXPECT_EQ(DrainMarkers(queue), (std::vector<int32_t>{1}));
}

TEST(RequestQueueTest, TakeExpiredRemovesCancelledAndPastDeadline) {
  RequestQueue queue(RequestQueueOptions{});
  const absl::Time now = absl::Now();
  auto live = MakeRequest(1, 0, 2);
  live->deadline = now + absl::Hours(1);
  auto past = MakeRequest(2, 0, 3);
  past->deadline = now - absl::Seconds(1);
  auto cancelled = MakeRequest(3, 0, 4);
  auto cancelled_stream = cancelled->stream;
  auto no_deadline = MakeRequest(4, 0, 5);
  ASSERT_TRUE(queue.Push(std::move(live)).ok());
  ASSERT_TRUE(queue.Push(std::move(past)).ok());
  ASSERT_TRUE(queue.Push(std::move(cancelled)).ok());
  ASSERT_TRUE(queue.Push(std::move(no_deadline)).ok());
  cancelled_stream->Cancel();

  std::vector<std::unique_ptr<PendingRequest>> expired = queue.TakeExpired(now);
  std::vector<int32_t> markers;
  for (const auto& request : expired) markers.push_back(request->max_tokens);
  std::sort(markers.begin(), markers.end());
  EXPECT_EQ(markers, (std::vector<int32_t>{2, 3}));
  EXPECT_EQ(queue.size(), 2);
  EXPECT_EQ(queue.queued_prompt_tokens(), 7);
  EXPECT_EQ(DrainMarkers(queue), (std::vector<int32_t>{1, 4}));
}

TEST(RequestQueueTest, WaitForWorkTimesOutWhenEmpty) {
  RequestQueue queue(RequestQueueOptions{});
  const absl::Time start = absl::Now();
  queue.WaitForWork(absl::Milliseconds(30));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(25));
}

TEST(RequestQueueTest, WaitForWorkReturnsAtOnceWhenWorkWaits) {
  RequestQueue queue(RequestQueueOptions{});
  ASSERT_TRUE(queue.Push(MakeRequest(1)).ok());
  const absl::Time start = absl::Now();
  queue.WaitForWork(absl::Seconds(10));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

TEST(RequestQueueTest, WaitForWorkWakesOnPushFromAnotherThread) {
  RequestQueue queue(RequestQueueOptions{});
  std::thread producer([&] {
    absl::SleepFor(absl::Milliseconds(20));
    ASSERT_TRUE(queue.Push(MakeRequest(1)).ok());
  });
  const absl::Time start = absl::Now();
  queue.WaitForWork(absl::Seconds(10));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  producer.join();
  EXPECT_EQ(queue.size(), 1);
}

TEST(RequestQueueTest, WakeIsNotLostWhenCalledBeforeWait) {
  RequestQueue queue(RequestQueueOptions{});
  queue.Wake();
  const absl::Time start = absl::Now();
  queue.WaitForWork(absl::Seconds(10));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  // Consumed: the next wait times out.
  const absl::Time second = absl::Now();
  queue.WaitForWork(absl::Milliseconds(20));
  EXPECT_GE(absl::Now() - second, absl::Milliseconds(15));
}

TEST(RequestQueueTest, WakeFromAnotherThreadEndsWait) {
  RequestQueue queue(RequestQueueOptions{});
  std::thread waker([&] {
    absl::SleepFor(absl::Milliseconds(20));
    queue.Wake();
  });
  const absl::Time start = absl::Now();
  queue.WaitForWork(absl::Seconds(10));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  waker.join();
}

TEST(RequestQueueTest, ManyProducersOneConsumerLoseNothing) {
  constexpr int kProducers = 4;
  constexpr int kPerProducer = 500;
  RequestQueue queue(RequestQueueOptions{.max_queued_requests = 64});
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&queue, p] {
      for (int i = 0; i < kPerProducer; ++i) {
        const int32_t marker = p * kPerProducer + i;
        // Retry while full, as a well-behaved client would.
        while (!queue.Push(MakeRequest(marker, /*priority=*/i % 3)).ok()) {
          std::this_thread::yield();
        }
      }
    });
  }
  std::set<int32_t> seen;
  std::set<uint64_t> ids;
  while (static_cast<int>(seen.size()) < kProducers * kPerProducer) {
    queue.WaitForWork(absl::Milliseconds(50));
    while (auto request = queue.Pop()) {
      EXPECT_TRUE(seen.insert(request->max_tokens).second);
      EXPECT_TRUE(ids.insert(request->id).second);
    }
  }
  for (auto& producer : producers) producer.join();
  EXPECT_EQ(queue.size(), 0);
  EXPECT_EQ(queue.queued_prompt_tokens(), 0);
}

}  // namespace
}  // namespace kvserve::server
