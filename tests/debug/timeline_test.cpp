// SPDX-License-Identifier: Apache-2.0
// The timeline: events in a bounded ring, exported as a Chrome trace that Perfetto opens. The
// exported file is read back with an independent JSON parser.

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <gpulife/context.hpp>
#include <gpulife/errors.hpp>

#include "support/context_test.hpp"
#include "tensor/tensor_arena.hpp"

namespace gpulife {
namespace {

using nlohmann::json;
using testing::ContextTest;

ContextOptions timeline_mode(std::size_t capacity = std::size_t{1} << 16) {
  ContextOptions options;
  options.debug.timeline = true;
  options.debug.timeline_capacity = capacity;
  options.debug.use_environment = false;
  return options;
}

std::filesystem::path temp_file(const std::string& name) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return std::filesystem::temp_directory_path() /
         ("gpulife-" + std::string(info->name()) + "-" + name);
}

json read_json(const std::filesystem::path& path) {
  std::ifstream file(path);
  EXPECT_TRUE(file.good()) << path;
  return json::parse(file);
}

/// The instant events of a trace, in order.
std::vector<json> instants(const json& trace) {
  std::vector<json> events;
  for (const json& event : trace["traceEvents"]) {
    if (event["ph"] == "i") events.push_back(event);
  }
  return events;
}

/// The last value of each counter track.
std::map<std::string, std::size_t> last_counters(const json& trace) {
  std::map<std::string, std::size_t> last;
  for (const json& event : trace["traceEvents"]) {
    if (event["ph"] == "C") last[event["name"]] = event["args"]["bytes"].get<std::size_t>();
  }
  return last;
}

class TimelineTest : public ContextTest {
 protected:
  explicit TimelineTest(std::size_t capacity = std::size_t{1} << 16)
      : ContextTest({}, timeline_mode(capacity)) {}
};

TEST_F(TimelineTest, ExportsAChromeTraceWhoseCountersEndAtTheStatistics) {
  constexpr std::size_t mib = std::size_t{1} << 20;
  DeviceTensor a = ctx().empty({static_cast<std::int64_t>(mib)}, DType::u8, {}, "a");
  const std::vector<float> host(1024, 2.0F);
  DeviceTensor b = ctx().upload(std::span<const float>(host), {1024}, {}, "b");
  (void)b.on_release([](const TensorInfo&) {});
  const std::uint64_t a_id = a.id();
  const std::uint64_t b_id = b.id();
  a.reset();  // its block goes to the pool's cache
  b.reset();
  DeviceTensor c = ctx().empty({static_cast<std::int64_t>(mib / 2)}, DType::u8, {}, "c");

  const std::filesystem::path path = temp_file("trace.json");
  ctx().timeline().write_chrome_trace(path);
  const json trace = read_json(path);
  std::filesystem::remove(path);

  // structure: the object form of the Trace Event format
  ASSERT_TRUE(trace.is_object());
  ASSERT_TRUE(trace["traceEvents"].is_array());
  EXPECT_EQ(trace["displayTimeUnit"], "ms");
  EXPECT_EQ(trace["otherData"]["dropped"], 0);
  double previous_ts = 0.0;
  for (const json& event : trace["traceEvents"]) {
    ASSERT_TRUE(event.contains("name") && event["name"].is_string()) << event;
    ASSERT_TRUE(event.contains("ph") && event["ph"].is_string()) << event;
    ASSERT_TRUE(event.contains("pid")) << event;
    const std::string ph = event["ph"];
    ASSERT_TRUE(ph == "M" || ph == "i" || ph == "C") << event;
    if (ph == "M") continue;
    ASSERT_TRUE(event["ts"].is_number()) << event;
    EXPECT_GE(event["ts"].get<double>(), previous_ts) << "events are in time order";
    previous_ts = event["ts"].get<double>();
    if (ph == "i") {
      EXPECT_EQ(event["s"], "t");
      EXPECT_TRUE(event["tid"].is_number());
      EXPECT_TRUE(event["args"]["id"].is_number());
      EXPECT_TRUE(event["args"]["bytes"].is_number());
      EXPECT_TRUE(event["args"]["tag"].is_string());
    }
  }

  // the operations, in order, with ids, sizes and tags
  const std::vector<json> ops = instants(trace);
  const std::vector<std::string> names = {"allocate", "allocate",      "upload",  "free",
                                          "free",     "finalizer_run", "allocate"};
  ASSERT_EQ(ops.size(), names.size()) << trace.dump(1);
  for (std::size_t i = 0; i < names.size(); ++i) EXPECT_EQ(ops[i]["name"], names[i]) << i;
  EXPECT_EQ(ops[0]["args"]["id"], a_id);
  EXPECT_EQ(ops[0]["args"]["bytes"], mib);
  EXPECT_EQ(ops[0]["args"]["tag"], "a");
  EXPECT_EQ(ops[2]["args"]["id"], b_id);
  EXPECT_EQ(ops[2]["args"]["bytes"], 4096);
  EXPECT_EQ(ops[3]["args"]["id"], a_id);
  EXPECT_EQ(ops[5]["args"]["id"], b_id);
  EXPECT_EQ(ops[6]["args"]["id"], c.id());

  // the counter tracks end where the statistics are
  const ContextStatistics stats = ctx().statistics();
  const std::map<std::string, std::size_t> last = last_counters(trace);
  ASSERT_EQ(last.size(), 3U) << trace.dump(1);
  EXPECT_EQ(last.at("bytes_in_use"), stats.live_bytes);
  EXPECT_EQ(last.at("pool_cached_bytes"), stats.resource.bytes_cached);
  EXPECT_EQ(last.at("tensor_cache_bytes"), 0U);
  EXPECT_EQ(stats.live_bytes, mib / 2);
  EXPECT_GT(stats.resource.bytes_cached, 0U) << "the test must see the pool's counter move";

  // and along the way, each counter sampled after the event it follows: one MiB in use after
  // the first allocation; after a's free only b's 4 KiB in use and a's block in the pool
  std::map<std::string, std::size_t> after_first_alloc;
  std::map<std::string, std::size_t> after_free_a;
  std::size_t instant = 0;
  for (const json& event : trace["traceEvents"]) {
    if (event["ph"] == "i") ++instant;
    if (event["ph"] != "C") continue;
    const std::size_t value = event["args"]["bytes"].get<std::size_t>();
    if (instant == 1) after_first_alloc[event["name"]] = value;
    if (instant == 4) after_free_a[event["name"]] = value;  // the 4th operation: free(a)
  }
  EXPECT_EQ(after_first_alloc["bytes_in_use"], mib);
  EXPECT_EQ(after_free_a["bytes_in_use"], 4096U);
  // a's block went back to the pool's 2 MiB segment, which also holds b's block
  EXPECT_EQ(after_free_a["pool_cached_bytes"], 2 * mib - 4096);
}

class SmallTimelineTest : public TimelineTest {
 protected:
  SmallTimelineTest() : TimelineTest(4) {}
};

TEST_F(SmallTimelineTest, TheRingKeepsTheNewestEvents) {
  std::uint64_t last_id = 0;
  for (int i = 0; i < 5; ++i) {
    DeviceTensor t = ctx().empty({16}, DType::u8, {}, "t" + std::to_string(i));
    last_id = t.id();
  }
  const Timeline timeline = ctx().timeline();
  EXPECT_TRUE(timeline.recording);
  EXPECT_EQ(timeline.capacity, 4U);
  EXPECT_EQ(timeline.recorded, 10U);
  EXPECT_EQ(timeline.dropped, 6U);
  ASSERT_EQ(timeline.events.size(), 4U);
  EXPECT_EQ(timeline.events[0].kind, TimelineEventKind::allocate);
  EXPECT_EQ(timeline.events[0].tag, "t3");
  EXPECT_EQ(timeline.events[3].kind, TimelineEventKind::free);
  EXPECT_EQ(timeline.events[3].tensor_id, last_id);
  const json trace = json::parse(timeline.to_chrome_trace());
  EXPECT_EQ(trace["otherData"]["dropped"], 6);
  EXPECT_EQ(instants(trace).size(), 4U);
}

TEST_F(TimelineTest, CacheEventsAndTheCacheCounterComeFromTheCache) {
  const std::vector<std::uint8_t> bytes(64, 1);
  {
    DeviceTensor t = ctx().cache().upload(std::span<const std::uint8_t>(bytes), {64}, {},
                                          {.retention = Retention::warm, .tag = "cached"});
    DeviceTensor hit = ctx().cache().upload(std::span<const std::uint8_t>(bytes), {64});
  }
  EXPECT_GE(ctx().cache().clear_warm(), 64U);  // an eviction

  const json trace = json::parse(ctx().timeline().to_chrome_trace());
  const std::vector<json> ops = instants(trace);
  ASSERT_EQ(ops.size(), 6U);
  EXPECT_EQ(ops[0]["name"], "allocate");
  EXPECT_EQ(ops[1]["name"], "upload");
  EXPECT_EQ(ops[2]["name"], "cache_miss");
  EXPECT_EQ(ops[3]["name"], "cache_hit");
  EXPECT_EQ(ops[4]["name"], "cache_eviction");
  EXPECT_EQ(ops[5]["name"], "free");
  std::vector<std::size_t> cache_track;
  for (const json& event : trace["traceEvents"]) {
    if (event["ph"] == "C" && event["name"] == "tensor_cache_bytes") {
      cache_track.push_back(event["args"]["bytes"].get<std::size_t>());
    }
  }
  EXPECT_EQ(cache_track, (std::vector<std::size_t>{0, 64, 0}));
}

class OutOfMemoryTimelineTest : public ContextTest {
 protected:
  static SimOptions small() {
    SimOptions options;
    options.capacity_bytes = std::size_t{1} << 20;
    return options;
  }
  OutOfMemoryTimelineTest() : ContextTest(small(), timeline_mode()) {}
};

TEST_F(OutOfMemoryTimelineTest, RecordsTheFailedRequest) {
  EXPECT_THROW((void)ctx().empty({std::int64_t{4} << 20}, DType::u8), OutOfMemoryError);
  const Timeline timeline = ctx().timeline();
  ASSERT_EQ(timeline.events.size(), 1U);
  EXPECT_EQ(timeline.events[0].kind, TimelineEventKind::out_of_memory);
  EXPECT_EQ(timeline.events[0].bytes, std::size_t{4} << 20);
  EXPECT_EQ(timeline.events[0].tensor_id, 0U);
}

TEST_F(TimelineTest, TagsAreEscaped) {
  DeviceTensor t = ctx().empty({1}, DType::u8, {}, "a \"tag\"\\\n\x01");
  const json trace = json::parse(ctx().timeline().to_chrome_trace());
  EXPECT_EQ(instants(trace).at(0)["args"]["tag"], "a \"tag\"\\\n\x01");
}

TEST_F(TimelineTest, DestructionWritesTheTraceWhenAPathIsSet) {
  const std::filesystem::path path = temp_file("shutdown.json");
  std::filesystem::remove(path);
  {
    ContextOptions options = timeline_mode();
    options.device = device_;
    options.debug.timeline_path = path.string();
    Context local(std::move(options));
    DeviceTensor t = local.empty({8}, DType::u8, {}, "x");
  }
  const json trace = read_json(path);
  std::filesystem::remove(path);
  const std::vector<json> ops = instants(trace);
  ASSERT_EQ(ops.size(), 2U);
  EXPECT_EQ(ops[0]["name"], "allocate");
  EXPECT_EQ(ops[1]["name"], "free");
}

class TimelineOff : public ContextTest {
 protected:
  TimelineOff() : ContextTest({}, {.debug = {.use_environment = false}}) {}
};

TEST_F(TimelineOff, RecordsNothingAndStillExportsAValidTrace) {
  DeviceTensor t = ctx().empty({8}, DType::u8);
  const Timeline timeline = ctx().timeline();
  EXPECT_FALSE(timeline.recording);
  EXPECT_TRUE(timeline.events.empty());
  const json trace = json::parse(timeline.to_chrome_trace());
  EXPECT_TRUE(instants(trace).empty());
  EXPECT_FALSE(trace["otherData"]["recording"].get<bool>());
}

}  // namespace
}  // namespace gpulife
