// SPDX-License-Identifier: Apache-2.0
#include <gpulife/debug/leak_report.hpp>

#include <algorithm>
#include <cstdio>
#include <map>
#include <tuple>

#include "debug/json.hpp"
#include "detail/format.hpp"

namespace gpulife {
namespace {

using detail::format_bytes;

bool is_leak(const LiveTensor& tensor) noexcept {
  return tensor.status != LiveTensorStatus::pinned &&
         tensor.status != LiveTensorStatus::kept_by_graph_pool;
}

/// Memory a tensor keeps alive that no other entry counts: views share their root's.
std::size_t own_bytes(const LiveTensor& tensor) noexcept {
  return tensor.view_of == 0 ? tensor.bytes : 0;
}

struct Site {
  const AllocationSite* site = nullptr;
  std::vector<const LiveTensor*> tensors;
  std::size_t bytes = 0;
};

/// Leaked tensors grouped by allocation site, largest site first.
std::vector<Site> group_by_site(const std::vector<LiveTensor>& tensors) {
  std::map<std::tuple<std::string_view, std::uint32_t, std::string_view>, Site> sites;
  for (const LiveTensor& tensor : tensors) {
    if (!is_leak(tensor)) continue;
    Site& site = sites[{tensor.site.file, tensor.site.line, tensor.site.function}];
    site.site = &tensor.site;
    site.tensors.push_back(&tensor);
    site.bytes += own_bytes(tensor);
  }
  std::vector<Site> sorted;
  sorted.reserve(sites.size());
  for (auto& [key, site] : sites) sorted.push_back(std::move(site));
  std::stable_sort(sorted.begin(), sorted.end(), [](const Site& a, const Site& b) {
    return a.bytes != b.bytes ? a.bytes > b.bytes : a.tensors.size() > b.tensors.size();
  });
  return sorted;
}

std::string plural(std::size_t count, std::string_view one, std::string_view many) {
  return std::to_string(count) + " " + std::string(count == 1 ? one : many);
}

std::string seconds_between(std::chrono::system_clock::time_point from,
                            std::chrono::system_clock::time_point to) {
  const double seconds = std::chrono::duration<double>(to - from).count();
  char text[32];
  std::snprintf(text, sizeof text, "%.3f s", std::max(seconds, 0.0));
  return text;
}

std::int64_t unix_ms(std::chrono::system_clock::time_point time) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(time.time_since_epoch()).count();
}

std::string describe(const LiveTensor& tensor, std::chrono::system_clock::time_point now) {
  std::string text = "tensor #" + std::to_string(tensor.id);
  if (!tensor.tag.empty()) text += " '" + tensor.tag + "'";
  if (tensor.view_of != 0) text += " (view of #" + std::to_string(tensor.view_of) + ")";
  if (tensor.external) text += " (external memory)";
  text += " " + std::string(to_string(tensor.dtype)) + " " + tensor.shape.to_string() + ", " +
          format_bytes(tensor.bytes) + ", stream " + std::to_string(tensor.stream_id) + ", made " +
          seconds_between(tensor.created, now) + " ago, " +
          plural(tensor.handles, "handle", "handles");
  if (tensor.status == LiveTensorStatus::kept_by_callback) {
    text += ": kept alive only by its own finalizer or expiry callback, which holds " +
            plural(tensor.callback_handles, "handle", "handles") +
            " to it (a cycle: the callback captured the tensor; capture its TensorInfo instead)";
  }
  if (tensor.status == LiveTensorStatus::kept_by_graph_pool) {
    text += ": released during a stream capture; its memory is kept by a GraphPool until the "
            "pool, its graphs and its tensors are gone";
  }
  return text;
}

}  // namespace

std::string AllocationSite::to_string() const {
  std::string text = file.empty() ? std::string("<unknown>") : file;
  text += ":" + std::to_string(line);
  if (!function.empty()) text += " in " + function;
  return text;
}

std::string_view to_string(LiveTensorStatus status) noexcept {
  switch (status) {
    case LiveTensorStatus::leaked:
      return "leaked";
    case LiveTensorStatus::kept_by_callback:
      return "kept_by_callback";
    case LiveTensorStatus::pinned:
      return "pinned";
    case LiveTensorStatus::kept_by_graph_pool:
      return "kept_by_graph_pool";
  }
  return "leaked";
}

