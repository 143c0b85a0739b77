// SPDX-License-Identifier: Apache-2.0
#include "debug/oom_dump.hpp"

#include <algorithm>
#include <ctime>
#include <fstream>
#include <stdexcept>
#include <system_error>

#include <unistd.h>

#include <gpulife/debug/timeline_view.hpp>
#include <gpulife/memory/pool_resource.hpp>

#include "debug/json.hpp"
#include "detail/format.hpp"

namespace gpulife::detail {
namespace {

void write_file(const std::filesystem::path& path, const std::string& text) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file.write(text.data(), static_cast<std::streamsize>(text.size()));
  file.close();
  if (!file) throw std::runtime_error("cannot write " + path.string());
}

/// "20261130-165347": UTC, sortable, no characters a file system minds.
std::string utc_stamp(std::chrono::system_clock::time_point when, const char* format) {
  const std::time_t seconds = std::chrono::system_clock::to_time_t(when);
  std::tm parts{};
  ::gmtime_r(&seconds, &parts);
  char text[40];
  const std::size_t length = std::strftime(text, sizeof text, format, &parts);
  return std::string(text, length);
}

Json counters_json(const PoolCounters& c) {
  return {{"reserved_bytes", c.reserved_bytes},
          {"allocated_bytes", c.allocated_bytes},
          {"requested_bytes", c.requested_bytes},
          {"cached_bytes", c.cached_bytes},
          {"inactive_split_bytes", c.inactive_split_bytes},
          {"peak_reserved_bytes", c.peak_reserved_bytes},
          {"peak_allocated_bytes", c.peak_allocated_bytes},
          {"segments", c.segments},
          {"allocated_blocks", c.allocated_blocks},
          {"free_blocks", c.free_blocks},
          {"largest_free_block", c.largest_free_block}};
}

Json resource_json(const OomSnapshot& s) {
  const ResourceStatistics& r = s.resource;
  Json out = {{"name", s.resource_name},
              {"bytes_in_use", r.bytes_in_use},
              {"peak_bytes_in_use", r.peak_bytes_in_use},
              {"bytes_cached", r.bytes_cached},
              {"allocations", r.allocations},
              {"deallocations", r.deallocations},
              {"hits", r.hits},
              {"misses", r.misses},
              {"upstream_allocations", r.upstream_allocations},
              {"upstream_deallocations", r.upstream_deallocations},
              {"failed_allocations", r.failed_allocations}};
  if (s.pool) {
    const PoolStatistics& p = s.pool->stats;
    Json streams = Json::array();
    for (const PoolStreamCounters& stream : p.streams) {
      streams.push_back({{"stream", stream.stream_id},
                         {"allocated_bytes", stream.allocated_bytes},
                         {"requested_bytes", stream.requested_bytes},
                         {"reserved_bytes", stream.reserved_bytes},
                         {"allocations", stream.allocations},
                         {"cross_stream_reuses", stream.cross_stream_reuses},
                         {"stream_waits", stream.stream_waits}});
    }
    out["pool"] = {{"live_blocks", s.pool->live_blocks},
                   {"live_block_bytes", s.pool->live_block_bytes},
                   {"largest_live_block", s.pool->largest_live_block},
                   {"total", counters_json(p.total)},
                   {"small", counters_json(p.small)},
                   {"large", counters_json(p.large)},
                   {"streams", std::move(streams)},
                   {"allocations", p.allocations},
                   {"deallocations", p.deallocations},
                   {"failed_allocations", p.failed_allocations},
                   {"splits", p.splits},
                   {"merges", p.merges},
                   {"upstream_allocations", p.upstream_allocations},
                   {"upstream_deallocations", p.upstream_deallocations},
                   {"map_calls", p.map_calls},
                   {"unmap_calls", p.unmap_calls},
                   {"device_synchronizations", p.device_synchronizations},
                   {"oom_retries", p.oom_retries},
                   {"released_segments", p.released_segments}};
  }
  return out;
}

Json cache_json(const CacheStatistics& c) {
  return {{"hits", c.hits},
          {"misses", c.misses},
          {"bytes_uploaded", c.bytes_uploaded},
          {"bytes_deduplicated", c.bytes_deduplicated},
          {"live_entries", c.live_entries},
          {"live_bytes", c.live_bytes},
          {"warm_entries", c.warm_entries},
          {"warm_bytes", c.warm_bytes},
          {"pinned_entries", c.pinned_entries},
          {"pinned_bytes", c.pinned_bytes},
          {"evictions", c.evictions},
          {"verification_failures", c.verification_failures}};
}

std::string summary_text(const OomSnapshot& s, const std::string& stamp) {
  std::string text = "gpulife out-of-memory snapshot\n";
  text += "device:   " + s.device + "\n";
  text += "taken:    " + stamp + " UTC, process " + std::to_string(::getpid()) + "\n";
  text +=
      "request:  " + format_bytes(s.requested) + " on stream " + std::to_string(s.stream_id) + "\n";
  text += "error:    " + s.message + "\n";
  if (s.device_memory) {
    text += "memory:   " + format_bytes(s.device_memory->free_bytes) + " free of " +
            format_bytes(s.device_memory->total_bytes) + " on the device\n";
  }
  const ResourceStatistics& r = s.resource;
  text += "\nmemory resource: " + s.resource_name + "\n";
  text += "  in use " + format_bytes(r.bytes_in_use) + " (peak " +
          format_bytes(r.peak_bytes_in_use) + "), cached " + format_bytes(r.bytes_cached) + "\n";
  text += "  " + std::to_string(r.allocations) + " allocations (" + std::to_string(r.hits) +
          " from cached memory, " + std::to_string(r.misses) + " upstream), " +
          std::to_string(r.deallocations) + " deallocations, " +
          std::to_string(r.failed_allocations) + " failed\n";
  text += "  upstream: " + std::to_string(r.upstream_allocations) + " allocations, " +
          std::to_string(r.upstream_deallocations) + " frees\n";
  if (s.pool) {
    text += "  pool: " + count_of(s.pool->live_blocks, "block", "blocks") + " handed out holding " +
            format_bytes(s.pool->live_block_bytes) + ", the largest " +
            format_bytes(s.pool->largest_live_block) + "\n";
    if (!s.pool->summary.empty()) text += "\n" + s.pool->summary + "\n";
  }
  if (s.cache) {
    const CacheStatistics& c = *s.cache;
    text += "\ntensor cache: " + count_of(c.live_entries, "live entry", "live entries") +
            " holding " + format_bytes(c.live_bytes) + " (warm " + std::to_string(c.warm_entries) +
            ", " + format_bytes(c.warm_bytes) + "; pinned " + std::to_string(c.pinned_entries) +
            ", " + format_bytes(c.pinned_bytes) + ")\n";
    text += "  " + count_of(c.hits, "hit", "hits") + ", " + count_of(c.misses, "miss", "misses") +
            ", " + format_bytes(c.bytes_uploaded) + " uploaded, " +
            format_bytes(c.bytes_deduplicated) + " deduplicated, " +
            count_of(c.evictions, "eviction", "evictions") + "\n";
  }
  text += "\nlive tensors: " + count_of(s.live_tensors, "tensor", "tensors") + " holding " +
          format_bytes(s.live_bytes) + "; leak_report.txt lists them by site";
  if (s.report.omitted_tensors != 0) {
    text += " (the " + std::to_string(s.report.tensors.size()) + " largest)";
  }
  text += "\ntimeline: the newest " + count_of(s.timeline.events.size(), "event", "events") +
          " of " + std::to_string(s.timeline.recorded) +
          " (timeline.json, a Chrome trace; timeline.html opens in any browser, offline)\n";
  text +=
      "\nfiles: summary.txt, memory.json, leak_report.txt, leak_report.json, timeline.json, "
      "timeline.html\n";
  return text;
}

}  // namespace

