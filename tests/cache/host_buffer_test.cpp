// SPDX-License-Identifier: Apache-2.0
// Tests gpulife/cache/host_buffer.hpp.

#include <gpulife/cache/host_buffer.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <gpulife/cache/digest.hpp>
#include <gpulife/cache/digest_workers.hpp>

#include "support/backend_test.hpp"

namespace gpulife {
namespace {

constexpr std::size_t chunk = digest_chunk_bytes;
// The smallest buffer that DigestWorkers hashes on several threads.
constexpr std::size_t parallel = DigestWorkers::parallel_min_bytes;

std::vector<std::byte> pattern(std::size_t size, std::uint64_t seed = 1) {
  std::vector<std::byte> bytes(size);
  std::uint64_t state = seed;
  for (auto& byte : bytes) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    byte = static_cast<std::byte>(state >> 56);
  }
  return bytes;
}

template <class F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const std::exception& error) {
    return error.what();
  }
  return "(no exception)";
}

bool starts_with(const std::string& text, const std::string& prefix) {
  return text.rfind(prefix, 0) == 0;
}

TEST(HostBufferTest, EmptyHandle) {
  const HostBuffer buffer;
  EXPECT_EQ(buffer.size(), 0u);
  EXPECT_EQ(buffer.data(), nullptr);
  EXPECT_TRUE(buffer.bytes().empty());
  EXPECT_EQ(buffer.digest(), digest(nullptr, 0));
  EXPECT_NO_THROW(buffer.verify());
  EXPECT_EQ(buffer.hash_count(), 0u);
}

TEST(HostBufferTest, CopyOwnsItsBytes) {
  auto source = pattern(1000);
  const HostBuffer buffer = HostBuffer::copy(source);
  const Digest128 expected = digest(source);
  source.assign(source.size(), std::byte{0});  // the buffer does not look at the source again
  ASSERT_EQ(buffer.size(), 1000u);
  EXPECT_NE(static_cast<const void*>(buffer.data()), static_cast<const void*>(source.data()));
  EXPECT_EQ(buffer.memory(), HostMemory::pageable);
  EXPECT_EQ(buffer.digest(), expected);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(buffer.data()) % 64, 0u);
}

TEST(HostBufferTest, CopyOfNothing) {
  const HostBuffer buffer = HostBuffer::copy({});
  EXPECT_EQ(buffer.size(), 0u);
  EXPECT_EQ(buffer.digest(), digest(nullptr, 0));
}

TEST(HostBufferTest, CreateLetsTheWriterFillTheBytesOnce) {
  const auto source = pattern(3 * chunk + 5);
  int calls = 0;
  const HostBuffer buffer = HostBuffer::create(source.size(), [&](std::span<std::byte> out) {
    ++calls;
    ASSERT_EQ(out.size(), source.size());
    std::memcpy(out.data(), source.data(), out.size());
  });
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(buffer.digest(), digest(source));
}

TEST(HostBufferTest, CreateFreesTheMemoryWhenTheWriterThrows) {
  EXPECT_THROW((void)HostBuffer::create(
                   100, [](std::span<std::byte>) { throw std::runtime_error("read failed"); }),
               std::runtime_error);
}

TEST(HostBufferTest, AdoptKeepsTheOwnerAliveUntilTheLastHandle) {
  auto storage = std::make_shared<std::vector<std::byte>>(pattern(4096));
  std::weak_ptr<std::vector<std::byte>> watch = storage;
  const std::span<const std::byte> bytes{*storage};
  HostBuffer copy_of_handle;
  {
    const HostBuffer buffer = HostBuffer::adopt(bytes, std::move(storage));
    copy_of_handle = buffer;
    EXPECT_EQ(buffer.data(), bytes.data());
  }
  EXPECT_FALSE(watch.expired());
  EXPECT_EQ(copy_of_handle.digest(), digest(bytes));
  copy_of_handle = HostBuffer{};
  EXPECT_TRUE(watch.expired());
}

TEST(HostBufferTest, AdoptRunsACustomDeleterOnce) {
  int deleted = 0;
  auto* raw = new std::byte[64]{};
  {
    const HostBuffer buffer =
        HostBuffer::adopt(std::span<const std::byte>{raw, 64},
                          std::shared_ptr<const void>(raw,
                                                      [&deleted](const std::byte* p) {
                                                        ++deleted;
                                                        delete[] p;
                                                      }),
                          HostMemory::pinned);
    EXPECT_EQ(buffer.memory(), HostMemory::pinned);
    const HostBuffer second = buffer;  // NOLINT(performance-unnecessary-copy-initialization)
    EXPECT_EQ(second.data(), raw);
  }
  EXPECT_EQ(deleted, 1);
}

TEST(HostBufferTest, ViewBorrowsTheCallersBytes) {
  const auto source = pattern(2 * chunk + 1);
  const HostBuffer buffer = HostBuffer::view(source);
  EXPECT_EQ(buffer.data(), source.data());
  EXPECT_EQ(buffer.size(), source.size());
  EXPECT_EQ(buffer.digest(), digest(source));
}

TEST(HostBufferTest, BadArgumentsAreRejectedNamingTheArgument) {
  const std::span<const std::byte> null_bytes{static_cast<const std::byte*>(nullptr),
                                              std::size_t{0}};
  EXPECT_NO_THROW((void)HostBuffer::view(null_bytes));
  // A span of null data and non-zero size, as a C API's (pointer, length) pair can produce.
  const std::byte* null_data = nullptr;
  std::size_t size = 16;
  EXPECT_TRUE(starts_with(message_of([&] {
                            (void)HostBuffer::view({null_data, size});
                          }),
                          "bytes:"));
  EXPECT_TRUE(starts_with(message_of([&] {
                            (void)HostBuffer::copy({null_data, size});
                          }),
                          "bytes:"));
  EXPECT_TRUE(starts_with(message_of([&] {
                            (void)HostBuffer::adopt({null_data, size}, std::make_shared<int>());
                          }),
                          "bytes:"));
  const auto bytes = pattern(16);
  EXPECT_TRUE(starts_with(message_of([&] { (void)HostBuffer::adopt(bytes, nullptr); }), "owner:"));
  EXPECT_TRUE(
      starts_with(message_of([&] { (void)HostBuffer::copy_pinned(Device{}, bytes); }), "device:"));
  EXPECT_THROW((void)HostBuffer::view({null_data, size}), std::invalid_argument);
}

