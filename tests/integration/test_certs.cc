#include "tests/integration/test_certs.h"

#include <stdlib.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace kvserve::testing {
namespace {

absl::Status Run(const std::string& dir, const std::string& command) {
  // Quiet unless it fails; the log is then part of the error.
  const std::string full = absl::StrCat("cd '", dir, "' && ", command, " >>openssl.log 2>&1");
  if (std::system(full.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("test certificate command failed: ", command,
                                            "\n", ReadFileOrEmpty(dir + "/openssl.log")));
  }
  return absl::OkStatus();
}

constexpr char kNewKey[] = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";

// A CA: self-signed, basicConstraints CA:TRUE (openssl's v3_ca defaults).
absl::Status MakeCa(const std::string& dir, const std::string& name) {
  return Run(dir, absl::StrCat("openssl req -x509 ", kNewKey, " -days 1 -subj '/CN=kvserve test ",
                               name, "' -keyout ", name, ".key -out ", name, ".crt"));
}

// A leaf certificate for `name` signed by `ca` with the given extensions.
absl::Status MakeLeaf(const std::string& dir, const std::string& name, const std::string& ca,
                      const std::string& extensions) {
  absl::Status status = Run(dir, absl::StrCat("openssl req ", kNewKey, " -subj '/CN=", name,
                                              "' -keyout ", name, ".key -out ", name, ".csr"));
  if (!status.ok()) return status;
  {
    std::ofstream ext(dir + "/" + name + ".ext");
    ext << extensions << "\n";
  }
  return Run(dir, absl::StrCat("openssl x509 -req -days 1 -in ", name, ".csr -CA ", ca,
                               ".crt -CAkey ", ca, ".key -CAcreateserial -out ", name,
                               ".crt -extfile ", name, ".ext"));
}

}  // namespace

std::string ReadFileOrEmpty(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

absl::StatusOr<TestCerts> MakeTestCerts(const std::string& parent) {
  std::string pattern = parent + "/kvserve_certs_XXXXXX";
  std::vector<char> buffer(pattern.begin(), pattern.end());
  buffer.push_back('\0');
  if (mkdtemp(buffer.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp failed under ", parent));
  }
  TestCerts certs;
  certs.dir = buffer.data();
  const std::string& dir = certs.dir;
  if (absl::Status s = MakeCa(dir, "ca"); !s.ok()) return s;
  if (absl::Status s = MakeCa(dir, "rogue_ca"); !s.ok()) return s;
  if (absl::Status s = MakeLeaf(dir, "server", "ca",
                                "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                "extendedKeyUsage=serverAuth");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = MakeLeaf(dir, "client", "ca", "extendedKeyUsage=clientAuth"); !s.ok()) {
    return s;
  }
  if (absl::Status s = MakeLeaf(dir, "rogue_client", "rogue_ca", "extendedKeyUsage=clientAuth");
      !s.ok()) {
    return s;
  }
  certs.ca_cert = dir + "/ca.crt";
  certs.server_cert = dir + "/server.crt";
  certs.server_key = dir + "/server.key";
  certs.client_cert = dir + "/client.crt";
  certs.client_key = dir + "/client.key";
  certs.rogue_client_cert = dir + "/rogue_client.crt";
  certs.rogue_client_key = dir + "/rogue_client.key";
  return certs;
}

}  // namespace kvserve::testing
