// Test support for the metrics and deploy tests: a parser for Prometheus' text exposition
// format (enough of it for what prometheus-cpp writes), a tiny libcurl HTTP GET, and a
// subprocess runner. Test-only code.
//
// Thread-safety: the functions are thread-compatible (no shared state beyond libcurl's
// global init, done once).
#ifndef KVSERVE_TESTS_SERVER_METRICS_METRICS_TEST_SUPPORT_H_
#define KVSERVE_TESTS_SERVER_METRICS_METRICS_TEST_SUPPORT_H_

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace kvserve::server::testing {

using Labels = std::map<std::string, std::string>;

struct Sample {
  std::string name;  // Full sample name, e.g. "kvserve_batch_size_bucket".
  Labels labels;
  double value = 0;
};

struct Exposition {
  std::vector<Sample> samples;
  std::map<std::string, std::string> types;  // Family name -> "counter", "histogram", ...
  std::map<std::string, std::string> helps;  // Family name -> help text.

  // The value of the sample with exactly these labels, if present.
  std::optional<double> Value(std::string_view name, const Labels& labels = {}) const;
};

// Parses `# HELP`, `# TYPE` and sample lines; INVALID_ARGUMENT naming the bad line.
absl::StatusOr<Exposition> ParseExposition(std::string_view text);

struct HttpResponse {
  long status = 0;  // HTTP status code.
  std::string body;
};

// GET `url` with a timeout; UNAVAILABLE on a transport error.
absl::StatusOr<HttpResponse> HttpGet(const std::string& url, int timeout_ms = 5000);

// Percent-encodes a query parameter value.
std::string UrlEncode(std::string_view value);

struct CommandResult {
  int exit_code = -1;  // -1 if it did not exit normally.
  std::string output;  // stdout and stderr, interleaved.
};

// Runs `argv` (argv[0] an absolute path) with `stdin_text` on its stdin and waits.
absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                         std::string_view stdin_text = {});

// A free TCP port on 127.0.0.1 (bound and released: another process may take it, which
// is unlikely within the moment before it is used).
absl::StatusOr<int> PickFreePort();

}  // namespace kvserve::server::testing

#endif  // KVSERVE_TESTS_SERVER_METRICS_METRICS_TEST_SUPPORT_H_
