// SPDX-License-Identifier: Apache-2.0
// checksum on every backend: equal to the host reference for every length and alignment,
// sensitive to single-byte changes and swapped elements, ordered on its stream, and checked
// against freed memory.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <span>
#include <stdexcept>
#include <utility>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <gpulife/kernels/checksum.hpp>
#include <gpulife/memory/async_resource.hpp>
#include <gpulife/memory/pool_resource.hpp>

#include "support/expect_invalid_argument.hpp"
#include "support/backend_test.hpp"

namespace gpulife {
namespace {

using kernels::checksum;
using kernels::checksum_async;
using kernels::checksum_host;
using testing::expect_invalid_argument;

std::vector<std::byte> random_bytes(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::byte> bytes(n);
  for (std::byte& b : bytes) b = static_cast<std::byte>(rng() & 0xFFU);
  return bytes;
}

class ChecksumTest : public testing::BackendTest {
 protected:
  void SetUp() override {
    BackendTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    pool_ = std::make_shared<PoolResource>(std::make_shared<AsyncResource>(device_));
    stream_ = Stream(device_);
  }
  void TearDown() override {
    if (stream_.valid()) stream_.synchronize();
    for (auto [ptr, bytes] : buffers_) device_.impl().deallocate(ptr, bytes);
    buffers_.clear();
    pool_.reset();
    stream_ = Stream{};
    BackendTest::TearDown();
  }

  /// Device memory holding `bytes` at `offset` bytes past a 256-byte boundary.
  std::byte* upload(std::span<const std::byte> bytes, std::size_t offset = 0) {
    const std::size_t size = bytes.size() + offset + 1;
    auto* base = static_cast<std::byte*>(device_.impl().allocate(size));
    buffers_.emplace_back(base, size);
    stream_.view().copy(base + offset, bytes.data(), bytes.size(), CopyKind::host_to_device);
    return base + offset;
  }

