#include "client/server_address.h"

#include <string>

#include "gtest/gtest.h"

namespace kvserve::client {
namespace {

struct AddressCase {
  std::string name;
  std::string address;
  bool valid;
  std::string host;  // When valid.
  int port;          // When valid.
  bool loopback;     // When valid.
};

class ServerAddressTest : public ::testing::TestWithParam<AddressCase> {};

TEST_P(ServerAddressTest, ParsesAndClassifies) {
  const AddressCase& c = GetParam();
  absl::StatusOr<ServerAddress> parsed = ParseServerAddress(c.address);
  if (!c.valid) {
    ASSERT_FALSE(parsed.ok());
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(parsed.status().message().find(c.address), absl::string_view::npos);
    return;
  }
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->host, c.host);
  EXPECT_EQ(parsed->port, c.port);
  EXPECT_EQ(IsLoopbackHost(parsed->host), c.loopback);
}

// 192.0.2.0/24 and example.com are documentation names: never contacted, only classified.
INSTANTIATE_TEST_SUITE_P(
    Cases, ServerAddressTest,
    ::testing::Values(
        AddressCase{"ipv4_loopback", "127.0.0.1:50051", true, "127.0.0.1", 50051, true},
        AddressCase{"ipv4_loopback_range", "127.3.2.1:80", true, "127.3.2.1", 80, true},
        AddressCase{"localhost", "localhost:1", true, "localhost", 1, true},
        AddressCase{"localhost_upper", "LocalHost:65535", true, "LocalHost", 65535, true},
        AddressCase{"ipv6_loopback", "[::1]:8080", true, "::1", 8080, true},
        AddressCase{"ipv4_remote", "192.0.2.7:50051", true, "192.0.2.7", 50051, false},
        AddressCase{"ipv4_unspecified", "0.0.0.0:50051", true, "0.0.0.0", 50051, false},
        AddressCase{"ipv6_remote", "[2001:db8::1]:443", true, "2001:db8::1", 443, false},
        AddressCase{"name_remote", "example.com:443", true, "example.com", 443, false},
        AddressCase{"no_port", "127.0.0.1", false, "", 0, false},
        AddressCase{"empty_port", "127.0.0.1:", false, "", 0, false},
        AddressCase{"port_zero", "127.0.0.1:0", false, "", 0, false},
        AddressCase{"port_too_big", "127.0.0.1:65536", false, "", 0, false},
        AddressCase{"port_not_number", "127.0.0.1:http", false, "", 0, false},
        AddressCase{"empty_host", ":50051", false, "", 0, false},
        AddressCase{"ipv6_without_brackets", "::1:50051", false, "", 0, false},
        AddressCase{"unclosed_bracket", "[::1:50051", false, "", 0, false}),
    [](const ::testing::TestParamInfo<AddressCase>& info) { return info.param.name; });

}  // namespace
}  // namespace kvserve::client