OomDumper::OomDumper(const DebugOptions& options)
    : dir_(options.oom_dump_dir.empty() ? std::filesystem::path(".")
                                        : std::filesystem::path(options.oom_dump_dir)),
      max_tensors_(options.oom_dump_max_tensors),
      max_events_(options.oom_dump_max_events),
      limit_(options.oom_dump_limit) {}

bool OomDumper::claim() noexcept {
  const auto now = std::chrono::steady_clock::now();
  std::scoped_lock lock(mutex_);
  if (claimed_ >= limit_) return false;
  if (last_ && now - *last_ < std::chrono::seconds(1)) return false;
  last_ = now;
  ++claimed_;
  return true;
}

std::filesystem::path OomDumper::write(const OomSnapshot& s) const {
  const auto now = std::chrono::system_clock::now();
  std::filesystem::create_directories(dir_);
  const std::string stamp = utc_stamp(now, "%Y%m%d-%H%M%S");
  std::filesystem::path dir;
  // A new directory: the first name not taken (several processes may share `dir_`).
  for (unsigned n = 1;; ++n) {
    dir = dir_ /
          ("gpulife-oom-" + std::to_string(::getpid()) + "-" + std::to_string(n) + "-" + stamp);
    std::error_code error;
    if (std::filesystem::create_directory(dir, error)) break;
    if (error || n == 1000) {
      throw std::runtime_error("cannot make a directory in " + dir_.string() +
                               (error ? ": " + error.message() : std::string()));
    }
  }

  Json memory = {
      {"device", s.device},
      {"taken_unix_ms",
       std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count()},
      {"process_id", ::getpid()},
      {"request", {{"bytes", s.requested}, {"stream", s.stream_id}}},
      {"error", s.message},
      {"resource", resource_json(s)},
      {"context", {{"live_tensors", s.live_tensors}, {"live_bytes", s.live_bytes}}}};
  if (s.device_memory) {
    memory["device_memory"] = {{"free_bytes", s.device_memory->free_bytes},
                               {"total_bytes", s.device_memory->total_bytes}};
  }
  if (s.cache) memory["tensor_cache"] = cache_json(*s.cache);

  write_file(dir / "summary.txt", summary_text(s, utc_stamp(now, "%Y-%m-%d %H:%M:%S")));
  write_file(dir / "memory.json", dump_json(memory, 2) + "\n");
  write_file(dir / "leak_report.txt",
             "The live set when the allocation failed (a leak report: \"leaked\" means alive and "
             "not pinned).\n\n" +
                 s.report.to_text());
  write_file(dir / "leak_report.json", s.report.to_json());
  const std::string trace = s.timeline.to_chrome_trace();
  write_file(dir / "timeline.json", trace);
  write_file(dir / "timeline.html",
             timeline_view_html(trace, {.title = "gpulife out of memory on " + s.device + " at " +
                                                 utc_stamp(now, "%Y-%m-%d %H:%M:%S") + " UTC"}));
  return dir;
}

std::optional<PoolSection> describe_pool(const DeviceMemoryResource& resource) {
  const auto* pool = dynamic_cast<const PoolResource*>(&resource);
  if (pool == nullptr) return std::nullopt;
  PoolSection section;
  for (const PoolResource::LiveBlock& block : pool->live_blocks()) {
    ++section.live_blocks;
    section.live_block_bytes += block.capacity;
    section.largest_live_block = std::max(section.largest_live_block, block.capacity);
  }
  section.stats = pool->memory_stats();
  section.summary = pool->memory_summary();
  return section;
}

}  // namespace gpulife::detail
