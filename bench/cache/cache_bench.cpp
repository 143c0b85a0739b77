// SPDX-License-Identifier: Apache-2.0
// Tensor-cache hits, against the weak-value-dictionary pattern written plainly:
//
//   cache/hit/gpulife              TensorCache::upload with a precomputed key (CacheKey::content
//                                  of a digest taken once): the lookup alone, no hashing
//   cache/hit/naive_weak_map       std::unordered_map<Digest128, std::weak_ptr<...>> behind one
//                                  mutex, returning a std::shared_ptr
//
// both on one thread and on two threads looking up the same key (the contended case: one shard
// lock, one reference count), and hits that hash the bytes first:
//
//   cache/hit_hashing/gpulife/bytes:N/single      the digest on the calling thread
//   cache/hit_hashing/gpulife/bytes:N/parallel    on the context's DigestWorkers (all hardware
//                                                 threads; buffers under 2 MiB stay on the
//                                                 calling thread)
//   cache/hit_hashing/gpulife/bytes:N/hash_once   a HostBuffer: hashed once, remembered after
//
// for N = 4 KiB, 1 MiB and 64 MiB. Every hit is on the stream the entry was uploaded on, so no
// stream waits for another.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include <benchmark/benchmark.h>

#include <gpulife/cache/digest.hpp>
#include <gpulife/cache/host_buffer.hpp>
#include <gpulife/context.hpp>
#include <gpulife/runtime/stream.hpp>

#include "support/bench_support.hpp"

namespace gpulife::bench {
namespace {

HostBuffer random_buffer(std::size_t bytes) {
  return HostBuffer::create(bytes, [](std::span<std::byte> out) {
    std::uint64_t state = 0x9E3779B97F4A7C15ULL;
    for (std::size_t i = 0; i + 8 <= out.size(); i += 8) {
      state ^= state << 13, state ^= state >> 7, state ^= state << 17;
      std::memcpy(out.data() + i, &state, 8);
    }
  });
}

Shape f32_shape(std::size_t bytes) { return Shape{static_cast<std::int64_t>(bytes / 4)}; }

/// A context whose cache holds one entry, kept alive by `keep`.
struct CacheFixture {
  CacheFixture(std::size_t bytes, std::size_t digest_threads)
      : context({.device = bench_device(), .digest_threads = digest_threads}),
        stream(context.device()),
        buffer(random_buffer(bytes)),
        shape(f32_shape(bytes)),
        key(CacheKey::content(buffer.digest(), DType::f32, shape)),
        keep(context.cache().upload(key, buffer.bytes(), shape, DType::f32, stream)) {}

  Context context;
  Stream stream;
  HostBuffer buffer;
  Shape shape;
  CacheKey key;
  DeviceTensor keep;
};

/// The baseline's value: a tensor's description; a miss stands for the upload with a copy.
struct PlainTensor {
  std::vector<std::byte> bytes;
};

/// A weak-value dictionary written plainly: one map, one mutex, weak values.
class NaiveWeakMap {
 public:
  std::shared_ptr<PlainTensor> get_or_upload(const Digest128& key,
                                             std::span<const std::byte> host) {
    std::scoped_lock lock(mutex_);
    std::weak_ptr<PlainTensor>& slot = entries_[key];
    if (std::shared_ptr<PlainTensor> hit = slot.lock()) return hit;
    auto made = std::make_shared<PlainTensor>(PlainTensor{{host.begin(), host.end()}});
    slot = made;
    return made;
  }

