// SPDX-License-Identifier: Apache-2.0
// CUDA graphs of tensor work: Context::capture, GraphPool and Graph (tensor/graph_capture.hpp,
// tensor/graph_pool.hpp). A decode-style loop captured once and replayed many times, the pool's
// reuse rules, deferred releases and finalizers, the cache during capture, and misuse.

#include <cmath>
#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <vector>

#include <gtest/gtest.h>

#include <gpulife/context.hpp>
#include <gpulife/errors.hpp>
#include <gpulife/kernels/dense.hpp>
#include <gpulife/kernels/fill.hpp>
#include <gpulife/runtime/graph.hpp>

#include "support/backend_test.hpp"

namespace gpulife {
namespace {

class GraphCaptureTest : public testing::BackendContextTest {
 protected:
  static constexpr std::size_t layers = 4;
  static constexpr std::size_t hidden = 32;
  static constexpr std::size_t batch = 2;

  void SetUp() override {
    BackendContextTest::SetUp();
    if (IsSkipped()) return;
    stream_.emplace(device_);
    for (std::size_t l = 0; l < layers; ++l) {
      std::vector<float> w(hidden * hidden), b(hidden);
      for (std::size_t i = 0; i < w.size(); ++i) {
        w[i] = static_cast<float>((i * 7 + l * 13) % 17) / 17.0F - 0.45F;
      }
      for (std::size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>(i % 5) * 0.01F;
      host_w_.push_back(w);
      host_b_.push_back(b);
      weights_.push_back(ctx().upload(std::span<const float>(w), {hidden, hidden}, *stream_, "w"));
      biases_.push_back(ctx().upload(std::span<const float>(b), {hidden}, *stream_, "b"));
    }
    stream_->synchronize();
  }
  void TearDown() override {
    weights_.clear();
    biases_.clear();
    if (stream_) stream_->synchronize();
    stream_.reset();
    BackendContextTest::TearDown();
  }

  /// One decode step: every layer's output a new tensor, each input dropped once it is read.
  DeviceTensor step(const DeviceTensor& input) {
    DeviceTensor h = input;
    for (std::size_t l = 0; l < layers; ++l) {
      DeviceTensor y = ctx().empty({batch, hidden}, DType::f32, *stream_, "act");
      kernels::dense<float, float>(*stream_, {batch, hidden, hidden}, weights_[l].data<float>(),
                                   h.data<float>(), biases_[l].data<float>(), y.data<float>(),
                                   kernels::Activation::relu);
      h = std::move(y);  // the previous activation is released here
    }
    return h;
  }
  std::vector<float> reference(std::vector<float> x) const {
    for (std::size_t l = 0; l < layers; ++l) {
      std::vector<float> y(batch * hidden);
      for (std::size_t r = 0; r < batch; ++r) {
        for (std::size_t o = 0; o < hidden; ++o) {
          float sum = 0.0F;
          for (std::size_t k = 0; k < hidden; ++k) {
            sum += host_w_[l][o * hidden + k] * x[r * hidden + k];
          }
          const float v = sum + host_b_[l][o];
          y[r * hidden + o] = v > 0.0F ? v : 0.0F;
        }
      }
      x = std::move(y);
    }
    return x;
  }
  static std::vector<float> input_for(int token) {
    std::vector<float> x(batch * hidden);
    for (std::size_t i = 0; i < x.size(); ++i) {
      x[i] = std::sin(static_cast<float>(i) * 0.37F + static_cast<float>(token));
    }
    return x;
  }
  static void expect_near(const std::vector<float>& got, const std::vector<float>& want, int at) {
    ASSERT_EQ(got.size(), want.size());
    for (std::size_t i = 0; i < got.size(); ++i) {
      ASSERT_NEAR(got[i], want[i], 1e-4F) << "element " << i << " at replay " << at;
    }
  }

  std::optional<Stream> stream_;
  std::vector<std::vector<float>> host_w_, host_b_;
  std::vector<DeviceTensor> weights_, biases_;
};

TEST_P(GraphCaptureTest, ADecodeLoopCapturedOnceIsCorrectAtEveryReplayWithoutAllocating) {
  DeviceTensor x = ctx().empty({batch, hidden}, DType::f32, *stream_, "x");  // static input
  GraphPool pool = ctx().graph_pool();
  DeviceTensor out;
  Graph graph;
  {
    CaptureScope scope = ctx().capture(*stream_, pool);
    out = step(x);
    graph = scope.end();
  }
  EXPECT_GT(graph.node_count(), 0U);
  // Activations freed in the capture were reused in it: two blocks serve the four layers.
  const GraphPoolStatistics captured = pool.statistics();
  EXPECT_EQ(captured.blocks, 2U);
  EXPECT_EQ(captured.upstream_allocations, 2U);
  EXPECT_EQ(captured.live_blocks, 1U);  // the output
  const ResourceStatistics before = ctx().resource().statistics();
  const ContextStatistics tensors_before = ctx().statistics();
  for (int token = 0; token < 20; ++token) {
    const std::vector<float> input = input_for(token);
    x.upload(std::as_bytes(std::span<const float>(input)), *stream_);
    graph.launch(*stream_);
    expect_near(out.to_host<float>(*stream_), reference(input), token);
  }
  EXPECT_EQ(graph.launches(), 20U);
  // Nothing allocated per replay: not from the pool, not from the context, not upstream.
  const ResourceStatistics after = ctx().resource().statistics();
  EXPECT_EQ(after.allocations, before.allocations);
  EXPECT_EQ(after.upstream_allocations, before.upstream_allocations);
  EXPECT_EQ(pool.statistics().upstream_allocations, captured.upstream_allocations);
  EXPECT_EQ(ctx().statistics().tensors_created, tensors_before.tensors_created);
  // No leak once the graph, its output and the pool are gone.
  const std::size_t live = ctx().statistics().live_tensors;
  graph = Graph();
  out.reset();
  EXPECT_EQ(ctx().statistics().live_tensors, live - 1);
  pool = GraphPool();
  x.reset();
  EXPECT_EQ(ctx().statistics().live_tensors, 2 * layers);  // the weights and biases
}

TEST_P(GraphCaptureTest, FinalizersOfTensorsReleasedInTheCaptureRunWhenThePoolGivesMemoryBack) {
  DeviceTensor x = ctx().empty({batch, hidden}, DType::f32, *stream_, "x");
  GraphPool pool = ctx().graph_pool();
  int temp_runs = 0, input_runs = 0;
  Graph graph;
  {
    CaptureScope scope = ctx().capture(*stream_, pool);
    DeviceTensor temp = ctx().empty({batch, hidden}, DType::f32, *stream_, "temp");
    Finalizer f1 = temp.on_release([&](const TensorInfo&) { ++temp_runs; });
    kernels::fill<float>(*stream_, temp.data<float>(), batch * hidden, 1.0F);
    kernels::fill<float>(*stream_, x.data<float>(), batch * hidden, 2.0F);
    Finalizer f2 = x.on_release([&](const TensorInfo&) { ++input_runs; });
    temp.reset();  // a pool block, released in the capture
    x.reset();     // memory from the context's pool, released in the capture: the graph writes it
    graph = scope.end();
  }
  EXPECT_EQ(pool.statistics().deferred_tensors, 2U);
  graph.launch(*stream_);
  graph.launch(*stream_);
  stream_->synchronize();
  EXPECT_EQ(temp_runs, 0);
  EXPECT_EQ(input_runs, 0);
  graph = Graph();
  EXPECT_EQ(temp_runs, 0);  // the pool handle still holds the memory
  pool = GraphPool();
  EXPECT_EQ(temp_runs, 1);
  EXPECT_EQ(input_runs, 1);
}

TEST_P(GraphCaptureTest, CapturesInSequenceShareThePoolsTemporaries) {
  DeviceTensor x = ctx().empty({batch, hidden}, DType::f32, *stream_, "x");
  GraphPool pool = ctx().graph_pool();
  DeviceTensor out1, out2;
  Graph g1, g2;
  {
    CaptureScope scope = ctx().capture(*stream_, pool);
    out1 = step(x);
    g1 = scope.end();
  }
  const std::uint64_t first = pool.statistics().upstream_allocations;
  {
    CaptureScope scope = ctx().capture(*stream_, pool);
    out2 = step(out1);  // the second graph reads the first's output
    g2 = scope.end();
  }
  // The second capture reused the first one's freed temporary and needed one block more.
  EXPECT_EQ(pool.statistics().upstream_allocations, first + 1);
  for (int token = 0; token < 3; ++token) {
    const std::vector<float> input = input_for(token);
    x.upload(std::as_bytes(std::span<const float>(input)), *stream_);
    g1.launch(*stream_);  // in capture order, as PyTorch requires for a shared pool
    g2.launch(*stream_);
    std::vector<float> twice = reference(reference(input));
    expect_near(out2.to_host<float>(*stream_), twice, token);
  }
}

TEST_P(GraphCaptureTest, AnOutputsBlockIsNotReusedWhileItsGraphLives) {
  DeviceTensor x = ctx().empty({batch, hidden}, DType::f32, *stream_, "x");
  GraphPool pool = ctx().graph_pool();
  auto capture_fill = [&](DeviceTensor& out) {
    CaptureScope scope = ctx().capture(*stream_, pool);
    out = ctx().empty({batch, hidden}, DType::f32, *stream_, "out");
    kernels::fill<float>(*stream_, out.data<float>(), batch * hidden, 3.0F);
    return scope.end();
  };
  DeviceTensor out1;
  Graph g1 = capture_fill(out1);
  out1.reset();  // the output dropped: g1 still writes its block at every replay
  DeviceTensor out2;
  Graph g2 = capture_fill(out2);
  EXPECT_EQ(pool.statistics().upstream_allocations, 2U);  // not g1's block
  out2.reset();
  g1 = Graph();  // g1 gone: its block is free for the next capture
  DeviceTensor out3;
  Graph g3 = capture_fill(out3);
  EXPECT_EQ(pool.statistics().upstream_allocations, 2U);
  g3.launch(*stream_);
  EXPECT_EQ(out3.to_host<float>(*stream_)[0], 3.0F);
}

TEST_P(GraphCaptureTest, TheCacheRefusesAMissDuringCaptureAndServesHits) {
  std::vector<float> table(hidden, 0.25F), other(hidden, 0.5F);
  Stream side(device_);
  DeviceTensor cached = ctx().cache().upload(std::span<const float>(table), {hidden}, side);
  GraphPool pool = ctx().graph_pool();
  DeviceTensor out;
  Graph graph;
  {
    CaptureScope scope = ctx().capture(*stream_, pool);
    EXPECT_THROW((void)ctx().cache().upload(std::span<const float>(other), {hidden}, *stream_),
                 std::logic_error);
    // A hit from another stream: the graph keeps the tensor for its replays.
    DeviceTensor hit = ctx().cache().upload(std::span<const float>(table), {hidden}, *stream_);
    EXPECT_EQ(hit.data(), cached.data());
    out = ctx().empty({hidden}, DType::f32, *stream_, "out");
    stream_->view().copy(out.data(), hit.data(), hidden * 4, CopyKind::device_to_device);
    graph = scope.end();
  }
  cached.reset();  // the graph still holds it
  graph.launch(*stream_);
  EXPECT_EQ(out.to_host<float>(*stream_)[3], 0.25F);
  EXPECT_EQ(ctx().cache().statistics().misses, 1U);
}

TEST_P(GraphCaptureTest, AnInvalidOperationInTheScopeFailsTheEndAndLeaksNothing) {
  GraphPool pool = ctx().graph_pool();
  const std::size_t live = ctx().statistics().live_tensors;
  {
    CaptureScope scope = ctx().capture(*stream_, pool);
    DeviceTensor t = ctx().empty({hidden}, DType::f32, *stream_, "t");
    try {
      stream_->synchronize();
      ADD_FAILURE() << "synchronising a capturing stream must fail";
    } catch (const CudaError& e) {
      EXPECT_EQ(e.error_name(), "cudaErrorStreamCaptureUnsupported");
    }
    try {
      (void)scope.end();
      ADD_FAILURE() << "ending an invalidated capture must fail";
    } catch (const CudaError& e) {
      EXPECT_EQ(e.error_name(), "cudaErrorStreamCaptureInvalidated");
    }
    EXPECT_THROW((void)scope.end(), std::logic_error);
  }
  EXPECT_EQ(stream_->view().capture_info().status, CaptureStatus::none);
  pool = GraphPool();
  EXPECT_EQ(ctx().statistics().live_tensors, live);
  DeviceTensor after = ctx().empty({hidden}, DType::f32, *stream_, "eager again");
  kernels::fill<float>(*stream_, after.data<float>(), hidden, 1.0F);
  stream_->synchronize();
}

TEST_P(GraphCaptureTest, ABadPoolOrStreamIsRefused) {
  GraphPool empty;
  EXPECT_THROW((void)ctx().capture(*stream_, empty), std::invalid_argument);
  Context other(ContextOptions{.device = device_});
  GraphPool foreign = other.graph_pool();
  EXPECT_THROW((void)ctx().capture(*stream_, foreign), std::invalid_argument);
  GraphPool pool = ctx().graph_pool();
  EXPECT_THROW((void)ctx().capture(StreamView{}, pool), std::invalid_argument);
  EXPECT_EQ(stream_->view().capture_info().status, CaptureStatus::none);
}

TEST_P(GraphCaptureTest, ALargeUploadInTheCaptureIsACopyReplayedFromThePinnedBuffer) {
  // At least staging_min_bytes: outside a capture it would go through the staging ring, whose
  // events a capture cannot query.
  // From pinned memory: a copy from pageable memory cannot be captured (CUDA stages it
  // synchronously; cudaErrorStreamCaptureUnsupported).
  constexpr std::int64_t count = std::int64_t{1} << 18;
  const auto elements = static_cast<std::size_t>(count);
  auto* pinned = static_cast<float*>(device_.allocate_pinned(elements * sizeof(float)));
  std::span<float> host(pinned, elements);
  for (float& v : host) v = 1.5F;
  GraphPool pool = ctx().graph_pool();
  DeviceTensor t;
  Graph graph;
  {
    CaptureScope scope = ctx().capture(*stream_, pool);
    t = ctx().upload(std::span<const float>(host.data(), host.size()), {count}, *stream_,
                     "uploaded");
    graph = scope.end();
  }
  host[7] = 2.5F;  // the replay reads the buffer as it is then
  graph.launch(*stream_);
  const std::vector<float> back = t.to_host<float>(*stream_);
  EXPECT_EQ(back[0], 1.5F);
  EXPECT_EQ(back[7], 2.5F);
  graph = Graph();  // waits for its launch, which reads the buffer
  device_.deallocate_pinned(pinned);
}

TEST_P(GraphCaptureTest, AJoinedStreamAllocatesFromThePoolAndRecordStreamBecomesAnEdge) {
  Stream side(device_);
  GraphPool pool = ctx().graph_pool();
  DeviceTensor out, b;
  Graph graph;
  {
    CaptureScope scope = ctx().capture(*stream_, pool);
    DeviceTensor a = ctx().empty({hidden}, DType::f32, *stream_, "a");
    kernels::fill<float>(*stream_, a.data<float>(), hidden, 2.0F);
    Event fork(device_), join(device_);
    stream_->view().record(fork);
    side.view().wait(fork);  // `side` joins the capture
    b = ctx().empty({hidden}, DType::f32, side, "b");  // from the pool too
    EXPECT_EQ(pool.statistics().live_blocks, 2U);
    side.view().copy(b.data(), a.data(), hidden * 4, CopyKind::device_to_device);
    a.record_stream(side);  // `side` reads `a`: its release waits for that, as a graph edge
    a.reset();
    // `a`'s block is reused on its own stream, after the edge from `side`'s read: without the
    // edge this fill would race with that read at every replay.
    out = ctx().empty({hidden}, DType::f32, *stream_, "out");
    EXPECT_EQ(pool.statistics().blocks, 2U);
    kernels::fill<float>(*stream_, out.data<float>(), hidden, 5.0F);
    side.view().record(join);
    stream_->view().wait(join);
    graph = scope.end();
  }
  graph.launch(*stream_);
  graph.launch(*stream_);
  EXPECT_EQ(out.to_host<float>(*stream_)[hidden - 1], 5.0F);
  EXPECT_EQ(b.to_host<float>(*stream_)[0], 2.0F);
  EXPECT_TRUE(take_violations().empty());  // no race in the replays (the sim checks them)
}

TEST_P(GraphCaptureTest, AllocatingOnAStreamCapturedOutsideEveryScopeIsRefused) {
  Stream raw(device_);
  GraphPool pool = ctx().graph_pool();
  CaptureScope scope = ctx().capture(*stream_, pool);
  raw.view().begin_capture(CaptureMode::relaxed);
  EXPECT_THROW((void)ctx().empty({hidden}, DType::f32, raw, "t"), std::logic_error);
  (void)raw.view().end_capture();
  (void)scope.end();
}

TEST_P(GraphCaptureTest, ALeakReportNamesTheTensorsAGraphPoolKeeps) {
  Context traced(ContextOptions{.device = device_,
                                .debug = {.leaks = true, .report_at_shutdown = false}});
  Stream stream(device_);
  GraphPool pool = traced.graph_pool();
  std::uint64_t id = 0;
  Graph graph;
  {
    CaptureScope scope = traced.capture(stream, pool);
    DeviceTensor temp = traced.empty({hidden}, DType::f32, stream, "graph temp");
    kernels::fill<float>(stream, temp.data<float>(), hidden, 1.0F);
    id = temp.id();
    temp.reset();
    graph = scope.end();
  }
  LeakReport report = traced.leak_report();
  ASSERT_EQ(report.tensors.size(), 1U);
  EXPECT_EQ(report.tensors[0].id, id);
  EXPECT_EQ(report.tensors[0].tag, "graph temp");
  EXPECT_EQ(report.tensors[0].status, LiveTensorStatus::kept_by_graph_pool);
  EXPECT_FALSE(report.has_leaks());  // kept on purpose while the pool lives
  EXPECT_NE(report.to_text().find("kept by a GraphPool"), std::string::npos);
  graph = Graph();
  pool = GraphPool();
  EXPECT_TRUE(traced.leak_report().tensors.empty());
  stream.synchronize();
}

TEST_P(GraphCaptureTest, TheTimelineRecordsCapturesAndLaunches) {
  Context traced(ContextOptions{.device = device_, .debug = {.timeline = true}});
  Stream stream(device_);
  GraphPool pool = traced.graph_pool();
  DeviceTensor out;
  Graph graph;
  {
    CaptureScope scope = traced.capture(stream, pool);
    out = traced.empty({hidden}, DType::f32, stream, "out");
    kernels::fill<float>(stream, out.data<float>(), hidden, 1.0F);
    graph = scope.end();
  }
  graph.launch(stream);
  graph.launch(stream);
  stream.synchronize();
  std::size_t captures = 0, launches = 0;
  for (const TimelineEvent& event : traced.timeline().events) {
    if (event.kind == LifetimeEvent::graph_capture) {
      ++captures;
      EXPECT_EQ(event.bytes, pool.statistics().reserved_bytes);
    }
    if (event.kind == LifetimeEvent::graph_launch) ++launches;
  }
  EXPECT_EQ(captures, 1U);
  EXPECT_EQ(launches, 2U);
  EXPECT_NE(traced.timeline().to_chrome_trace().find("graph_launch"), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(Backends, GraphCaptureTest, testing::backends(), testing::backend_name);

}  // namespace
}  // namespace gpulife
