// SPDX-License-Identifier: Apache-2.0
// TensorCache: dedup of identical uploads, weak expiry, retention tiers, keys, readiness across
// streams, single flight, memory pressure, bad input, and a randomised multi-threaded run.

#include <atomic>
#include <barrier>
#include <chrono>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <gpulife/cache/tensor_cache.hpp>
#include <gpulife/context.hpp>
#include <gpulife/errors.hpp>
#include <gpulife/runtime/pinned_host_cache.hpp>
#include <gpulife/tensor/weak_tensor.hpp>

#include "support/backend_test.hpp"
#include "support/context_test.hpp"
#include "tensor/tensor_arena.hpp"

namespace gpulife {
namespace {

using testing::ContextTest;
using testing::Gate;

std::vector<float> pattern(std::size_t n, float seed) {
  std::vector<float> v(n);
  std::iota(v.begin(), v.end(), seed);
  return v;
}

class TensorCacheTest : public testing::BackendContextTest {
 protected:
  TensorCache& cache() { return ctx().cache(); }
  std::size_t pool_allocations() { return ctx().statistics().resource.allocations; }
};

TEST_P(TensorCacheTest, IdenticalBytesAreUploadedOnceAndShared) {
  const auto host = pattern(1024, 1);
  DeviceTensor a = cache().upload(std::span<const float>(host), {32, 32});
  const auto copy = host;  // other memory, same bytes
  DeviceTensor b = cache().upload(std::span<const float>(copy), {32, 32});
  EXPECT_EQ(a, b) << "a hit returns the same tensor";
  EXPECT_EQ(a.data(), b.data());
  EXPECT_EQ(pool_allocations(), 1U);
  const CacheStatistics stats = cache().statistics();
  EXPECT_EQ(stats.misses, 1U);
  EXPECT_EQ(stats.hits, 1U);
  EXPECT_EQ(stats.bytes_uploaded, 4096U);
  EXPECT_EQ(stats.bytes_deduplicated, 4096U);
  EXPECT_EQ(stats.live_entries, 1U);
  EXPECT_EQ(stats.live_bytes, 4096U);
  EXPECT_EQ(b.to_host<float>(), host);
}

TEST_P(TensorCacheTest, ShapeAndDtypeArePartOfTheKey) {
  const auto host = pattern(1024, 1);
  DeviceTensor a = cache().upload(std::span<const float>(host), {32, 32});
  DeviceTensor b = cache().upload(std::span<const float>(host), {1024});
  DeviceTensor c = cache().upload(std::as_bytes(std::span(host)), {4096}, DType::u8);
  EXPECT_NE(a, b);
  EXPECT_NE(a, c);
  EXPECT_EQ(cache().statistics().misses, 3U);
}

TEST_P(TensorCacheTest, WeakEntryDiesWithItsLastUser) {
  const auto host = pattern(1024, 2);
  {
    DeviceTensor a = cache().upload(std::span<const float>(host), {1024});
    DeviceTensor view = a.slice(0, 0, 10);
    a.reset();
    EXPECT_EQ(cache().statistics().live_entries, 1U) << "a view still uses it";
  }
  const CacheStatistics stats = cache().statistics();
  EXPECT_EQ(stats.live_entries, 0U);
  EXPECT_EQ(ctx().statistics().live_tensors, 0U);
  EXPECT_EQ(ctx().statistics().resource.bytes_in_use, 0U);
  DeviceTensor again = cache().upload(std::span<const float>(host), {1024});
  EXPECT_EQ(cache().statistics().misses, 2U) << "an expired entry is not a hit";
}

TEST_P(TensorCacheTest, WarmTierKeepsRecentlyUsedEntriesWithinItsBudget) {
  ctx_.reset();
  ctx_.emplace(ContextOptions{.device = device_,
                              .cache = {.retention = Retention::warm,
                                        .warm_budget_bytes = 2 * 4096}});
  const auto a = pattern(1024, 10);
  const auto b = pattern(1024, 20);
  const auto c = pattern(1024, 30);
  (void)cache().upload(std::span<const float>(a), {1024});  // dropped at once: warm
  (void)cache().upload(std::span<const float>(b), {1024});
  CacheStatistics stats = cache().statistics();
  EXPECT_EQ(stats.warm_entries, 2U);
  EXPECT_EQ(stats.warm_bytes, 8192U);
  (void)cache().upload(std::span<const float>(a), {1024});  // a is used again: most recent
  EXPECT_EQ(cache().statistics().hits, 1U);
  (void)cache().upload(std::span<const float>(c), {1024});  // over budget: b is the oldest
  stats = cache().statistics();
  EXPECT_EQ(stats.evictions, 1U);
  EXPECT_EQ(stats.warm_entries, 2U);
  (void)cache().upload(std::span<const float>(a), {1024});
  (void)cache().upload(std::span<const float>(c), {1024});
  EXPECT_EQ(cache().statistics().hits, 3U) << "a and c stayed";
  (void)cache().upload(std::span<const float>(b), {1024});
  EXPECT_EQ(cache().statistics().misses, 4U) << "b was evicted";
  EXPECT_GE(cache().clear_warm(), 2 * 4096U);
  EXPECT_EQ(cache().statistics().warm_entries, 0U);
  EXPECT_EQ(ctx().statistics().live_tensors, 0U);
}

TEST_P(TensorCacheTest, EntriesInUseAreNotInTheWarmTier) {
  ctx_.reset();
  ctx_.emplace(ContextOptions{.device = device_,
                              .cache = {.retention = Retention::warm, .warm_budget_bytes = 0}});
  const auto a = pattern(1024, 10);
  DeviceTensor held = cache().upload(std::span<const float>(a), {1024});
  EXPECT_EQ(cache().statistics().warm_entries, 0U);
  EXPECT_EQ(cache().clear_warm(), 0U);
  EXPECT_EQ(held.to_host<float>(), a) << "an entry in use is never evicted";
  held.reset();  // budget 0: evicted as soon as it is idle
  EXPECT_EQ(cache().statistics().evictions, 1U);
  EXPECT_EQ(ctx().statistics().live_tensors, 0U);
}

TEST_P(TensorCacheTest, PinnedEntriesStayUntilErased) {
  const auto host = pattern(256, 3);
  const CacheKey key = CacheKey::content(digest(std::as_bytes(std::span(host))), DType::f32, {256});
  (void)cache().upload(std::span<const float>(host), {256}, {},
                       {.retention = Retention::pinned, .tag = "table"});
  CacheStatistics stats = cache().statistics();
  EXPECT_EQ(stats.pinned_entries, 1U);
  EXPECT_EQ(stats.live_entries, 1U);
  const auto pinned = cache().pinned_entries();
  ASSERT_EQ(pinned.size(), 1U);
  EXPECT_EQ(pinned[0].tag, "table");
  EXPECT_EQ(pinned[0].bytes, 1024U);
  DeviceTensor found = cache().find(key);
  ASSERT_TRUE(found.defined());
  EXPECT_EQ(found.to_host<float>(), host);
  found.reset();
  EXPECT_TRUE(cache().erase(key));
  EXPECT_FALSE(cache().erase(key));
  EXPECT_FALSE(cache().find(key).defined());
  EXPECT_EQ(ctx().statistics().live_tensors, 0U);
}

TEST_P(TensorCacheTest, StrongerRetentionOnAHitUpgradesTheEntry) {
  const auto host = pattern(256, 4);
  DeviceTensor t = cache().upload(std::span<const float>(host), {256});
  (void)cache().upload(std::span<const float>(host), {256}, {}, {.retention = Retention::pinned});
  t.reset();
  EXPECT_EQ(cache().statistics().pinned_entries, 1U);
  (void)cache().upload(std::span<const float>(host), {256}, {}, {.retention = Retention::weak});
  EXPECT_EQ(cache().statistics().pinned_entries, 1U) << "never downgraded";
}

TEST_P(TensorCacheTest, NameKeysSkipHashingAndNeverMatchContent) {
  const auto first = pattern(64, 1);
  const auto other = pattern(64, 99);
  DeviceTensor a = cache().upload(CacheKey::name("embedding"), std::as_bytes(std::span(first)),
                                  {64}, DType::f32);
  // The caller answers for the name: other bytes under the same name are the same entry.
  DeviceTensor b = cache().upload(CacheKey::name("embedding"), std::as_bytes(std::span(other)),
                                  {64}, DType::f32);
  EXPECT_EQ(a, b);
  EXPECT_EQ(b.to_host<float>(), first);
  DeviceTensor by_content = cache().upload(std::span<const float>(first), {64});
  EXPECT_NE(by_content, a) << "a name key is not a content key";
  EXPECT_THROW((void)cache().upload(CacheKey::name("embedding"), std::as_bytes(std::span(first)),
                                    {8, 8}, DType::f32),
               std::invalid_argument);
  EXPECT_THROW((void)CacheKey::name(""), std::invalid_argument);
}

TEST_P(TensorCacheTest, ADigestComputedEarlierFindsTheContentEntry) {
  const auto host = pattern(512, 5);
  const auto bytes = std::as_bytes(std::span(host));
  DeviceTensor a = cache().upload(std::span<const float>(host), {512});
  DeviceTensor b =
      cache().upload(CacheKey::content(digest(bytes), DType::f32, {512}), bytes, {512}, DType::f32);
  EXPECT_EQ(a, b);
  EXPECT_THROW((void)cache().upload(CacheKey::content(digest(bytes), DType::f32, {256, 2}), bytes,
                                    {512}, DType::f32),
               std::invalid_argument);
}

TEST_P(TensorCacheTest, HostBufferIsHashedOnce) {
  const auto host = pattern(4096, 6);
  const HostBuffer buffer = HostBuffer::copy(std::as_bytes(std::span(host)));
  for (int i = 0; i < 3; ++i) (void)cache().upload(buffer, {4096}, DType::f32);
  EXPECT_EQ(buffer.hash_count(), 1U);
  EXPECT_EQ(cache().statistics().misses, 3U) << "each upload dropped its tensor";
}

TEST_P(TensorCacheTest, PinnedHostBufferStaysAliveUntilItsCopyRan) {
  const auto host = pattern(4096, 7);
  Stream stream(device_);
  Gate gate;
  gate.block(stream);
  DeviceTensor t;
  {
    const HostBuffer pinned = HostBuffer::copy_pinned(device_, std::as_bytes(std::span(host)));
    t = cache().upload(pinned, {4096}, DType::f32, stream);
  }  // our handle is gone; the queued copy still reads the buffer
  // The buffer's last reference must not die inside a host function on the stream: its
  // destructor calls CUDA, which CUDA forbids there (the simulated device reports it, and the
  // fixture fails on the report).
  gate.open();
  EXPECT_EQ(t.to_host<float>(stream), host);
  EXPECT_GT(device_.pinned_host_cache().statistics().bytes_in_use, 0U)
      << "the cache keeps the buffer until a later call sees its copy done";
  t.reset();
  const auto other = pattern(16, 1);
  DeviceTensor next = cache().upload(std::span<const float>(other), {16}, stream);
  cache().clear();
  EXPECT_EQ(device_.pinned_host_cache().statistics().bytes_in_use, 0U)
      << "the buffer was released once its copy had run";
}

TEST_P(TensorCacheTest, AnAdoptedPinnedBufferIsNeverReleasedInsideAHostFunction) {
  // Pinned memory of the caller's own, freed with cudaFreeHost by the owner the buffer adopts.
  // The cache keeps the buffer alive until its copy has run; if that keep-alive were a host
  // function holding the buffer, dropping the last handle here would make the owner free the
  // memory inside it, which CUDA forbids (the simulated device reports it: the fixture fails).
  const auto host = pattern(4096, 21);
  Stream stream(device_);
  Gate gate;
  gate.block(stream);
  DeviceTensor t;
  {
    void* memory = device_.allocate_pinned(host.size() * sizeof(float));
    std::memcpy(memory, host.data(), host.size() * sizeof(float));
    std::shared_ptr<void> owner(memory, [device = device_](void* p) { device.deallocate_pinned(p); });
    const HostBuffer pinned = HostBuffer::adopt(
        std::span(static_cast<const std::byte*>(memory), host.size() * sizeof(float)),
        std::move(owner), HostMemory::pinned);
    t = cache().upload(pinned, {4096}, DType::f32, stream);
  }
  gate.open();
  EXPECT_EQ(t.to_host<float>(stream), host);
  cache().clear();  // the kept buffer goes here, on this thread
}

TEST_P(TensorCacheTest, PinnedBufferUploadWhoseKeepAliveCannotBeQueuedWaitsForItsCopy) {
  if (!on_sim()) GTEST_SKIP() << "sim only: the simulated device's injected faults";
  const auto host = pattern(4096, 8);
  Stream stream(device_);
  Gate gate;
  gate.block(stream);
  // From here every third stream operation fails. The first is ours; the second records the
  // copy's use of the pinned block (the pinned host cache's event); the third is the event,
  // recorded right after the copy, that keeps the buffer alive until the copy ran; the fourth,
  // the upload's readiness event, goes through. The upload itself succeeded, so the call must
  // too: it waits for the copy on the host instead.
  device_.set_faults({.every_nth = 3,
                      .copies = false,
                      .memsets = false,
                      .kernels = false,
                      .stream_operations = true});
  stream.view().host_callback([] {});
  std::jthread opener([&gate] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    gate.open();
  });
  DeviceTensor t;
  {
    const HostBuffer pinned = HostBuffer::copy_pinned(device_, std::as_bytes(std::span(host)));
    t = cache().upload(pinned, {4096}, DType::f32, stream, {.retention = Retention::pinned});
  }  // the buffer is gone: the copy must have read it already
  device_.set_faults({});
  EXPECT_EQ(device_.injected_faults(), 1U);
  EXPECT_EQ(t.to_host<float>(stream), host);
  EXPECT_EQ(cache().statistics().pinned_entries, 1U);
}

SimFaults stream_operation_faults(std::uint64_t every_nth) {
  return {.every_nth = every_nth,
          .copies = false,
          .memsets = false,
          .kernels = false,
          .stream_operations = true};
}

TEST_P(TensorCacheTest, AHitThatFailsLeavesTheRetentionAsItWas) {
  if (!on_sim()) GTEST_SKIP() << "sim only: the simulated device's injected faults";
  const auto host = pattern(1024, 9);
  Stream home(device_);
  Stream other(device_);
  DeviceTensor first = cache().upload(std::span<const float>(host), {1024}, home);
  // A pinned hit on another stream: the wait for the upload fails, so the call fails.
  device_.set_faults(stream_operation_faults(1));
  EXPECT_THROW((void)cache().upload(std::span<const float>(host), {1024}, other,
                                    {.retention = Retention::pinned}),
               CudaError);
  device_.set_faults({});
  EXPECT_EQ(cache().statistics().pinned_entries, 0U) << "a failed call pinned the entry";
  first.reset();  // the last user of a weak entry
  EXPECT_EQ(cache().statistics().live_entries, 0U);
  EXPECT_EQ(ctx().statistics().live_tensors, 0U);
}

TEST_P(TensorCacheTest, ALoadWhoseRequesterCannotWaitForItLeavesNoEntry) {
  if (!on_sim()) GTEST_SKIP() << "sim only: the simulated device's injected faults";
  Stream home(device_);
  Stream other(device_);
  // The factory's tensor lives on `home`; the requester asks on `other`. The readiness event is
  // recorded (call 1), the requester's wait for it fails (call 2).
  device_.set_faults(stream_operation_faults(2));
  EXPECT_THROW((void)cache().get_or_create(CacheKey::name("scratch"),
                                           [&] { return ctx().empty({256}, DType::f32, home); },
                                           other, {.retention = Retention::pinned}),
               CudaError);
  device_.set_faults({});
  EXPECT_EQ(device_.injected_faults(), 1U);
  const CacheStatistics stats = cache().statistics();
  EXPECT_EQ(stats.live_entries, 0U) << "a failed call left an entry";
  EXPECT_EQ(stats.pinned_entries, 0U);
  EXPECT_EQ(ctx().statistics().live_tensors, 0U);
  EXPECT_FALSE(cache().find(CacheKey::name("scratch")));
}

TEST_P(TensorCacheTest, AViewOfAViewKeepsAWeakEntryAlive) {
  const auto host = pattern(1024, 10);
  DeviceTensor t = cache().upload(std::span<const float>(host), {32, 32});
  DeviceTensor row = t.slice(0, 4, 8);       // a view of the cache's tensor
  DeviceTensor flat = row.view({4 * 32});    // a view of that view
  DeviceTensor part = flat.slice(0, 0, 16);  // and one more
  t.reset();
  row.reset();
  flat.reset();
  // `part` still uses the entry's memory: the entry lives, and the same content is a hit.
  EXPECT_EQ(cache().statistics().live_entries, 1U);
  DeviceTensor again = cache().upload(std::span<const float>(host), {32, 32});
  EXPECT_EQ(cache().statistics().hits, 1U) << "the entry died while a view used its memory";
  EXPECT_EQ(static_cast<const std::byte*>(again.data()) + 4 * 32 * sizeof(float),
            static_cast<const std::byte*>(part.data()));
  again.reset();
  part.reset();
  EXPECT_EQ(cache().statistics().live_entries, 0U);
}

TEST_P(TensorCacheTest, ANameOfAnotherLayoutLeavesAnIdleEntryAsItWas) {
  const auto host = pattern(64, 11);
  const CacheKey key = CacheKey::name("idle");
  (void)cache().upload(key, std::as_bytes(std::span(host)), {64}, DType::f32, {},
                       {.retention = Retention::warm});  // idle in the warm tier
  const std::uint64_t created = ctx().statistics().tensors_created;
  EXPECT_THROW((void)cache().upload(key, std::as_bytes(std::span(host)), {8, 8}, DType::f32),
               std::invalid_argument);
  EXPECT_EQ(ctx().statistics().tensors_created, created) << "the refused call made a tensor";
  const CacheStatistics stats = cache().statistics();
  EXPECT_EQ(stats.hits, 0U);
  EXPECT_EQ(stats.warm_entries, 1U);
}

TEST_P(TensorCacheTest, APinnedBufferUploadThatFailsAfterItsCopyWaitsForTheCopy) {
  if (!on_sim()) GTEST_SKIP() << "sim only: the simulated device's injected faults";
  const auto host = pattern(4096, 12);
  Stream stream(device_);
  Gate gate;
  gate.block(stream);
  // Every stream operation fails from here: the copy is queued, recording its readiness fails,
  // and the upload fails. The caller then frees the buffer: the queued copy must have read it.
  device_.set_faults(stream_operation_faults(1));
  std::jthread opener([&gate] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    gate.open();
  });
  {
    const HostBuffer pinned = HostBuffer::copy_pinned(device_, std::as_bytes(std::span(host)));
    EXPECT_THROW((void)cache().upload(pinned, {4096}, DType::f32, stream), CudaError);
    EXPECT_TRUE(stream.view().query()) << "the call returned while its copy could still read the "
                                          "buffer the caller frees now";
  }
  device_.set_faults({});
  EXPECT_EQ(cache().statistics().live_entries, 0U);
  // the pool could not record the free of the failed upload's memory either: contained
  for (const std::string& error : take_errors()) {
    EXPECT_NE(error.find("fault injected"), std::string::npos) << error;
  }
}