 private:
  std::mutex mutex_;
  std::unordered_map<Digest128, std::weak_ptr<PlainTensor>> entries_;
};

struct NaiveFixture {
  NaiveFixture() : buffer(random_buffer(4 * KiB)), key(buffer.digest()) {
    keep = map.get_or_upload(key, buffer.bytes());
  }
  HostBuffer buffer;
  Digest128 key;
  NaiveWeakMap map;
  std::shared_ptr<PlainTensor> keep;
};

// Made by thread 0 before the benchmark loop and dropped after it: Google Benchmark starts and
// ends the loop of all threads together.
std::unique_ptr<CacheFixture> cache_fixture;
std::unique_ptr<NaiveFixture> naive_fixture;

void bm_hit_gpulife(benchmark::State& state) {
  if (state.thread_index() == 0) cache_fixture = std::make_unique<CacheFixture>(4 * KiB, 1);
  for (auto _ : state) {
    CacheFixture& f = *cache_fixture;
    DeviceTensor hit =
        f.context.cache().upload(f.key, f.buffer.bytes(), f.shape, DType::f32, f.stream);
    benchmark::DoNotOptimize(hit);
  }
  state.SetItemsProcessed(state.iterations());
  if (state.thread_index() == 0) {
    CacheFixture& f = *cache_fixture;
    state.counters["hits"] = static_cast<double>(f.context.cache().statistics().hits);
    f.keep.reset();
    check_for_leaks(f.context, state, "cache/hit/gpulife");
    cache_fixture.reset();
  }
}

void bm_hit_naive_weak_map(benchmark::State& state) {
  if (state.thread_index() == 0) naive_fixture = std::make_unique<NaiveFixture>();
  for (auto _ : state) {
    NaiveFixture& f = *naive_fixture;
    std::shared_ptr<PlainTensor> hit = f.map.get_or_upload(f.key, f.buffer.bytes());
    benchmark::DoNotOptimize(hit);
  }
  state.SetItemsProcessed(state.iterations());
  if (state.thread_index() == 0) naive_fixture.reset();
}

BENCHMARK(bm_hit_gpulife)->Name("cache/hit/gpulife")->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(bm_hit_naive_weak_map)
    ->Name("cache/hit/naive_weak_map")
    ->Threads(1)
    ->Threads(2)
    ->UseRealTime();

// ---- hits that hash
// ------------------------------------------------------------------------------

enum class Hashing : unsigned char { single, parallel, hash_once };

void bm_hit_hashing(benchmark::State& state, std::size_t bytes, Hashing hashing) {
  // digest_threads 0: the hardware concurrency; 1: the calling thread alone
  CacheFixture f(bytes, hashing == Hashing::parallel ? 0 : 1);
  // The fixture took the buffer's digest to make its key; a fresh handle to the same bytes has
  // none, so the first hash_once hit hashes them (untimed below) and every later one does not.
  const HostBuffer fresh = HostBuffer::view(f.buffer.bytes());
  {
    DeviceTensor warm = f.context.cache().upload(fresh, f.shape, DType::f32, f.stream);
    benchmark::DoNotOptimize(warm);
  }
  for (auto _ : state) {
    DeviceTensor hit =
        hashing == Hashing::hash_once
            ? f.context.cache().upload(fresh, f.shape, DType::f32, f.stream)
            : f.context.cache().upload(f.buffer.bytes(), f.shape, DType::f32, f.stream);
    benchmark::DoNotOptimize(hit);
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(bytes));
  state.counters["digest_threads"] = static_cast<double>(f.context.digest_workers().thread_count());
  f.keep.reset();
  check_for_leaks(f.context, state, "cache/hit_hashing/gpulife");
}

const bool hit_hashing_registered = [] {
  for (const std::int64_t bytes : {4 * KiB, 1 * MiB, 64 * MiB}) {
    for (const auto& [hashing, label] :
         {std::pair{Hashing::single, "single"}, std::pair{Hashing::parallel, "parallel"},
          std::pair{Hashing::hash_once, "hash_once"}}) {
      const std::string name =
          "cache/hit_hashing/gpulife/bytes:" + std::to_string(bytes) + "/" + label;
      benchmark::RegisterBenchmark(name.c_str(), bm_hit_hashing, static_cast<std::size_t>(bytes),
                                   hashing)
          ->UseRealTime()
          ->Unit(benchmark::kMicrosecond);
    }
  }
  return true;
}();

}  // namespace
}  // namespace gpulife::bench
