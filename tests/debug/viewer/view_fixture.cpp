// SPDX-License-Identifier: Apache-2.0
// A known trace for the offline view's browser test (viewer_in_browser.sh): a small inference
// program on the simulated device, with stacks, cache hits and an out-of-memory error. Writes
// <dir>/trace.json, <dir>/direct.html (write_timeline_view) and <dir>/expected.txt, one line
// "id tag bytes" per tensor the page must show.

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <vector>

#include <gpulife/gpulife.hpp>

namespace {

using namespace gpulife;

DeviceTensor load_weights(Context& ctx, const std::vector<float>& host, const char* tag) {
  return ctx.cache().upload(std::span<const float>(host), {static_cast<std::int64_t>(host.size())},
                            {}, {.retention = Retention::warm, .tag = tag});
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: gpulife_view_fixture <dir>\n");
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  std::filesystem::create_directories(dir);
  SimOptions sim;
  sim.capacity_bytes = std::size_t{64} << 20;
  ContextOptions options;
  options.device = Device::sim(sim);
  options.debug.stacks = true;  // leaks + stacks: spans carry their call stack
  options.debug.timeline = true;
  options.debug.report_when_clean = false;
  options.debug.use_environment = false;
  Context ctx(std::move(options));
  std::ofstream expected(dir / "expected.txt");
  auto expect = [&](const DeviceTensor& t) {
    expected << t.id() << " " << t.tag() << " " << t.bytes() << "\n";
  };

  const std::vector<float> embedding(std::size_t{2} << 20, 0.25F);  // 8 MiB
  const std::vector<float> layer0(std::size_t{1} << 20, 0.5F);      // 4 MiB
  const std::vector<float> layer1(std::size_t{1} << 20, 0.75F);
  DeviceTensor e = load_weights(ctx, embedding, "embedding");
  DeviceTensor w0 = load_weights(ctx, layer0, "layer0.weight");
  DeviceTensor w1 = load_weights(ctx, layer1, "layer1.weight");
  // The tensors users hold are views of the uploads, which own the memory: those are the spans.
  auto owner_of = [&](const char* tag) {
    for (const TimelineEvent& event : ctx.timeline().events) {
      if (event.kind == TimelineEventKind::upload && event.tag == tag) return event.tensor_id;
    }
    return std::uint64_t{0};
  };
  expected << owner_of("embedding") << " embedding " << e.bytes() << "\n";
  expected << owner_of("layer0.weight") << " layer0.weight " << w0.bytes() << "\n";
  expected << owner_of("layer1.weight") << " layer1.weight " << w1.bytes() << "\n";

  DeviceTensor kv = ctx.empty({std::int64_t{2} << 20}, DType::u8, {}, "kv_cache");
  expect(kv);
  for (int step = 0; step < 3; ++step) {
    DeviceTensor act = ctx.empty({std::int64_t{1} << 18}, DType::f32, {}, "activations");
    DeviceTensor out = ctx.empty({std::int64_t{1} << 16}, DType::f32, {}, "logits");
    if (step == 2) {
      expect(act);
      expect(out);
    }
  }
  // A second model instance loads the same weights: cache hits, nothing uploaded.
  DeviceTensor e2 = load_weights(ctx, embedding, "embedding");
  DeviceTensor w02 = load_weights(ctx, layer0, "layer0.weight");
  try {
    (void)ctx.empty({std::int64_t{128} << 20}, DType::u8, {}, "too_big");
  } catch (const OutOfMemoryError&) {
    // the red line of the view
  }
  DeviceTensor kv2 = ctx.empty({std::int64_t{3} << 20}, DType::u8, {}, "kv_cache");
  expect(kv2);
  kv.reset();

  const Timeline timeline = ctx.timeline();
  timeline.write_chrome_trace(dir / "trace.json");
  write_timeline_view(timeline, dir / "direct.html");
  std::printf("view_fixture: %zu events, %zu threads\n", timeline.events.size(),
              timeline.threads.size());
  return 0;
}
