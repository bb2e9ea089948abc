#include "server/api_keys.h"

#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

namespace moe::server {
namespace {

std::string WriteFile(const std::string& name, const std::string& text) {
  const std::string path = (std::filesystem::path(::testing::TempDir()) / name).string();
  std::ofstream(path) << text;
  return path;
}

TEST(ApiKeysTest, NoKeysAllowEverything) {
  absl::StatusOr<ApiKeys> keys = ApiKeys::Load({}, {});
  ASSERT_TRUE(keys.ok());
  EXPECT_FALSE(keys->enabled());
  EXPECT_TRUE(keys->Allows(""));
  EXPECT_TRUE(keys->Allows("Bearer anything"));
}

TEST(ApiKeysTest, FlagsAndFilesGiveKeysThatOnlyABearerHeaderWithOneOfThemPasses) {
  const std::string file =
      WriteFile("keys_ok.txt", "# team keys\n\n  file-key-1  \nfile-key-2\n# old: revoked-key\n");
  absl::StatusOr<ApiKeys> keys = ApiKeys::Load({"flag-key"}, {file});
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_TRUE(keys->enabled());
  EXPECT_EQ(keys->size(), 3u);
  EXPECT_TRUE(keys->Allows("Bearer flag-key"));
  EXPECT_TRUE(keys->Allows("Bearer file-key-1"));
  EXPECT_TRUE(keys->Allows("bearer file-key-2"));  // the scheme's case is free
  EXPECT_TRUE(keys->Allows("  Bearer   file-key-2 "));
  EXPECT_FALSE(keys->Allows("Bearer revoked-key"));  // a comment is no key
  EXPECT_FALSE(keys->Allows("Bearer file-key"));     // a prefix of a key
  EXPECT_FALSE(keys->Allows("Bearer file-key-10"));  // a key plus more
  EXPECT_FALSE(keys->Allows("Basic flag-key"));
  EXPECT_FALSE(keys->Allows("flag-key"));
  EXPECT_FALSE(keys->Allows("Bearer "));
  EXPECT_FALSE(keys->Allows(""));
}

TEST(ApiKeysTest, BadSourcesAreErrors) {
  EXPECT_EQ(ApiKeys::Load({"  "}, {}).status().code(), absl::StatusCode::kInvalidArgument);
  const std::string empty = WriteFile("keys_empty.txt", "# nothing here\n\n");
  absl::StatusOr<ApiKeys> none = ApiKeys::Load({}, {empty});
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(none.status().message().find("holds no key"), std::string::npos);
  EXPECT_EQ(ApiKeys::Load({}, {"/nonexistent/keys.txt"}).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace moe::server
