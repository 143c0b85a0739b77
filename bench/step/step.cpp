// SPDX-License-Identifier: Apache-2.0
#include "step/step.hpp"

#include <algorithm>

#include <gpulife/kernels/dense.hpp>
#include <gpulife/memory/async_resource.hpp>
#include <gpulife/memory/direct_resource.hpp>
#include <gpulife/memory/pool_resource.hpp>

namespace gpulife::bench {

std::string_view to_string(Strategy strategy) noexcept {
  switch (strategy) {
    case Strategy::realloc:
      return "realloc";
    case Strategy::async:
      return "async";
    case Strategy::pool:
      return "pool";
    case Strategy::cache:
      return "cache";
  }
  return "?";
}

namespace {

std::shared_ptr<DeviceMemoryResource> device_resource_for(Strategy strategy, const Device& device) {
  if (strategy == Strategy::realloc) return std::make_shared<DirectResource>(device);
  return std::make_shared<AsyncResource>(device);
}

ContextOptions options_for(Strategy strategy, const HostModel& model, const Device& device,
                           const std::shared_ptr<DeviceMemoryResource>& device_resource) {
  // Leak mode checks the run; it costs every strategy the same per tensor.
  ContextOptions options{.device = device,
                         .resource = device_resource,
                         .debug = {.leaks = true, .report_when_clean = false}};
  if (strategy == Strategy::pool || strategy == Strategy::cache) {
    options.resource = std::make_shared<PoolResource>(device_resource);
  }
  // The warm tier must hold the whole model, or the cache strategy would upload again.
  options.cache.warm_budget_bytes =
      std::max(options.cache.warm_budget_bytes, 2 * model.spec().weight_bytes());
  return options;
}

}  // namespace

StepRunner::StepRunner(Strategy strategy, const HostModel& model, const Device& device)
    : strategy_(strategy),
      model_(model),
      device_resource_(device_resource_for(strategy, device)),
      context_(options_for(strategy, model, device, device_resource_)),
      stream_(device),
      output_(model.spec().batch * model.spec().hidden) {}

DeviceTensor StepRunner::load(const HostBuffer& host, const Shape& shape, std::string_view tag) {
  if (strategy_ == Strategy::cache) {
    // Hashed once per buffer (HostBuffer), uploaded by the first step; every later step hits.
    return context_.cache().upload(host, shape, DType::f32, stream_,
                                   {.retention = Retention::warm, .tag = tag});
  }
  bytes_uploaded_ += host.size();
  return context_.upload(host.bytes(), shape, DType::f32, stream_, tag);
}

void StepRunner::step() {
  const ModelSpec& spec = model_.spec();
  const StreamView on = stream_;
  std::vector<DeviceTensor> weights;
  std::vector<DeviceTensor> biases;
  weights.reserve(spec.layers);
  biases.reserve(spec.layers);
  for (std::size_t layer = 0; layer < spec.layers; ++layer) {
    weights.push_back(load(model_.weights(layer), model_.weight_shape(), "weights"));
    biases.push_back(load(model_.bias(layer), model_.bias_shape(), "bias"));
  }
  const Shape activation_shape = model_.activation_shape();
  DeviceTensor x = context_.upload(model_.input(), activation_shape, on, "input");
  bytes_uploaded_ += model_.input().size_bytes();
  for (std::size_t layer = 0; layer < spec.layers; ++layer) {
    DeviceTensor y = context_.empty(activation_shape, DType::f32, on, "activation");
    const bool last = layer + 1 == spec.layers;
    kernels::dense(on, {spec.batch, spec.hidden, spec.hidden}, weights[layer].data<float>(),
                   x.data<float>(), biases[layer].data<float>(), y.data<float>(),
                   last ? kernels::Activation::none : kernels::Activation::relu);
    // The input is released now, in stream order after the layer that reads it (for realloc,
    // cudaFree: the host waits for the device).
    x = std::move(y);
  }
  x.download(std::as_writable_bytes(std::span(output_)), on);  // pageable: complete on return
  ++steps_;
  // weights, biases and the output drop here
}

StepCounters StepRunner::counters() {
  const ResourceStatistics device = device_resource_->statistics();
  StepCounters counters;
  counters.steps = steps_;
  counters.bytes_uploaded = bytes_uploaded_ + context_.cache().statistics().bytes_uploaded;
  counters.upstream_allocations = device.upstream_allocations;
  counters.device_bytes_peak = device.peak_bytes_in_use;
  counters.device_bytes_held = device.bytes_in_use;
  return counters;
}

}  // namespace gpulife::bench
