#include "client/server_address.h"

#include <arpa/inet.h>

#include <cstdint>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace kvserve::client {

absl::StatusOr<ServerAddress> ParseServerAddress(absl::string_view address) {
  auto invalid = [address](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("server address \"", address, "\" ", why, "; expected HOST:PORT"));
  };
  absl::string_view host;
  absl::string_view port;
  if (!address.empty() && address.front() == '[') {
    const size_t close = address.find(']');
    if (close == absl::string_view::npos) return invalid("has no closing ']'");
    host = address.substr(1, close - 1);
    const absl::string_view rest = address.substr(close + 1);
    if (rest.empty() || rest.front() != ':') return invalid("has no port");
    port = rest.substr(1);
  } else {
    const size_t colon = address.rfind(':');
    if (colon == absl::string_view::npos) return invalid("has no port");
    host = address.substr(0, colon);
    port = address.substr(colon + 1);
    if (host.find(':') != absl::string_view::npos) {
      return invalid("has an IPv6 host without brackets");
    }
  }
  if (host.empty()) return invalid("has an empty host");
  int port_number = 0;
  if (!absl::SimpleAtoi(port, &port_number) || port_number < 1 || port_number > 65535) {
    return invalid("has a port outside [1, 65535]");
  }
  return ServerAddress{std::string(host), port_number};
}

bool IsLoopbackHost(absl::string_view host) {
  const std::string text(host);
  if (absl::AsciiStrToLower(text) == "localhost") return true;
  in_addr v4{};
  if (inet_pton(AF_INET, text.c_str(), &v4) == 1) {
    const uint32_t addr = ntohl(v4.s_addr);
    return (addr >> 24) == 127;
  }
  in6_addr v6{};
  if (inet_pton(AF_INET6, text.c_str(), &v6) == 1) {
    return std::memcmp(&v6, &in6addr_loopback, sizeof(v6)) == 0;
  }
  return false;
}

}  // namespace kvserve::client
