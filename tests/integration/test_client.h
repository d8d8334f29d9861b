// Helpers for driving a kvserve server over real gRPC in tests: the Inference stub calls as
// plain functions, the standard health check, and a reflection client.
//
// Thread-safe (each call uses its own ClientContext).
#ifndef KVSERVE_TESTS_INTEGRATION_TEST_CLIENT_H_
#define KVSERVE_TESTS_INTEGRATION_TEST_CLIENT_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "kvserve/v1/kvserve.grpc.pb.h"

namespace kvserve::testing {

// What one streaming Generate call delivered.
struct GenerateResult {
  grpc::Status status;
  std::vector<v1::GenerateResponse> chunks;
  std::vector<int32_t> token_ids;  // All chunks' ids, concatenated.
  std::string text;                // All chunks' text, concatenated.
  // The last chunk's fields (meaningful when status is OK).
  v1::FinishReason finish_reason = v1::FINISH_REASON_UNSPECIFIED;
  v1::Usage usage;
};

struct CompleteResult {
  grpc::Status status;
  v1::CompleteResponse response;
};

std::shared_ptr<grpc::Channel> Connect(const std::string& address);

GenerateResult Generate(v1::Inference::Stub& stub, const v1::GenerationParams& params,
                        absl::Duration timeout = absl::Seconds(60));
CompleteResult Complete(v1::Inference::Stub& stub, const v1::GenerationParams& params,
                        absl::Duration timeout = absl::Seconds(60));

// grpc.health.v1.Health/Check: the status name ("SERVING", "NOT_SERVING", ...), or the RPC
// error.
absl::StatusOr<std::string> HealthCheck(grpc::Channel& channel, const std::string& service);

// grpc.reflection.v1alpha.ServerReflection list_services, spoken in raw protobuf wire
// format (the reflection messages are compiled into libgrpc++_reflection, which the test also
// links, so generating them again would register them twice).
absl::StatusOr<std::vector<std::string>> ReflectionListServices(grpc::Channel& channel);

// The greedy reference continuation of the test model (tests/testdata).
struct Reference {
  std::string prompt;
  std::vector<int32_t> prompt_ids;
  std::vector<int32_t> generated_ids;
  std::string generated_text;
};
absl::StatusOr<Reference> LoadReference();

}  // namespace kvserve::testing

#endif  // KVSERVE_TESTS_INTEGRATION_TEST_CLIENT_H_
