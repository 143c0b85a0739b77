// SPDX-License-Identifier: Apache-2.0
#include <gpulife/debug/timeline_view.hpp>

#include <fstream>
#include <stdexcept>
#include <string>

#include "debug/json.hpp"

namespace gpulife {
namespace detail {
/// The page's template, lib/src/debug/viewer/timeline_view.html, compiled in at build time.
std::string_view timeline_view_page();
}  // namespace detail

namespace {

std::string escape_html(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

/// The template with its placeholders filled in, in one pass over the template (so that a
/// value that happens to hold a placeholder's name stays as it is).
std::string fill(std::string_view page, const std::string& title, const std::string& trace) {
  static constexpr std::string_view title_mark = "@TITLE@";
  static constexpr std::string_view trace_mark = "@TRACE@";
  std::string out;
  out.reserve(page.size() + trace.size() + 2 * title.size());
  while (!page.empty()) {
    const std::size_t at = page.find('@');
    if (at == std::string_view::npos) {
      out += page;
      break;
    }
    out += page.substr(0, at);
    page.remove_prefix(at);
    if (page.starts_with(title_mark)) {
      out += title;
      page.remove_prefix(title_mark.size());
    } else if (page.starts_with(trace_mark)) {
      out += trace;
      page.remove_prefix(trace_mark.size());
    } else {
      out += '@';
      page.remove_prefix(1);
    }
  }
  return out;
}

}  // namespace

std::string timeline_view_html(std::string_view chrome_trace, const TimelineViewOptions& options) {
  detail::Json trace;
  try {
    trace = detail::Json::parse(chrome_trace);
  } catch (const detail::Json::exception& e) {
    throw std::invalid_argument(std::string("chrome_trace: not JSON (") + e.what() + ")");
  }
  if (!trace.is_object() || !trace.contains("traceEvents") || !trace["traceEvents"].is_array()) {
    throw std::invalid_argument("chrome_trace: no \"traceEvents\" array");
  }
  std::string title = options.title;
  if (title.empty()) {
    const auto other = trace.find("otherData");
    std::string device;
    if (other != trace.end() && other->is_object() && other->contains("device") &&
        (*other)["device"].is_string()) {
      device = (*other)["device"].get<std::string>();
    }
    title = device.empty() ? "gpulife memory" : "gpulife memory: " + device;
  }
  // Inside <script>, "</script>" or "<!--" in a string would end or derail the element: '<'
  // occurs only inside JSON strings, where \u003c means the same.
  std::string data = detail::dump_json(trace);
  std::string escaped;
  escaped.reserve(data.size());
  for (const char c : data) {
    if (c == '<') {
      escaped += "\\u003c";
    } else {
      escaped += c;
    }
  }
  return fill(detail::timeline_view_page(), escape_html(title), escaped);
}

void write_timeline_view(const Timeline& timeline, const std::filesystem::path& path,
                         const TimelineViewOptions& options) {
  const std::string text = timeline_view_html(timeline.to_chrome_trace(), options);
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file.write(text.data(), static_cast<std::streamsize>(text.size()));
  file.close();
  if (!file) throw std::runtime_error("timeline view: cannot write " + path.string());
}

}  // namespace gpulife
