// SPDX-License-Identifier: Apache-2.0
#pragma once

// The small multi-layer model of the step and dedup benchmarks: `layers` dense layers of
// `hidden` x `hidden` f32 weights with an f32 bias each, ReLU between them, run on a batch of
// `batch` rows. Its host weights are made once per process from a fixed seed.

#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include <gpulife/cache/host_buffer.hpp>
#include <gpulife/runtime/backend_kind.hpp>
#include <gpulife/tensor/shape.hpp>

namespace gpulife::bench {

/// @brief The sizes of the model.
struct ModelSpec {
  std::size_t layers = 0;
  std::size_t hidden = 0;
  std::size_t batch = 0;

  /// @return bytes of all weights and biases
  [[nodiscard]] std::size_t weight_bytes() const noexcept {
    return layers * (hidden * hidden + hidden) * sizeof(float);
  }
  /// @return multiply-adds of one step
  [[nodiscard]] double macs_per_step() const noexcept {
    return static_cast<double>(layers) * static_cast<double>(batch) * static_cast<double>(hidden) *
           static_cast<double>(hidden);
  }
  /// @return e.g. "4 layers of 512x512 f32, batch 4 (4.01 MiB of weights)"
  [[nodiscard]] std::string describe() const;
};

/// @brief The model the benchmarks use on `backend`: small on the simulated device, whose
/// kernels are host loops on one worker thread, larger on a GPU. GPULIFE_BENCH_MODEL=
/// "layers,hidden,batch" (e.g. "8,2048,16") overrides it.
/// @throws std::invalid_argument if GPULIFE_BENCH_MODEL is malformed
[[nodiscard]] ModelSpec model_for(BackendKind backend);

/// @brief The host side of a model: its weights (as immutable `HostBuffer`s, so that the cache
/// hashes each once) and one batch of input.
class HostModel {
 public:
  explicit HostModel(const ModelSpec& spec);

  [[nodiscard]] const ModelSpec& spec() const noexcept { return spec_; }
  /// @return layer `layer`'s weights, [hidden, hidden] f32
  [[nodiscard]] const HostBuffer& weights(std::size_t layer) const { return weights_.at(layer); }
  /// @return layer `layer`'s bias, [hidden] f32
  [[nodiscard]] const HostBuffer& bias(std::size_t layer) const { return biases_.at(layer); }
  /// @return the input batch, [batch, hidden] f32
  [[nodiscard]] std::span<const float> input() const noexcept { return input_; }
  /// @return the output of a step computed on the host, [batch, hidden] f32: what every
  /// strategy must produce (up to rounding: a GPU contracts multiply-adds)
  [[nodiscard]] std::span<const float> reference_output() const noexcept { return reference_; }
  /// @return true if `output` matches `reference_output()` within f32 rounding
  [[nodiscard]] bool matches_reference(std::span<const float> output) const;

  [[nodiscard]] Shape weight_shape() const;
  [[nodiscard]] Shape bias_shape() const;
  [[nodiscard]] Shape activation_shape() const;

 private:
  ModelSpec spec_;
  std::vector<HostBuffer> weights_;
  std::vector<HostBuffer> biases_;
  std::vector<float> input_;
  std::vector<float> reference_;
};

/// @brief The host model of `spec`, made on first use and kept for the process (making the
/// weights of a large model takes longer than a benchmark run).
[[nodiscard]] const HostModel& host_model(const ModelSpec& spec);

}  // namespace gpulife::bench
