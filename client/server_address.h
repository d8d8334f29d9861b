// Parsing and classification of "HOST:PORT" server addresses. kvserve-bench sends load only
// to loopback servers unless told otherwise, so it needs to know which addresses are local.
// Stateless; thread-safe.
#ifndef KVSERVE_CLIENT_SERVER_ADDRESS_H_
#define KVSERVE_CLIENT_SERVER_ADDRESS_H_

#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace kvserve::client {

struct ServerAddress {
  std::string host;  // Without brackets for IPv6 ("::1").
  int port = 0;      // In [1, 65535].
};

// Parses "host:port", "[v6addr]:port". INVALID_ARGUMENT, naming the input, when the host is
// empty or the port is missing or out of range.
absl::StatusOr<ServerAddress> ParseServerAddress(absl::string_view address);

// True for "localhost", any IPv4 address in 127.0.0.0/8 and the IPv6 loopback "::1".
// Names other than "localhost" are not resolved and count as remote.
bool IsLoopbackHost(absl::string_view host);

}  // namespace kvserve::client

#endif  // KVSERVE_CLIENT_SERVER_ADDRESS_H_
