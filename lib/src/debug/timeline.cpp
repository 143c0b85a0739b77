// SPDX-License-Identifier: Apache-2.0
#include <gpulife/debug/timeline.hpp>

#include <array>
#include <cstdio>
#include <fstream>
#include <stdexcept>

#include "debug/json.hpp"

namespace gpulife {
namespace {

std::string microseconds(std::chrono::nanoseconds time) {
  char text[40];
  std::snprintf(text, sizeof text, "%.3f", static_cast<double>(time.count()) / 1000.0);
  return text;
}

}  // namespace

std::string_view to_string(TimelineEventKind kind) noexcept {
  switch (kind) {
    case TimelineEventKind::allocate:
      return "allocate";
    case TimelineEventKind::free:
      return "free";
    case TimelineEventKind::upload:
      return "upload";
    case TimelineEventKind::cache_hit:
      return "cache_hit";
    case TimelineEventKind::cache_miss:
      return "cache_miss";
    case TimelineEventKind::cache_eviction:
      return "cache_eviction";
    case TimelineEventKind::finalizer_run:
      return "finalizer_run";
    case TimelineEventKind::out_of_memory:
      return "out_of_memory";
  }
  return "unknown";
}

std::string Timeline::to_chrome_trace() const {
  using detail::append_json_key;
  using detail::append_json_string;
  std::string out = "{\"traceEvents\":[\n";
  // Names the process track after the device in the trace viewer.
  out += R"({"name":"process_name","ph":"M","pid":1,"tid":0,"args":{"name":)";
  append_json_string(out, "gpulife " + device);
  out += "}}";

  static constexpr std::array<const char*, 3> counter_names = {"bytes_in_use", "pool_cached_bytes",
                                                               "tensor_cache_bytes"};
  std::array<std::size_t, 3> last{};
  bool first = true;
  for (const TimelineEvent& event : events) {
    const std::string ts = microseconds(event.time);
    out += ",\n{";
    append_json_key(out, "name");
    append_json_string(out, to_string(event.kind));
    out += R"(,"cat":"gpulife","ph":"i","s":"t","ts":)" + ts +
           ",\"pid\":1,\"tid\":" + std::to_string(event.thread) +
           ",\"args\":{\"id\":" + std::to_string(event.tensor_id) +
           ",\"bytes\":" + std::to_string(event.bytes) + ",";
    append_json_key(out, "tag");
    append_json_string(out, event.tag);
    out += "}}";

    const std::array<std::size_t, 3> values = {event.bytes_in_use, event.pool_cached_bytes,
                                               event.tensor_cache_bytes};
    for (std::size_t i = 0; i < values.size(); ++i) {
      if (!first && values[i] == last[i]) continue;
      out += ",\n{\"name\":\"" + std::string(counter_names[i]) +
             R"(","cat":"gpulife","ph":"C","ts":)" + ts +
             ",\"pid\":1,\"args\":{\"bytes\":" + std::to_string(values[i]) + "}}";
      last[i] = values[i];
    }
    first = false;
  }
  out += "\n],\"displayTimeUnit\":\"ms\",\"otherData\":{";
  append_json_key(out, "device");
  append_json_string(out, device);
  out +=
      ",\"start_unix_ms\":" +
      std::to_string(
          std::chrono::duration_cast<std::chrono::milliseconds>(start.time_since_epoch()).count()) +
      ",\"capacity\":" + std::to_string(capacity) + ",\"recorded\":" + std::to_string(recorded) +
      ",\"dropped\":" + std::to_string(dropped) +
      ",\"recording\":" + (recording ? "true" : "false") + "}}\n";
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
