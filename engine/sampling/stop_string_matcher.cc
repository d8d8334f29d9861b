#include "engine/sampling/stop_string_matcher.h"

#include <utility>

namespace kvserve::engine {
namespace {

uint64_t EdgeKey(int32_t node, uint8_t byte) {
  return (static_cast<uint64_t>(node) << 8) | byte;
}

}  // namespace

StopStringMatcher::StopStringMatcher(std::vector<std::string> stop_strings) {
  root_next_.fill(-1);
  fail_.push_back(kRoot);
  depth_.push_back(0);
  match_length_.push_back(0);
  // Children per node in insertion order, for the breadth-first pass below.
  std::vector<std::vector<std::pair<uint8_t, int32_t>>> child_list(1);

  for (const std::string& s : stop_strings) {
    int32_t node = kRoot;
    for (char c : s) {
      const uint8_t byte = static_cast<uint8_t>(c);
      int32_t next = Child(node, byte);
      if (next < 0) {
        next = static_cast<int32_t>(fail_.size());
        fail_.push_back(kRoot);
        depth_.push_back(depth_[node] + 1);
        match_length_.push_back(0);
        child_list.emplace_back();
        child_list[node].emplace_back(byte, next);
        if (node == kRoot) {
          root_next_[byte] = next;
        } else {
          children_.emplace(EdgeKey(node, byte), next);
        }
      }
      node = next;
    }
    if (node != kRoot) match_length_[node] = depth_[node];
  }

  // Breadth-first: a node's failure link points to a shallower node, already finished.
  std::vector<int32_t> queue;
  queue.reserve(fail_.size());
  for (const auto& [byte, child] : child_list[kRoot]) queue.push_back(child);
  for (size_t head = 0; head < queue.size(); ++head) {
    const int32_t node = queue[head];
    if (match_length_[node] == 0) match_length_[node] = match_length_[fail_[node]];
    for (const auto& [byte, child] : child_list[node]) {
      fail_[child] = Step(fail_[node], byte);
      queue.push_back(child);
    }
  }
}

int32_t StopStringMatcher::Child(int32_t node, uint8_t byte) const {
  if (node == kRoot) return root_next_[byte];
  auto it = children_.find(EdgeKey(node, byte));
  return it == children_.end() ? -1 : it->second;
}

int32_t StopStringMatcher::Step(int32_t node, uint8_t byte) const {
  while (true) {
    const int32_t next = Child(node, byte);
    if (next >= 0) return next;
    if (node == kRoot) return kRoot;
    node = fail_[node];
  }
}

StopStringMatcher::Result StopStringMatcher::Push(std::string_view text) {
  Result result;
  if (stopped_) {
    result.stopped = true;
    return result;
  }
  for (size_t i = 0; i < text.size(); ++i) {
    state_ = Step(state_, static_cast<uint8_t>(text[i]));
    const uint32_t match = match_length_[state_];
    if (match > 0) {
      // Emit everything before the match. The match lies within held_ + this push's text
      // up to i, because held_ kept every byte that could start a stop string.
      held_.append(text.substr(0, i + 1));
      held_.resize(held_.size() - match);
      result.text = std::move(held_);
      held_.clear();
      result.stopped = stopped_ = true;
      return result;
    }
  }
  held_.append(text);
  const size_t keep = depth_[state_];
  result.text = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return result;
}

std::string StopStringMatcher::Flush() {
  std::string out = std::move(held_);
  held_.clear();
  state_ = kRoot;
  return out;
}

}  // namespace kvserve::engine
