// Conversions from gRPC statuses to absl::Status and canonical code names, so every client
// reports errors the same way ("error: INVALID_ARGUMENT: <message>"). Stateless; thread-safe.
#ifndef KVSERVE_CLIENT_GRPC_STATUS_H_
#define KVSERVE_CLIENT_GRPC_STATUS_H_

#include <string>

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace kvserve::client {

// Same code and message. gRPC and absl share the canonical code numbering; an out-of-range
// code becomes UNKNOWN.
absl::Status FromGrpcStatus(const grpc::Status& status);

// The canonical upper-case name of `code` ("OK", "INVALID_ARGUMENT", ...).
std::string StatusCodeName(absl::StatusCode code);

// "<CODE>: <message>", the form every client prints after "error: ".
std::string FormatStatus(const absl::Status& status);

}  // namespace kvserve::client

#endif  // KVSERVE_CLIENT_GRPC_STATUS_H_
