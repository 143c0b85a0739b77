// SPDX-License-Identifier: Apache-2.0
#include "debug/stack_trace.hpp"

#include <algorithm>
#include <mutex>
#include <string_view>
#include <unordered_map>

// The compiled Boost.Stacktrace "backtrace" variant: libbacktrace reads the DWARF line tables
// of the running process, so frames get file:line without a helper process (the addr2line
// variant forks one per frame) and without a separate libdw symboliser. BOOST_STACKTRACE_LINK
// takes the implementation from the library that CMake links (Boost::stacktrace_backtrace).
#define BOOST_STACKTRACE_LINK
#include <boost/stacktrace/frame.hpp>
#include <boost/stacktrace/safe_dump_to.hpp>

namespace gpulife::detail {
namespace {

std::string describe_frame(const void* address) {
  // A captured frame is a return address: the instruction after the call, which the line table
  // may attribute to the next statement. One byte back lies inside the call itself.
  const boost::stacktrace::frame frame(static_cast<const char*>(address) - 1);
  std::string name = frame.name();
  std::string file = frame.source_file();
  std::string text = name.empty() ? std::string("??") : std::move(name);
  if (!file.empty()) {
    text += " at " + file + ":" + std::to_string(frame.source_line());
  }
  return text;
}

/// Frames of the capture itself and of gpulife's creation paths: the report starts at the
/// caller of the API.
bool is_internal(std::string_view frame) {
  static constexpr std::string_view prefixes[] = {
      "gpulife::detail::",      "gpulife::Context::",  "gpulife::DeviceTensor::",
      "gpulife::TensorCache::", "boost::stacktrace::", "??"};
  for (std::string_view prefix : prefixes) {
    if (frame.starts_with(prefix)) return true;
  }
  return false;
}

}  // namespace

std::vector<const void*> capture_stack(std::size_t max_frames) {
  // safe_dump_to writes native frame pointers and stops at the buffer's end.
  std::vector<const void*> frames(max_frames + 1);
  const std::size_t count =
      boost::stacktrace::safe_dump_to(0, frames.data(), frames.size() * sizeof(const void*));
  frames.resize(std::min(count, max_frames));
  return frames;
}

std::vector<std::string> symbolise_stack(std::span<const void* const> frames) {
  // Never destroyed: a context that is a static object may make its report during static
  // destruction, after a function-local static made later would be gone.
  struct Cache {
    std::mutex mutex;
    std::unordered_map<const void*, std::string> names;
  };
  static Cache* const cache = new Cache();
  std::vector<std::string> lines;
  lines.reserve(frames.size());
  for (const void* address : frames) {
    if (address == nullptr) break;
    std::string line;
    {
      std::scoped_lock lock(cache->mutex);
      if (auto it = cache->names.find(address); it != cache->names.end()) line = it->second;
    }
    if (line.empty()) {
      line = describe_frame(address);
      std::scoped_lock lock(cache->mutex);
      cache->names.emplace(address, line);
    }
    if (lines.empty() && is_internal(line)) continue;
    lines.push_back(std::move(line));
  }
  return lines;
}

}  // namespace gpulife::detail
