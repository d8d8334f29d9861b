// Integration: the real `kvserve` binary driven over the KServe v2 (Open Inference Protocol)
// gRPC API by an independent client: Debian's Python grpcio with stubs generated at test time
// by grpc_tools.protoc from proto/inference/grpc_service.proto (tests/integration/
// kserve_client.py). One case per protocol area; each runs the script once and needs its
// "PASS <case>" line and exit code 0.
#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/subprocess.h"

namespace kvserve {
namespace {

using ::kvserve::testing::CommandResult;
using ::kvserve::testing::RunCommand;
using ::kvserve::testing::SubprocessServer;
using ::testing::HasSubstr;

constexpr char kPython[] = "/usr/bin/python3";  // Debian's, which has grpcio.
const std::string kSource = KVSERVE_SOURCE_DIR;

class KServePythonClientTest : public ::testing::TestWithParam<std::string> {
 protected:
  static void SetUpTestSuite() {
    // Stubs from the specification's proto, generated now into a fresh directory.
    std::string pattern = (std::filesystem::temp_directory_path() / "kserve_stubs_XXXXXX");
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    stubs_ = new std::string(pattern);
    absl::StatusOr<CommandResult> generated = RunCommand(
        {kPython, "-m", "grpc_tools.protoc", "-I", kSource + "/proto",
         "--python_out=" + *stubs_, "--grpc_python_out=" + *stubs_,
         kSource + "/proto/inference/grpc_service.proto"},
        /*timeout_s=*/120);
    ASSERT_TRUE(generated.ok()) << generated.status();
    ASSERT_EQ(generated->exit_code, 0) << generated->stderr_text;
    ASSERT_TRUE(std::filesystem::exists(*stubs_ + "/inference/grpc_service_pb2_grpc.py"));

    absl::StatusOr<std::unique_ptr<SubprocessServer>> server = SubprocessServer::Start(
        {.argv = {std::string(KVSERVE_BINARY_DIR) + "/kvserve", "--model",
                  kSource + "/models/stories260K.gguf", "--listen", "127.0.0.1:0",
                  "--metrics-listen", "127.0.0.1:0", "--threads", "1"}});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = server->release();
  }

  static void TearDownTestSuite() {
    if (server_ != nullptr) {
      const SubprocessServer::StopResult stopped = server_->Stop(30);
      EXPECT_EQ(stopped.exit_code, 0) << server_->output();
      delete server_;
      server_ = nullptr;
    }
    if (stubs_ != nullptr) {
      std::filesystem::remove_all(*stubs_);
      delete stubs_;
      stubs_ = nullptr;
    }
  }

  void SetUp() override {
    ASSERT_NE(server_, nullptr);
    ASSERT_NE(stubs_, nullptr);
  }

  static inline SubprocessServer* server_ = nullptr;
  static inline std::string* stubs_ = nullptr;
};

TEST_P(KServePythonClientTest, CasePasses) {
  const std::string& name = GetParam();
  absl::StatusOr<CommandResult> result = RunCommand(
      {kPython, kSource + "/tests/integration/kserve_client.py", "--address",
       server_->address(), "--stubs", *stubs_, "--reference",
       kSource + "/tests/testdata/stories260K_reference.json", "--case", name},
      /*timeout_s=*/180);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 0) << result->stdout_text << result->stderr_text;
  EXPECT_THAT(result->stdout_text, HasSubstr("PASS " + name)) << result->stderr_text;
}

INSTANTIATE_TEST_SUITE_P(Cases, KServePythonClientTest,
                         ::testing::Values("metadata", "infer_greedy", "infer_raw", "stream",
                                           "bad_tensors", "cancel"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

}  // namespace
}  // namespace kvserve
