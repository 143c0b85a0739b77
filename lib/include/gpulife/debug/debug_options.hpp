// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `DebugOptions`: leak mode, stack traces and the timeline of a `Context`.

#include <cstddef>
#include <string>
#include <string_view>

namespace gpulife {

/// @brief What a context's debug layer records. Everything is off by default, and then the
/// tensor paths pay one predictable branch per hook and nothing else.
///
/// The environment turns on what the options leave off (unless `use_environment` is false):
/// - `GPULIFE_DEBUG=leaks[,stacks][,timeline][,exit][,oom_dump]`: a comma-separated list;
///   `stacks` implies `leaks`; `exit` sets `exit_on_leak` (and implies `leaks`); `oom_dump`
///   implies `leaks` and `timeline`.
/// - `GPULIFE_LEAK_REPORT=path`: `report_path`, when the options leave it empty.
/// - `GPULIFE_TIMELINE=path`: `timeline_path`, when the options leave it empty.
/// - `GPULIFE_OOM_DUMP=dir`: `oom_dump_dir`, when the options leave it empty.
/// The paths say where output goes; they turn nothing on by themselves.
struct DebugOptions {
  /// Leak mode: every live tensor is known with its size, shape, dtype, tag, stream, creation
  /// time and allocation site; `Context::leak_report()` lists them, and the context prints the
  /// report to stderr when it is destroyed.
  bool leaks = false;
  /// Also capture the call stack of every allocation (raw frames; symbolised with file:line
  /// when a report is made). Implies `leaks`. Costs a stack walk per tensor.
  bool stacks = false;
  /// Frames kept per captured stack.
  std::size_t max_stack_frames = 32;
  /// Record lifetime events (allocate, free, upload, cache hit/miss/eviction, finalizer run,
  /// out-of-memory) into a ring buffer; `Context::timeline()` exports them.
  bool timeline = false;
  /// Events the ring keeps; the oldest are overwritten (and counted as dropped).
  std::size_t timeline_capacity = std::size_t{1} << 16;
  /// Leak mode: when the context is destroyed with leaks, the process's exit status becomes
  /// `leak_exit_code`. See `Context::~Context` for how and when it exits.
  bool exit_on_leak = false;
  /// The exit status `exit_on_leak` sets; non-zero.
  int leak_exit_code = 3;
  /// Leak mode: the report is also written to this file when the context is destroyed (JSON if
  /// the name ends in ".json", text otherwise). Empty: stderr only.
  std::string report_path{};
  /// Leak mode: print the one-line report at destruction also when nothing leaked. Programs that
  /// make many contexts (benchmarks) turn it off; a leak is printed either way.
  bool report_when_clean = true;
  /// Leak mode: make the report when the context is destroyed (stderr, `report_path`,
  /// `exit_on_leak`). A program that reports the live set itself before, and then destroys the
  /// context with tensors alive on purpose (a soak's shutdown check), turns it off.
  bool report_at_shutdown = true;
  /// Timeline: the Chrome trace is written to this file when the context is destroyed; a name
  /// ending in ".html" gets the offline view instead (`write_timeline_view`).
  std::string timeline_path{};
  /// Out-of-memory snapshot: when an `OutOfMemoryError` is about to be thrown (after the
  /// memory-pressure chain), the context writes into a new directory under `oom_dump_dir` the
  /// leak report of the live set (text and JSON: sites, and stacks with `stacks`), the memory
  /// resource's and the tensor cache's statistics, and the timeline's newest events (Chrome
  /// trace and offline HTML view), and prints one line on stderr naming the directory. At most
  /// one snapshot per second and `oom_dump_limit` per context. Implies `leaks` and `timeline`.
  bool oom_dump = false;
  /// Where out-of-memory snapshots go, each in a directory of its own made there
  /// (`gpulife-oom-<pid>-<n>-<time>`); empty: the current directory.
  std::string oom_dump_dir{};
  /// A snapshot lists at most this many live tensors, the largest (the others are counted).
  std::size_t oom_dump_max_tensors = 1000;
  /// A snapshot keeps at most this many of the newest timeline events.
  std::size_t oom_dump_max_events = 4096;
  /// Snapshots one context writes at most.
  std::size_t oom_dump_limit = 16;
  /// Let GPULIFE_DEBUG, GPULIFE_LEAK_REPORT, GPULIFE_TIMELINE and GPULIFE_OOM_DUMP turn things
  /// on.
  bool use_environment = true;
};

/// @brief Applies a GPULIFE_DEBUG-style list ("leaks,stacks,timeline,exit,oom_dump") to `options`:
/// each item turns its option on; spaces around items and empty items are ignored.
/// @throws std::invalid_argument naming an unknown item
void apply_debug_flags(std::string_view flags, DebugOptions& options);

/// @brief `options` with what the environment asks for added (see `DebugOptions`); returns
/// `options` unchanged when `options.use_environment` is false. Also makes `stacks` and
/// `exit_on_leak` imply `leaks`, and `oom_dump` imply `leaks` and `timeline`.
/// @throws std::invalid_argument if GPULIFE_DEBUG holds an unknown item, or
/// `leak_exit_code` is zero while `exit_on_leak` is set
/// @par Thread safety
/// Reads the environment: do not call concurrently with `setenv`.
[[nodiscard]] DebugOptions resolve_debug_options(DebugOptions options);

}  // namespace gpulife
