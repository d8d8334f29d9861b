#include "engine/common/mapped_file.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvserve::engine {
namespace {

using ::testing::HasSubstr;

// This process's scratch directory, removed when the binary exits.
std::string TempDir() {
  struct Root {
    std::filesystem::path path;
    ~Root() {
      std::error_code ignored;
      std::filesystem::remove_all(path, ignored);
    }
  };
  static const Root root{[] {
    const char* base = std::getenv("TEST_TMPDIR");
    return std::filesystem::path(base != nullptr ? base : "/tmp") /
           ("kvserve_mapped_file_test_" + std::to_string(::getpid()));
  }()};
  std::filesystem::create_directories(root.path);
  return root.path.string();
}

TEST(MappedFileTest, MapsARegularFile) {
  const std::string path = TempDir() + "/data.bin";
  {
    std::ofstream out(path, std::ios::binary);
    out << "hello mapped world";
  }
  auto f = MappedFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->path(), path);
  ASSERT_EQ((*f)->size(), 18u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>((*f)->data()), (*f)->size()),
            "hello mapped world");
  EXPECT_EQ((*f)->bytes().size(), 18u);
  EXPECT_EQ((*f)->bytes().data(), (*f)->data());
}

TEST(MappedFileTest, MissingFileIsNotFoundAndNamesThePath) {
  const std::string path = TempDir() + "/does_not_exist.gguf";
  auto f = MappedFile::Open(path);
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(f.status().message()), HasSubstr(path));
}

TEST(MappedFileTest, DirectoryIsInvalidArgument) {
  const std::string dir = TempDir();
  auto f = MappedFile::Open(dir);
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(f.status().message()), HasSubstr(dir));
}

TEST(MappedFileTest, EmptyFileMapsToNoBytes) {
  const std::string path = TempDir() + "/empty.bin";
  { std::ofstream out(path, std::ios::binary); }
  auto f = MappedFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->size(), 0u);
  EXPECT_EQ((*f)->data(), nullptr);
  EXPECT_TRUE((*f)->bytes().empty());
}

TEST(MappedFileTest, BytesStayValidAfterTheFileIsDeleted) {
  const std::string path = TempDir() + "/deleted.bin";
  {
    std::ofstream out(path, std::ios::binary);
    out << "still here";
  }
  auto f = MappedFile::Open(path);
  ASSERT_TRUE(f.ok());
  std::filesystem::remove(path);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>((*f)->data()), (*f)->size()), "still here");
}

}  // namespace
}  // namespace kvserve::engine
