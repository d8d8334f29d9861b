#include "engine/sampling/stop_string_matcher.h"

#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvserve::engine {
namespace {

struct StopCase {
  std::string name;
  std::vector<std::string> stops;
  std::vector<std::string> pushes;
  std::vector<std::string> emitted;  // Expected Result.text per push.
  bool stopped;                      // After the last push.
  std::string flushed;               // Expected Flush().
};

void PrintTo(const StopCase& c, std::ostream* os) { *os << c.name; }

class StopStringMatcherTest : public ::testing::TestWithParam<StopCase> {};

TEST_P(StopStringMatcherTest, EmitsAndStopsAsExpected) {
  const StopCase& c = GetParam();
  StopStringMatcher matcher(c.stops);
  std::vector<std::string> emitted;
  bool stopped = false;
  for (const std::string& push : c.pushes) {
    StopStringMatcher::Result r = matcher.Push(push);
    emitted.push_back(r.text);
    stopped = r.stopped;
  }
  EXPECT_EQ(emitted, c.emitted);
  EXPECT_EQ(stopped, c.stopped);
  EXPECT_EQ(matcher.Flush(), c.flushed);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, StopStringMatcherTest,
    ::testing::Values(
        StopCase{"NoStops", {}, {"hello", " world"}, {"hello", " world"}, false, ""},
        StopCase{"EmptyStopIgnored", {""}, {"abc"}, {"abc"}, false, ""},
        StopCase{"MatchInOnePush", {"END"}, {"abcENDxyz"}, {"abc"}, true, ""},
        StopCase{"MatchAtStart", {"END"}, {"END"}, {""}, true, ""},
        StopCase{"SplitAcrossPushes", {"\n\nUser:"}, {"Hi.\n", "\nUs", "er", ":", "more"},
                 {"Hi.", "", "", "", ""}, true, ""},
        StopCase{"HoldBackReleasedWhenItCannotMatch", {"abc"}, {"xab", "d"}, {"x", "abd"},
                 false, ""},
        StopCase{"NoFalseHoldback", {"abc"}, {"xyz", "b", "c"}, {"xyz", "b", "c"}, false, ""},
        StopCase{"HeldTextFlushedAtEnd", {"abc"}, {"zzab"}, {"zz"}, false, "ab"},
        // "aab" after "aa": the held "aa" shrinks to "a" once "a" + "a" + "b" is seen.
        StopCase{"OverlappingPrefix", {"aab"}, {"a", "a", "a", "b"}, {"", "", "a", ""}, true,
                 ""},
        StopCase{"SelfOverlapping", {"abab"}, {"ab", "aab", "ab"}, {"", "aba", ""}, true, ""},
        // The match that ends first wins, whatever the chunking.
        StopCase{"EarliestEndWins", {"abcd", "bc"}, {"xabcd"}, {"xa"}, true, ""},
        StopCase{"LongestOfSameEnd", {"c", "abc"}, {"xabc"}, {"x"}, true, ""},
        StopCase{"SuffixOfAnother", {"hello world", "world"}, {"say hello wor", "ld!"},
                 {"say ", ""}, true, ""},
        StopCase{"PushAfterStopIsEmpty", {"X"}, {"aXb", "more"}, {"a", ""}, true, ""},
        StopCase{"Utf8", {"。"}, {"日本", "語。次"}, {"日本", "語"}, true, ""},
        StopCase{"EmptyPushes", {"ab"}, {"", "a", "", "b"}, {"", "", "", ""}, true, ""}),
    [](const ::testing::TestParamInfo<StopCase>& info) { return info.param.name; });

// Reference: the first position (by end) where any stop string occurs, by brute force.
struct Reference {
  std::string before;
  bool stopped;
};
Reference BruteForce(const std::string& text, const std::vector<std::string>& stops) {
  for (size_t end = 1; end <= text.size(); ++end) {
    size_t best = 0;
    for (const std::string& s : stops) {
      if (!s.empty() && s.size() <= end && text.compare(end - s.size(), s.size(), s) == 0) {
        best = std::max(best, s.size());
      }
    }
    if (best > 0) return {text.substr(0, end - best), true};
  }
  return {text, false};
}

TEST(StopStringMatcherTest, RandomChunkingMatchesBruteForce) {
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int> letter(0, 2);  // Small alphabet: many partial matches.
  const auto random_string = [&](int max_length) {
    std::string s(std::uniform_int_distribution<int>(0, max_length)(rng), 'a');
    for (char& c : s) c = static_cast<char>('a' + letter(rng));
    return s;
  };
  for (int trial = 0; trial < 3000; ++trial) {
    std::vector<std::string> stops;
    for (int i = std::uniform_int_distribution<int>(0, 4)(rng); i > 0; --i) {
      stops.push_back(random_string(5));
    }
    const std::string text = random_string(30);
    StopStringMatcher matcher(stops);
    std::string out;
    bool stopped = false;
    for (size_t pos = 0; pos < text.size() && !stopped;) {
      const size_t n = std::uniform_int_distribution<size_t>(0, 4)(rng);
      StopStringMatcher::Result r = matcher.Push(text.substr(pos, n));
      out += r.text;
      stopped = r.stopped;
      pos += n;
      // Never holds back more than the longest stop string minus one byte.
      size_t longest = 0;
      for (const auto& s : stops) longest = std::max(longest, s.size());
      if (!stopped) {
        ASSERT_LE(std::min(pos, text.size()) - out.size(), longest == 0 ? 0 : longest - 1);
      }
    }
    if (!stopped) out += matcher.Flush();
    const Reference expected = BruteForce(text, stops);
    ASSERT_EQ(stopped, expected.stopped) << "trial " << trial << " text " << text;
    ASSERT_EQ(out, expected.before) << "trial " << trial << " text " << text;
  }
}

TEST(StopStringMatcherTest, ThousandsOfStopStrings) {
  std::mt19937 rng(99);
  std::vector<std::string> stops;
  for (int i = 0; i < 5000; ++i) {
    std::string s(8 + i % 40, 'x');
    for (char& c : s) c = static_cast<char>('a' + std::uniform_int_distribution<int>(0, 25)(rng));
    stops.push_back(s);
  }
  stops.push_back("<|end|>");
  StopStringMatcher matcher(stops);
  // 200k bytes of text that never matches, fed a few bytes at a time, then the stop.
  std::string text;
  for (int i = 0; i < 50000; ++i) text += "0 1 ";
  std::string out;
  for (size_t pos = 0; pos < text.size(); pos += 3) {
    StopStringMatcher::Result r = matcher.Push(text.substr(pos, 3));
    ASSERT_FALSE(r.stopped);
    out += r.text;
  }
  EXPECT_EQ(out, text);  // Digits and spaces start no stop string: nothing held back.
  StopStringMatcher::Result r = matcher.Push("TAIL<|en");
  EXPECT_EQ(r.text, "TAIL");
  EXPECT_FALSE(r.stopped);
  r = matcher.Push("d|>");
  EXPECT_EQ(r.text, "");
  EXPECT_TRUE(r.stopped);
}

}  // namespace
}  // namespace kvserve::engine
