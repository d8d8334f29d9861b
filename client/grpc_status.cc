#include "client/grpc_status.h"

#include "absl/strings/str_cat.h"

namespace kvserve::client {

absl::Status FromGrpcStatus(const grpc::Status& status) {
  const int code = static_cast<int>(status.error_code());
  // 16 (UNAUTHENTICATED) is the last canonical code.
  if (code < 0 || code > 16) {
    return absl::UnknownError(
        absl::StrCat("non-canonical gRPC code ", code, ": ", status.error_message()));
  }
  return absl::Status(static_cast<absl::StatusCode>(code), status.error_message());
}

std::string StatusCodeName(absl::StatusCode code) {
  return absl::StatusCodeToString(code);
}

std::string FormatStatus(const absl::Status& status) {
  return absl::StrCat(StatusCodeName(status.code()), ": ", status.message());
}

}  // namespace kvserve::client
