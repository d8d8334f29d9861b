// Credentials of the gRPC listener: plaintext, TLS (--tls-cert/--tls-key) or mutual TLS
// (--tls-client-ca: clients must present a certificate signed by that CA), optionally with a
// bearer-token AuthMetadataProcessor (token_auth.h). Files are read once, at start-up, so a
// missing or unreadable file is a start-up error rather than a failed handshake later.
//
// Pure functions; thread-safe.
#ifndef KVSERVE_SERVER_GRPC_TLS_CREDENTIALS_H_
#define KVSERVE_SERVER_GRPC_TLS_CREDENTIALS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/security/auth_metadata_processor.h"
#include "grpcpp/security/server_credentials.h"

namespace kvserve::server {

// Where the listener's TLS material lives. All empty = plaintext.
struct TlsFiles {
  std::string cert_path;       // PEM certificate chain of the server (--tls-cert).
  std::string key_path;        // PEM private key of that certificate (--tls-key).
  std::string client_ca_path;  // PEM CA bundle; set = mutual TLS, clients must present a
                               // certificate it verifies (--tls-client-ca).
};

// Checks which combinations make sense (no file access): cert and key come together, and a
// client CA needs them. INVALID_ARGUMENT naming the flag.
absl::Status ValidateTlsFiles(const TlsFiles& files);

// Reads the files into gRPC's SSL options. INVALID_ARGUMENT naming the flag and path when a
// file is missing, unreadable, empty or not PEM of the expected kind.
absl::StatusOr<grpc::SslServerCredentialsOptions> LoadSslServerOptions(const TlsFiles& files);

// The listener's credentials: TLS when `files.cert_path` is set (mutual with a client CA),
// plaintext otherwise; every call goes through `auth` first when it is not null.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> BuildServerCredentials(
    const TlsFiles& files, std::shared_ptr<grpc::AuthMetadataProcessor> auth);

// The same with bearer-token auth from `auth_token_file` (token_auth.h); "" = no auth.
// Reads every file now, so a bad one is a start-up error.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> BuildServerCredentials(
    const TlsFiles& files, const std::string& auth_token_file);

}  // namespace kvserve::server

#endif  // KVSERVE_SERVER_GRPC_TLS_CREDENTIALS_H_
