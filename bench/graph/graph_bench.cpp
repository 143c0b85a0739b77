// SPDX-License-Identifier: Apache-2.0
// A decode step eagerly and as a CUDA graph, on the same work (README "CUDA graphs"):
//
//   graph/eager   every step: upload the input into a resident input tensor, run the layers
//                 (each output a new tensor from the context's PoolResource, each input dropped
//                 once read), download the output; the weights are resident (loaded once)
//   graph/replay  the layers captured once with Context::capture into a GraphPool, then every
//                 step: upload the input, launch the graph, download its output
//
// The work per step is that of step/pool minus the weight upload (step/cache minus its cache
// lookups). Counters per step: tensor_allocs (allocations through the context's resource and
// the graph pool), upstream_allocs (allocations that reached the device), launches (kernel
// launches or graph launches queued by the host). Times as in step/*: CUDA-event times on a GPU,
// host-clock times with the stream synchronised on the simulated device.

#include <optional>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include <gpulife/context.hpp>
#include <gpulife/kernels/dense.hpp>
#include <gpulife/memory/async_resource.hpp>
#include <gpulife/memory/pool_resource.hpp>

#include "support/bench_support.hpp"
#include "support/model.hpp"

namespace gpulife::bench {
namespace {

class DecodeStep {
 public:
  DecodeStep(const HostModel& model, const Device& device)
      : model_(model),
        upstream_(std::make_shared<AsyncResource>(device)),
        context_(ContextOptions{.device = device,
                                .resource = std::make_shared<PoolResource>(upstream_),
                                .debug = {.leaks = true, .report_when_clean = false}}),
        stream_(device),
        output_(model.spec().batch * model.spec().hidden) {
    for (std::size_t layer = 0; layer < model.spec().layers; ++layer) {
      weights_.push_back(context_.upload(model.weights(layer).bytes(), model.weight_shape(),
                                         DType::f32, stream_, "weights"));
      biases_.push_back(context_.upload(model.bias(layer).bytes(), model.bias_shape(),
                                        DType::f32, stream_, "bias"));
    }
    input_ = context_.empty(model.activation_shape(), DType::f32, stream_, "input");
  }

  void capture() {
    pool_ = context_.graph_pool();
    CaptureScope scope = context_.capture(stream_, pool_);
    output_tensor_ = layers(input_);
    graph_ = scope.end();
  }

  void step() {
    input_.upload(std::as_bytes(model_.input()), stream_);
    if (graph_.valid()) {
      graph_.launch(stream_);
      ++launches_;
    } else {
      output_tensor_ = layers(input_);
    }
    output_tensor_.download(std::as_writable_bytes(std::span(output_)), stream_);
    if (!graph_.valid()) output_tensor_.reset();
    ++steps_;
  }

  [[nodiscard]] StreamView stream() const noexcept { return stream_.view(); }
  [[nodiscard]] Context& context() noexcept { return context_; }
  [[nodiscard]] std::span<const float> output() const noexcept { return output_; }
  [[nodiscard]] std::uint64_t steps() const noexcept { return steps_; }
  [[nodiscard]] std::uint64_t launches() const noexcept { return launches_; }
  [[nodiscard]] std::uint64_t tensor_allocations() const {
    return context_.resource().statistics().allocations +
           (pool_.valid() ? pool_.statistics().upstream_allocations : 0);
  }
  [[nodiscard]] std::uint64_t upstream_allocations() const {
    return upstream_->statistics().upstream_allocations +
           (pool_.valid() ? pool_.statistics().upstream_allocations : 0);
  }
  void release() {
    graph_ = Graph();
    output_tensor_.reset();
    pool_ = GraphPool();
    input_.reset();
    weights_.clear();
    biases_.clear();
  }

 private:
  DeviceTensor layers(DeviceTensor x) {
    const ModelSpec& spec = model_.spec();
    for (std::size_t layer = 0; layer < spec.layers; ++layer) {
      DeviceTensor y = context_.empty(model_.activation_shape(), DType::f32, stream_, "act");
      const bool last = layer + 1 == spec.layers;
      kernels::dense(stream_.view(), {spec.batch, spec.hidden, spec.hidden},
                     weights_[layer].data<float>(), x.data<float>(), biases_[layer].data<float>(),
                     y.data<float>(), last ? kernels::Activation::none : kernels::Activation::relu);
      ++launches_;
      x = std::move(y);
    }
    return x;
  }

  const HostModel& model_;
  std::shared_ptr<DeviceMemoryResource> upstream_;
  Context context_;
  Stream stream_;
  std::vector<DeviceTensor> weights_, biases_;
  DeviceTensor input_, output_tensor_;
  GraphPool pool_;
  Graph graph_;
  std::vector<float> output_;
  std::uint64_t steps_ = 0;
  std::uint64_t launches_ = 0;
};

void bm_decode(benchmark::State& state, bool replay) {
  const std::string name = replay ? "graph/replay" : "graph/eager";
  const Device& device = bench_device();
  const HostModel& model = host_model(model_for(device.kind()));
  DecodeStep runner(model, device);
  if (replay) runner.capture();
  runner.step();
  if (!model.matches_reference(runner.output())) {
    state.SkipWithError("the step's output differs from the host reference");
  }
  const std::uint64_t steps = runner.steps();
  const std::uint64_t allocs = runner.tensor_allocations();
  const std::uint64_t upstream = runner.upstream_allocations();
  const std::uint64_t launches = runner.launches();
  StepTimer timer(device);
  time_steps(state, timer, runner);
  if (!model.matches_reference(runner.output())) {
    state.SkipWithError("the step's output differs from the host reference");
  }
  if (runner.steps() > steps) {
    const auto n = static_cast<double>(runner.steps() - steps);
    set_count_counter(state, "tensor_allocs",
                      static_cast<double>(runner.tensor_allocations() - allocs) / n);
    set_count_counter(state, "upstream_allocs",
                      static_cast<double>(runner.upstream_allocations() - upstream) / n);
    set_count_counter(state, "launches", static_cast<double>(runner.launches() - launches) / n);
  }
  state.SetItemsProcessed(state.iterations());  // steps per second
  runner.stream().synchronize();
  runner.release();
  check_for_leaks(runner.context(), state, name);
}

void graph_settings(benchmark::internal::Benchmark* bench) {
  bench->UseManualTime()->Unit(benchmark::kMillisecond);
}

BENCHMARK_CAPTURE(bm_decode, eager, false)->Name("graph/eager")->Apply(graph_settings);
BENCHMARK_CAPTURE(bm_decode, replay, true)->Name("graph/replay")->Apply(graph_settings);

}  // namespace
}  // namespace gpulife::bench
