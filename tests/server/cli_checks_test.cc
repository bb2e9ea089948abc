// base/cli_checks.h: flag range errors in plain words, overflow included.
#include "base/cli_checks.h"

#include <cstdint>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace moe::cli {
namespace {

// Parses `args` for one option `name` with `check`; CLI11's error text, or "" when it parsed.
template <typename T>
std::string Parse(const std::string& name, CLI::Validator check, std::vector<std::string> args,
                  T* value) {
  CLI::App app{"test"};
  app.add_option(name, *value)->check(check);
  std::vector<std::string> argv(args.rbegin(), args.rend());  // CLI11 pops from the back
  try {
    app.parse(argv);
  } catch (const CLI::ParseError& e) {
    return e.what();
  }
  return "";
}

TEST(CliChecksTest, IntegersOutsideTheRangeOrOverflowingSayTheRangeInWords) {
  int n = 0;
  EXPECT_EQ(Parse("--n", AtLeast<int>(1), {"--n", "5"}, &n), "");
  EXPECT_EQ(n, 5);
  EXPECT_EQ(Parse("--n", AtLeast<int>(1), {"--n", "0"}, &n),
            "--n: must be a whole number of at least 1 (at most 2147483647), got '0'");
  EXPECT_EQ(Parse("--n", AtLeast<int>(1), {"--n", "99999999999"}, &n),
            "--n: must be a whole number of at least 1 (at most 2147483647), got '99999999999'");
  EXPECT_EQ(Parse("--n", AtLeast<int>(1), {"--n", "3.5"}, &n),
            "--n: must be a whole number of at least 1 (at most 2147483647), got '3.5'");
  int port = 0;
  EXPECT_EQ(Parse("--port", Between<int>(0, 65535), {"--port", "70000"}, &port),
            "--port: must be a whole number from 0 to 65535, got '70000'");
  int64_t bytes = 0;
  EXPECT_EQ(Parse("--bytes", AtLeast<int64_t>(1), {"--bytes", "17179869184"}, &bytes), "");
  EXPECT_EQ(bytes, 17179869184);
}

TEST(CliChecksTest, NumbersSayAtLeastOrAboveAndNeverPrintTheDoubleRange) {
  double seconds = 0;
  EXPECT_EQ(Parse("--s", AtLeast<double>(0.0), {"--s", "1.5"}, &seconds), "");
  EXPECT_EQ(seconds, 1.5);
  const std::string at_least = Parse("--s", AtLeast<double>(0.0), {"--s", "-1"}, &seconds);
  EXPECT_EQ(at_least, "--s: must be a number of at least 0, got '-1'");
  EXPECT_LT(at_least.size(), 80u);
  EXPECT_EQ(Parse("--s", Above<double>(0.0), {"--s", "0"}, &seconds),
            "--s: must be a number above 0, got '0'");
  EXPECT_EQ(Parse("--s", AtLeast<double>(0.0), {"--s", "nan"}, &seconds),
            "--s: must be a number of at least 0, got 'nan'");
  float p = 0;
  EXPECT_EQ(Parse("--p", Between<float>(0.f, 1.f, true), {"--p", "1.5"}, &p),
            "--p: must be a number above 0 and at most 1, got '1.5'");
  EXPECT_EQ(Parse("--p", Between<float>(0.f, 1.f, true), {"--p", "0.25"}, &p), "");
  EXPECT_EQ(p, 0.25f);
}

}  // namespace
}  // namespace moe::cli
