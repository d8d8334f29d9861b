#include "server/grpc/tls_credentials.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "engine/common/logging.h"
#include "engine/common/status_macros.h"
#include "server/grpc/token_auth.h"

namespace kvserve::server {
namespace {

// PEM material is small; anything bigger is not what the flag asks for.
constexpr size_t kMaxPemBytes = 1 << 20;

// Reads a PEM file named by `flag` and checks it holds a block whose label contains
// `label` (e.g. "CERTIFICATE", "PRIVATE KEY").
absl::StatusOr<std::string> ReadPem(const char* flag, const std::string& path,
                                    const char* label) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: cannot read '%s': %s", flag, path, std::strerror(errno)));
  }
  std::ostringstream contents;
  contents << in.rdbuf();
  std::string pem = std::move(contents).str();
  if (pem.empty() || pem.size() > kMaxPemBytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: '%s' is %s", flag, path, pem.empty() ? "empty" : "too large"));
  }
  if (!absl::StrContains(pem, "-----BEGIN ") || !absl::StrContains(pem, label)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: '%s' is not a PEM file with a %s", flag, path, label));
  }
  return pem;
}

}  // namespace

absl::Status ValidateTlsFiles(const TlsFiles& files) {
  if (files.cert_path.empty() != files.key_path.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key must be given together");
  }
  if (!files.client_ca_path.empty() && files.cert_path.empty()) {
    return absl::InvalidArgumentError(
        "--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key");
  }
  return absl::OkStatus();
}

absl::StatusOr<grpc::SslServerCredentialsOptions> LoadSslServerOptions(const TlsFiles& files) {
  KV_RETURN_IF_ERROR(ValidateTlsFiles(files));
  if (files.cert_path.empty()) {
    return absl::InvalidArgumentError("--tls-cert is required for TLS");
  }
  grpc::SslServerCredentialsOptions options(
      files.client_ca_path.empty()
          ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
          : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  KV_ASSIGN_OR_RETURN(pair.cert_chain, ReadPem("--tls-cert", files.cert_path, "CERTIFICATE"));
  KV_ASSIGN_OR_RETURN(pair.private_key, ReadPem("--tls-key", files.key_path, "PRIVATE KEY"));
  options.pem_key_cert_pairs.push_back(std::move(pair));
  if (!files.client_ca_path.empty()) {
    KV_ASSIGN_OR_RETURN(options.pem_root_certs,
                        ReadPem("--tls-client-ca", files.client_ca_path, "CERTIFICATE"));
  }
  struct stat key_stat;
  if (stat(files.key_path.c_str(), &key_stat) == 0 && (key_stat.st_mode & S_IROTH) != 0) {
    KV_LOG_WARN("--tls-key '{}' is readable by every user of this machine", files.key_path);
  }
  return options;
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> BuildServerCredentials(
    const TlsFiles& files, std::shared_ptr<grpc::AuthMetadataProcessor> auth) {
  KV_RETURN_IF_ERROR(ValidateTlsFiles(files));
  if (files.cert_path.empty()) {
    if (auth == nullptr) return grpc::InsecureServerCredentials();
    return PlaintextCredentialsWithAuth(std::move(auth));
  }
  KV_ASSIGN_OR_RETURN(grpc::SslServerCredentialsOptions options, LoadSslServerOptions(files));
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::SslServerCredentials(options);
  if (auth != nullptr) credentials->SetAuthMetadataProcessor(std::move(auth));
  return credentials;
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> BuildServerCredentials(
    const TlsFiles& files, const std::string& auth_token_file) {
  std::shared_ptr<grpc::AuthMetadataProcessor> auth;
  if (!auth_token_file.empty()) {
    KV_ASSIGN_OR_RETURN(std::vector<std::string> tokens, LoadTokenFile(auth_token_file));
    KV_ASSIGN_OR_RETURN(std::shared_ptr<TokenAuthProcessor> processor,
                        TokenAuthProcessor::Create(std::move(tokens)));
    auth = std::move(processor);
  }
  return BuildServerCredentials(files, std::move(auth));
}

}  // namespace kvserve::server
