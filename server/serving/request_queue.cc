#include "server/serving/request_queue.h"

#include <atomic>
#include <utility>

#include "absl/strings/str_format.h"

namespace kvserve::server {
namespace {

// Request ids are unique across every queue of the process (a test may build several).
std::atomic<uint64_t> next_request_id{1};

}  // namespace

RequestQueue::RequestQueue(const RequestQueueOptions& options) : options_(options) {}

absl::Status RequestQueue::Push(std::unique_ptr<PendingRequest> request) {
  if (request == nullptr) return absl::InvalidArgumentError("null request");
  const int64_t tokens = static_cast<int64_t>(request->prompt_ids.size());
  absl::MutexLock lock(&mu_);
  if (closed_) {
    if (options_.observer != nullptr) options_.observer->OnRejected(RejectReason::kDraining);
    return absl::UnavailableError("server is shutting down");
  }
  const int64_t count = static_cast<int64_t>(waiting_.size());
  // The token bound only applies when something else waits: a lone request must always be
  // admissible, or one longer than the bound could never run.
  if (count >= options_.max_queued_requests ||
      (count > 0 && queued_prompt_tokens_ + tokens > options_.max_queued_prompt_tokens)) {
    if (options_.observer != nullptr) options_.observer->OnRejected(RejectReason::kQueueFull);
    return absl::UnavailableError(
        absl::StrFormat("queue full: %d requests / %d prompt tokens waiting; retry later", count,
                        queued_prompt_tokens_));
  }
  request->id = next_request_id.fetch_add(1, std::memory_order_relaxed);
  request->enqueue_time = absl::Now();
  queued_prompt_tokens_ += tokens;
  const Key key{request->priority, next_back_sequence_++};
  waiting_.emplace(key, std::move(request));
  return absl::OkStatus();
}

void RequestQueue::PushFront(std::unique_ptr<PendingRequest> request) {
  if (request == nullptr) return;
  absl::MutexLock lock(&mu_);
  queued_prompt_tokens_ += static_cast<int64_t>(request->prompt_ids.size());
  const Key key{request->priority, next_front_sequence_--};
  waiting_.emplace(key, std::move(request));
}

std::unique_ptr<PendingRequest> RequestQueue::Pop() {
  absl::MutexLock lock(&mu_);
  if (waiting_.empty()) return nullptr;
  auto it = waiting_.begin();
  std::unique_ptr<PendingRequest> request = std::move(it->second);
  waiting_.erase(it);
  queued_prompt_tokens_ -= static_cast<int64_t>(request->prompt_ids.size());
  return request;
}

const PendingRequest* RequestQueue::Peek() const {
  absl::MutexLock lock(&mu_);
  if (waiting_.empty()) return nullptr;
  return waiting_.begin()->second.get();
}

std::vector<std::unique_ptr<PendingRequest>> RequestQueue::TakeExpired(absl::Time now) {
  std::vector<std::unique_ptr<PendingRequest>> expired;
  absl::MutexLock lock(&mu_);
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    const PendingRequest& request = *it->second;
    const bool cancelled = request.stream != nullptr && request.stream->cancelled();
    if (cancelled || request.deadline <= now) {
      queued_prompt_tokens_ -= static_cast<int64_t>(request.prompt_ids.size());
      expired.push_back(std::move(it->second));
      it = waiting_.erase(it);
    } else {
      ++it;
    }
  }
  return expired;
}

void RequestQueue::WaitForWork(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !waiting_.empty() || wake_pending_;
  };
  mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
  wake_pending_ = false;
}

void RequestQueue::Wake() {
  absl::MutexLock lock(&mu_);
  wake_pending_ = true;
}

void RequestQueue::Close() {
  absl::MutexLock lock(&mu_);
  closed_ = true;
  wake_pending_ = true;  // Let the engine loop notice the drain promptly.
}

bool RequestQueue::closed() const {
  absl::MutexLock lock(&mu_);
  return closed_;
}

int64_t RequestQueue::size() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(waiting_.size());
}

int64_t RequestQueue::queued_prompt_tokens() const {
  absl::MutexLock lock(&mu_);
  return queued_prompt_tokens_;
}

}  // namespace kvserve::server
