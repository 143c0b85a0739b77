// SPDX-License-Identifier: Apache-2.0
// Device profiles: the figures of the simulated device's virtual time model, read from JSON.

#include <gpulife/runtime/device_profile.hpp>

#include <cmath>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace gpulife {

namespace detail {
std::string_view profile_h100_json();  // embedded lib/profiles/h100.json (lib/CMakeLists.txt)
std::string_view profile_h200_json();  // embedded lib/profiles/h200.json
}  // namespace detail

namespace {

struct FigureField {
  const char* name;
  double DeviceProfile::*member;
  bool positive;  // a rate: 0 would divide by zero
};

constexpr FigureField figure_fields[] = {
    {"h2d_pinned_gbps", &DeviceProfile::h2d_pinned_gbps, true},
    {"h2d_pageable_gbps", &DeviceProfile::h2d_pageable_gbps, true},
    {"d2h_pinned_gbps", &DeviceProfile::d2h_pinned_gbps, true},
    {"d2h_pageable_gbps", &DeviceProfile::d2h_pageable_gbps, true},
    {"copy_latency_us", &DeviceProfile::copy_latency_us, false},
    {"memory_gbps", &DeviceProfile::memory_gbps, true},
    {"compute_gflops", &DeviceProfile::compute_gflops, true},
    {"kernel_min_us", &DeviceProfile::kernel_min_us, false},
    {"launch_us", &DeviceProfile::launch_us, false},
    {"malloc_us", &DeviceProfile::malloc_us, false},
    {"free_us", &DeviceProfile::free_us, false},
    {"malloc_async_us", &DeviceProfile::malloc_async_us, false},
    {"free_async_us", &DeviceProfile::free_async_us, false},
    {"malloc_host_us", &DeviceProfile::malloc_host_us, false},
    {"malloc_host_us_per_gib", &DeviceProfile::malloc_host_us_per_gib, false},
    {"free_host_us", &DeviceProfile::free_host_us, false},
    {"event_us", &DeviceProfile::event_us, false},
    {"host_function_us", &DeviceProfile::host_function_us, false},
    {"sync_us", &DeviceProfile::sync_us, false},
};

[[noreturn]] void fail(std::string_view origin, const std::string& what) {
  throw std::invalid_argument("device profile " + std::string(origin) + ": " + what);
}

}  // namespace

std::vector<std::string> DeviceProfile::builtin_names() { return {"h100", "h200"}; }

DeviceProfile DeviceProfile::builtin(std::string_view name) {
  if (name == "h100") return parse(detail::profile_h100_json(), "h100 (built in)");
  if (name == "h200") return parse(detail::profile_h200_json(), "h200 (built in)");
  std::string known;
  for (const std::string& n : builtin_names()) known += (known.empty() ? "" : ", ") + n;
  throw std::invalid_argument("profile: no built-in device profile named '" + std::string(name) +
                              "' (known: " + known + "; or give a path to a JSON file)");
}

DeviceProfile DeviceProfile::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot be opened for reading");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) fail(path, "could not be read");
  return parse(text.str(), path);
}

DeviceProfile DeviceProfile::select(std::string_view name_or_path) {
  if (name_or_path.empty()) throw std::invalid_argument("profile: empty name");
  for (const std::string& n : builtin_names()) {
    if (name_or_path == n) return builtin(n);
  }
  if (name_or_path.find('/') == std::string_view::npos &&
      name_or_path.find(".json") == std::string_view::npos) {
    return builtin(name_or_path);  // throws, listing the known names
  }
  return load(std::string(name_or_path));
}

DeviceProfile DeviceProfile::parse(std::string_view json, std::string_view origin) {
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(json.begin(), json.end());
  } catch (const nlohmann::json::exception& e) {
    fail(origin, std::string("invalid JSON: ") + e.what());
  }
  if (!doc.is_object()) fail(origin, "the document is not a JSON object");
  DeviceProfile profile;
  const auto text = [&](const char* key, bool required) -> std::string {
    const auto it = doc.find(key);
    if (it == doc.end()) {
      if (required) fail(origin, std::string("missing \"") + key + "\"");
      return {};
    }
    if (!it->is_string()) fail(origin, std::string("\"") + key + "\" is not a string");
    return it->get<std::string>();
  };
  profile.name = text("name", true);
  if (profile.name.empty()) fail(origin, "\"name\" is empty");
  profile.device = text("device", false);
  if (const auto it = doc.find("calibrated"); it != doc.end()) {
    if (!it->is_boolean()) fail(origin, "\"calibrated\" is not true or false");
    profile.calibrated = it->get<bool>();
  }
  const auto figures = doc.find("figures");
  if (figures == doc.end() || !figures->is_object()) fail(origin, "missing \"figures\" object");
  for (const FigureField& field : figure_fields) {
    const std::string where = std::string("figure \"") + field.name + "\"";
    const auto it = figures->find(field.name);
    if (it == figures->end()) fail(origin, "missing " + where);
    if (!it->is_object()) fail(origin, where + " is not an object {\"value\", \"source\"}");
    const auto value = it->find("value");
    if (value == it->end() || !value->is_number())
      fail(origin, where + ": \"value\" is not a number");
    const double v = value->get<double>();
    if (!std::isfinite(v) || v < 0)
      fail(origin, where + ": value " + value->dump() + " is negative");
    if (field.positive && v == 0) fail(origin, where + ": a bandwidth of 0");
    const auto source = it->find("source");
    if (source == it->end() || !source->is_string() || source->get<std::string>().empty()) {
      fail(origin, where + " has no \"source\" (every figure says where it comes from)");
    }
    profile.*field.member = v;
    profile.sources[field.name] = source->get<std::string>();
  }
  for (const auto& [key, value] : figures->items()) {
    bool known = false;
    for (const FigureField& field : figure_fields) known = known || key == field.name;
    if (!known) fail(origin, "unknown figure \"" + key + "\"");
  }
  return profile;
}

std::string DeviceProfile::to_json() const {
  nlohmann::ordered_json doc;
  doc["name"] = name;
  doc["device"] = device;
  doc["calibrated"] = calibrated;
  nlohmann::ordered_json figures = nlohmann::ordered_json::object();
  for (const FigureField& field : figure_fields) {
    const auto source = sources.find(field.name);
    figures[field.name] = {
        {"value", this->*field.member},
        {"source", source == sources.end() ? std::string("unknown") : source->second}};
  }
  doc["figures"] = std::move(figures);
  return doc.dump(2) + "\n";
}

}  // namespace gpulife
