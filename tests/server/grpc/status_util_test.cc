#include "server/grpc/status_util.h"

#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "gtest/gtest.h"

namespace kvserve::server {
namespace {

struct CodeCase {
  std::string name;
  absl::StatusCode absl_code;
  grpc::StatusCode grpc_code;
};

// Test names print the row name, not the struct's bytes.
void PrintTo(const CodeCase& c, std::ostream* os) { *os << c.name; }

class StatusCodeTest : public ::testing::TestWithParam<CodeCase> {};

TEST_P(StatusCodeTest, MapsCodeAndKeepsMessage) {
  const CodeCase& c = GetParam();
  const grpc::Status status = ToGrpcStatus(absl::Status(c.absl_code, "what went wrong"));
  EXPECT_EQ(status.error_code(), c.grpc_code);
  EXPECT_EQ(status.error_message(), "what went wrong");
}

INSTANTIATE_TEST_SUITE_P(
    AllCodes, StatusCodeTest,
    ::testing::Values(
        CodeCase{"cancelled", absl::StatusCode::kCancelled, grpc::StatusCode::CANCELLED},
        CodeCase{"unknown", absl::StatusCode::kUnknown, grpc::StatusCode::UNKNOWN},
        CodeCase{"invalid_argument", absl::StatusCode::kInvalidArgument,
                 grpc::StatusCode::INVALID_ARGUMENT},
        CodeCase{"deadline_exceeded", absl::StatusCode::kDeadlineExceeded,
                 grpc::StatusCode::DEADLINE_EXCEEDED},
        CodeCase{"not_found", absl::StatusCode::kNotFound, grpc::StatusCode::NOT_FOUND},
        CodeCase{"already_exists", absl::StatusCode::kAlreadyExists,
                 grpc::StatusCode::ALREADY_EXISTS},
        CodeCase{"permission_denied", absl::StatusCode::kPermissionDenied,
                 grpc::StatusCode::PERMISSION_DENIED},
        CodeCase{"resource_exhausted", absl::StatusCode::kResourceExhausted,
                 grpc::StatusCode::RESOURCE_EXHAUSTED},
        CodeCase{"failed_precondition", absl::StatusCode::kFailedPrecondition,
                 grpc::StatusCode::FAILED_PRECONDITION},
        CodeCase{"aborted", absl::StatusCode::kAborted, grpc::StatusCode::ABORTED},
        CodeCase{"out_of_range", absl::StatusCode::kOutOfRange, grpc::StatusCode::OUT_OF_RANGE},
        CodeCase{"unimplemented", absl::StatusCode::kUnimplemented,
                 grpc::StatusCode::UNIMPLEMENTED},
        CodeCase{"internal", absl::StatusCode::kInternal, grpc::StatusCode::INTERNAL},
        CodeCase{"unavailable", absl::StatusCode::kUnavailable, grpc::StatusCode::UNAVAILABLE},
        CodeCase{"data_loss", absl::StatusCode::kDataLoss, grpc::StatusCode::DATA_LOSS},
        CodeCase{"unauthenticated", absl::StatusCode::kUnauthenticated,
                 grpc::StatusCode::UNAUTHENTICATED}),
    [](const ::testing::TestParamInfo<CodeCase>& info) { return info.param.name; });

TEST(StatusUtilTest, OkIsOk) {
  const grpc::Status status = ToGrpcStatus(absl::OkStatus());
  EXPECT_TRUE(status.ok());
  EXPECT_EQ(status.error_message(), "");
}

TEST(StatusUtilTest, ShortMessageUnchangedAtTheLimit) {
  const std::string message(kMaxStatusMessageBytes, 'x');
  EXPECT_EQ(ToGrpcStatus(absl::InternalError(message)).error_message(), message);
}

TEST(StatusUtilTest, LongMessageIsCappedWithEllipsis) {
  const std::string message = "prompt has " + std::string(5000, '9') + " tokens";
  const std::string capped = ToGrpcStatus(absl::InvalidArgumentError(message)).error_message();
  EXPECT_LE(capped.size(), kMaxStatusMessageBytes);
  EXPECT_EQ(capped.substr(0, 11), "prompt has ");
  EXPECT_EQ(capped.substr(capped.size() - 3), "...");
}

TEST(StatusUtilTest, CapNeverSplitsAUtf8Character) {
  // "é" is two bytes; the cut falls inside one unless it backs off.
  std::string message = "x";
  while (message.size() < 3 * kMaxStatusMessageBytes) message += "\xC3\xA9";
  const std::string capped = ToGrpcStatus(absl::InternalError(message)).error_message();
  ASSERT_GE(capped.size(), 4u);
  const std::string body = capped.substr(0, capped.size() - 3);
  // "x" then whole two-byte characters: the body has odd length and ends with 0xA9.
  EXPECT_EQ(body.size() % 2, 1u);
  EXPECT_EQ(static_cast<unsigned char>(body.back()), 0xA9);
}

}  // namespace
}  // namespace kvserve::server