  std::shared_ptr<PoolResource> pool_;
  Stream stream_;
  std::vector<std::pair<void*, std::size_t>> buffers_;
};

TEST_P(ChecksumTest, EqualsTheHostReferenceForEveryLengthAndAlignment) {
  for (const std::size_t n : {1U, 2U, 7U, 8U, 9U, 15U, 16U, 17U, 64U, 1000U, 4099U}) {
    const auto bytes = random_bytes(n, n);
    for (const std::size_t offset : {0U, 1U, 3U, 4U, 8U}) {
      const std::byte* data = upload(bytes, offset);
      EXPECT_EQ(checksum(stream_, data, n, *pool_), checksum_host(bytes))
          << n << " bytes at offset " << offset;
      EXPECT_EQ(checksum(stream_, data, n), checksum_host(bytes)) << n << " bytes, no resource";
    }
  }
}

TEST_P(ChecksumTest, EmptyInputHasAFixedValue) {
  EXPECT_EQ(checksum(stream_, nullptr, 0, *pool_), checksum_host({}));
  EXPECT_EQ(checksum(stream_, nullptr, 0), checksum_host({}));
  const std::byte zero{0};
  EXPECT_NE(checksum_host({}), checksum_host(std::span<const std::byte>(&zero, 1)));
}

TEST_P(ChecksumTest, EverySingleByteChangeChangesIt) {
  const auto original = random_bytes(37, 5);
  const std::uint64_t reference = checksum_host(original);
  std::byte* data = upload(original);
  for (std::size_t i = 0; i < original.size(); ++i) {
    auto flipped = original;
    flipped[i] ^= std::byte{0x10};
    EXPECT_NE(checksum_host(flipped), reference) << i;
    stream_.view().copy(data, flipped.data(), flipped.size(), CopyKind::host_to_device);
    EXPECT_EQ(checksum(stream_, data, flipped.size(), *pool_), checksum_host(flipped)) << i;
  }
  // every single-bit flip of one word, exhaustively on the host
  for (std::size_t bit = 0; bit < 64; ++bit) {
    auto flipped = original;
    flipped[8 + bit / 8] ^= static_cast<std::byte>(1U << (bit % 8));
    EXPECT_NE(checksum_host(flipped), reference) << bit;
  }
}

TEST_P(ChecksumTest, SwappingTwoElementsChangesIt) {
  std::vector<float> values(100);
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i) * 0.5F;
  const auto as_bytes = [](const std::vector<float>& v) { return std::as_bytes(std::span(v)); };
  auto* data = upload(as_bytes(values));
  const std::uint64_t before = checksum(stream_, data, values.size() * sizeof(float), *pool_);
  EXPECT_EQ(before, checksum_host(as_bytes(values)));
  // within one 8-byte word, and across words
  for (const auto& [i, j] : {std::pair{0U, 1U}, std::pair{3U, 90U}, std::pair{98U, 99U}}) {
    auto swapped = values;
    std::swap(swapped[i], swapped[j]);
    stream_.view().copy(data, swapped.data(), swapped.size() * sizeof(float),
                        CopyKind::host_to_device);
    const std::uint64_t after = checksum(stream_, data, swapped.size() * sizeof(float), *pool_);
    EXPECT_NE(after, before) << i << " <-> " << j;
    EXPECT_EQ(after, checksum_host(as_bytes(swapped)));
  }
}

TEST_P(ChecksumTest, TrailingZeroBytesCount) {
  const std::byte ab[] = {std::byte{'a'}, std::byte{'b'}, std::byte{0}};
  EXPECT_NE(checksum_host(std::span(ab, 2)), checksum_host(std::span(ab, 3)));
}

TEST_P(ChecksumTest, AsyncWritesTheDeviceWordInStreamOrder) {
  if (!on_sim())
    GTEST_SKIP() << "sim only: a gate holds the stream behind a pageable copy, which CUDA may make "
                    "synchronous";
  const auto first = random_bytes(1000, 1);
  const auto second = random_bytes(1000, 2);
  auto* data = upload(first);
  auto* result = static_cast<std::uint64_t*>(pool_->allocate(sizeof(std::uint64_t), stream_));
  stream_.synchronize();

  // Held behind a gate, the copy of `second` and the checksum are queued but have not run: the
  // checksum must see `second`, not what the memory holds when it is queued.
  testing::Gate gate;
  gate.block(stream_);
  stream_.view().copy(data, second.data(), second.size(), CopyKind::host_to_device);
  checksum_async(stream_, data, second.size(), result, *pool_);
  gate.open();
  std::uint64_t value = 0;
  stream_.view().copy(&value, result, sizeof value, CopyKind::device_to_host);
  EXPECT_EQ(value, checksum_host(second));

  checksum_async(stream_, nullptr, 0, result, *pool_);
  stream_.view().copy(&value, result, sizeof value, CopyKind::device_to_host);
  EXPECT_EQ(value, checksum_host({}));
  pool_->deallocate(result, sizeof(std::uint64_t), stream_);
}

TEST_P(ChecksumTest, ReadingFreedMemoryIsAViolation) {
  if (!on_sim()) GTEST_SKIP() << "sim only: the simulated device's violation checks";
  void* data = device_.impl().allocate(512);
  device_.impl().deallocate(data, 512);
  (void)checksum(stream_, data, 512, *pool_);
  auto violations = take_violations();
  ASSERT_EQ(violations.size(), 1U);
  EXPECT_EQ(violations[0].operation, "kernel checksum");
  EXPECT_EQ(violations[0].kind, SimViolation::Kind::use_after_free);

  // a pool block given back is dead too, though the pool still holds the memory
  void* block = pool_->allocate(512, stream_);
  pool_->deallocate(block, 512, stream_);
  (void)checksum(stream_, block, 512, *pool_);
  violations = take_violations();
  ASSERT_EQ(violations.size(), 1U);
  EXPECT_EQ(violations[0].kind, SimViolation::Kind::use_after_free);

  // reading past the end of a live allocation
  const auto bytes = random_bytes(100, 3);
  const std::byte* live = upload(bytes);
  (void)checksum(stream_, live, 4096, *pool_);
  violations = take_violations();
  ASSERT_EQ(violations.size(), 1U);
  EXPECT_EQ(violations[0].kind, SimViolation::Kind::out_of_bounds);
}

TEST_P(ChecksumTest, AsyncResultMustBeDeviceMemory) {
  if (!on_sim()) GTEST_SKIP() << "sim only: the simulated device's violation checks";
  const auto bytes = random_bytes(64, 4);
  const std::byte* data = upload(bytes);
  std::uint64_t host_word = 0;
  checksum_async(stream_, data, bytes.size(), &host_word, *pool_);
  const auto violations = take_violations();
  ASSERT_EQ(violations.size(), 1U);
  EXPECT_EQ(violations[0].kind, SimViolation::Kind::unallocated);
  EXPECT_EQ(host_word, 0U);  // the kernel did not run
}

TEST_P(ChecksumTest, BadArgumentsAreRejected) {
  const auto bytes = random_bytes(16, 6);
  const std::byte* data = upload(bytes);
  std::uint64_t* result = static_cast<std::uint64_t*>(pool_->allocate(8, stream_));
  expect_invalid_argument([&] { (void)checksum(stream_, nullptr, 16, *pool_); }, "data");
  expect_invalid_argument([&] { (void)checksum(stream_, nullptr, 16); }, "data");
  expect_invalid_argument([&] { (void)checksum(StreamView{}, data, 16, *pool_); }, "stream");
  expect_invalid_argument([&] { (void)checksum(StreamView{}, data, 16); }, "stream");
  expect_invalid_argument([&] { checksum_async(stream_, data, 16, nullptr, *pool_); }, "result");
  expect_invalid_argument([&] { checksum_async(stream_, nullptr, 16, result, *pool_); }, "data");
  expect_invalid_argument([&] { checksum_async(StreamView{}, data, 16, result, *pool_); },
                          "stream");
  Device other = Device::sim();
  PoolResource foreign(std::make_shared<AsyncResource>(other));
  expect_invalid_argument([&] { (void)checksum(stream_, data, 16, foreign); }, "temp");
  expect_invalid_argument([&] { checksum_async(stream_, data, 16, result, foreign); }, "temp");
  pool_->deallocate(result, 8, stream_);
}

INSTANTIATE_TEST_SUITE_P(Backends, ChecksumTest, testing::backends(), testing::backend_name);

}  // namespace
}  // namespace gpulife
