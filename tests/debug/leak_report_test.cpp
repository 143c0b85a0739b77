// SPDX-License-Identifier: Apache-2.0
// Leak mode: the live set, its report in text and JSON, callback cycles, pinned cache entries and
// pool blocks without an owner.

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <gpulife/source_location.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <gpulife/context.hpp>
#include <gpulife/memory/direct_resource.hpp>
#include <gpulife/tensor/weak_tensor.hpp>

#include "support/backend_test.hpp"

namespace gpulife {
namespace {

using testing::BackendContextTest;

ContextOptions leak_mode(bool stacks = false) {
  ContextOptions options;
  options.debug.leaks = true;
  options.debug.stacks = stacks;
  options.debug.use_environment = false;
  return options;
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

class LeakReportTest : public BackendContextTest {
 protected:
  LeakReportTest() : BackendContextTest({}, leak_mode()) {}
};

TEST_P(LeakReportTest, ListsALiveTensorWithEverythingAboutIt) {
  Stream stream(device_);
  const auto before = std::chrono::system_clock::now();
  const std::uint32_t line = SourceLocation::current().line() + 1;
  DeviceTensor t = ctx().empty({4, 8}, DType::f32, stream, "weights");
  const auto after = std::chrono::system_clock::now();

  const LeakReport report = ctx().leak_report();
  EXPECT_TRUE(report.tracking);
  EXPECT_EQ(report.device, device_.name());
  ASSERT_EQ(report.tensors.size(), 1U);
  const LiveTensor& live = report.tensors[0];
  EXPECT_EQ(live.id, t.id());
  EXPECT_EQ(live.bytes, 128U);
  EXPECT_EQ(live.shape, Shape({4, 8}));
  EXPECT_EQ(live.dtype, DType::f32);
  EXPECT_EQ(live.tag, "weights");
  EXPECT_EQ(live.device, device_.name());
  EXPECT_EQ(live.stream_id, stream.id());
  EXPECT_GE(live.created, before);
  EXPECT_LE(live.created, after);
  EXPECT_TRUE(ends_with(live.site.file, "leak_report_test.cpp")) << live.site.file;
  EXPECT_EQ(live.site.line, line);
  EXPECT_NE(live.site.function.find("ListsALiveTensorWithEverythingAboutIt"), std::string::npos)
      << live.site.function;
  EXPECT_TRUE(live.stack.empty()) << "stacks were not asked for";
  EXPECT_EQ(live.view_of, 0U);
  EXPECT_FALSE(live.external);
  EXPECT_EQ(live.handles, 1U);
  EXPECT_EQ(live.status, LiveTensorStatus::leaked);
  EXPECT_EQ(report.leaked_tensors(), 1U);
  EXPECT_EQ(report.leaked_bytes(), 128U);
  EXPECT_TRUE(report.has_leaks());
}

TEST_P(LeakReportTest, ForgetsTensorsThatDied) {
  DeviceTensor a = ctx().empty({16}, DType::u8, {}, "a");
  DeviceTensor b = ctx().upload(std::span<const float>(std::vector<float>(4, 1.0F)), {4}, {}, "b");
  a.reset();
  LeakReport report = ctx().leak_report();
  ASSERT_EQ(report.tensors.size(), 1U);
  EXPECT_EQ(report.tensors[0].tag, "b");
  b.reset();
  report = ctx().leak_report();
  EXPECT_TRUE(report.tracking);
  EXPECT_TRUE(report.tensors.empty());
  EXPECT_FALSE(report.has_leaks());
  EXPECT_NE(report.to_text().find("no leaks"), std::string::npos) << report.to_text();
}

DeviceTensor make_small(Context& ctx) { return ctx.empty({64}, DType::u8, {}, "small"); }

TEST_P(LeakReportTest, TextGroupsBySiteLargestFirstWithTotals) {
  std::vector<DeviceTensor> smalls;
  for (int i = 0; i < 3; ++i) smalls.push_back(make_small(ctx()));
  DeviceTensor big = ctx().empty({1 << 20}, DType::u8, {}, "big");

  const std::string text = ctx().leak_report().to_text();
  const std::size_t big_site = text.find("1.00 MiB in 1 tensor made at");
  const std::size_t small_site = text.find("192 B in 3 tensors made at");
  ASSERT_NE(big_site, std::string::npos) << text;
  ASSERT_NE(small_site, std::string::npos) << text;
  EXPECT_LT(big_site, small_site) << "the largest site comes first\n" << text;
  EXPECT_NE(text.find("make_small"), std::string::npos) << "the small site is the helper\n" << text;
  EXPECT_NE(text.find("4 tensors leaked holding 1.00 MiB at 2 sites"), std::string::npos) << text;
  EXPECT_NE(text.find("total: 4 tensors holding 1.00 MiB"), std::string::npos) << text;
  EXPECT_NE(text.find("tensor #" + std::to_string(big.id()) + " 'big' u8 [1048576]"),
            std::string::npos)
      << text;
}

TEST_P(LeakReportTest, JsonFormCarriesTheSameFacts) {
  DeviceTensor a = ctx().empty({2, 3}, DType::i32, {}, "tag \"quoted\"\n");
  DeviceTensor b = make_small(ctx());
  const LeakReport report = ctx().leak_report();
  const nlohmann::json json = nlohmann::json::parse(report.to_json());
  EXPECT_TRUE(json["tracking"].get<bool>());
  EXPECT_EQ(json["device"], device_.name());
  EXPECT_EQ(json["summary"]["leaked_tensors"], 2);
  EXPECT_EQ(json["summary"]["leaked_bytes"], 24 + 64);
  EXPECT_TRUE(json["summary"]["has_leaks"].get<bool>());
  ASSERT_EQ(json["sites"].size(), 2U);
  EXPECT_EQ(json["sites"][0]["bytes"], 64) << "largest site first";
  EXPECT_EQ(json["sites"][0]["ids"][0], b.id());
  ASSERT_EQ(json["tensors"].size(), 2U);
  const nlohmann::json& first = json["tensors"][1];  // largest first: b (64 B), then a (24 B)
  EXPECT_EQ(first["id"], a.id());
  EXPECT_EQ(first["tag"], "tag \"quoted\"\n");
  EXPECT_EQ(first["dtype"], "i32");
  EXPECT_EQ(first["shape"], nlohmann::json::array({2, 3}));
  EXPECT_EQ(first["status"], "leaked");
  EXPECT_EQ(first["site"]["line"], report.tensors[1].site.line);
  EXPECT_TRUE(json["pinned"].empty());
  EXPECT_TRUE(json["unowned_blocks"].empty());
}

TEST_P(LeakReportTest, ViewsAreListedWithTheirRootAndCountedOnce) {
  DeviceTensor root = ctx().empty({8, 16}, DType::f32, {}, "root");
  const std::uint64_t root_id = root.id();
  const std::uint32_t line = SourceLocation::current().line() + 1;
  DeviceTensor row = root.slice(0, 2, 3);
  root.reset();  // the view keeps it alive

  const LeakReport report = ctx().leak_report();
  ASSERT_EQ(report.tensors.size(), 2U);
  const LiveTensor& kept_root = report.tensors[0];
  const LiveTensor& view = report.tensors[1];
  EXPECT_EQ(kept_root.id, root_id);
  EXPECT_EQ(kept_root.handles, 1U) << "held by the view";
  EXPECT_EQ(view.id, row.id());
  EXPECT_EQ(view.view_of, root_id);
  EXPECT_EQ(view.site.line, line);
  EXPECT_EQ(view.bytes, 64U);
  EXPECT_EQ(report.leaked_bytes(), 512U) << "a view's bytes are its root's";
  EXPECT_NE(report.to_text().find("(view of #" + std::to_string(root_id) + ")"), std::string::npos);
}

TEST_P(LeakReportTest, NamesATensorKeptAliveOnlyByItsOwnFinalizer) {
  std::uint64_t id = 0;
  {
    DeviceTensor t = ctx().empty({64}, DType::u8, {}, "cycle");
    id = t.id();
    // The trap the seed warns about: the finalizer holds its own tensor, which can never die.
    (void)t.on_release([t](const TensorInfo&) { (void)t.bytes(); });
  }
  const LeakReport report = ctx().leak_report();
  ASSERT_EQ(report.tensors.size(), 1U);
  const LiveTensor& live = report.tensors[0];
  EXPECT_EQ(live.id, id);
  EXPECT_EQ(live.handles, 1U);
  EXPECT_EQ(live.callback_handles, 1U);
  EXPECT_EQ(live.status, LiveTensorStatus::kept_by_callback);
  EXPECT_EQ(report.leaked_tensors(), 1U) << "a cycle is a leak";
  const std::string text = report.to_text();
  EXPECT_NE(text.find("tensor #" + std::to_string(id) + " 'cycle'"), std::string::npos) << text;
  EXPECT_NE(text.find("kept alive only by its own finalizer or expiry callback, which holds 1 "
                      "handle to it"),
            std::string::npos)
      << text;
  EXPECT_EQ(nlohmann::json::parse(report.to_json())["tensors"][0]["status"], "kept_by_callback");
  // The context's shutdown runs the finalizer, which drops the captured handle and ends it.
}

TEST_P(LeakReportTest, NamesATensorKeptAliveOnlyByAnExpiryCallback) {
  DeviceTensor t = ctx().empty({32}, DType::u8, {}, "watched");
  const std::uint64_t id = t.id();
  WeakTensor watcher(t, [t](const TensorInfo&) { (void)t.bytes(); });
  t.reset();
  LeakReport report = ctx().leak_report();
  ASSERT_EQ(report.tensors.size(), 1U);
  EXPECT_EQ(report.tensors[0].id, id);
  EXPECT_EQ(report.tensors[0].status, LiveTensorStatus::kept_by_callback);

  watcher = WeakTensor();  // cancels the callback, which drops what it captured
  report = ctx().leak_report();
  EXPECT_TRUE(report.tensors.empty());
}

TEST_P(LeakReportTest, ATensorAlsoHeldElsewhereIsNotBlamedOnItsFinalizer) {
  DeviceTensor t = ctx().empty({32}, DType::u8, {}, "held");
  (void)t.on_release([t](const TensorInfo&) { (void)t.bytes(); });
  DeviceTensor plain = ctx().empty({16}, DType::u8, {}, "plain");
  (void)plain.on_release([](const TensorInfo&) {});
  const LeakReport report = ctx().leak_report();
  ASSERT_EQ(report.tensors.size(), 2U);
  EXPECT_EQ(report.tensors[0].tag, "held");
  EXPECT_EQ(report.tensors[0].handles, 2U);
  EXPECT_EQ(report.tensors[0].callback_handles, 1U);
  EXPECT_EQ(report.tensors[0].status, LiveTensorStatus::leaked);
  EXPECT_EQ(report.tensors[1].callback_handles, 0U) << "a finalizer that captured nothing";
  EXPECT_EQ(report.tensors[1].status, LiveTensorStatus::leaked);
}

TEST_P(LeakReportTest, PinnedCacheEntriesAreReportedAsPinnedNotLeaked) {
  const std::vector<std::uint8_t> table(256, 3);
  (void)ctx().cache().upload(CacheKey::name("ab12"), std::as_bytes(std::span(table)), {256},
                             DType::u8, {}, {.retention = Retention::pinned, .tag = "embedding"});
  LeakReport report = ctx().leak_report();
  ASSERT_EQ(report.tensors.size(), 1U);
  EXPECT_EQ(report.tensors[0].status, LiveTensorStatus::pinned);
  EXPECT_EQ(report.leaked_tensors(), 0U);
  EXPECT_FALSE(report.has_leaks());
  ASSERT_EQ(report.pinned.size(), 1U);
  EXPECT_EQ(report.pinned[0].key, "name 'ab12'");
  std::string text = report.to_text();
  EXPECT_NE(text.find("no leaks"), std::string::npos) << text;
  EXPECT_NE(text.find("pinned cache entries"), std::string::npos) << text;

  DeviceTensor leaked = ctx().empty({16}, DType::u8, {}, "other");
  report = ctx().leak_report();
  EXPECT_EQ(report.leaked_tensors(), 1U);
  EXPECT_EQ(report.leaked_bytes(), 16U);
}

TEST_P(LeakReportTest, PoolBlocksThatNoTensorOwnsAreReported) {
  Stream stream(device_);
  DeviceTensor t = ctx().empty({1024}, DType::u8, stream, "owned");
  void* raw = ctx().resource().allocate(4096, stream);
  LeakReport report = ctx().leak_report();
  EXPECT_TRUE(report.blocks_known);
  ASSERT_EQ(report.unowned_blocks.size(), 1U) << report.to_text();
  EXPECT_EQ(report.unowned_blocks[0].ptr, raw);
  EXPECT_EQ(report.unowned_blocks[0].bytes, 4096U);
  EXPECT_EQ(report.unowned_blocks[0].stream_id, stream.id());
  EXPECT_NE(report.to_text().find("pool blocks handed out that no tensor owns"), std::string::npos);
  t.reset();
  report = ctx().leak_report();
  EXPECT_TRUE(report.tensors.empty());
  EXPECT_TRUE(report.has_leaks()) << "the raw block is still out";
  ctx().resource().deallocate(raw, 4096, stream);
  EXPECT_FALSE(ctx().leak_report().has_leaks());
}

TEST_P(LeakReportTest, CheckpointListsOnlyNewerTensors) {
  DeviceTensor old = ctx().empty({8}, DType::u8, {}, "old");
  const LeakCheckpoint checkpoint = ctx().leak_checkpoint();
  DeviceTensor young = ctx().empty({8}, DType::u8, {}, "young");
  const LeakReport report = ctx().leak_report(checkpoint);
  ASSERT_EQ(report.tensors.size(), 1U);
  EXPECT_EQ(report.tensors[0].tag, "young");
  EXPECT_EQ(ctx().leak_report().tensors.size(), 2U);
}

TEST_P(LeakReportTest, ConcurrentTensorsAndReportsAgree) {
  std::atomic<bool> stop{false};
  std::vector<std::thread> workers;
  for (int w = 0; w < 2; ++w) {
    workers.emplace_back([&, w] {
      for (int i = 0; i < 500; ++i) {
        DeviceTensor t = ctx().empty({64}, DType::u8, {}, "worker" + std::to_string(w));
        DeviceTensor v = t.view({8, 8});
        (void)t.on_release([](const TensorInfo&) {});
        WeakTensor weak(v);
        t.reset();
      }
    });
  }
  std::thread reporter([&] {
    while (!stop.load()) {
      const LeakReport report = ctx().leak_report();
      // Each worker holds at most a tensor and its view at a time.
      EXPECT_LE(report.tensors.size(), 4U);
      for (const LiveTensor& live : report.tensors) EXPECT_GE(live.handles, 1U);
    }
  });
  for (std::thread& worker : workers) worker.join();
  stop = true;
  reporter.join();
  EXPECT_TRUE(ctx().leak_report().tensors.empty());
}

TEST_P(LeakReportTest, DestructionPrintsTheReportAndWritesTheFile) {
  const std::filesystem::path path =
      std::filesystem::temp_directory_path() /
      ("gpulife-leaks-" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "-" +
       std::to_string(reinterpret_cast<std::uintptr_t>(this)) + ".json");
  ContextOptions options = leak_mode();
  options.device = device_;
  options.debug.report_path = path.string();
  auto local = std::make_unique<Context>(std::move(options));
  DeviceTensor survivor = local->empty({100}, DType::u8, {}, "survivor");
  ::testing::internal::CaptureStderr();
  local.reset();
  const std::string printed = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(printed.find("1 tensor leaked holding 100 B at 1 site"), std::string::npos) << printed;
  EXPECT_NE(printed.find("'survivor'"), std::string::npos) << printed;

  std::ifstream file(path);
  ASSERT_TRUE(file.good()) << path;
  const nlohmann::json json = nlohmann::json::parse(file);
  EXPECT_EQ(json["summary"]["leaked_tensors"], 1);
  EXPECT_EQ(json["tensors"][0]["id"], survivor.id());
  file.close();
  std::filesystem::remove(path);
  survivor.reset();
  const std::vector<std::string> errors = take_errors();
  ASSERT_EQ(errors.size(), 1U);
  EXPECT_NE(errors[0].find("1 tensor still alive ("), std::string::npos) << errors[0];
}

TEST_P(LeakReportTest, ACleanShutdownSaysSoInOneLine) {
  ContextOptions options = leak_mode();
  options.device = device_;
  auto local = std::make_unique<Context>(std::move(options));
  DeviceTensor t = local->empty({4}, DType::u8);
  t.reset();
  ::testing::internal::CaptureStderr();
  local.reset();
  const std::string printed = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(printed, "gpulife leak report for " + device_.name() + ": no leaks\n");
}

// A program that made its own report turns the shutdown one off: tensors it keeps beyond the
// context on purpose are then not announced as leaks, and exit_on_leak does not fire.
TEST_P(LeakReportTest, TheShutdownReportCanBeTurnedOff) {
  const std::filesystem::path path =
      std::filesystem::temp_directory_path() / "gpulife-no-shutdown-report.txt";
  std::filesystem::remove(path);
  ContextOptions options = leak_mode();
  options.device = device_;
  options.debug.report_at_shutdown = false;
  options.debug.report_path = path.string();
  auto local = std::make_unique<Context>(std::move(options));
  DeviceTensor survivor = local->empty({4}, DType::u8, {}, "survivor");
  EXPECT_EQ(local->leak_report().leaked_tensors(), 1U) << "leak mode itself is on";
  ::testing::internal::CaptureStderr();
  local.reset();
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
  EXPECT_FALSE(std::filesystem::exists(path));
  survivor.reset();
  (void)take_errors();  // "destroyed with 1 tensor still alive": the context's own message
}

TEST_P(LeakReportTest, ACleanShutdownCanBeSilentButALeakIsAlwaysPrinted) {
  for (const bool leak : {false, true}) {
    ContextOptions options = leak_mode();
    options.device = device_;
    options.debug.report_when_clean = false;
    auto local = std::make_unique<Context>(std::move(options));
    DeviceTensor t = local->empty({4}, DType::u8, {}, "kept");
    if (!leak) t.reset();
    ::testing::internal::CaptureStderr();
    local.reset();
    const std::string printed = ::testing::internal::GetCapturedStderr();
    if (leak) {
      EXPECT_NE(printed.find("'kept'"), std::string::npos) << printed;
      t.reset();
      (void)take_errors();  // the shutdown's count of live tensors
    } else {
      EXPECT_EQ(printed, "");
    }
  }
}

class StackTraceTest : public BackendContextTest {
 protected:
  StackTraceTest() : BackendContextTest({}, leak_mode(/*stacks=*/true)) {}
};

[[gnu::noinline]] DeviceTensor make_in_helper(Context& ctx) {
  DeviceTensor t = ctx.empty({16}, DType::f32, {}, "deep");
  return t;
}

TEST_P(StackTraceTest, CapturesASymbolisedStackWithFileAndLine) {
  DeviceTensor t = make_in_helper(ctx());
  const LeakReport report = ctx().leak_report();
  ASSERT_EQ(report.tensors.size(), 1U);
  const std::vector<std::string>& stack = report.tensors[0].stack;
  ASSERT_GE(stack.size(), 2U);
  EXPECT_NE(stack[0].find("make_in_helper"), std::string::npos)
      << "gpulife's own frames are left out; the caller comes first: " << stack[0];
  EXPECT_NE(stack[0].find("leak_report_test.cpp:"), std::string::npos) << stack[0];
  bool test_body = false;
  for (const std::string& frame : stack) {
    test_body =
        test_body || frame.find("CapturesASymbolisedStackWithFileAndLine") != std::string::npos;
  }
  EXPECT_TRUE(test_body) << "the test body is further out";
  EXPECT_NE(report.to_text().find("      at " + stack[0]), std::string::npos);
}

class WithoutLeakMode : public BackendContextTest {
 protected:
  // Not even through GPULIFE_DEBUG: the test is about the mode being off.
  WithoutLeakMode() : BackendContextTest({}, {.debug = {.use_environment = false}}) {}
};

TEST_P(WithoutLeakMode, ReportSaysItKnowsNothing) {
  DeviceTensor t = ctx().empty({4}, DType::u8);
  const LeakReport report = ctx().leak_report();
  EXPECT_FALSE(report.tracking);
  EXPECT_TRUE(report.tensors.empty());
  EXPECT_FALSE(report.has_leaks());
  EXPECT_NE(report.to_text().find("leak mode is off"), std::string::npos);
  EXPECT_EQ(ctx().leak_checkpoint().sequence, 0U);
  EXPECT_FALSE(nlohmann::json::parse(report.to_json())["tracking"].get<bool>());
}

class LeakReportOnDirect : public BackendContextTest {
 protected:
  static ContextOptions direct_leak_mode(const Device& device) {
    ContextOptions options = leak_mode();
    options.device = device;
    options.resource = std::make_shared<DirectResource>(device);
    return options;
  }
  LeakReportOnDirect() = default;
};

TEST_P(LeakReportOnDirect, BlocksAreUnknownWithoutAPool) {
  Context direct(direct_leak_mode(device_));
  DeviceTensor t = direct.empty({4}, DType::u8);
  const LeakReport report = direct.leak_report();
  EXPECT_FALSE(report.blocks_known);
  EXPECT_EQ(report.tensors.size(), 1U);
}

INSTANTIATE_TEST_SUITE_P(Backends, LeakReportTest, testing::backends(), testing::backend_name);
INSTANTIATE_TEST_SUITE_P(Backends, StackTraceTest, testing::backends(), testing::backend_name);
INSTANTIATE_TEST_SUITE_P(Backends, WithoutLeakMode, testing::backends(), testing::backend_name);
INSTANTIATE_TEST_SUITE_P(Backends, LeakReportOnDirect, testing::backends(), testing::backend_name);

}  // namespace
}  // namespace gpulife
