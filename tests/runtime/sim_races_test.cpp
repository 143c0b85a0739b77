// SPDX-License-Identifier: Apache-2.0
// What the simulated device catches, as a table: each row is a bug class written as the small
// wrong program a user would write, run many times on a fresh device each time; it must be
// reported on every run. The same program with the missing synchronisation added must be
// clean on every run. Races are found when work is queued, in the order it was queued, so the
// result does not depend on timing: the rows also run with the random delay on.

#include <atomic>
#include <cstddef>
#include <cstring>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <gpulife/context.hpp>
#include <gpulife/errors.hpp>
#include <gpulife/kernels/fill.hpp>
#include <gpulife/memory/async_resource.hpp>
#include <gpulife/memory/holdback_adaptor.hpp>
#include <gpulife/memory/pool_resource.hpp>
#include <gpulife/runtime/device.hpp>
#include <gpulife/runtime/device_guard.hpp>
#include <gpulife/runtime/launch.hpp>

#include "support/sim_test.hpp"

namespace gpulife {
namespace {

using Kind = SimViolation::Kind;

constexpr std::size_t n = 1000;  // floats: 4000 bytes, not a multiple of the 256-byte rounding
constexpr std::size_t bytes = n * sizeof(float);

/// A kernel on `stream` that reads `src` (declared `Access::read`) and writes the sum to `out`.
void sum_kernel(StreamView stream, const float* src, float* out) {
  for_each_index(
      stream, 1,
      [src, out](std::size_t) {
        float sum = 0;
        for (std::size_t i = 0; i < n; ++i) sum += src[i];
        *out = sum;
      },
      {{src, bytes, Access::read}, {out, sizeof(float), Access::write}}, "sum");
}

/// What a program may use: a device, and a context over it when the program wants tensors.
struct World {
  explicit World(SimOptions options) : device(Device::sim(std::move(options))) {}
  Device device;
  Context& ctx() {
    if (!context) context = std::make_unique<Context>(ContextOptions{.device = device});
    return *context;
  }
  std::unique_ptr<Context> context;
};

struct Row {
  std::string name;
  Kind expected;
  std::function<void(World&, bool fixed)> program;  // `fixed`: with the synchronisation added
  SimOptions options{};
  /// The wrong program's race is real on the host too (two stream workers touch the same
  /// bytes): ThreadSanitizer would report it, so a TSan build runs only the fixed program.
  bool races_on_the_host = false;
};

#if defined(__SANITIZE_THREAD__)
constexpr bool thread_sanitizer = true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
constexpr bool thread_sanitizer = true;
#else
constexpr bool thread_sanitizer = false;
#endif
#else
constexpr bool thread_sanitizer = false;
#endif

void PrintTo(const Row& row, std::ostream* os) { *os << row.name; }

SimOptions quiet(SimOptions options, bool delay) {
  options.on_violation = [](const SimViolation&) {};
  if (delay) {
    options.delay = true;
    options.max_delay_us = 50;
  }
  return options;
}

/// Runs `row`'s program once on a fresh device; returns the violations it left.
std::vector<SimViolation> run_once(const Row& row, bool fixed, bool delay, std::uint64_t seed) {
  SimOptions options = quiet(row.options, delay);
  options.delay_seed = seed;
  World world(options);
  row.program(world, fixed);
  world.context.reset();
  world.device.synchronize();
  return world.device.take_violations();
}

std::vector<Row> rows() {
  std::vector<Row> table;

  table.push_back({"upload on stream 1 (pinned source), read on stream 2 with no wait",
                   Kind::race,
                   [](World& w, bool fixed) {
                     Stream s1(w.device), s2(w.device);
                     auto* pinned = static_cast<float*>(w.device.allocate_pinned(bytes));
                     for (std::size_t i = 0; i < n; ++i) pinned[i] = 1.0F;
                     DeviceTensor t = w.ctx().empty({n}, DType::f32, s1);
                     DeviceTensor out = w.ctx().empty({1}, DType::f32, s2);
                     t.upload(std::as_bytes(std::span(pinned, n)), s1);
                     if (fixed) {
                       Event uploaded(w.device);
                       s1.view().record(uploaded);
                       s2.view().wait(uploaded);
                       t.record_stream(s2);
                     }
                     sum_kernel(s2, t.data<float>(), out.data<float>());
                     s1.synchronize();
                     s2.synchronize();
                     w.device.deallocate_pinned(pinned);
                   },
                   {},
                   true});

  table.push_back({"upload on stream 1 (pageable source), read on stream 2 with no wait",
                   Kind::race,
                   [](World& w, bool fixed) {
                     Stream s1(w.device), s2(w.device);
                     const std::vector<float> host(n, 1.0F);
                     DeviceTensor t = w.ctx().upload(std::span<const float>(host), {n}, s1);
                     DeviceTensor out = w.ctx().empty({1}, DType::f32, s2);
                     if (fixed) {
                       Event uploaded(w.device);
                       s1.view().record(uploaded);
                       s2.view().wait(uploaded);
                       t.record_stream(s2);
                     }
                     sum_kernel(s2, t.data<float>(), out.data<float>());
                   },
                   {},
                   true});

  table.push_back({"kernel on stream 1 writes, kernel on stream 2 reads, no wait",
                   Kind::race,
                   [](World& w, bool fixed) {
                     Stream s1(w.device), s2(w.device);
                     DeviceTensor t = w.ctx().empty({n}, DType::f32, s1);
                     DeviceTensor out = w.ctx().empty({1}, DType::f32, s2);
                     kernels::fill(s1, t.data<float>(), n, 2.0F);
                     if (fixed) {
                       Event written(w.device);
                       s1.view().record(written);
                       s2.view().wait(written);
                       t.record_stream(s2);
                     }
                     sum_kernel(s2, t.data<float>(), out.data<float>());
                   },
                   {},
                   true});

  table.push_back({"cudaFreeAsync on stream 1 while stream 2 reads, no event",
                   Kind::race,
                   [](World& w, bool fixed) {
                     Stream s1(w.device), s2(w.device);
                     AsyncResource resource(w.device);
                     auto* p = static_cast<float*>(resource.allocate(bytes, s1));
                     auto* out = static_cast<float*>(resource.allocate(sizeof(float), s2));
                     kernels::fill(s1, p, n, 1.0F);
                     Event written(w.device);
                     s1.view().record(written);
                     s2.view().wait(written);
                     sum_kernel(s2, p, out);
                     if (fixed) {
                       Event read(w.device);
                       s2.view().record(read);
                       s1.view().wait(read);
                     }
                     resource.deallocate(p, bytes, s1);
                     resource.deallocate(out, sizeof(float), s2);
                   },
                   {},
                   true});

  table.push_back(
      {"tensor read on stream 2, released without record_stream, block reused on "
       "stream 1",
       Kind::race,
       [](World& w, bool fixed) {
         Stream s1(w.device), s2(w.device);
         DeviceTensor out = w.ctx().empty({1}, DType::f32, s2);
         DeviceTensor t = w.ctx().empty({n}, DType::f32, s1);
         kernels::fill(s1, t.data<float>(), n, 1.0F);
         Event written(w.device);
         s1.view().record(written);
         s2.view().wait(written);
         sum_kernel(s2, t.data<float>(), out.data<float>());
         if (fixed) t.record_stream(s2);
         t.reset();
         DeviceTensor next = w.ctx().empty({n}, DType::f32, s1);
         kernels::fill(s1, next.data<float>(), n, 3.0F);
       },
       {},
       true});

  table.push_back(
      {"use of a cudaMallocAsync block on another stream before the allocation "
       "reached it",
       Kind::race,
       [](World& w, bool fixed) {
         Stream s1(w.device), s2(w.device);
         AsyncResource resource(w.device);
         auto* p = static_cast<float*>(resource.allocate(bytes, s1));
         if (fixed) {
           Event allocated(w.device);
           s1.view().record(allocated);
           s2.view().wait(allocated);
         }
         kernels::fill(s2, p, n, 1.0F);
         resource.deallocate(p, bytes, s2);
       },
       {},
       true});

  table.push_back({"host rewrites a pinned upload source before the copy ran", Kind::race,
                   [](World& w, bool fixed) {
                     Stream s1(w.device);
                     auto* pinned = static_cast<float*>(w.device.allocate_pinned(bytes));
                     for (std::size_t i = 0; i < n; ++i) pinned[i] = 1.0F;
                     DeviceTensor t = w.ctx().empty({n}, DType::f32, s1);
                     s1.view().copy(t.data(), pinned, bytes, CopyKind::host_to_device);
                     if (fixed) s1.synchronize();
                     for (std::size_t i = 0; i < n; ++i) pinned[i] = 2.0F;  // the next batch
                     s1.synchronize();
                     w.device.deallocate_pinned(pinned);
                   }});

  table.push_back({"host reads a pinned download destination before synchronising", Kind::race,
                   [](World& w, bool fixed) {
                     Stream s1(w.device);
                     const std::vector<float> host(n, 1.0F);
                     DeviceTensor t = w.ctx().upload(std::span<const float>(host), {n}, s1);
                     auto* pinned = static_cast<float*>(w.device.allocate_pinned(bytes));
                     t.download(std::as_writable_bytes(std::span(pinned, n)), s1);
                     if (fixed) s1.synchronize();
                     volatile float first = pinned[0];  // the result, too early
                     (void)first;
                     s1.synchronize();
                     w.device.deallocate_pinned(pinned);
                   }});

  table.push_back(
      {"CUDA call made inside a host function", Kind::api_misuse, [](World& w, bool fixed) {
         Stream s1(w.device), s2(w.device);
         DeviceTensor t = w.ctx().empty({n}, DType::f32, s2);
         std::atomic<bool> done{false};
         if (fixed) {
           s1.view().host_callback([&done] { done = true; });
         } else {
           s1.view().host_callback([&done, &s2, data = t.data()] {
             s2.view().memset(data, 0, bytes);  // CUDA forbids this here
             done = true;
           });
         }
         s1.synchronize();
         s2.synchronize();
       }});

  table.push_back({"CUDA call made by a destructor that a host function's captures run",
                   Kind::api_misuse, [](World& w, bool fixed) {
                     Stream s1(w.device);
                     // Tensors straight from the driver's pool: their release is a
                     // cudaFreeAsync, a CUDA call. (The default caching pool's release calls
                     // nothing while it keeps the block.)
                     Context ctx({.device = w.device,
                                  .resource = std::make_shared<AsyncResource>(w.device)});
                     DeviceTensor t = ctx.empty({n}, DType::f32, s1);
                     if (fixed) {
                       s1.view().host_callback([] {});
                     } else {
                       // The last handle dies in the host function.
                       s1.view().host_callback([t = std::move(t)] { (void)t; });
                     }
                     s1.synchronize();
                   }});

  table.push_back({"launch to a stream of a device that is not current on the calling thread",
                   Kind::api_misuse, [](World& w, bool fixed) {
                     // A raw launch (the sim's `<<<>>>`): for_each_index and gpulife's kernels
                     // hold a DeviceGuard, as on CUDA; a launcher of one's own must too.
                     const Device other = Device::sim();
                     Stream s1(w.device);
                     auto* p = static_cast<float*>(w.device.impl().allocate(bytes));
                     const DeviceGuard elsewhere(other);
                     auto launch = [&] {
                       const MemoryRange range{p, bytes, Access::write};
                       s1.view().impl()->launch_host_kernel("mine", std::span(&range, 1), [p] {
                         for (std::size_t i = 0; i < n; ++i) p[i] = 1.0F;
                       });
                     };
                     try {
                       if (fixed) {
                         const DeviceGuard guard(s1);
                         launch();
                       } else {
                         launch();
                       }
                     } catch (const CudaError&) {
                       // what CUDA returns too (cudaErrorInvalidResourceHandle)
                     }
                     w.device.impl().deallocate(p, bytes);
                   }});

  Row uninitialised{"read of never-written device memory", Kind::uninitialized_read,
                    [](World& w, bool fixed) {
                      Stream s1(w.device);
                      DeviceTensor t = w.ctx().empty({n}, DType::f32, s1);
                      if (fixed) kernels::fill(s1, t.data<float>(), n, 0.0F);
                      (void)t.to_host<float>(s1);
                    }};
  uninitialised.options.uninitialized_reads = true;
  table.push_back(uninitialised);

  table.push_back(
      {"1-byte overrun of a 1000-byte allocation", Kind::out_of_bounds, [](World& w, bool fixed) {
         Stream s1(w.device);
         AsyncResource resource(w.device);
         auto* p = static_cast<unsigned char*>(resource.allocate(1000, s1));
         s1.view().memset(p, 0, fixed ? 1000 : 1001);
         resource.deallocate(p, 1000, s1);
       }});

  table.push_back({"1-byte overrun of a 1000-byte tensor from the pool", Kind::out_of_bounds,
                   [](World& w, bool fixed) {
                     Stream s1(w.device);
                     DeviceTensor t = w.ctx().empty({1000}, DType::u8, s1);  // a 1024-byte block
                     s1.view().memset(t.data(), 0, fixed ? 1000 : 1001);
                   }});

  table.push_back({"kernel writes freed memory it did not declare", Kind::freed_memory_written,
                   [](World& w, bool fixed) {
                     Stream s1(w.device);
                     DeviceTensor out = w.ctx().empty({n}, DType::f32, s1);
                     DeviceTensor scratch = w.ctx().empty({n}, DType::f32, s1);
                     float* stale = scratch.data<float>();
                     scratch.reset();  // back to the pool, poisoned
                     float* o = out.data<float>();
                     for_each_index(
                         s1, n,
                         [o, stale, fixed](std::size_t i) {
                           o[i] = 1.0F;
                           if (!fixed) stale[i] = 1.0F;  // declared nowhere
                         },
                         {{o, bytes, Access::write}}, "stale_write");
                   }});

  table.push_back(
      {"stale pointer into a reused pool block (pool behind a HoldbackAdaptor)",
       Kind::use_after_free, [](World& w, bool fixed) {
         Stream s1(w.device);
         auto pool = std::make_shared<PoolResource>(std::make_shared<AsyncResource>(w.device));
         Context ctx({.device = w.device, .resource = std::make_shared<HoldbackAdaptor>(pool)});
         DeviceTensor old = ctx.empty({n}, DType::f32, s1);
         float* stale = old.data<float>();
         old.reset();
         DeviceTensor fresh = ctx.empty({n}, DType::f32, s1);
         kernels::fill(s1, fixed ? fresh.data<float>() : stale, n, 5.0F);
       }});

  Row large{"stale pointer into a freed large allocation", Kind::use_after_free,
            [](World& w, bool fixed) {
              constexpr std::size_t big = std::size_t{2} << 20;  // beyond the quarantine
              Stream s1(w.device);
              AsyncResource resource(w.device);
              void* old = resource.allocate(big, s1);
              resource.deallocate(old, big, s1);
              void* fresh = resource.allocate(big, s1);
              s1.view().memset(fixed ? fresh : old, 0, big);
              resource.deallocate(fresh, big, s1);
            }};
  large.options.quarantine_bytes = 1 << 20;
  table.push_back(large);

  table.push_back(
      {"copy whose host side is device memory", Kind::api_misuse, [](World& w, bool fixed) {
         Stream s1(w.device);
         auto* a = static_cast<float*>(w.device.impl().allocate(bytes));
         auto* b = static_cast<float*>(w.device.impl().allocate(bytes));
         s1.view().memset(b, 0, bytes);
         s1.view().copy(a, b, bytes, fixed ? CopyKind::device_to_device : CopyKind::host_to_device);
         s1.synchronize();
         w.device.impl().deallocate(a, bytes);
         w.device.impl().deallocate(b, bytes);
       }});

  table.push_back({"overlapping device-to-device copy", Kind::api_misuse, [](World& w, bool fixed) {
                     Stream s1(w.device);
                     auto* a = static_cast<unsigned char*>(w.device.impl().allocate(2 * bytes));
                     s1.view().memset(a, 0, 2 * bytes);
                     s1.view().copy(a + (fixed ? bytes : 16), a, bytes, CopyKind::device_to_device);
                     s1.synchronize();
                     w.device.impl().deallocate(a, 2 * bytes);
                   }});

  table.push_back(
      {"pinned buffer freed while a queued copy reads it", Kind::race, [](World& w, bool fixed) {
         Stream s1(w.device);
         auto* pinned = static_cast<float*>(w.device.allocate_pinned(bytes));
         for (std::size_t i = 0; i < n; ++i) pinned[i] = 1.0F;
         DeviceTensor t = w.ctx().empty({n}, DType::f32, s1);
         s1.view().copy(t.data(), pinned, bytes, CopyKind::host_to_device);
         if (fixed) s1.synchronize();
         w.device.deallocate_pinned(pinned);
       }});

  return table;
}

bool has(const std::vector<SimViolation>& violations, Kind kind) {
  for (const SimViolation& v : violations) {
    if (v.kind == kind) return true;
  }
  return false;
}

std::string describe(const std::vector<SimViolation>& violations) {
  std::string text;
  for (const SimViolation& v : violations) text += "\n  " + v.message();
  return text;
}

class SimCatches : public ::testing::TestWithParam<Row> {};

constexpr int runs_without_delay = 100;
constexpr int runs_with_delay = 20;
constexpr int clean_runs = 20;

TEST_P(SimCatches, TheWrongProgramOnEveryRunAndTheFixedOneNever) {
  const Row& row = GetParam();
  if (thread_sanitizer && row.races_on_the_host) {
    for (int run = 0; run < clean_runs; ++run) {
      ASSERT_TRUE(run_once(row, true, false, static_cast<std::uint64_t>(run)).empty());
    }
    GTEST_SKIP() << "the wrong program races on the host as well; ThreadSanitizer would stop it";
  }
  int caught = 0;
  std::string first_miss;
  for (int run = 0; run < runs_without_delay + runs_with_delay; ++run) {
    const bool delay = run >= runs_without_delay;
    const auto violations = run_once(row, false, delay, static_cast<std::uint64_t>(run));
    if (has(violations, row.expected)) {
      ++caught;
    } else if (first_miss.empty()) {
      first_miss = "run " + std::to_string(run) + " saw:" + describe(violations);
    }
  }
  EXPECT_EQ(caught, runs_without_delay + runs_with_delay) << first_miss;
  for (int run = 0; run < clean_runs; ++run) {
    const auto violations = run_once(row, true, run % 2 == 1, static_cast<std::uint64_t>(run));
    ASSERT_TRUE(violations.empty()) << "fixed program, run " << run << ":" << describe(violations);
  }
}

INSTANTIATE_TEST_SUITE_P(Table, SimCatches, ::testing::ValuesIn(rows()),
                         [](const ::testing::TestParamInfo<Row>& param) {
                           std::string name;
                           for (char c : param.param.name) {
                             if (std::isalnum(static_cast<unsigned char>(c))) name += c;
                             if (name.size() >= 60) break;
                           }
                           return std::to_string(param.index) + "_" + name;
                         });

}  // namespace
}  // namespace gpulife
