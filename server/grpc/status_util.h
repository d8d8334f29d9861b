// Conversion of absl::Status to grpc::Status: the one place the two meet. Stateless and
// thread-safe.
#ifndef KVSERVE_SERVER_GRPC_STATUS_UTIL_H_
#define KVSERVE_SERVER_GRPC_STATUS_UTIL_H_

#include <cstddef>

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace kvserve::server {

// Longest message sent to a client; longer ones are cut (on a UTF-8 character boundary) and
// end in "...". Keeps trailers small whatever an error message embeds.
inline constexpr size_t kMaxStatusMessageBytes = 1024;

// Same canonical code (absl and gRPC share the numbering), message capped at
// kMaxStatusMessageBytes.
grpc::Status ToGrpcStatus(const absl::Status& status);

// The status of an RPC whose client cancelled it or went away.
grpc::Status CancelledStatus();

}  // namespace kvserve::server

#endif  // KVSERVE_SERVER_GRPC_STATUS_UTIL_H_