std::size_t LeakReport::leaked_tensors() const noexcept {
  return static_cast<std::size_t>(std::count_if(tensors.begin(), tensors.end(), is_leak)) +
         omitted_tensors;
}

std::size_t LeakReport::leaked_bytes() const noexcept {
  std::size_t bytes = omitted_bytes;
  for (const LiveTensor& tensor : tensors) {
    if (is_leak(tensor)) bytes += own_bytes(tensor);
  }
  return bytes;
}

bool LeakReport::has_leaks() const noexcept {
  return leaked_tensors() != 0 || !unowned_blocks.empty();
}

std::string LeakReport::to_text() const {
  if (!tracking) {
    return "gpulife leak report: leak mode is off, so nothing is known about live tensors; turn "
           "it on with ContextOptions::debug.leaks or GPULIFE_DEBUG=leaks\n";
  }
  const std::vector<Site> sites = group_by_site(tensors);
  const std::size_t leaked = leaked_tensors();
  const auto cycles = static_cast<std::size_t>(std::count_if(
      tensors.begin(), tensors.end(),
      [](const LiveTensor& t) { return t.status == LiveTensorStatus::kept_by_callback; }));
  std::size_t unowned_bytes = 0;
  for (const UnownedBlock& block : unowned_blocks) unowned_bytes += block.bytes;
  std::size_t pinned_bytes = 0;
  for (const PinnedEntry& entry : pinned) pinned_bytes += entry.bytes;

  std::string text = "gpulife leak report for " + device + ": ";
  if (!has_leaks()) {
    text += "no leaks";
  } else {
    text += plural(leaked, "tensor", "tensors") + " leaked holding " +
            format_bytes(leaked_bytes()) + " at " + plural(sites.size(), "site", "sites");
    if (!unowned_blocks.empty()) {
      text += "; " + plural(unowned_blocks.size(), "pool block", "pool blocks") + " (" +
              format_bytes(unowned_bytes) + ") that no tensor owns";
    }
  }
  text += "\n";
  if (cycles != 0) {
    text += "  " + plural(cycles, "tensor is", "tensors are") +
            " kept alive only by its own finalizer or expiry callback\n";
  }
  if (!pinned.empty()) {
    text += "  " + plural(pinned.size(), "pinned cache entry", "pinned cache entries") +
            " holding " + format_bytes(pinned_bytes) + " (not leaks)\n";
  }
  if (untracked != 0) {
    text += "  " + plural(untracked, "tensor was", "tensors were") +
            " not tracked (out of host memory while recording)\n";
  }

  for (const Site& site : sites) {
    text += "\n" + format_bytes(site.bytes) + " in " +
            plural(site.tensors.size(), "tensor", "tensors") + " made at " +
            site.site->to_string() + "\n";
    for (const LiveTensor* tensor : site.tensors) {
      text += "  " + describe(*tensor, taken) + "\n";
      for (const std::string& frame : tensor->stack) text += "      at " + frame + "\n";
    }
  }
  if (omitted_tensors != 0) {
    text += "\n" + format_bytes(omitted_bytes) + " in " +
            plural(omitted_tensors, "smaller tensor", "smaller tensors") +
            " not listed (the report was cut to its largest tensors)\n";
  }
  if (!pinned.empty()) {
    text += "\npinned cache entries (they live as long as the context; not leaks):\n";
    for (const PinnedEntry& entry : pinned) {
      text += "  tensor #" + std::to_string(entry.tensor_id);
      if (!entry.tag.empty()) text += " '" + entry.tag + "'";
      text += ", " + format_bytes(entry.bytes);
      if (!entry.key.empty()) text += ", key " + entry.key;
      text += "\n";
    }
  }
  bool kept_header = false;
  for (const LiveTensor& tensor : tensors) {
    if (tensor.status != LiveTensorStatus::kept_by_graph_pool) continue;
    if (!kept_header) {
      text += "\ntensors kept by graph pools (released during a capture; not leaks while the "
              "pool lives):\n";
      kept_header = true;
    }
    text += "  " + describe(tensor, taken) + "\n";
  }
  if (!unowned_blocks.empty()) {
    text += "\npool blocks handed out that no tensor owns (raw users of the memory resource):\n";
    for (const UnownedBlock& block : unowned_blocks) {
      text += "  " + detail::format_pointer(block.ptr) + ", " + format_bytes(block.bytes) +
              ", stream " + std::to_string(block.stream_id) + "\n";
    }
  }
  if (has_leaks()) {
    text += "\ntotal: " + plural(leaked, "tensor", "tensors") + " holding " +
            format_bytes(leaked_bytes());
    if (!unowned_blocks.empty()) {
      text += ", " + plural(unowned_blocks.size(), "unowned block", "unowned blocks") +
              " holding " + format_bytes(unowned_bytes);
    }
    text += "\n";
  }
  return text;
}

