// Bearer-token authentication for the gRPC listener (--auth-token-file).
//
// Every call must carry metadata `authorization: Bearer <token>` with one of the configured
// tokens, or it ends with UNAUTHENTICATED before any handler runs. The standard health
// service (grpc.health.v1) and reflection stay open, so load balancers and grpcurl's
// `list` work without a secret. Deny by default: any service added later (kvserve.v1,
// KServe v2, ...) is covered without registering it here.
//
// Tokens are compared in constant time (no early exit on the first differing byte, and
// every configured token is compared), so response timing does not reveal a token prefix.
//
// Thread-safe: TokenAuthProcessor is immutable after Create.
#ifndef KVSERVE_SERVER_GRPC_TOKEN_AUTH_H_
#define KVSERVE_SERVER_GRPC_TOKEN_AUTH_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/security/auth_metadata_processor.h"
#include "grpcpp/security/server_credentials.h"

namespace kvserve::server {

// Reads a token file: one token per line; blank lines and lines starting with '#' are
// ignored, surrounding whitespace is trimmed. INVALID_ARGUMENT naming the path when the file
// cannot be read, holds no token, or a token has inner whitespace or non-printable bytes.
absl::StatusOr<std::vector<std::string>> LoadTokenFile(const std::string& path);

// Equality whose running time depends only on `expected`'s length, not on where `given`
// differs.
bool ConstantTimeEquals(std::string_view given, std::string_view expected);

// True for the methods that never need a token (":path" form, "/package.Service/Method"):
// grpc.health.v1.Health and the reflection services.
bool IsOpenMethod(std::string_view path);

class TokenAuthProcessor final : public grpc::AuthMetadataProcessor {
 public:
  // INVALID_ARGUMENT when `tokens` is empty or holds an empty token.
  static absl::StatusOr<std::shared_ptr<TokenAuthProcessor>> Create(
      std::vector<std::string> tokens);

  // The decision for one call: `path` is its ":path", `authorization` the value of its
  // authorization metadata or null when absent. OK or UNAUTHENTICATED with the reason.
  grpc::Status Check(std::string_view path, const std::string_view* authorization) const;

  // grpc::AuthMetadataProcessor. Cheap, so it runs on the call's thread.
  bool IsBlocking() const override { return false; }
  grpc::Status Process(const InputMetadata& auth_metadata, grpc::AuthContext* context,
                       OutputMetadata* consumed_auth_metadata,
                       OutputMetadata* response_metadata) override;

  // Use Create(); public only for std::make_shared.
  struct PrivateKey {
   private:
    friend class TokenAuthProcessor;
    PrivateKey() = default;
  };
  TokenAuthProcessor(PrivateKey, std::vector<std::string> tokens);

 private:
  const std::vector<std::string> tokens_;
};

// Plaintext listener credentials that run `processor` on every call. (grpc++'s
// InsecureServerCredentials refuses an AuthMetadataProcessor; gRPC core supports one on
// insecure credentials, which is what this wraps.)
std::shared_ptr<grpc::ServerCredentials> PlaintextCredentialsWithAuth(
    std::shared_ptr<grpc::AuthMetadataProcessor> processor);

}  // namespace kvserve::server

#endif  // KVSERVE_SERVER_GRPC_TOKEN_AUTH_H_
