// SPDX-License-Identifier: Apache-2.0
#pragma once

// What the trace generators share: a seeded generator that gives the same numbers on every
// platform, and a builder that turns allocations and frees into a Trace.

#include <algorithm>
#include <cstdint>
#include <vector>

#include "traces/trace.hpp"

namespace gpulife::traces::detail {

constexpr std::uint64_t KiB = 1024;
constexpr std::uint64_t MiB = KiB * KiB;
constexpr std::uint64_t GiB = MiB * KiB;

/// splitmix64: the same trace on every platform (std:: distributions are not specified bit for
/// bit).
class Random {
 public:
  explicit Random(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  /// Uniform in [lo, hi].
  std::uint64_t uniform(std::uint64_t lo, std::uint64_t hi) { return lo + next() % (hi - lo + 1); }

 private:
  std::uint64_t state_;
};

/// Builds a trace: allocate returns an id, free takes it.
class Builder {
 public:
  explicit Builder(Trace& trace) : trace_(trace) {}
  std::uint64_t alloc(std::uint64_t bytes, std::uint32_t stream = 0) {
    const std::uint64_t id = trace_.allocations++;
    sizes_.push_back(bytes);
    trace_.ops.push_back({TraceOp::Kind::allocate, stream, no_stream, id, bytes});
    trace_.streams = std::max(trace_.streams, stream + 1);
    return id;
  }
  void free(std::uint64_t id, std::uint32_t stream = 0, std::uint32_t after = no_stream) {
    trace_.ops.push_back({TraceOp::Kind::free, stream, after, id, sizes_[id]});
    trace_.streams = std::max(trace_.streams, stream + 1);
    if (after != no_stream) trace_.streams = std::max(trace_.streams, after + 1);
  }

 private:
  Trace& trace_;
  std::vector<std::uint64_t> sizes_;
};

}  // namespace gpulife::traces::detail