TEST(HostBufferTest, HashesOnceHoweverOftenAndFromHoweverManyCopies) {
  const auto source = pattern(parallel + 5 * chunk + 3);
  const Digest128 expected = digest(source);
  const HostBuffer buffer = HostBuffer::view(source);
  EXPECT_FALSE(buffer.has_digest());
  EXPECT_EQ(buffer.hash_count(), 0u);
  DigestWorkers workers(2);
  for (int i = 0; i < 10; ++i) {
    const HostBuffer copy = buffer;  // NOLINT(performance-unnecessary-copy-initialization)
    EXPECT_EQ(i % 2 == 0 ? copy.digest() : copy.digest(workers), expected);
  }
  EXPECT_TRUE(buffer.has_digest());
  EXPECT_EQ(buffer.hash_count(), 1u);
}

TEST(HostBufferTest, ConcurrentFirstDigestsHashOnce) {
  const auto source = pattern(parallel + chunk);
  const Digest128 expected = digest(source);
  for (int round = 0; round < 5; ++round) {
    const HostBuffer buffer = HostBuffer::view(source);
    DigestWorkers workers(2);
    std::atomic<int> wrong{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i) {
      threads.emplace_back([&, i] {
        const Digest128 got = i % 2 == 0 ? buffer.digest() : buffer.digest(workers);
        if (got != expected) wrong.fetch_add(1);
      });
    }
    for (auto& thread : threads) thread.join();
    EXPECT_EQ(wrong.load(), 0);
    EXPECT_EQ(buffer.hash_count(), 1u);
  }
}

TEST(HostBufferTest, VerifyDetectsAModifiedByte) {
  for (std::size_t size : {std::size_t{100}, 3 * chunk + 17, parallel + 17}) {
    SCOPED_TRACE(size);
    auto source = pattern(size);
    const HostBuffer buffer = HostBuffer::view(source);
    const Digest128 before = buffer.digest();
    EXPECT_NO_THROW(buffer.verify());
    EXPECT_EQ(buffer.hash_count(), 2u);

    source[size - 1] ^= std::byte{0x80};  // breaks the promise
    DigestWorkers workers(2);
    EXPECT_THROW(buffer.verify(workers), ModifiedBufferError);
    const std::string message = message_of([&] { buffer.verify(); });
    EXPECT_NE(message.find(before.to_hex()), std::string::npos) << message;
    EXPECT_NE(message.find(digest(source).to_hex()), std::string::npos) << message;
    EXPECT_NE(message.find("must not be written"), std::string::npos) << message;
    // The remembered digest stays the one taken first: verify reports, it does not re-key.
    EXPECT_EQ(buffer.digest(), before);
  }
}

TEST(HostBufferTest, VerifyBeforeAnyDigestTakesIt) {
  const auto source = pattern(64);
  const HostBuffer buffer = HostBuffer::view(source);
  buffer.verify();
  EXPECT_TRUE(buffer.has_digest());
  EXPECT_EQ(buffer.hash_count(), 1u);
  EXPECT_EQ(buffer.digest(), digest(source));
  EXPECT_EQ(buffer.hash_count(), 1u);
}

// ---- pinned buffers, on every backend ------------------------------------------------------------

class PinnedHostBufferTest : public testing::BackendTest {};

TEST_P(PinnedHostBufferTest, CopyPinnedIsPinnedMemoryOfTheDevice) {
  const auto source = pattern(chunk + 9);
  HostBuffer buffer = HostBuffer::copy_pinned(device_, source);
  EXPECT_EQ(buffer.memory(), HostMemory::pinned);
  EXPECT_EQ(buffer.digest(), digest(source));
  // An upload from it is an ordinary asynchronous host-to-device copy; the sim checks the ranges.
  auto stream = device_.create_stream();
  void* device_ptr = device_.impl().allocate(buffer.size());
  stream.view().copy(device_ptr, buffer.data(), buffer.size(), CopyKind::host_to_device);
  std::vector<std::byte> back(buffer.size());
  stream.view().copy(back.data(), device_ptr, back.size(), CopyKind::device_to_host);
  stream.view().synchronize();
  device_.impl().deallocate(device_ptr, buffer.size());
  EXPECT_EQ(back, source);
  buffer = HostBuffer{};  // back to the device's pinned host cache; a bad free is reported
}

TEST_P(PinnedHostBufferTest, CreatePinnedOutlivesTheDeviceHandle) {
  HostBuffer buffer;
  {
    const Device device = on_sim() ? Device::sim() : Device::cuda(0);
    buffer = HostBuffer::create_pinned(device, 4096, [](std::span<std::byte> out) {
      for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<std::byte>(i);
    });
  }
  EXPECT_EQ(buffer.memory(), HostMemory::pinned);
  EXPECT_EQ(buffer.data()[4095], std::byte{0xff});
  EXPECT_EQ(buffer.digest(), digest(buffer.bytes()));
}

INSTANTIATE_TEST_SUITE_P(Backends, PinnedHostBufferTest, testing::backends(),
                         testing::backend_name);

}  // namespace
}  // namespace gpulife
