// SPDX-License-Identifier: Apache-2.0
#include "support/model.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <tuple>

#include "support/bench_support.hpp"

namespace gpulife::bench {
namespace {

/// Values in [-scale, scale) from a xorshift generator: deterministic on every host.
void fill_uniform(std::span<float> values, std::uint64_t seed, float scale) {
  std::uint64_t state = seed * 0x9E3779B97F4A7C15ULL + 1;
  for (float& value : values) {
    state ^= state << 13, state ^= state >> 7, state ^= state << 17;
    const auto unit = static_cast<float>(state >> 40) / static_cast<float>(1ULL << 24);
    value = (2.0F * unit - 1.0F) * scale;
  }
}

HostBuffer make_buffer(std::size_t count, std::uint64_t seed, float scale) {
  return HostBuffer::create(count * sizeof(float), [&](std::span<std::byte> bytes) {
    std::vector<float> values(count);
    fill_uniform(values, seed, scale);
    std::memcpy(bytes.data(), values.data(), bytes.size());
  });
}

std::size_t parse_extent(const std::string& text, const char* what) {
  std::size_t used = 0;
  unsigned long long value = 0;
  try {
    value = std::stoull(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || value == 0) {
    throw std::invalid_argument(std::string("GPULIFE_BENCH_MODEL: ") + what + " '" + text +
                                "' is not a positive integer (expected layers,hidden,batch)");
  }
  return static_cast<std::size_t>(value);
}

}  // namespace

std::string ModelSpec::describe() const {
  return std::to_string(layers) + " layers of " + std::to_string(hidden) + "x" +
         std::to_string(hidden) + " f32, batch " + std::to_string(batch) + " (" +
         format_bytes(static_cast<double>(weight_bytes())) + " of weights)";
}

ModelSpec model_for(BackendKind backend) {
  if (const char* text = std::getenv("GPULIFE_BENCH_MODEL"); text != nullptr && *text != '\0') {
    const std::string spec = text;
    const auto first = spec.find(',');
    const auto second = first == std::string::npos ? first : spec.find(',', first + 1);
    if (second == std::string::npos) {
      throw std::invalid_argument("GPULIFE_BENCH_MODEL: '" + spec +
                                  "' is not layers,hidden,batch (e.g. 8,2048,16)");
    }
    return {parse_extent(spec.substr(0, first), "layers"),
            parse_extent(spec.substr(first + 1, second - first - 1), "hidden"),
            parse_extent(spec.substr(second + 1), "batch")};
  }
  // The simulated device runs a dense layer as a host loop on one stream worker at roughly one
  // multiply-add per nanosecond. A decode-like step (batch 1) of 4 x 1024 x 1024 does about as
  // much arithmetic as copying its 16 MiB of weights twice (staging, then the "device"), and
  // takes a few milliseconds, so that the report runs in about a minute on a small machine.
  // A GPU gets a model whose weights (128 MiB) take milliseconds to upload over PCIe.
  if (backend == BackendKind::sim) return {4, 1024, 1};
  return {8, 2048, 16};
}

HostModel::HostModel(const ModelSpec& spec) : spec_(spec) {
  if (spec.layers == 0 || spec.hidden == 0 || spec.batch == 0) {
    throw std::invalid_argument("spec: a model needs layers, hidden and batch above zero");
  }
  // Xavier-like scale keeps activations of the same order through the layers.
  const float scale = 1.0F / std::sqrt(static_cast<float>(spec.hidden));
  for (std::size_t layer = 0; layer < spec.layers; ++layer) {
    weights_.push_back(make_buffer(spec.hidden * spec.hidden, 2 * layer + 1, scale));
    biases_.push_back(make_buffer(spec.hidden, 2 * layer + 2, 0.1F));
  }
  input_.resize(spec.batch * spec.hidden);
  fill_uniform(input_, 0xC0FFEE, 1.0F);

  // The forward pass on the host, in the kernel's order of summation.
  std::vector<float> x = input_;
  std::vector<float> y(x.size());
  for (std::size_t layer = 0; layer < spec.layers; ++layer) {
    const auto* w = reinterpret_cast<const float*>(weights_[layer].data());
    const auto* b = reinterpret_cast<const float*>(biases_[layer].data());
    const bool last = layer + 1 == spec.layers;
    for (std::size_t row = 0; row < spec.batch; ++row) {
      for (std::size_t o = 0; o < spec.hidden; ++o) {
        float sum = 0.0F;
        for (std::size_t k = 0; k < spec.hidden; ++k) {
          sum += w[o * spec.hidden + k] * x[row * spec.hidden + k];
        }
        const float v = sum + b[o];
        y[row * spec.hidden + o] = last || v > 0.0F ? v : 0.0F;
      }
    }
    x.swap(y);
  }
  reference_ = std::move(x);
}

bool HostModel::matches_reference(std::span<const float> output) const {
  if (output.size() != reference_.size()) return false;
  float scale = 1.0F;
  for (float v : reference_) scale = std::max(scale, std::fabs(v));
  for (std::size_t i = 0; i < output.size(); ++i) {
    // f32 sums of `hidden` products, contracted or not: far inside 1e-3 of the largest value.
    if (!(std::fabs(output[i] - reference_[i]) <= 1e-3F * scale)) return false;
  }
  return true;
}

Shape HostModel::weight_shape() const {
  const auto hidden = static_cast<std::int64_t>(spec_.hidden);
  return Shape{hidden, hidden};
}

Shape HostModel::bias_shape() const { return Shape{static_cast<std::int64_t>(spec_.hidden)}; }

Shape HostModel::activation_shape() const {
  return Shape{static_cast<std::int64_t>(spec_.batch), static_cast<std::int64_t>(spec_.hidden)};
}

const HostModel& host_model(const ModelSpec& spec) {
  static std::mutex mutex;
  static std::map<std::tuple<std::size_t, std::size_t, std::size_t>, std::unique_ptr<HostModel>>
      models;
  std::scoped_lock lock(mutex);
  auto& slot = models[{spec.layers, spec.hidden, spec.batch}];
  if (!slot) slot = std::make_unique<HostModel>(spec);
  return *slot;
}

}  // namespace gpulife::bench
