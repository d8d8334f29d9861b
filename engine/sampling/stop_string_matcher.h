// Finds the first stop string in a stream of generated text, holding back only the text that
// could still turn out to be the start of a stop string.
//
// An Aho-Corasick automaton over the stop strings' bytes: each pushed byte costs amortized
// O(1) however many stop strings there are, and the automaton's state depth is exactly the
// longest suffix of the stream that is a prefix of some stop string, i.e. what to hold back.
// The match reported is the one that ends first in the stream (the longest one among those
// ending at the same byte), so the result does not depend on how the text is chunked.
//
// Thread safety: thread-compatible; one instance per sequence.
#ifndef KVSERVE_ENGINE_SAMPLING_STOP_STRING_MATCHER_H_
#define KVSERVE_ENGINE_SAMPLING_STOP_STRING_MATCHER_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace kvserve::engine {

class StopStringMatcher {
 public:
  // Empty strings are ignored; with none left, Push() passes all text through at once.
  explicit StopStringMatcher(std::vector<std::string> stop_strings);

  struct Result {
    std::string text;      // Safe to emit now.
    bool stopped = false;  // A stop string completed; `text` ends right before it.
  };

  // Feeds generated text. Once stopped, every further Push returns {"", true}.
  Result Push(std::string_view text);

  // End of generation without a match: returns the held-back text ("" after a stop).
  std::string Flush();

  bool stopped() const { return stopped_; }

 private:
  static constexpr int32_t kRoot = 0;

  int32_t Child(int32_t node, uint8_t byte) const;  // -1 if none.
  int32_t Step(int32_t node, uint8_t byte) const;   // Automaton transition.

  // The automaton; constant after construction.
  std::array<int32_t, 256> root_next_;                 // Dense for the hot root state.
  absl::flat_hash_map<uint64_t, int32_t> children_;    // (node << 8 | byte) -> child.
  std::vector<int32_t> fail_;                          // Longest proper suffix state.
  std::vector<uint32_t> depth_;                        // Length of the node's prefix.
  std::vector<uint32_t> match_length_;                 // Longest stop string ending here; 0 none.

  // Stream state.
  int32_t state_ = kRoot;
  std::string held_;  // Not yet emitted: the last depth_[state_] bytes.
  bool stopped_ = false;
};

}  // namespace kvserve::engine

#endif  // KVSERVE_ENGINE_SAMPLING_STOP_STRING_MATCHER_H_
