// SPDX-License-Identifier: Apache-2.0
// gpulife_replay: replays allocation traces (the standard ones of bench/traces, or a
// LoggingAdaptor CSV log of your own program) against pool configurations on a model device
// with no memory, and prints peak reserved over peak live bytes, upstream calls, host
// synchronisations, device-side waits and host ns per operation.
//
//   gpulife_replay                                   every standard trace, every policy, lag 0
//   gpulife_replay --trace=llama-paged --policy=v2,v1,async --lag=0,1000
//   gpulife_replay --log=my_program.csv --policy=all
//   gpulife_replay --trace=multi-stream --write-csv=multi.csv   writes the trace as a log
//
// Options: --trace=NAME[,NAME...]|all, --log=FILE, --policy=NAME[,NAME...]|all,
// --lag=TICKS[,TICKS...] (trace operations the device runs behind the host), --capacity=GB
// (default 80), --repeat=N (replay N times, report the lowest host time: the memory figures
// are the same every time), --csv (machine-readable output), --write-csv=FILE, --list.

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "replay.hpp"

namespace {

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

std::string gib(std::size_t bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.2f GiB", static_cast<double>(bytes) / (1024.0 * 1024 * 1024));
  return text;
}

int usage(const char* message) {
  std::fprintf(stderr,
               "gpulife_replay: %s\nusage: gpulife_replay [--trace=NAME,...|all] [--log=FILE] "
               "[--policy=NAME,...|all] [--lag=N,...] [--capacity=GB] [--repeat=N] [--csv] "
               "[--write-csv=FILE] [--list]\n",
               message);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace gpulife;
  std::vector<std::string> trace_names;
  std::string log;
  std::vector<std::string> policies = replay::policy_names();
  std::vector<std::uint64_t> lags = {0};
  replay::DeviceModel model;
  bool csv = false;
  int repeat = 1;
  std::string write_csv;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      std::string v;
      auto value = [&](const char* name) {
        const std::string prefix = std::string(name) + "=";
        if (arg.rfind(prefix, 0) != 0) return false;
        v = arg.substr(prefix.size());
        return true;
      };
      if (value("--trace")) {
        trace_names = v == "all" ? traces::standard_trace_names() : split(v);
      } else if (value("--log")) {
        log = v;
      } else if (value("--policy")) {
        if (v != "all") policies = split(v);
      } else if (value("--lag")) {
        lags.clear();
        for (const std::string& l : split(v)) lags.push_back(std::stoull(l));
      } else if (value("--capacity")) {
        model.capacity_bytes = static_cast<std::size_t>(std::stod(v) * 1e9);
      } else if (value("--repeat")) {
        repeat = std::max(1, std::stoi(v));
      } else if (value("--write-csv")) {
        write_csv = v;
      } else if (arg == "--csv") {
        csv = true;
      } else if (arg == "--list") {
        std::printf("traces:");
        for (const auto& t : traces::standard_trace_names()) std::printf(" %s", t.c_str());
        std::printf("\nmore traces:");
        for (const auto& t : traces::extra_trace_names()) std::printf(" %s", t.c_str());
        std::printf(" llama/KEY[=VALUE]/... (paged, growing, eager, fused, all-logits, "
                    "last-logits, budget=GIB, batches=N, seed=N)");
        std::printf("\npolicies:");
        for (const auto& p : replay::policy_names()) std::printf(" %s", p.c_str());
        std::printf("\n");
        return 0;
      } else {
        return usage(("unknown argument " + arg).c_str());
      }
    }
    if (trace_names.empty() && log.empty()) trace_names = traces::standard_trace_names();

    std::vector<traces::Trace> traces_to_run;
    for (const std::string& name : trace_names) traces_to_run.push_back(traces::standard_trace(name));
    if (!log.empty()) {
      std::ifstream in(log);
      if (!in) return usage(("cannot open " + log).c_str());
      traces_to_run.push_back(traces::read_csv(in, log));
    }
    if (!write_csv.empty()) {
      std::ofstream out(write_csv);
      for (const auto& t : traces_to_run) traces::write_csv(t, out);
      std::fprintf(stderr, "gpulife_replay: wrote %s\n", write_csv.c_str());
      return 0;
    }

    if (csv) {
      std::printf("trace,policy,lag,operations,peak_live,peak_reserved,ratio,upstream_calls,"
                  "synchronizations,stream_waits,events_recorded,failed,ns_per_op\n");
    } else {
      std::printf("%-14s %-19s %6s %10s %12s %12s %7s %9s %6s %7s %8s %6s %8s\n", "trace",
                  "policy", "lag", "ops", "peak live", "peak rsrvd", "ratio", "upstream",
                  "syncs", "waits", "events", "failed", "ns/op");
    }
    for (const auto& trace : traces_to_run) {
      for (std::uint64_t lag : lags) {
        for (const std::string& policy : policies) {
          model.lag = lag;
          replay::ReplayResult r = replay::replay(trace, policy, model);
          for (int i = 1; i < repeat; ++i) {
            r.ns_per_operation =
                std::min(r.ns_per_operation, replay::replay(trace, policy, model).ns_per_operation);
          }
          if (csv) {
            std::printf("%s,%s,%llu,%llu,%zu,%zu,%.4f,%llu,%llu,%llu,%llu,%llu,%.1f\n",
                        r.trace.c_str(), r.policy.c_str(), static_cast<unsigned long long>(lag),
                        static_cast<unsigned long long>(r.operations), r.peak_live_bytes,
                        r.peak_reserved_bytes, r.ratio(),
                        static_cast<unsigned long long>(r.upstream_calls),
                        static_cast<unsigned long long>(r.synchronizations),
                        static_cast<unsigned long long>(r.stream_waits),
                        static_cast<unsigned long long>(r.events_recorded),
                        static_cast<unsigned long long>(r.failed_allocations),
                        r.ns_per_operation);
          } else {
            std::printf("%-14s %-19s %6llu %10llu %12s %12s %7.3f %9llu %6llu %7llu %8llu %6llu "
                        "%8.1f\n",
                        r.trace.c_str(), r.policy.c_str(), static_cast<unsigned long long>(lag),
                        static_cast<unsigned long long>(r.operations),
                        gib(r.peak_live_bytes).c_str(), gib(r.peak_reserved_bytes).c_str(),
                        r.ratio(), static_cast<unsigned long long>(r.upstream_calls),
                        static_cast<unsigned long long>(r.synchronizations),
                        static_cast<unsigned long long>(r.stream_waits),
                        static_cast<unsigned long long>(r.events_recorded),
                        static_cast<unsigned long long>(r.failed_allocations),
                        r.ns_per_operation);
          }
          std::fflush(stdout);
        }
      }
    }
  } catch (const std::invalid_argument& e) {
    return usage(e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpulife_replay: %s\n", e.what());
    return 1;
  }
  return 0;
}
