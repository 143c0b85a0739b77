// SPDX-License-Identifier: Apache-2.0
// The timeline: events in a bounded ring, exported as a Chrome trace that Perfetto opens. The
// exported file is read back with an independent JSON parser.

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <gpulife/context.hpp>
#include <gpulife/errors.hpp>
#include <gpulife/weak/weak_key_map.hpp>

#include "support/backend_test.hpp"
#include "support/context_test.hpp"
#include "tensor/tensor_arena.hpp"

namespace gpulife {
namespace {

using nlohmann::json;
using testing::BackendContextTest;
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
  std::string test = info->name();  // "Name/sim" for a test run on each backend
  std::replace(test.begin(), test.end(), '/', '-');
  return std::filesystem::temp_directory_path() / ("gpulife-" + test + "-" + name);
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

class TimelineTest : public BackendContextTest {
 protected:
  explicit TimelineTest(std::size_t capacity = std::size_t{1} << 16)
      : BackendContextTest({}, timeline_mode(capacity)) {}
};

TEST_P(TimelineTest, ExportsAChromeTraceWhoseCountersEndAtTheStatistics) {
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
    ASSERT_TRUE(ph == "M" || ph == "i" || ph == "C" || ph == "b" || ph == "e") << event;
    if (ph == "M") continue;
    ASSERT_TRUE(event["ts"].is_number()) << event;
    EXPECT_GE(event["ts"].get<double>(), previous_ts) << "events are in time order";
    previous_ts = event["ts"].get<double>();
    EXPECT_EQ(event["pid"], ::getpid());
    if (ph == "i") {
      EXPECT_EQ(event["s"], "t");
      EXPECT_EQ(event["tid"], ::syscall(SYS_gettid)) << "the OS id of the thread that caused it";
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

TEST_P(SmallTimelineTest, TheRingKeepsTheNewestEvents) {
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

TEST_P(TimelineTest, CacheEventsAndTheCacheCounterComeFromTheCache) {
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

// Sim only: a small simulated device makes running out of memory cheap and certain.
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

TEST_P(TimelineTest, TagsAreEscaped) {
  DeviceTensor t = ctx().empty({1}, DType::u8, {}, "a \"tag\"\\\n\x01");
  const json trace = json::parse(ctx().timeline().to_chrome_trace());
  EXPECT_EQ(instants(trace).at(0)["args"]["tag"], "a \"tag\"\\\n\x01");
}

/// True if `text` is well-formed UTF-8 (no overlong forms, surrogates or code points past
/// U+10FFFF): checked here by hand, apart from the JSON libraries.
bool valid_utf8(const std::string& text) {
  std::size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    std::size_t extra = 0;
    std::uint32_t code = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xC2 && c <= 0xDF) {
      extra = 1;
      code = c & 0x1FU;
    } else if (c >= 0xE0 && c <= 0xEF) {
      extra = 2;
      code = c & 0x0FU;
    } else if (c >= 0xF0 && c <= 0xF4) {
      extra = 3;
      code = c & 0x07U;
    } else {
      return false;
    }
    if (i + extra >= text.size()) return false;
    for (std::size_t k = 1; k <= extra; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xC0U) != 0x80U) return false;
      code = (code << 6U) | (next & 0x3FU);
    }
    if ((extra == 2 && (code < 0x800 || (code >= 0xD800 && code <= 0xDFFF))) ||
        (extra == 3 && (code < 0x10000 || code > 0x10FFFF))) {
      return false;
    }
    i += extra + 1;
  }
  return true;
}

// Tests that make their own contexts, on the test's device.
class TimelineLifetimes : public testing::BackendTest {};

// A tag is the program's bytes: whatever they are, the trace and the leak report stay valid
// JSON (invalid UTF-8 becomes U+FFFD) that a strict parser reads back.
TEST_P(TimelineLifetimes, InvalidUtf8InATagLeavesBothFilesValid) {
  ContextOptions options = timeline_mode();
  options.debug.leaks = true;
  options.debug.report_when_clean = false;
  options.device = device_;
  Context ctx(std::move(options));
  const std::string bad =
      std::string("w\xff\xfe") + "\xc3" + "\xe2\x82" + "</script> \xf0\x9f\x98\x80";
  DeviceTensor t = ctx.empty({4}, DType::u8, {}, bad);

  const std::string trace_text = ctx.timeline().to_chrome_trace();
  const std::string report_text = ctx.leak_report().to_json();
  EXPECT_TRUE(valid_utf8(trace_text));
  EXPECT_TRUE(valid_utf8(report_text));
  const json trace = json::parse(trace_text);  // strict: throws on ill-formed UTF-8
  const json report = json::parse(report_text);
  const std::string tag = instants(trace).at(0)["args"]["tag"];
  EXPECT_EQ(tag, "w\uFFFD\uFFFD\uFFFD\uFFFD</script> \U0001F600")
      << "bad bytes replaced, good kept";
  EXPECT_EQ(report["tensors"][0]["tag"], tag);
  t.reset();
}

// Each tensor's life is a span from its allocation to its release, with what a reader needs to
// find it: id, bytes, tag, dtype, shape, stream and the allocation site (and the stack).
TEST_P(TimelineLifetimes, EachTensorIsASpanWithItsSiteAndStack) {
  ContextOptions options = timeline_mode();
  options.debug.stacks = true;
  options.debug.report_when_clean = false;
  options.device = device_;
  Context ctx(std::move(options));
  const int line = __LINE__ + 1;
  DeviceTensor weights = ctx.empty({16, 4}, DType::f32, {}, "weights");
  DeviceTensor scratch = ctx.empty({256}, DType::u8, {}, "scratch");
  const std::uint64_t scratch_id = scratch.id();
  scratch.reset();

  const json trace = json::parse(ctx.timeline().to_chrome_trace());
  std::map<std::string, json> begins;
  std::map<std::string, json> ends;
  for (const json& event : trace["traceEvents"]) {
    if (event.value("cat", "") != "tensor") continue;
    (event["ph"] == "b" ? begins : ends)[event["id"].get<std::string>()] = event;
  }
  ASSERT_EQ(begins.size(), 2U) << trace.dump(1);
  ASSERT_EQ(ends.size(), 1U) << "a tensor still alive has no end";
  char hex[24];
  std::snprintf(hex, sizeof hex, "0x%llx", static_cast<unsigned long long>(weights.id()));
  const json& w = begins.at(hex);
  EXPECT_EQ(w["name"], "weights");
  EXPECT_EQ(w["args"]["id"], weights.id());
  EXPECT_EQ(w["args"]["bytes"], 256);
  EXPECT_EQ(w["args"]["tag"], "weights");
  EXPECT_EQ(w["args"]["dtype"], "f32");
  EXPECT_EQ(w["args"]["shape"], "[16, 4]");
  const std::string site = w["args"]["site"];
  EXPECT_NE(site.find("timeline_test.cpp:" + std::to_string(line)), std::string::npos) << site;
  ASSERT_TRUE(w["args"]["stack"].is_array());
  ASSERT_FALSE(w["args"]["stack"].empty());
  EXPECT_NE(w["args"]["stack"][0].get<std::string>().find("timeline_test.cpp"), std::string::npos)
      << w["args"]["stack"];
  std::snprintf(hex, sizeof hex, "0x%llx", static_cast<unsigned long long>(scratch_id));
  ASSERT_TRUE(ends.contains(hex));
  EXPECT_GE(ends.at(hex)["ts"].get<double>(), begins.at(hex)["ts"].get<double>());
  EXPECT_EQ(begins.at(hex)["args"]["bytes"], 256);
}

// A cache hit is linked by a flow to the upload whose memory it hands out, from whichever
// thread it came.
TEST_P(TimelineLifetimes, CacheHitsAreLinkedToTheUploadTheyReuse) {
  ContextOptions options = timeline_mode();
  options.device = device_;
  Context ctx(std::move(options));
  const std::vector<float> host(64, 3.0F);
  DeviceTensor first = ctx.cache().upload(std::span<const float>(host), {64}, {}, {.tag = "w"});
  DeviceTensor second = ctx.cache().upload(std::span<const float>(host), {64});
  DeviceTensor third;
  std::thread([&] { third = ctx.cache().upload(std::span<const float>(host), {64}); }).join();

  const json trace = json::parse(ctx.timeline().to_chrome_trace());
  json upload;
  std::vector<json> hits;
  std::map<std::uint64_t, json> starts;
  std::map<std::uint64_t, json> finishes;
  for (const json& event : trace["traceEvents"]) {
    if (event["ph"] == "i" && event["name"] == "upload") upload = event;
    if (event["ph"] == "i" && event["name"] == "cache_hit") hits.push_back(event);
    if (event["ph"] == "s") starts[event["id"]] = event;
    if (event["ph"] == "f") finishes[event["id"]] = event;
  }
  ASSERT_FALSE(upload.is_null());
  ASSERT_EQ(hits.size(), 2U);
  ASSERT_EQ(starts.size(), 2U) << "one flow per hit";
  ASSERT_EQ(finishes.size(), 2U);
  std::size_t i = 0;
  for (const auto& [id, start] : starts) {
    const json& finish = finishes.at(id);
    EXPECT_EQ(start["cat"], "cache_reuse");
    EXPECT_EQ(start["ts"], upload["ts"]) << "the flow starts at the upload";
    EXPECT_EQ(start["tid"], upload["tid"]);
    EXPECT_EQ(finish["ts"], hits[i]["ts"]) << "and ends at the hit";
    EXPECT_EQ(finish["tid"], hits[i]["tid"]);
    EXPECT_EQ(finish["bp"], "e");
    EXPECT_EQ(finish["args"]["memory_id"], upload["args"]["id"]);
    EXPECT_EQ(hits[i]["args"]["memory_id"], upload["args"]["id"]);
    ++i;
  }
  EXPECT_NE(hits[0]["tid"], hits[1]["tid"]) << "the second hit came from another thread";
}

// pid is the process, tid the operating system's thread id, and each thread is named.
TEST_P(TimelineLifetimes, ThreadsAreTheOperatingSystemsAndNamed) {
  ContextOptions options = timeline_mode();
  options.device = device_;
  Context ctx(std::move(options));
  DeviceTensor a = ctx.empty({4}, DType::u8, {}, "main");
  long worker_tid = 0;
  std::thread([&] {
    ::pthread_setname_np(::pthread_self(), "gl-worker");
    worker_tid = ::syscall(SYS_gettid);
    DeviceTensor b = ctx.empty({4}, DType::u8, {}, "worker");
  }).join();

  const Timeline timeline = ctx.timeline();
  EXPECT_EQ(timeline.process_id, static_cast<std::uint32_t>(::getpid()));
  const json trace = json::parse(timeline.to_chrome_trace());
  std::map<long, std::string> names;
  std::set<long> tids;
  for (const json& event : trace["traceEvents"]) {
    EXPECT_EQ(event["pid"], ::getpid());
    if (event["ph"] == "M" && event["name"] == "thread_name") {
      names[event["tid"].get<long>()] = event["args"]["name"];
    }
    if (event["ph"] == "i") tids.insert(event["tid"].get<long>());
  }
  EXPECT_EQ(tids, (std::set<long>{::syscall(SYS_gettid), worker_tid}));
  ASSERT_TRUE(names.contains(worker_tid));
  EXPECT_EQ(names.at(worker_tid), "gl-worker");
  EXPECT_TRUE(names.contains(::syscall(SYS_gettid)));
}

// The program's expiry callbacks are recorded (as the documentation says); gpulife's own
// (the cache's, WeakKeyMap's) are not, and finalizers are recorded as finalizers.
TEST_P(TimelineLifetimes, RecordsTheProgramsCallbacksOnly) {
  ContextOptions options = timeline_mode();
  options.device = device_;
  Context ctx(std::move(options));
  WeakTensor watched;
  {
    const std::vector<float> host(16, 1.0F);
    DeviceTensor t = ctx.cache().upload(std::span<const float>(host), {16});
    watched = WeakTensor(t, [](const TensorInfo&) {});
    (void)t.on_release([](const TensorInfo&) {});
    WeakKeyMap<int> map;
    map.insert_or_assign(t, 7);
  }
  std::map<std::string, int> counts;
  for (const TimelineEvent& event : ctx.timeline().events)
    ++counts[std::string(to_string(event.kind))];
  EXPECT_EQ(counts["finalizer_run"], 1);
  EXPECT_EQ(counts["expiry_callback_run"], 1);
  const ContextStatistics stats = ctx.statistics();
  EXPECT_EQ(stats.finalizers_run, 1U);
  EXPECT_EQ(stats.expiry_callbacks_run, 1U);
}

TEST_P(TimelineTest, DestructionWritesTheTraceWhenAPathIsSet) {
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

class TimelineOff : public BackendContextTest {
 protected:
  TimelineOff() : BackendContextTest({}, {.debug = {.use_environment = false}}) {}
};

TEST_P(TimelineOff, RecordsNothingAndStillExportsAValidTrace) {
  DeviceTensor t = ctx().empty({8}, DType::u8);
  const Timeline timeline = ctx().timeline();
  EXPECT_FALSE(timeline.recording);
  EXPECT_TRUE(timeline.events.empty());
  const json trace = json::parse(timeline.to_chrome_trace());
  EXPECT_TRUE(instants(trace).empty());
  EXPECT_FALSE(trace["otherData"]["recording"].get<bool>());
}

INSTANTIATE_TEST_SUITE_P(Backends, TimelineTest, testing::backends(), testing::backend_name);
INSTANTIATE_TEST_SUITE_P(Backends, SmallTimelineTest, testing::backends(), testing::backend_name);
INSTANTIATE_TEST_SUITE_P(Backends, TimelineLifetimes, testing::backends(), testing::backend_name);
INSTANTIATE_TEST_SUITE_P(Backends, TimelineOff, testing::backends(), testing::backend_name);

}  // namespace
}  // namespace gpulife
