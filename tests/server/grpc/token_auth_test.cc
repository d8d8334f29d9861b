// Unit tests of bearer-token auth: the token file format, the constant-time comparison, which
// methods stay open, and the decision for each kind of authorization metadata.
#include "server/grpc/token_auth.h"

#include <unistd.h>

#include <fstream>
#include <map>
#include <optional>
#include <ostream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvserve::server {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string WriteTemp(const std::string& name, const std::string& contents) {
  const std::string path = ::testing::TempDir() + "/" + name + "_" + std::to_string(getpid());
  std::ofstream(path) << contents;
  return path;
}

TEST(LoadTokenFileTest, SkipsBlankLinesAndCommentsAndTrims) {
  const std::string path =
      WriteTemp("tokens", "# header\n\n  alpha-1 \n\t# indented comment\nbeta_2\r\n\n");
  absl::StatusOr<std::vector<std::string>> tokens = LoadTokenFile(path);
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_THAT(*tokens, ElementsAre("alpha-1", "beta_2"));
}

TEST(LoadTokenFileTest, Errors) {
  EXPECT_THAT(std::string(LoadTokenFile("/no/such/file").status().message()),
              HasSubstr("cannot read '/no/such/file'"));
  EXPECT_THAT(std::string(LoadTokenFile(WriteTemp("empty", "# only\n\n")).status().message()),
              HasSubstr("holds no token"));
  EXPECT_THAT(std::string(LoadTokenFile(WriteTemp("space", "ok\nin side\n")).status().message()),
              HasSubstr("line 2"));
}

TEST(ConstantTimeEqualsTest, ComparesWholeStrings) {
  EXPECT_TRUE(ConstantTimeEquals("secret", "secret"));
  EXPECT_FALSE(ConstantTimeEquals("secreT", "secret"));
  EXPECT_FALSE(ConstantTimeEquals("secret", "secret2"));   // Prefix of the expected one.
  EXPECT_FALSE(ConstantTimeEquals("secret2", "secret"));   // Expected one is a prefix.
  EXPECT_FALSE(ConstantTimeEquals("", "secret"));
  EXPECT_FALSE(ConstantTimeEquals(std::string("secret\0", 7), "secret"));
}

TEST(IsOpenMethodTest, HealthAndReflectionOnly) {
  EXPECT_TRUE(IsOpenMethod("/grpc.health.v1.Health/Check"));
  EXPECT_TRUE(IsOpenMethod("/grpc.health.v1.Health/Watch"));
  EXPECT_TRUE(IsOpenMethod("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"));
  EXPECT_TRUE(IsOpenMethod("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"));
  EXPECT_FALSE(IsOpenMethod("/kvserve.v1.Inference/Generate"));
  EXPECT_FALSE(IsOpenMethod("/inference.GRPCInferenceService/ModelInfer"));
  EXPECT_FALSE(IsOpenMethod("/grpc.health.v1.HealthX/Check"));
  EXPECT_FALSE(IsOpenMethod(""));
}

// One row: the call's path and authorization metadata, and the expected decision.
struct CheckCase {
  std::string name;
  std::string path;
  std::optional<std::string> authorization;
  grpc::StatusCode code;
  std::string message_part;
};

void PrintTo(const CheckCase& c, std::ostream* os) { *os << c.name; }

class TokenAuthCheckTest : public ::testing::TestWithParam<CheckCase> {};

TEST_P(TokenAuthCheckTest, DecidesAsExpectedThroughProcess) {
  const CheckCase& c = GetParam();
  absl::StatusOr<std::shared_ptr<TokenAuthProcessor>> processor =
      TokenAuthProcessor::Create({"tok-one", "tok-two"});
  ASSERT_TRUE(processor.ok()) << processor.status();
  // Through Process, as gRPC calls it.
  grpc::AuthMetadataProcessor::InputMetadata metadata;
  metadata.emplace(":path", c.path);
  metadata.emplace("user-agent", "test");
  if (c.authorization) metadata.emplace("authorization", *c.authorization);
  grpc::AuthMetadataProcessor::OutputMetadata consumed, response;
  const grpc::Status status = (*processor)->Process(metadata, nullptr, &consumed, &response);
  EXPECT_EQ(status.error_code(), c.code) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr(c.message_part));
}

INSTANTIATE_TEST_SUITE_P(
    Table, TokenAuthCheckTest,
    ::testing::Values(
        CheckCase{"first_token", "/kvserve.v1.Inference/Complete", "Bearer tok-one",
                  grpc::StatusCode::OK, ""},
        CheckCase{"second_token", "/kvserve.v1.Inference/Complete", "Bearer tok-two",
                  grpc::StatusCode::OK, ""},
        CheckCase{"missing", "/kvserve.v1.Inference/Complete", std::nullopt,
                  grpc::StatusCode::UNAUTHENTICATED, "authorization: Bearer <token>"},
        CheckCase{"wrong", "/kvserve.v1.Inference/Complete", "Bearer tok-three",
                  grpc::StatusCode::UNAUTHENTICATED, "invalid bearer token"},
        CheckCase{"not_bearer", "/kvserve.v1.Inference/Complete", "Basic dG9rLW9uZQ==",
                  grpc::StatusCode::UNAUTHENTICATED, "must be 'Bearer <token>'"},
        CheckCase{"lowercase_scheme", "/kvserve.v1.Inference/Complete", "bearer tok-one",
                  grpc::StatusCode::UNAUTHENTICATED, "must be 'Bearer <token>'"},
        CheckCase{"empty_token", "/kvserve.v1.Inference/Complete", "Bearer ",
                  grpc::StatusCode::UNAUTHENTICATED, "invalid bearer token"},
        CheckCase{"other_service", "/inference.GRPCInferenceService/ModelInfer", std::nullopt,
                  grpc::StatusCode::UNAUTHENTICATED, "authorization"},
        CheckCase{"health_open", "/grpc.health.v1.Health/Check", std::nullopt,
                  grpc::StatusCode::OK, ""},
        CheckCase{"reflection_open",
                  "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                  std::nullopt, grpc::StatusCode::OK, ""}),
    [](const ::testing::TestParamInfo<CheckCase>& info) { return info.param.name; });

TEST(TokenAuthProcessorTest, NeedsTokens) {
  EXPECT_FALSE(TokenAuthProcessor::Create({}).ok());
  EXPECT_FALSE(TokenAuthProcessor::Create({"a", ""}).ok());
}

}  // namespace
}  // namespace kvserve::server
