// SPDX-License-Identifier: Apache-2.0
// dense on the simulated device against a double-precision host reference: every activation and
// input type, batches above one, and sizes that are not multiples of the CUDA block.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <gpulife/kernels/dense.hpp>
#include <gpulife/kernels/half.hpp>

#include "support/expect_invalid_argument.hpp"
#include "support/backend_test.hpp"

namespace gpulife {
namespace {

using kernels::Activation;
using kernels::DenseShape;
using testing::expect_invalid_argument;

double activate_reference(double v, Activation activation) {
  switch (activation) {
    case Activation::none:
      return v;
    case Activation::relu:
      return v > 0.0 ? v : 0.0;
    case Activation::gelu:
      return 0.5 * v *
             (1.0 + std::tanh(std::sqrt(2.0 / std::acos(-1.0)) * (v + 0.044715 * v * v * v)));
  }
  return v;
}

float value_of(float v) { return v; }
float value_of(std::uint16_t half) { return kernels::half_to_float(half); }

template <class T>
T from_float(float v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else {
    return kernels::float_to_half(v);
  }
}

/// A host array and its device copy.
template <class T>
struct Array {
  std::vector<T> host;
  T* device = nullptr;
};

const char* activation_name(Activation activation) {
  switch (activation) {
    case Activation::none:
      return "none";
    case Activation::relu:
      return "relu";
    case Activation::gelu:
      return "gelu";
  }
  return "?";
}

class DenseTest : public testing::BackendTest {
 protected:
  void SetUp() override {
    BackendTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    stream_ = Stream(device_);
  }
  void TearDown() override {
    if (stream_.valid()) stream_.synchronize();
    for (auto [ptr, bytes] : buffers_) device_.impl().deallocate(ptr, bytes);
    buffers_.clear();
    stream_ = Stream{};
    BackendTest::TearDown();
  }

  template <class T>
  T* device_alloc(std::size_t n) {
    void* ptr = device_.impl().allocate(n * sizeof(T));
    buffers_.emplace_back(ptr, n * sizeof(T));
    return static_cast<T*>(ptr);
  }

  template <class T>
  Array<T> random_array(std::size_t n, std::mt19937_64& rng) {
    std::uniform_real_distribution<float> pick(-1.0F, 1.0F);
    Array<T> array;
    array.host.resize(n);
    for (T& v : array.host) v = from_float<T>(pick(rng));
    array.device = device_alloc<T>(n);
    stream_.view().copy(array.device, array.host.data(), n * sizeof(T), CopyKind::host_to_device);
    return array;
  }

  /// Runs the kernel and compares with the reference within the bound of f32 accumulation.
  template <class W, class X>
  void check(DenseShape shape, Activation activation, std::uint64_t seed) {
    SCOPED_TRACE(std::to_string(shape.batch) + "x" + std::to_string(shape.in) + "->" +
                 std::to_string(shape.out) + " " + activation_name(activation));
    std::mt19937_64 rng(seed);
    const auto w = random_array<W>(shape.out * shape.in, rng);
    const auto x = random_array<X>(shape.batch * shape.in, rng);
    const auto b = random_array<W>(shape.out, rng);
    float* y = device_alloc<float>(shape.batch * shape.out);
    kernels::dense(stream_, shape, w.device, x.device, b.device, y, activation);
    std::vector<float> got(shape.batch * shape.out);
    stream_.view().copy(got.data(), y, got.size() * sizeof(float), CopyKind::device_to_host);

    for (std::size_t r = 0; r < shape.batch; ++r) {
      for (std::size_t o = 0; o < shape.out; ++o) {
        double sum = value_of(b.host[o]);
        double magnitude = std::abs(sum);
        for (std::size_t k = 0; k < shape.in; ++k) {
          const double term = static_cast<double>(value_of(w.host[o * shape.in + k])) *
                              static_cast<double>(value_of(x.host[r * shape.in + k]));
          sum += term;
          magnitude += std::abs(term);
        }
        // f32 summation of in + 1 terms errs by at most about (in + 1) * 2^-24 of their
        // magnitude; GELU's slope stays below 1.13; tanhf adds a few ulp.
        const double tolerance =
            1.2 * (static_cast<double>(shape.in) + 2.0) * 6e-8 * magnitude + 1e-6;
        ASSERT_NEAR(got[r * shape.out + o], activate_reference(sum, activation), tolerance)
            << "row " << r << ", output " << o;
      }
    }
  }

  template <class W, class X>
  void check_all(std::uint64_t seed) {
    const DenseShape shapes[] = {{1, 1, 1}, {1, 8, 16}, {3, 17, 29}, {4, 64, 300}, {2, 300, 257}};
    for (const DenseShape& shape : shapes) {
      for (const Activation activation : {Activation::none, Activation::relu, Activation::gelu}) {
        check<W, X>(shape, activation, seed++);
      }
    }
  }

