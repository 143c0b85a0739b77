// SPDX-License-Identifier: Apache-2.0
// Content digests against the memory bandwidth they should run near, and the parallel digest
// against the upload a cache hit avoids (an H100 uploads at 35-55 GB/s over PCIe 5).
//
// The single-threaded families report CPU time, which a busy neighbour on a shared machine does
// not inflate; the parallel family must report wall-clock time, the digest's latency.
//
//   digest/memcpy                  memcpy of the buffer: the bandwidth yardstick
//   digest/xxh3_128                gpulife::digest on the calling thread
//   digest/xxh3_128_parallel       DigestWorkers::digest with 1, 2 and all hardware threads

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <span>
#include <thread>
#include <vector>

#include <benchmark/benchmark.h>

#include <gpulife/cache/digest.hpp>
#include <gpulife/cache/digest_workers.hpp>

namespace {

constexpr std::int64_t KiB = 1024;
constexpr std::int64_t MiB = 1024 * KiB;
constexpr std::int64_t GiB = 1024 * MiB;

/// A page-aligned buffer of pseudo-random bytes, written (and so faulted in) once and kept for
/// the whole run: allocating and filling 1 GiB per benchmark run would cost more than the runs.
class Buffer {
 public:
  std::span<std::byte> get(std::size_t size, std::uint64_t seed) {
    if (size > size_) {
      data_.reset(static_cast<std::byte*>(::operator new(size, alignment)));
      size_ = size;
      std::uint64_t state = seed;
      for (std::size_t i = 0; i + 8 <= size; i += 8) {
        state ^= state << 13, state ^= state >> 7, state ^= state << 17;  // xorshift64
        std::memcpy(data_.get() + i, &state, 8);
      }
    }
    return {data_.get(), size};
  }

 private:
  static constexpr std::align_val_t alignment{4096};
  struct Free {
    void operator()(std::byte* p) const noexcept { ::operator delete(p, alignment); }
  };
  std::unique_ptr<std::byte, Free> data_;
  std::size_t size_ = 0;
};

Buffer source_buffer;
Buffer destination_buffer;

std::span<std::byte> source(const benchmark::State& state) {
  return source_buffer.get(static_cast<std::size_t>(state.range(0)), 0x9e3779b97f4a7c15ULL);
}

void bm_memcpy(benchmark::State& state) {
  const auto src = source(state);
  const auto dst = destination_buffer.get(src.size(), 1);
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), src.size());
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * state.range(0));
}

void bm_xxh3_128(benchmark::State& state) {
  const auto bytes = source(state);
  for (auto _ : state) benchmark::DoNotOptimize(gpulife::digest(bytes));
  state.SetBytesProcessed(state.iterations() * state.range(0));
}

void bm_xxh3_128_parallel(benchmark::State& state) {
  const auto bytes = source(state);
  // The pool is created once, as a context creates it; its start-up is not what is measured.
  const gpulife::DigestWorkers workers(static_cast<std::size_t>(state.range(1)));
  for (auto _ : state) benchmark::DoNotOptimize(workers.digest(bytes));
  state.SetBytesProcessed(state.iterations() * state.range(0));
  state.counters["chunks"] = static_cast<double>((bytes.size() + gpulife::digest_chunk_bytes - 1) /
                                                 gpulife::digest_chunk_bytes);
}

/// 1, 2 and all hardware threads, without repeats on a machine with 1 or 2.
void thread_counts(benchmark::internal::Benchmark* bench) {
  std::vector<std::int64_t> threads = {
      1, 2, static_cast<std::int64_t>(gpulife::DigestWorkers::default_thread_count())};
  std::sort(threads.begin(), threads.end());
  threads.erase(std::unique(threads.begin(), threads.end()), threads.end());
  for (std::int64_t size : {1 * MiB, 8 * MiB, 64 * MiB, 1 * GiB}) {
    for (std::int64_t count : threads) bench->Args({size, count});
  }
}

BENCHMARK(bm_memcpy)
    ->Name("digest/memcpy")
    ->ArgName("bytes")
    ->Arg(4 * KiB)
    ->Arg(1 * MiB)
    ->Arg(64 * MiB)
    ->Arg(1 * GiB)
    ->Unit(benchmark::kMicrosecond);

BENCHMARK(bm_xxh3_128)
    ->Name("digest/xxh3_128")
    ->ArgName("bytes")
    ->Arg(4 * KiB)
    ->Arg(1 * MiB)
    ->Arg(64 * MiB)
    ->Arg(1 * GiB)
    ->Unit(benchmark::kMicrosecond);

BENCHMARK(bm_xxh3_128_parallel)
    ->Name("digest/xxh3_128_parallel")
    ->ArgNames({"bytes", "threads"})
    ->Apply(thread_counts)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace
