// SPDX-License-Identifier: Apache-2.0
#include <gpulife/debug/timeline.hpp>

#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

#include "debug/json.hpp"

namespace gpulife {
namespace {

using detail::Json;

/// Trace times are microseconds; three decimals keep the nanoseconds.
double microseconds(std::chrono::nanoseconds time) {
  return static_cast<double>(time.count()) / 1000.0;
}

std::string hex_id(std::uint64_t id) {
  char text[24];
  std::snprintf(text, sizeof text, "0x%llx", static_cast<unsigned long long>(id));
  return text;
}

/// A span is named after its tag (viewers group async spans by name), or "tensor" untagged.
std::string span_name(const TimelineEvent& event) {
  return event.tag.empty() ? std::string("tensor") : event.tag;
}

Json span_args(const TimelineEvent& event) {
  Json args = Json::object();
  args["id"] = event.tensor_id;
  args["bytes"] = event.bytes;
  args["tag"] = event.tag;
  args["dtype"] = std::string(to_string(event.dtype));
  args["shape"] = event.shape.to_string();
  args["stream"] = event.stream_id;
  if (!event.site.file.empty() || !event.site.function.empty()) {
    args["site"] = event.site.to_string();
  }
  if (!event.stack.empty()) args["stack"] = event.stack;
  return args;
}

}  // namespace

std::string Timeline::to_chrome_trace() const {
  using detail::dump_json;
  const std::uint32_t pid = process_id;
  std::string out = "{\"traceEvents\":[\n";
  bool first_event = true;
  auto emit = [&](const Json& event) {
    if (!first_event) out += ",\n";
    first_event = false;
    out += dump_json(event);
  };

  // Names the process after the device and each thread after itself.
  emit({{"name", "process_name"},
        {"ph", "M"},
        {"pid", pid},
        {"tid", 0},
        {"args", {{"name", "gpulife " + device}}}});
  for (const TimelineThread& thread : threads) {
    emit({{"name", "thread_name"},
          {"ph", "M"},
          {"pid", pid},
          {"tid", thread.id},
          {"args",
           {{"name", thread.name.empty() ? "thread " + std::to_string(thread.id) : thread.name}}}});
  }

  // Where each tensor's memory came from (its upload, or its allocation), for the flows of
  // the cache hits that reuse it: the event's thread and time.
  struct Origin {
    std::uint32_t thread = 0;
    double ts = 0;
  };
  std::unordered_map<std::uint64_t, Origin> origins;
  // Tensors whose allocation is in the window: only their release closes a span.
  std::unordered_set<std::uint64_t> open_spans;
  std::uint64_t next_flow = 1;

  static constexpr const char* counter_names[] = {"bytes_in_use", "pool_cached_bytes",
                                                  "tensor_cache_bytes"};
  std::size_t last[3] = {0, 0, 0};
  bool first = true;
  for (const TimelineEvent& event : events) {
    const double ts = microseconds(event.time);
    Json args = {{"id", event.tensor_id}, {"bytes", event.bytes}, {"tag", event.tag}};
    if (event.memory_id != 0) args["memory_id"] = event.memory_id;
    if (event.stream_id != 0) args["stream"] = event.stream_id;
    emit({{"name", std::string(to_string(event.kind))},
          {"cat", "gpulife"},
          {"ph", "i"},
          {"s", "t"},
          {"ts", ts},
          {"pid", pid},
          {"tid", event.thread},
          {"args", std::move(args)}});

    switch (event.kind) {
      case LifetimeEvent::allocate:
        emit({{"name", span_name(event)},
              {"cat", "tensor"},
              {"ph", "b"},
              {"id", hex_id(event.tensor_id)},
              {"ts", ts},
              {"pid", pid},
              {"tid", event.thread},
              {"args", span_args(event)}});
        open_spans.insert(event.tensor_id);
        origins[event.tensor_id] = {event.thread, ts};
        break;
      case LifetimeEvent::free:
        if (open_spans.erase(event.tensor_id) != 0) {
          emit({{"name", span_name(event)},
                {"cat", "tensor"},
                {"ph", "e"},
                {"id", hex_id(event.tensor_id)},
                {"ts", ts},
                {"pid", pid},
                {"tid", event.thread}});
        }
        origins.erase(event.tensor_id);
        break;
      case LifetimeEvent::upload:
        origins[event.tensor_id] = {event.thread, ts};
        break;
      case LifetimeEvent::cache_hit:
        if (auto it = origins.find(event.memory_id); it != origins.end()) {
          const std::uint64_t flow = next_flow++;
          emit({{"name", "cache_reuse"},
                {"cat", "cache_reuse"},
                {"ph", "s"},
                {"id", flow},
                {"ts", it->second.ts},
                {"pid", pid},
                {"tid", it->second.thread},
                {"bp", "e"}});
          emit({{"name", "cache_reuse"},
                {"cat", "cache_reuse"},
                {"ph", "f"},
                {"id", flow},
                {"ts", ts},
                {"pid", pid},
                {"tid", event.thread},
                {"bp", "e"},
                {"args", {{"memory_id", event.memory_id}}}});
        }
        break;
      default:
        break;
    }

    const std::size_t values[3] = {event.bytes_in_use, event.pool_cached_bytes,
                                   event.tensor_cache_bytes};
    for (std::size_t i = 0; i < 3; ++i) {
      if (!first && values[i] == last[i]) continue;
      emit({{"name", counter_names[i]},
            {"cat", "gpulife"},
            {"ph", "C"},
            {"ts", ts},
            {"pid", pid},
            {"args", {{"bytes", values[i]}}}});
      last[i] = values[i];
    }
    first = false;
  }

  Json other = {
      {"producer", "gpulife"},
      {"device", device},
      {"process_id", pid},
      {"start_unix_ms",
       std::chrono::duration_cast<std::chrono::milliseconds>(start.time_since_epoch()).count()},
      {"capacity", capacity},
      {"recorded", recorded},
      {"dropped", dropped},
      {"recording", recording}};
  out += "\n],\"displayTimeUnit\":\"ms\",\"otherData\":" + dump_json(other) + "}\n";
  return out;
}

void Timeline::write_chrome_trace(const std::filesystem::path& path) const {
  const std::string text = to_chrome_trace();
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file.write(text.data(), static_cast<std::streamsize>(text.size()));
  file.close();
  if (!file) throw std::runtime_error("timeline: cannot write " + path.string());
}

}  // namespace gpulife
