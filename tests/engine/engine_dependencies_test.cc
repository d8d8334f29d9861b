// The engine is a pure C++ library: no gRPC, protobuf or Prometheus anywhere under engine/
// (ARCHITECTURE.md). This test fails if any engine file includes one of them.
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>

#include "gtest/gtest.h"

namespace {

TEST(EngineDependenciesTest, EngineIncludesNoServingFrameworks) {
  const std::filesystem::path engine_dir = std::filesystem::path(KVSERVE_SOURCE_DIR) / "engine";
  const std::regex forbidden(R"(^\s*#\s*include\s*[<"](grpc|grpcpp|google/protobuf|prometheus)/)");
  int files = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(engine_dir)) {
    const std::string ext = entry.path().extension().string();
    if (ext != ".h" && ext != ".cc" && ext != ".txt") continue;
    ++files;
    std::ifstream in(entry.path());
    std::string line;
    int number = 0;
    while (std::getline(in, line)) {
      ++number;
      EXPECT_FALSE(std::regex_search(line, forbidden)) << entry.path() << ":" << number << ": " << line;
      if (ext == ".txt") {
        EXPECT_EQ(line.find("gRPC::"), std::string::npos) << entry.path() << ":" << number;
        EXPECT_EQ(line.find("protobuf::"), std::string::npos) << entry.path() << ":" << number;
        EXPECT_EQ(line.find("prometheus-cpp::"), std::string::npos) << entry.path() << ":" << number;
      }
    }
  }
  EXPECT_GT(files, 10);  // The scan really looked at the engine.
}

}  // namespace
