// SPDX-License-Identifier: Apache-2.0
// gpulife_view: turns a Chrome trace that gpulife wrote (Timeline::write_chrome_trace, a
// GPULIFE_TIMELINE file, an out-of-memory snapshot's timeline.json) into one self-contained
// HTML page that any browser opens without network access.
//
//   gpulife_view trace.json                 # writes trace.html beside it
//   gpulife_view trace.json -o view.html [--title="serving, node 3"]
//
// Exit status 0 on success, 1 when the trace cannot be read or the page written, 2 for bad
// arguments.

#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <string_view>

#include <gpulife/debug/timeline_view.hpp>

namespace {

[[noreturn]] void usage(const std::string& problem) {
  std::fprintf(stderr,
               "gpulife_view: %s\n"
               "usage: gpulife_view <trace.json> [-o <view.html>] [--title=<text>]\n",
               problem.c_str());
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  std::filesystem::path input;
  std::filesystem::path output;
  gpulife::TimelineViewOptions options;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "-o" || arg == "--output") {
      if (i + 1 >= argc) usage("-o needs a file name");
      output = argv[++i];
    } else if (arg.starts_with("--output=")) {
      output = std::string(arg.substr(9));
    } else if (arg.starts_with("--title=")) {
      options.title = std::string(arg.substr(8));
    } else if (arg == "-h" || arg == "--help") {
      usage("help");
    } else if (arg.starts_with("-") && arg != "-") {
      usage("unknown option " + std::string(arg));
    } else if (input.empty()) {
      input = std::string(arg);
    } else {
      usage("one trace at a time (also given: " + std::string(arg) + ")");
    }
  }
  if (input.empty()) usage("no trace given");
  if (output.empty()) output = std::filesystem::path(input).replace_extension(".html");
  if (std::filesystem::exists(output) && std::filesystem::exists(input) &&
      std::filesystem::equivalent(input, output)) {
    usage("the page would overwrite the trace");
  }
  try {
    std::ifstream file(input, std::ios::binary);
    if (!file) throw std::runtime_error("cannot read " + input.string());
    const std::string trace{std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
    const std::string page = gpulife::timeline_view_html(trace, options);
    std::ofstream out(output, std::ios::binary | std::ios::trunc);
    out.write(page.data(), static_cast<std::streamsize>(page.size()));
    out.close();
    if (!out) throw std::runtime_error("cannot write " + output.string());
    std::printf("gpulife_view: wrote %s (%zu bytes); open it in a browser, no network needed\n",
                output.c_str(), page.size());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpulife_view: %s: %s\n", input.c_str(), e.what());
    return 1;
  }
  return 0;
}
