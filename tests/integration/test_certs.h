// Test certificates made at test time with the `openssl` command (Debian package openssl):
// a CA, a server certificate for 127.0.0.1 and localhost, a client certificate signed by the
// CA, and a second "rogue" CA with its own client certificate (for mTLS rejection tests).
// Nothing is checked in: every run makes fresh ECDSA P-256 keys valid for one day.
//
// Thread-compatible: create once per test suite.
#ifndef KVSERVE_TESTS_INTEGRATION_TEST_CERTS_H_
#define KVSERVE_TESTS_INTEGRATION_TEST_CERTS_H_

#include <string>

#include "absl/status/statusor.h"

namespace kvserve::testing {

struct TestCerts {
  std::string dir;               // Where the files are.
  std::string ca_cert;           // PEM paths...
  std::string server_cert;
  std::string server_key;
  std::string client_cert;
  std::string client_key;
  std::string rogue_client_cert;  // Signed by another CA.
  std::string rogue_client_key;
};

// Makes the certificates in a fresh directory under `parent` (e.g. ::testing::TempDir()).
// INTERNAL naming the failed openssl command.
absl::StatusOr<TestCerts> MakeTestCerts(const std::string& parent);

// A whole file as a string ("" when unreadable).
std::string ReadFileOrEmpty(const std::string& path);

}  // namespace kvserve::testing

#endif  // KVSERVE_TESTS_INTEGRATION_TEST_CERTS_H_