  Stream stream_;
  std::vector<std::pair<void*, std::size_t>> buffers_;
};

TEST_P(DenseTest, F32MatchesTheReference) { check_all<float, float>(1); }
TEST_P(DenseTest, F16MatchesTheReference) { check_all<std::uint16_t, std::uint16_t>(100); }
TEST_P(DenseTest, F16WeightsWithF32InputMatchTheReference) { check_all<std::uint16_t, float>(200); }

TEST_P(DenseTest, SmallExampleByHand) {
  // W = [[1, 2], [3, 4]], b = [0.5, -10]; x rows [1, 1] and [-1, 0.5]
  const std::vector<float> w = {1, 2, 3, 4};
  const std::vector<float> b = {0.5F, -10};
  const std::vector<float> x = {1, 1, -1, 0.5F};
  float* dw = device_alloc<float>(4);
  float* db = device_alloc<float>(2);
  float* dx = device_alloc<float>(4);
  float* dy = device_alloc<float>(4);
  stream_.view().copy(dw, w.data(), 16, CopyKind::host_to_device);
  stream_.view().copy(db, b.data(), 8, CopyKind::host_to_device);
  stream_.view().copy(dx, x.data(), 16, CopyKind::host_to_device);
  std::vector<float> y(4);
  kernels::dense(stream_, {2, 2, 2}, dw, dx, db, dy, Activation::none);
  stream_.view().copy(y.data(), dy, 16, CopyKind::device_to_host);
  EXPECT_THAT(y, ::testing::ElementsAre(3.5F, -3.0F, 0.5F, -11.0F));
  kernels::dense(stream_, {2, 2, 2}, dw, dx, db, dy, Activation::relu);
  stream_.view().copy(y.data(), dy, 16, CopyKind::device_to_host);
  EXPECT_THAT(y, ::testing::ElementsAre(3.5F, 0.0F, 0.5F, 0.0F));
}

TEST_P(DenseTest, DeclaresAllFourRanges) {
  if (!on_sim()) GTEST_SKIP() << "sim only: the simulated device's violation checks";
  const DenseShape shape{2, 4, 3};
  float* w = device_alloc<float>(12);
  float* b = device_alloc<float>(3);
  float* x = device_alloc<float>(8);
  float* y = device_alloc<float>(6);
  stream_.view().memset(w, 0, 48);
  stream_.view().memset(b, 0, 12);
  stream_.view().memset(x, 0, 32);
  // Each array in turn is freed memory: the kernel must refuse to run and name the operation.
  for (int freed = 0; freed < 4; ++freed) {
    void* spare = device_.impl().allocate(256);
    device_.impl().deallocate(spare, 256);
    auto* dead = static_cast<float*>(spare);
    kernels::dense<float, float>(stream_, shape, freed == 0 ? dead : w, freed == 1 ? dead : x,
                                 freed == 2 ? dead : b, freed == 3 ? dead : y, Activation::none);
    const auto violations = take_violations();
    ASSERT_EQ(violations.size(), 1U) << freed;
    EXPECT_EQ(violations[0].operation, "kernel dense_f32");
    EXPECT_EQ(violations[0].kind, SimViolation::Kind::use_after_free);
    EXPECT_EQ(violations[0].ptr, spare);
  }
}

TEST_P(DenseTest, RangesCoverTheWholeArrays) {
  if (!on_sim()) GTEST_SKIP() << "sim only: the simulated device's violation checks";
  // The simulated device rounds allocations to 256 bytes: these are exact.
  float* w = device_alloc<float>(256);  // [4, 64]
  float* b = device_alloc<float>(64);
  float* x = device_alloc<float>(128);  // two rows of 64
  float* y = device_alloc<float>(64);
  // three rows: x is one row short, y is long enough
  kernels::dense(stream_, DenseShape{3, 64, 4}, w, x, b, y, Activation::none);
  const auto violations = take_violations();
  ASSERT_EQ(violations.size(), 1U);
  EXPECT_EQ(violations[0].kind, SimViolation::Kind::out_of_bounds);
  EXPECT_EQ(violations[0].ptr, x);
  EXPECT_EQ(violations[0].bytes, 3U * 64U * sizeof(float));
}

TEST_P(DenseTest, BadArgumentsAreRejected) {
  float* w = device_alloc<float>(4);
  float* b = device_alloc<float>(2);
  float* x = device_alloc<float>(2);
  float* y = device_alloc<float>(2);
  const DenseShape shape{1, 2, 2};
  const auto none = Activation::none;
  expect_invalid_argument([&] { kernels::dense(StreamView{}, shape, w, x, b, y, none); }, "stream");
  expect_invalid_argument(
      [&] { kernels::dense<float, float>(stream_, shape, nullptr, x, b, y, none); }, "weights");
  expect_invalid_argument(
      [&] { kernels::dense<float, float>(stream_, shape, w, nullptr, b, y, none); }, "x");
  expect_invalid_argument(
      [&] { kernels::dense<float, float>(stream_, shape, w, x, nullptr, y, none); }, "bias");
  expect_invalid_argument([&] { kernels::dense(stream_, shape, w, x, b, nullptr, none); }, "y");
  expect_invalid_argument(
      [&] {
        kernels::dense(stream_, {1, 0, 2}, w, x, b, y, none);
      },
      "shape.in");
  expect_invalid_argument(
      [&] {
        kernels::dense(stream_, {1, 2, 0}, w, x, b, y, none);
      },
      "shape.out");
  expect_invalid_argument(
      [&] { kernels::dense(stream_, shape, w, x, b, y, static_cast<Activation>(7)); },
      "activation");
  const std::size_t huge = std::size_t{1} << 62;
  expect_invalid_argument(
      [&] {
        kernels::dense(stream_, {1, huge, huge}, w, x, b, y, none);
      },
      "weights");
  // an empty batch queues nothing and needs no input or output
  kernels::dense<float, float>(stream_, {0, 2, 2}, w, nullptr, b, nullptr, none);
}

INSTANTIATE_TEST_SUITE_P(Backends, DenseTest, testing::backends(), testing::backend_name);

}  // namespace
}  // namespace gpulife
