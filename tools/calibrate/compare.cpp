// SPDX-License-Identifier: Apache-2.0
// gpulife_calibrate --compare: the acceptance check of the virtual time model. Reads the
// report's JSON from a GPU run (measured step times) and from a simulated-device run with the
// GPU's calibrated profile and the same model (the `predicted_s` counters), and says whether
// every predicted step time is within the tolerance of the measured one and the strategies rank
// the same way.

#include "compare.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace gpulife::tools {
namespace {

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::invalid_argument(path + ": cannot be opened");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(path + ": invalid JSON: " + e.what());
  }
}

double unit_seconds(const std::string& unit) {
  if (unit == "ns") return 1e-9;
  if (unit == "us") return 1e-6;
  if (unit == "ms") return 1e-3;
  if (unit == "s") return 1.0;
  throw std::invalid_argument("unknown time unit '" + unit + "'");
}

/// Median per step strategy of `field` ("real_time" in seconds, or a counter) over the runs.
std::map<std::string, double> step_medians(const nlohmann::json& report, const std::string& path,
                                           bool predicted) {
  std::map<std::string, std::vector<double>> values;
  const auto benchmarks = report.find("benchmarks");
  if (benchmarks == report.end() || !benchmarks->is_array()) {
    throw std::invalid_argument(path + ": no \"benchmarks\" array (not a gpulife_report JSON)");
  }
  for (const auto& run : *benchmarks) {
    const std::string name = run.value("name", "");
    if (!name.starts_with("step/") || run.value("run_type", "") != "iteration") continue;
    const std::string strategy = name.substr(5, name.find('/', 5) - 5);
    if (predicted) {
      if (!run.contains("predicted_s")) {
        throw std::invalid_argument(
            path + ": " + name + " has no predicted_s (not a simulated-device run with a profile)");
      }
      values[strategy].push_back(run.at("predicted_s").get<double>());
    } else {
      values[strategy].push_back(run.at("real_time").get<double>() *
                                 unit_seconds(run.value("time_unit", "ns")));
    }
  }
  std::map<std::string, double> medians;
  for (auto& [strategy, v] : values) {
    std::sort(v.begin(), v.end());
    medians[strategy] = v[v.size() / 2];
  }
  if (medians.empty()) throw std::invalid_argument(path + ": no step/* runs");
  return medians;
}

std::vector<std::string> ranking(const std::map<std::string, double>& times) {
  std::vector<std::string> names;
  for (const auto& [name, t] : times) names.push_back(name);
  std::sort(names.begin(), names.end(),
            [&](const std::string& a, const std::string& b) { return times.at(a) < times.at(b); });
  return names;
}

}  // namespace

int compare_reports(const std::string& measured_path, const std::string& predicted_path,
                    double tolerance) {
  if (!(tolerance > 0 && tolerance < 1)) {
    throw std::invalid_argument("--tolerance: must be in (0, 1)");
  }
  const auto measured = step_medians(read_json(measured_path), measured_path, false);
  const auto predicted = step_medians(read_json(predicted_path), predicted_path, true);
  bool ok = true;
  std::map<std::string, double> both_measured;
  std::map<std::string, double> both_predicted;
  std::printf("%-10s %14s %14s %8s\n", "strategy", "measured", "predicted", "ratio");
  for (const auto& [strategy, m] : measured) {
    const auto p = predicted.find(strategy);
    if (p == predicted.end()) continue;
    both_measured[strategy] = m;
    both_predicted[strategy] = p->second;
    const double ratio = p->second / m;
    const bool within = std::abs(ratio - 1) <= tolerance;
    ok = ok && within;
    std::printf("%-10s %11.4g ms %11.4g ms %7.2fx%s\n", strategy.c_str(), m * 1e3, p->second * 1e3,
                ratio, within ? "" : "  outside the tolerance");
  }
  if (both_measured.empty()) throw std::invalid_argument("no step strategy in both reports");
  const bool same_order = ranking(both_measured) == ranking(both_predicted);
  std::printf("ranking: %s\n", same_order ? "the same" : "differs");
  std::printf("within_tolerance=%d\nsame_ranking=%d\n", ok ? 1 : 0, same_order ? 1 : 0);
  return ok && same_order ? 0 : 1;
}

}  // namespace gpulife::tools
