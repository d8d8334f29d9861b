#include "server/grpc/token_auth.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "engine/common/logging.h"
#include "grpc/grpc_security.h"

namespace kvserve::server {
namespace {

constexpr std::string_view kBearerPrefix = "Bearer ";
constexpr size_t kMaxTokenFileBytes = 1 << 20;

constexpr std::string_view kOpenServices[] = {
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
};

std::string_view View(const grpc::string_ref& ref) { return {ref.data(), ref.size()}; }

// Adapts a C++ AuthMetadataProcessor to gRPC core's C interface, for credentials whose C++
// wrapper does not accept one. Owns a reference to the processor.
struct CoreProcessorState {
  std::shared_ptr<grpc::AuthMetadataProcessor> processor;
};

void ProcessInCore(void* state, grpc_auth_context* /*context*/, const grpc_metadata* md,
                   size_t num_md, grpc_process_auth_metadata_done_cb done, void* user_data) {
  auto* self = static_cast<CoreProcessorState*>(state);
  grpc::AuthMetadataProcessor::InputMetadata input;
  for (size_t i = 0; i < num_md; ++i) {
    input.emplace(
        grpc::string_ref(reinterpret_cast<const char*>(GRPC_SLICE_START_PTR(md[i].key)),
                         GRPC_SLICE_LENGTH(md[i].key)),
        grpc::string_ref(reinterpret_cast<const char*>(GRPC_SLICE_START_PTR(md[i].value)),
                         GRPC_SLICE_LENGTH(md[i].value)));
  }
  grpc::AuthMetadataProcessor::OutputMetadata consumed, response;
  // Our processor ignores the AuthContext (plaintext has no peer identity).
  const grpc::Status status = self->processor->Process(input, nullptr, &consumed, &response);
  done(user_data, nullptr, 0, nullptr, 0, static_cast<grpc_status_code>(status.error_code()),
       status.ok() ? nullptr : status.error_message().c_str());
}

void DestroyCoreProcessor(void* state) {
  // Ownership came from ProcessorFor's release().
  std::unique_ptr<CoreProcessorState> owned(static_cast<CoreProcessorState*>(state));
}

class PlaintextAuthCredentials final : public grpc::ServerCredentials {
 public:
  explicit PlaintextAuthCredentials(std::shared_ptr<grpc::AuthMetadataProcessor> processor)
      : core_(grpc_insecure_server_credentials_create()) {
    SetAuthMetadataProcessor(processor);
  }
  ~PlaintextAuthCredentials() override { grpc_server_credentials_release(core_); }

  void SetAuthMetadataProcessor(
      const std::shared_ptr<grpc::AuthMetadataProcessor>& processor) override {
    grpc_auth_metadata_processor core_processor{};
    core_processor.process = &ProcessInCore;
    core_processor.destroy = &DestroyCoreProcessor;
    // Handed to gRPC core, which calls DestroyCoreProcessor when done with it.
    core_processor.state = std::make_unique<CoreProcessorState>(
                               CoreProcessorState{processor}).release();
    grpc_server_credentials_set_auth_metadata_processor(core_, core_processor);
  }

 private:
  int AddPortToServer(const std::string& addr, grpc_server* server) override {
    return grpc_server_add_http2_port(server, addr.c_str(), core_);
  }

  grpc_server_credentials* const core_;
};

}  // namespace

absl::StatusOr<std::vector<std::string>> LoadTokenFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--auth-token-file: cannot read '%s': %s", path, std::strerror(errno)));
  }
  std::vector<std::string> tokens;
  std::string line;
  size_t bytes = 0;
  int line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    bytes += line.size() + 1;
    if (bytes > kMaxTokenFileBytes) {
      return absl::InvalidArgumentError(
          absl::StrFormat("--auth-token-file: '%s' is larger than 1 MiB", path));
    }
    const absl::string_view stripped = absl::StripAsciiWhitespace(line);
    const std::string_view token(stripped.data(), stripped.size());
    if (token.empty() || token.front() == '#') continue;
    for (const char c : token) {
      if (!absl::ascii_isgraph(static_cast<unsigned char>(c))) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "--auth-token-file: '%s' line %d: a token is printable ASCII without spaces",
            path, line_number));
      }
    }
    tokens.emplace_back(token);
  }
  if (tokens.empty()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--auth-token-file: '%s' holds no token", path));
  }
  struct stat file_stat;
  if (stat(path.c_str(), &file_stat) == 0 && (file_stat.st_mode & S_IROTH) != 0) {
    KV_LOG_WARN("--auth-token-file '{}' is readable by every user of this machine", path);
  }
  return tokens;
}

bool ConstantTimeEquals(std::string_view given, std::string_view expected) {
  // volatile keeps the compiler from turning the loop into an early-exit memcmp.
  volatile unsigned char diff = given.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i) {
    const unsigned char g = i < given.size() ? static_cast<unsigned char>(given[i]) : 0;
    diff = diff | (g ^ static_cast<unsigned char>(expected[i]));
  }
  return diff == 0;
}

bool IsOpenMethod(std::string_view path) {
  for (std::string_view prefix : kOpenServices) {
    if (path.starts_with(prefix)) return true;
  }
  return false;
}

absl::StatusOr<std::shared_ptr<TokenAuthProcessor>> TokenAuthProcessor::Create(
    std::vector<std::string> tokens) {
  if (tokens.empty()) return absl::InvalidArgumentError("token auth needs at least one token");
  for (const std::string& token : tokens) {
    if (token.empty()) return absl::InvalidArgumentError("an auth token is empty");
  }
  return std::make_shared<TokenAuthProcessor>(PrivateKey{}, std::move(tokens));
}

TokenAuthProcessor::TokenAuthProcessor(PrivateKey, std::vector<std::string> tokens)
    : tokens_(std::move(tokens)) {}

grpc::Status TokenAuthProcessor::Check(std::string_view path,
                                       const std::string_view* authorization) const {
  if (IsOpenMethod(path)) return grpc::Status::OK;
  if (authorization == nullptr) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "missing credentials: send metadata 'authorization: Bearer <token>'");
  }
  if (!authorization->starts_with(kBearerPrefix)) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "the authorization metadata must be 'Bearer <token>'");
  }
  const std::string_view given = authorization->substr(kBearerPrefix.size());
  bool match = false;
  for (const std::string& token : tokens_) match |= ConstantTimeEquals(given, token);
  if (!match) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "invalid bearer token");
  }
  return grpc::Status::OK;
}

grpc::Status TokenAuthProcessor::Process(const InputMetadata& auth_metadata,
                                         grpc::AuthContext* /*context*/,
                                         OutputMetadata* /*consumed_auth_metadata*/,
                                         OutputMetadata* /*response_metadata*/) {
  std::string_view path;
  if (auto it = auth_metadata.find(":path"); it != auth_metadata.end()) path = View(it->second);
  const auto authorization = auth_metadata.find("authorization");
  if (authorization == auth_metadata.end()) return Check(path, nullptr);
  const std::string_view value = View(authorization->second);
  return Check(path, &value);
}

std::shared_ptr<grpc::ServerCredentials> PlaintextCredentialsWithAuth(
    std::shared_ptr<grpc::AuthMetadataProcessor> processor) {
  return std::make_shared<PlaintextAuthCredentials>(std::move(processor));
}

}  // namespace kvserve::server
