// SPDX-License-Identifier: Apache-2.0
// DebugOptions::oom_dump: the snapshot a context writes when an OutOfMemoryError is about to be
// thrown. Its JSON files are read back with an independent parser.

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <gpulife/context.hpp>
#include <gpulife/errors.hpp>

#include "support/sim_test.hpp"

namespace gpulife {
namespace {

using nlohmann::json;

std::string read_text(const std::filesystem::path& path) {
  std::ifstream file(path, std::ios::binary);
  EXPECT_TRUE(file.good()) << path;
  return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
}

/// The snapshot directories under `dir`.
std::vector<std::filesystem::path> snapshots(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> found;
  if (!std::filesystem::exists(dir)) return found;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.is_directory() && entry.path().filename().string().starts_with("gpulife-oom-")) {
      found.push_back(entry.path());
    }
  }
  return found;
}

// Sim only: every test needs an allocation that certainly fails, and sizes and counts it can
// predict; a 4 MiB simulated device gives both, a GPU's capacity (and what else holds it) neither.
class OomDumpTest : public testing::SimTest {
 protected:
  static SimOptions small() {
    SimOptions options;
    options.capacity_bytes = std::size_t{4} << 20;
    return options;
  }
  OomDumpTest() : SimTest(small()) {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::temp_directory_path() /
           ("gpulife-oom-test-" + std::string(info->name()) + "-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override {
    ctx_.reset();
    std::filesystem::remove_all(dir_);
    SimTest::TearDown();
  }
  ContextOptions options() const {
    ContextOptions options;
    options.device = device_;
    options.debug.oom_dump = true;
    options.debug.oom_dump_dir = dir_.string();
    options.debug.report_when_clean = false;
    options.debug.use_environment = false;
    return options;
  }
  /// An allocation the device cannot hold: out of memory after the pressure chain.
  void exhaust() {
    EXPECT_THROW((void)ctx_->empty({std::int64_t{64} << 20}, DType::u8, {}, "too_big"),
                 OutOfMemoryError);
  }

  std::filesystem::path dir_;
  std::optional<Context> ctx_;
};

TEST_F(OomDumpTest, WritesTheLiveSetStatisticsAndRecentEventsAndSaysWhereInOneLine) {
  ContextOptions o = options();
  o.debug.stacks = true;
  ctx_.emplace(std::move(o));
  const int line = __LINE__ + 1;
  DeviceTensor weights = ctx_->empty({std::int64_t{256} << 10}, DType::f32, {}, "weights");
  const std::vector<float> host(1024, 1.0F);
  DeviceTensor cached = ctx_->cache().upload(std::span<const float>(host), {1024});
  DeviceTensor again = ctx_->cache().upload(std::span<const float>(host), {1024});  // a hit

  ::testing::internal::CaptureStderr();
  // Through the cache: the snapshot asks the cache for its statistics while a load is under way.
  const std::vector<float> big(std::size_t{4} << 20, 2.0F);
  EXPECT_THROW((void)ctx_->cache().upload(std::span<const float>(big),
                                          {static_cast<std::int64_t>(big.size())}),
               OutOfMemoryError);
  const std::string err = ::testing::internal::GetCapturedStderr();

  const auto found = snapshots(dir_);
  ASSERT_EQ(found.size(), 1U) << err;
  const std::filesystem::path snap = found[0];
  EXPECT_EQ(err, "gpulife: out of memory on " + device_.name() +
                     ", 16.00 MiB requested: snapshot written to " + snap.string() + "\n");
  for (const char* name : {"summary.txt", "memory.json", "leak_report.txt", "leak_report.json",
                           "timeline.json", "timeline.html"}) {
    EXPECT_TRUE(std::filesystem::is_regular_file(snap / name)) << name;
  }

  const json memory = json::parse(read_text(snap / "memory.json"));
  EXPECT_EQ(memory["request"]["bytes"], std::size_t{16} << 20);
  EXPECT_NE(memory["error"].get<std::string>().find("live tensors"), std::string::npos);
  EXPECT_EQ(memory["resource"]["bytes_in_use"], ctx_->resource().statistics().bytes_in_use);
  ASSERT_TRUE(memory["resource"].contains("pool")) << "the default resource is a pool";
  // the pool's own figures (memory_stats), as they were when the allocation failed
  const json& pool = memory["resource"]["pool"];
  EXPECT_EQ(pool["total"]["allocated_bytes"], memory["resource"]["bytes_in_use"]);
  EXPECT_GE(pool["total"]["segments"].get<std::size_t>(), 1U);
  EXPECT_GE(pool["total"]["reserved_bytes"].get<std::size_t>(),
            pool["total"]["allocated_bytes"].get<std::size_t>());
  EXPECT_EQ(memory["tensor_cache"]["hits"], 1);
  EXPECT_EQ(memory["tensor_cache"]["misses"], 1);
  EXPECT_EQ(memory["context"]["live_tensors"], ctx_->statistics().live_tensors);
  EXPECT_EQ(memory["device_memory"]["total_bytes"], std::size_t{4} << 20);

  const json report = json::parse(read_text(snap / "leak_report.json"));
  bool listed = false;
  for (const json& tensor : report["tensors"]) {
    if (tensor["tag"] != "weights") continue;
    listed = true;
    EXPECT_EQ(tensor["id"], weights.id());
    EXPECT_EQ(tensor["site"]["line"], line);
    EXPECT_NE(tensor["site"]["file"].get<std::string>().find("oom_dump_test.cpp"),
              std::string::npos);
    EXPECT_FALSE(tensor["stack"].empty()) << "stacks were asked for";
  }
  EXPECT_TRUE(listed) << report.dump(1);
  EXPECT_NE(read_text(snap / "leak_report.txt").find("'weights'"), std::string::npos);

  const json trace = json::parse(read_text(snap / "timeline.json"));
  std::vector<std::string> names;
  for (const json& event : trace["traceEvents"]) {
    if (event["ph"] == "i") names.push_back(event["name"]);
  }
  ASSERT_FALSE(names.empty());
  EXPECT_EQ(names.back(), "out_of_memory") << "the failure is the newest event";
  EXPECT_NE(std::find(names.begin(), names.end(), "cache_hit"), names.end());

  const std::string summary = read_text(snap / "summary.txt");
  EXPECT_NE(summary.find("request:  16.00 MiB"), std::string::npos) << summary;
  EXPECT_NE(summary.find("tensor cache: 1 live entry"), std::string::npos) << summary;
  EXPECT_NE(summary.find(ctx_->resource().name()), std::string::npos) << summary;
  const std::string html = read_text(snap / "timeline.html");
  EXPECT_NE(html.find("id=\"gpulife-trace\""), std::string::npos);
}

TEST_F(OomDumpTest, AtMostOnePerSecondAndNoMoreThanTheLimit) {
  ContextOptions o = options();
  o.debug.oom_dump_limit = 2;
  ctx_.emplace(std::move(o));
  ::testing::internal::CaptureStderr();
  exhaust();
  exhaust();  // the same second: no second snapshot
  EXPECT_EQ(snapshots(dir_).size(), 1U);
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  exhaust();
  EXPECT_EQ(snapshots(dir_).size(), 2U);
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  exhaust();  // past the limit
  EXPECT_EQ(snapshots(dir_).size(), 2U);
  const std::string err = ::testing::internal::GetCapturedStderr();
  std::size_t lines = 0;
  for (const char c : err) lines += c == '\n' ? 1 : 0;
  EXPECT_EQ(lines, 2U) << err;
}

TEST_F(OomDumpTest, IsBoundedInSize) {
  ContextOptions o = options();
  o.debug.oom_dump_max_tensors = 3;
  o.debug.oom_dump_max_events = 5;
  ctx_.emplace(std::move(o));
  std::vector<DeviceTensor> held;
  for (int i = 0; i < 10; ++i) {
    held.push_back(ctx_->empty({1024 * (i + 1)}, DType::u8, {}, "t" + std::to_string(i)));
  }
  ::testing::internal::CaptureStderr();
  exhaust();
  (void)::testing::internal::GetCapturedStderr();
  const auto found = snapshots(dir_);
  ASSERT_EQ(found.size(), 1U);
  const json report = json::parse(read_text(found[0] / "leak_report.json"));
  ASSERT_EQ(report["tensors"].size(), 3U) << "only the largest";
  EXPECT_EQ(report["tensors"][0]["tag"], "t9");
  EXPECT_EQ(report["summary"]["omitted_tensors"], 7);
  EXPECT_EQ(report["summary"]["leaked_tensors"], 10) << "the totals still count them";
  std::size_t omitted = 0;
  for (int i = 0; i < 7; ++i) omitted += static_cast<std::size_t>(1024 * (i + 1));
  EXPECT_EQ(report["summary"]["omitted_bytes"], omitted);
  EXPECT_NE(read_text(found[0] / "leak_report.txt").find("7 smaller tensors not listed"),
            std::string::npos);
  const json trace = json::parse(read_text(found[0] / "timeline.json"));
  std::size_t instants = 0;
  for (const json& event : trace["traceEvents"]) instants += event["ph"] == "i" ? 1U : 0U;
  EXPECT_EQ(instants, 5U);
  EXPECT_EQ(trace["otherData"]["recorded"], 11);
  EXPECT_EQ(trace["otherData"]["dropped"], 6);
}

TEST_F(OomDumpTest, ADirectoryThatCannotBeMadeIsSaidAndTheErrorStillThrown) {
  const std::filesystem::path file = dir_;  // a file where the directory should be
  std::ofstream(file) << "in the way";
  ContextOptions o = options();
  o.debug.oom_dump_dir = (file / "below").string();
  ctx_.emplace(std::move(o));
  ::testing::internal::CaptureStderr();
  exhaust();
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("the snapshot could not be written"), std::string::npos) << err;
  std::filesystem::remove(file);
}

TEST_F(OomDumpTest, OffByDefault) {
  ContextOptions o = options();
  o.debug.oom_dump = false;
  o.debug.timeline = true;
  ctx_.emplace(std::move(o));
  ::testing::internal::CaptureStderr();
  exhaust();
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
  EXPECT_TRUE(snapshots(dir_).empty());
}

}  // namespace
}  // namespace gpulife