std::string LeakReport::to_json() const {
  using detail::Json;
  std::size_t unowned_bytes = 0;
  for (const UnownedBlock& block : unowned_blocks) unowned_bytes += block.bytes;
  Json out = Json::object();
  out["tracking"] = tracking;
  out["device"] = device;
  out["taken_unix_ms"] = unix_ms(taken);
  out["summary"] = {{"leaked_tensors", leaked_tensors()},
                    {"leaked_bytes", leaked_bytes()},
                    {"kept_by_callback", std::count_if(tensors.begin(), tensors.end(),
                                                       [](const LiveTensor& t) {
                                                         return t.status ==
                                                                LiveTensorStatus::kept_by_callback;
                                                       })},
                    {"pinned_entries", pinned.size()},
                    {"unowned_blocks", unowned_blocks.size()},
                    {"unowned_bytes", unowned_bytes},
                    {"blocks_known", blocks_known},
                    {"untracked", untracked},
                    {"omitted_tensors", omitted_tensors},
                    {"omitted_bytes", omitted_bytes},
                    {"has_leaks", has_leaks()}};

  Json sites = Json::array();
  for (const Site& site : group_by_site(tensors)) {
    Json ids = Json::array();
    for (const LiveTensor* tensor : site.tensors) ids.push_back(tensor->id);
    sites.push_back({{"file", site.site->file},
                     {"line", site.site->line},
                     {"function", site.site->function},
                     {"tensors", site.tensors.size()},
                     {"bytes", site.bytes},
                     {"ids", std::move(ids)}});
  }
  out["sites"] = std::move(sites);

  Json listed = Json::array();
  for (const LiveTensor& tensor : tensors) {
    Json shape = Json::array();
    for (std::size_t i = 0; i < tensor.shape.rank(); ++i) shape.push_back(tensor.shape[i]);
    listed.push_back({{"id", tensor.id},
                      {"bytes", tensor.bytes},
                      {"shape", std::move(shape)},
                      {"dtype", std::string(to_string(tensor.dtype))},
                      {"tag", tensor.tag},
                      {"device", tensor.device},
                      {"stream", tensor.stream_id},
                      {"created_unix_ms", unix_ms(tensor.created)},
                      {"site",
                       {{"file", tensor.site.file},
                        {"line", tensor.site.line},
                        {"column", tensor.site.column},
                        {"function", tensor.site.function}}},
                      {"stack", tensor.stack},
                      {"view_of", tensor.view_of},
                      {"external", tensor.external},
                      {"handles", tensor.handles},
                      {"callback_handles", tensor.callback_handles},
                      {"status", std::string(to_string(tensor.status))}});
  }
  out["tensors"] = std::move(listed);

  Json entries = Json::array();
  for (const PinnedEntry& entry : pinned) {
    entries.push_back({{"tensor_id", entry.tensor_id},
                       {"bytes", entry.bytes},
                       {"tag", entry.tag},
                       {"key", entry.key}});
  }
  out["pinned"] = std::move(entries);

  Json blocks = Json::array();
  for (const UnownedBlock& block : unowned_blocks) {
    blocks.push_back({{"ptr", detail::format_pointer(block.ptr)},
                      {"bytes", block.bytes},
                      {"stream", block.stream_id}});
  }
  out["unowned_blocks"] = std::move(blocks);
  return detail::dump_json(out) + "\n";
}

void LeakReport::keep_largest(std::size_t count) {
  if (tensors.size() <= count) return;
  // `tensors` is largest first as a report makes it; sort anyway, for a hand-made one.
  std::stable_sort(tensors.begin(), tensors.end(),
                   [](const LiveTensor& a, const LiveTensor& b) { return a.bytes > b.bytes; });
  for (auto it = tensors.begin() + static_cast<std::ptrdiff_t>(count); it != tensors.end(); ++it) {
    if (!is_leak(*it)) continue;
    ++omitted_tensors;
    omitted_bytes += own_bytes(*it);
  }
  tensors.erase(tensors.begin() + static_cast<std::ptrdiff_t>(count), tensors.end());
}

}  // namespace gpulife
