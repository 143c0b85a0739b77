// SPDX-License-Identifier: Apache-2.0
#include <gpulife/debug/debug_options.hpp>

#include <cstdlib>
#include <stdexcept>
#include <string>

namespace gpulife {
namespace {

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

}  // namespace

void apply_debug_flags(std::string_view flags, DebugOptions& options) {
  while (!flags.empty()) {
    const std::size_t comma = flags.find(',');
    const std::string_view item = trim(flags.substr(0, comma));
    flags = comma == std::string_view::npos ? std::string_view{} : flags.substr(comma + 1);
    if (item.empty()) continue;
    if (item == "leaks") {
      options.leaks = true;
    } else if (item == "stacks") {
      options.leaks = options.stacks = true;
    } else if (item == "timeline") {
      options.timeline = true;
    } else if (item == "exit") {
      options.leaks = options.exit_on_leak = true;
    } else if (item == "oom_dump") {
      options.oom_dump = options.leaks = options.timeline = true;
    } else {
      throw std::invalid_argument("GPULIFE_DEBUG: unknown item '" + std::string(item) +
                                  "' (known: leaks, stacks, timeline, exit, oom_dump)");
    }
  }
}

DebugOptions resolve_debug_options(DebugOptions options) {
  if (options.use_environment) {
    // getenv is safe against other getenv calls; the contract forbids concurrent setenv.
    if (const char* flags = std::getenv("GPULIFE_DEBUG")) apply_debug_flags(flags, options);
    if (const char* path = std::getenv("GPULIFE_LEAK_REPORT");
        path != nullptr && *path != '\0' && options.report_path.empty()) {
      options.report_path = path;
    }
    if (const char* path = std::getenv("GPULIFE_TIMELINE");
        path != nullptr && *path != '\0' && options.timeline_path.empty()) {
      options.timeline_path = path;
    }
    if (const char* path = std::getenv("GPULIFE_OOM_DUMP");
        path != nullptr && *path != '\0' && options.oom_dump_dir.empty()) {
      options.oom_dump_dir = path;
    }
  }
  if (options.stacks || options.exit_on_leak || options.oom_dump) options.leaks = true;
  if (options.oom_dump) options.timeline = true;
  if (options.exit_on_leak && options.leak_exit_code == 0) {
    throw std::invalid_argument("debug.leak_exit_code: must be non-zero with exit_on_leak");
  }
  return options;
}

}  // namespace gpulife