TEST_P(TensorCacheTest, EveryThreadWaitingForAFailedLoadGetsItsException) {
  // One exception object, rethrown in two threads (std::exception_ptr); under ThreadSanitizer
  // this needs tests/tsan.supp: the exception's reference count is in uninstrumented libstdc++.
  std::atomic<bool> loading{false};
  std::atomic<bool> waiter_loaded{false};
  Gate fail;
  std::string loader_message;
  std::string waiter_message;
  std::jthread loader([&] {
    try {
      (void)cache().get_or_create(CacheKey::name("shared"), [&]() -> DeviceTensor {
        loading = true;
        fail.wait();
        throw CudaError(2, "cudaErrorMemoryAllocation", "factory", "making the entry");
      });
    } catch (const CudaError& e) {
      loader_message = e.what();
    }
  });
  while (!loading) std::this_thread::yield();
  std::jthread waiter([&] {
    try {
      (void)cache().get_or_create(CacheKey::name("shared"), [&] {
        waiter_loaded = true;  // it came after the failure: nothing to share
        return ctx().empty({4}, DType::f32);
      });
    } catch (const CudaError& e) {
      waiter_message = e.what();
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // the waiter waits for the load
  fail.open();
  loader.join();
  waiter.join();
  EXPECT_NE(loader_message.find("making the entry"), std::string::npos) << loader_message;
  if (!waiter_loaded) {
    EXPECT_EQ(waiter_message, loader_message);
  }
}

TEST_P(TensorCacheTest, GetOrCreateGivesOneLiveInstancePerKey) {
  int calls = 0;
  auto factory = [&] {
    ++calls;
    return ctx().empty({16}, DType::i32, {}, "singleton");
  };
  DeviceTensor a = cache().get_or_create(CacheKey::name("scratch"), factory);
  DeviceTensor b = cache().get_or_create(CacheKey::name("scratch"), factory);
  EXPECT_EQ(a, b);
  EXPECT_EQ(calls, 1);
  a.reset();
  b.reset();
  DeviceTensor c = cache().get_or_create(CacheKey::name("scratch"), factory);
  EXPECT_EQ(calls, 2) << "weak: the instance died with its users";
  EXPECT_EQ(cache().statistics().bytes_uploaded, 0U);
}

TEST_P(TensorCacheTest, FactoryExceptionsLeaveNoEntry) {
  EXPECT_THROW((void)cache().get_or_create(CacheKey::name("x"),
                                           []() -> DeviceTensor { throw std::runtime_error("no"); }),
               std::runtime_error);
  EXPECT_THROW((void)cache().get_or_create(CacheKey::name("x"), [] { return DeviceTensor{}; }),
               std::invalid_argument);
  Context other({.device = device_});
  EXPECT_THROW((void)cache().get_or_create(CacheKey::name("x"),
                                           [&] { return other.empty({4}, DType::f32); }),
               std::invalid_argument);
  EXPECT_FALSE(cache().find(CacheKey::name("x")).defined());
  EXPECT_EQ(cache().statistics().live_entries, 0U);
  DeviceTensor fine =
      cache().get_or_create(CacheKey::name("x"), [&] { return ctx().empty({4}, DType::f32); });
  EXPECT_TRUE(fine.defined());
}

TEST_P(TensorCacheTest, BadInputIsRejectedAndLeavesTheCacheUnchanged) {
  const auto host = pattern(16, 1);
  const auto bytes = std::as_bytes(std::span(host));
  struct Case {
    const char* what;
    std::function<void()> call;
  };
  const std::vector<Case> cases = {
      {"empty span", [&] { (void)cache().upload(bytes.first(0), {0}, DType::f32); }},
      {"size mismatch", [&] { (void)cache().upload(bytes, {15}, DType::f32); }},
      {"zero extent", [&] { (void)cache().upload(bytes, {16, 0}, DType::f32); }},
      {"null host",
       [&] {
         (void)cache().upload(std::span<const std::byte>(static_cast<const std::byte*>(nullptr),
                                                         std::size_t{0}),
                              {4}, DType::f32);
       }},
      {"negative extent", [&] { (void)cache().upload(bytes, {-4, -4}, DType::f32); }},
  };
  for (const Case& c : cases) {
    EXPECT_THROW(c.call(), std::invalid_argument) << c.what;
  }
  const CacheStatistics stats = cache().statistics();
  EXPECT_EQ(stats.hits + stats.misses, 0U);
  EXPECT_EQ(stats.live_entries, 0U);
  EXPECT_EQ(ctx().statistics().tensors_created, 0U);
}

// A dying weak entry's removal must not remove the newer entry stored under the same key. The
// expiry callbacks of a tensor run newest first, so a user's callback registered after the
// cache's runs first, and re-uploads the same bytes while the old entry is dying.
TEST_P(TensorCacheTest, RemovalOfADyingEntryNeverRemovesItsReplacement) {
  const auto host = pattern(256, 8);
  DeviceTensor replacement;
  {
    DeviceTensor first = cache().upload(std::span<const float>(host), {256});
    WeakTensor watcher(first, [&](const TensorInfo&) {
      replacement = cache().upload(std::span<const float>(host), {256});
    });
    first.reset();  // the user callback runs, then the cache's removal of the old entry
  }
  ASSERT_TRUE(replacement.defined());
  EXPECT_EQ(cache().statistics().misses, 2U);
  EXPECT_EQ(cache().statistics().live_entries, 1U);
  DeviceTensor again = cache().upload(std::span<const float>(host), {256});
  EXPECT_EQ(again, replacement) << "the replacement entry survived the old one's removal";
}

class DelayedTensorCacheTest : public ContextTest {
 protected:
  DelayedTensorCacheTest() : ContextTest(testing::delayed_options(3)) {}
  /// The violations seen so far, after `stream`'s work ran (the device may have other work
  /// held at a gate, so the whole device is not synchronised).
  std::vector<SimViolation> take_violations_of(const Stream& stream) {
    stream.synchronize();
    return device_.take_violations();
  }
};

TEST_F(DelayedTensorCacheTest, HitOnAnotherStreamWaitsForTheUploadOnTheDevice) {
  Stream uploader(device_);
  Stream user(device_);
  const auto host = pattern(1 << 16, 9);
  Gate gate;
  gate.block(uploader);  // the upload cannot execute yet
  DeviceTensor first = ctx().cache().upload(std::span<const float>(host), {1 << 16}, uploader);

  // The hazard is real: reading the memory on the other stream without the wait touches memory
  // that, in the uploader's stream order, is not even allocated yet. The simulated device
  // catches it (as a race when the copy is queued, and when it runs), and the bytes read are
  // not the upload's.
  std::vector<float> unsynchronised(host.size());
  user.view().copy(unsynchronised.data(), first.data(), first.bytes(), CopyKind::device_to_host);
  EXPECT_NE(unsynchronised, host);
  const auto violations = take_violations_of(user);
  EXPECT_EQ(violations.size(), 2U);
  for (const SimViolation& violation : violations) EXPECT_EQ(violation.stream_id, user.id());
  EXPECT_NE(testing::find_violation(violations, SimViolation::Kind::race), nullptr);

  DeviceTensor hit = ctx().cache().upload(std::span<const float>(host), {1 << 16}, user);
  EXPECT_EQ(hit, first);
  auto* pinned = static_cast<float*>(device_.allocate_pinned(hit.bytes()));
  user.view().copy(pinned, hit.data(), hit.bytes(), CopyKind::device_to_host);
  EXPECT_FALSE(user.view().query()) << "the user stream waits for the upload, on the device";
  gate.open();
  user.synchronize();
  EXPECT_TRUE(std::equal(host.begin(), host.end(), pinned));
  device_.deallocate_pinned(pinned);
  // The hit's stream is recorded: the release also waits for the user's work.
  ASSERT_NE(detail::TensorAccess::impl(hit)->base->recorded, nullptr);
}

TEST_F(DelayedTensorCacheTest, HitOnTheUploadStreamNeedsNoWait) {
  Stream uploader(device_);
  const auto host = pattern(1024, 9);
  DeviceTensor first = ctx().cache().upload(std::span<const float>(host), {1024}, uploader);
  DeviceTensor hit = ctx().cache().upload(std::span<const float>(host), {1024}, uploader);
  EXPECT_EQ(hit.to_host<float>(uploader), host);
  EXPECT_EQ(detail::TensorAccess::impl(hit)->base->recorded, nullptr);
}

TEST_P(TensorCacheTest, ConcurrentIdenticalUploadsMakeOneAllocationAndOneCopy) {
  const auto host = pattern(std::size_t{4} << 20, 11);  // 16 MiB: hashing takes a while
  for (int round = 0; round < 5; ++round) {
    std::barrier start(2);
    DeviceTensor results[2];
    auto worker = [&](int i) {
      start.arrive_and_wait();
      results[i] = cache().upload(std::span<const float>(host), {std::int64_t{4} << 20});
    };
    const auto allocations_before = pool_allocations();
    const auto uploaded_before = cache().statistics().bytes_uploaded;
    std::thread a(worker, 0);
    std::thread b(worker, 1);
    a.join();
    b.join();
    EXPECT_EQ(results[0], results[1]);
    EXPECT_EQ(pool_allocations() - allocations_before, 1U) << "round " << round;
    EXPECT_EQ(cache().statistics().bytes_uploaded - uploaded_before, host.size() * sizeof(float));
  }
}

class PressuredTensorCacheTest : public ContextTest {
 protected:
  PressuredTensorCacheTest()
      : ContextTest(SimOptions{.capacity_bytes = std::size_t{64} << 20},
                    ContextOptions{.cache = {.retention = Retention::warm,
                                             .warm_budget_bytes = std::size_t{1} << 30}}) {}
};

TEST_F(PressuredTensorCacheTest, FailedAllocationEvictsTheWarmTierAndRetries) {
  const auto a = pattern(std::size_t{6} << 20, 1);  // 24 MiB each
  const auto b = pattern(std::size_t{6} << 20, 2);
  const auto c = pattern(std::size_t{6} << 20, 3);
  (void)ctx().cache().upload(std::span<const float>(a), {std::int64_t{6} << 20});
  (void)ctx().cache().upload(std::span<const float>(b), {std::int64_t{6} << 20});
  EXPECT_EQ(ctx().cache().statistics().warm_entries, 2U);
  DeviceTensor t = ctx().cache().upload(std::span<const float>(c), {std::int64_t{6} << 20});
  EXPECT_EQ(t.to_host<float>(), c);
  EXPECT_GE(ctx().cache().statistics().evictions, 1U);
}

TEST_F(PressuredTensorCacheTest, EntriesInUseSurvivePressure) {
  const auto a = pattern(std::size_t{6} << 20, 1);
  const auto b = pattern(std::size_t{6} << 20, 2);
  const auto c = pattern(std::size_t{6} << 20, 3);
  DeviceTensor held_a = ctx().cache().upload(std::span<const float>(a), {std::int64_t{6} << 20});
  DeviceTensor held_b = ctx().cache().upload(std::span<const float>(b), {std::int64_t{6} << 20});
  EXPECT_THROW((void)ctx().cache().upload(std::span<const float>(c), {std::int64_t{6} << 20}),
               OutOfMemoryError);
  EXPECT_EQ(held_a.to_host<float>(), a);
  EXPECT_EQ(held_b.to_host<float>(), b);
  EXPECT_EQ(ctx().cache().statistics().live_entries, 2U);
}

TEST_P(TensorCacheTest, VerificationTurnsACorruptedHitIntoAMiss) {
  ctx_.reset();
  ctx_.emplace(ContextOptions{.device = device_, .cache = {.verify_hits = true}});
  const auto host = pattern(256, 12);
  DeviceTensor cached = cache().upload(std::span<const float>(host), {256});
  cached.stream().memset(cached.data(), 0, 16);  // corrupt the device copy behind the cache
  DeviceTensor again = cache().upload(std::span<const float>(host), {256});
  EXPECT_NE(again, cached);
  EXPECT_EQ(again.to_host<float>(), host);
  // Counted as what it was: a miss that uploaded, not a hit that deduplicated.
  CacheStatistics stats = cache().statistics();
  EXPECT_EQ(stats.verification_failures, 1U);
  EXPECT_EQ(stats.hits, 0U);
  EXPECT_EQ(stats.misses, 2U);
  EXPECT_EQ(stats.bytes_uploaded, 2U * 256U * sizeof(float));
  EXPECT_EQ(stats.bytes_deduplicated, 0U);
  EXPECT_EQ(stats.live_entries, 1U) << "the fresh upload replaced the corrupted entry";
  const auto errors = take_errors();
  ASSERT_EQ(errors.size(), 1U);
  EXPECT_NE(errors[0].find("differs from the host bytes"), std::string::npos);
  // The key deduplicates again: the next upload is a verified hit on the fresh copy.
  DeviceTensor third = cache().upload(std::span<const float>(host), {256});
  EXPECT_EQ(third, again);
  stats = cache().statistics();
  EXPECT_EQ(stats.hits, 1U);
  EXPECT_EQ(stats.bytes_deduplicated, 256U * sizeof(float));
  EXPECT_EQ(stats.verification_failures, 1U);
  // and the holder of the corrupted tensor still has it, until it lets go
  EXPECT_EQ(cached.bytes(), 256U * sizeof(float));
  cached.reset();
  EXPECT_EQ(cache().upload(std::span<const float>(host), {256}), again);
  EXPECT_TRUE(take_errors().empty());
}

// Two threads, several streams, every retention policy: every tensor returned holds the bytes
// of its source, and at the end nothing is left. Run under ThreadSanitizer by the tsan preset.
TEST_P(TensorCacheTest, RandomisedTwoThreadsAlwaysReturnTheRightBytes) {
  constexpr int sources = 12;
  std::vector<std::vector<float>> host;
  for (int i = 0; i < sources; ++i) host.push_back(pattern(512 + 64 * static_cast<std::size_t>(i), static_cast<float>(i * 1000)));
  std::vector<Stream> streams;
  for (int i = 0; i < 3; ++i) streams.emplace_back(device_);
  std::atomic<int> wrong{0};
  auto worker = [&](unsigned seed) {
    std::mt19937 rng(seed);
    std::vector<std::pair<int, DeviceTensor>> held;
    for (int op = 0; op < 600; ++op) {
      const int which = static_cast<int>(rng() % sources);
      const Retention retention = static_cast<Retention>(rng() % 3);
      StreamView stream = streams[rng() % streams.size()];
      DeviceTensor t = cache().upload(std::span<const float>(host[static_cast<std::size_t>(which)]),
                                      {static_cast<std::int64_t>(host[static_cast<std::size_t>(which)].size())}, stream,
                                      {.retention = retention});
      if (rng() % 4 == 0 && t.to_host<float>(stream) != host[static_cast<std::size_t>(which)]) ++wrong;
      held.emplace_back(which, std::move(t));
      if (held.size() > 6) held.erase(held.begin() + static_cast<std::ptrdiff_t>(rng() % held.size()));
      if (rng() % 50 == 0) (void)cache().clear_warm();
    }
  };
  std::thread a(worker, 1U);
  std::thread b(worker, 2U);
  a.join();
  b.join();
  EXPECT_EQ(wrong.load(), 0);
  cache().clear();
  EXPECT_EQ(ctx().statistics().live_tensors, 0U);
  const CacheStatistics stats = cache().statistics();
  std::printf("hits %llu, misses %llu, evictions %llu\n",
              static_cast<unsigned long long>(stats.hits),
              static_cast<unsigned long long>(stats.misses),
              static_cast<unsigned long long>(stats.evictions));
  EXPECT_GT(stats.hits, 0U);
}

INSTANTIATE_TEST_SUITE_P(Backends, TensorCacheTest, testing::backends(), testing::backend_name);

}  // namespace
}  // namespace gpulife
