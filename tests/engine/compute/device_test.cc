#include "engine/compute/device.h"

#include <omp.h>

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace kvserve::engine {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

TEST(ParseDeviceKindTest, AcceptsCpuAndGpu) {
  ASSERT_TRUE(ParseDeviceKind("cpu").ok());
  EXPECT_EQ(*ParseDeviceKind("cpu"), DeviceKind::kCpu);
  ASSERT_TRUE(ParseDeviceKind("gpu").ok());
  EXPECT_EQ(*ParseDeviceKind("gpu"), DeviceKind::kGpu);
  EXPECT_EQ(DeviceKindName(DeviceKind::kCpu), "cpu");
  EXPECT_EQ(DeviceKindName(DeviceKind::kGpu), "gpu");
}

struct BadNameCase {
  std::string test_name;
  std::string name;
};

class ParseDeviceKindErrorTest : public ::testing::TestWithParam<BadNameCase> {};

TEST_P(ParseDeviceKindErrorTest, IsInvalidArgumentListingChoices) {
  const absl::StatusOr<DeviceKind> kind = ParseDeviceKind(GetParam().name);
  ASSERT_FALSE(kind.ok());
  EXPECT_EQ(kind.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(kind.status().message()), HasSubstr("cpu, gpu"));
  EXPECT_THAT(std::string(kind.status().message()), HasSubstr("\"" + GetParam().name + "\""));
}

INSTANTIATE_TEST_SUITE_P(Names, ParseDeviceKindErrorTest,
                         ::testing::Values(BadNameCase{"Empty", ""}, BadNameCase{"Upper", "CPU"},
                                           BadNameCase{"Unknown", "tpu"},
                                           BadNameCase{"TrailingSpace", "cpu "}),
                         [](const auto& info) { return info.param.test_name; });

TEST(DeviceTest, CpuWorksAndDescribesItself) {
  absl::StatusOr<std::unique_ptr<Device>> device = Device::Create(DeviceKind::kCpu);
  ASSERT_TRUE(device.ok()) << device.status();
  EXPECT_EQ((*device)->kind(), DeviceKind::kCpu);
  EXPECT_EQ((*device)->engine().get_kind(), dnnl::engine::kind::cpu);
  EXPECT_THAT((*device)->Describe(), StartsWith("cpu (oneDNN 2."));
  EXPECT_THAT((*device)->Describe(), HasSubstr("isa "));
}

TEST(DeviceTest, GpuFailsWithAnActionableMessageWhenThereIsNone) {
  absl::StatusOr<std::unique_ptr<Device>> device = Device::Create(DeviceKind::kGpu);
  if (dnnl_version()->gpu_runtime == DNNL_RUNTIME_NONE) {
    ASSERT_FALSE(device.ok());
    EXPECT_EQ(device.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(std::string(device.status().message()), HasSubstr("no GPU runtime"));
  } else if (dnnl::engine::get_count(dnnl::engine::kind::gpu) == 0) {
    // This machine (Debian's oneDNN has the OpenCL runtime; there is no OpenCL ICD).
    ASSERT_FALSE(device.ok());
    EXPECT_EQ(device.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(device.status().message(),
              "oneDNN has an OpenCL GPU runtime but found no GPU device (no OpenCL ICD / driver "
              "installed); use --device=cpu");
  } else {
    ASSERT_TRUE(device.ok()) << device.status();
    EXPECT_THAT((*device)->Describe(), StartsWith("gpu (oneDNN"));
  }
}

TEST(DeviceTest, WorkspaceOnlyGrowsAndIsAligned) {
  absl::StatusOr<std::unique_ptr<Device>> device = Device::Create(DeviceKind::kCpu);
  ASSERT_TRUE(device.ok()) << device.status();
  Device::Workspace& ws = (*device)->workspace();
  EXPECT_EQ(ws.size(), 0u);
  ASSERT_TRUE(ws.Reserve(100).ok());
  EXPECT_GE(ws.size(), 100u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(ws.data()) % 64, 0u);
  uint8_t* const before = ws.data();
  ASSERT_TRUE(ws.Reserve(10).ok());
  EXPECT_EQ(ws.data(), before);  // Smaller requests reuse the buffer.
  ASSERT_TRUE(ws.Reserve(1 << 20).ok());
  EXPECT_GE(ws.size(), size_t{1} << 20);
}

TEST(SetComputeThreadsTest, SetsTheCallingThreadsTeamSize) {
  SetComputeThreads(1);
  EXPECT_EQ(omp_get_max_threads(), 1);
  SetComputeThreads(0);
  EXPECT_EQ(omp_get_max_threads(), omp_get_num_procs());
  SetComputeThreads(-3);
  EXPECT_EQ(omp_get_max_threads(), omp_get_num_procs());
}

}  // namespace
}  // namespace kvserve::engine
