// SPDX-License-Identifier: Apache-2.0
// gpulife_soak: the model-checked workload (tools/workload) for as long as you let it run.
//
// Hours of random operations on the simulated device, several threads, faults injected, the
// model checked every few rounds; every report interval one line of throughput and live
// memory; at the end everything is let go and the leak report printed. Exit status 0 when every
// check held, 1 when one did not (its message says which), 2 for bad arguments. Ctrl-C ends the
// run early, with the same final report.
//
//   gpulife_soak --duration=2h --threads=4 --seed=7 --report=60

#include <atomic>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <string>
#include <string_view>
#include <system_error>

#include <unistd.h>

#include <gpulife/context.hpp>
#include <gpulife/debug/leak_report.hpp>

#include "workload.hpp"

namespace {

using Clock = std::chrono::steady_clock;

std::atomic<bool> stop_requested{false};

extern "C" void on_signal(int /*signal*/) { stop_requested.store(true); }

struct Arguments {
  double duration_s = 60;
  std::size_t threads = 2;
  std::uint64_t seed = 1;
  double report_s = 10;
  std::size_t check_every = 10;  // rounds between checks
  double faults = 0.02;          // probability of a device fault per eligible call
  bool delay = false;
  bool seeded = false;  // the device's seeded scheduler instead of a worker thread per stream
};

[[noreturn]] void usage(const char* problem) {
  std::fprintf(stderr,
               "gpulife_soak: %s\n"
               "usage: gpulife_soak [--duration=<s|Nm|Nh>] [--threads=N] [--seed=N] "
               "[--report=<s>] [--check-every=<rounds>] [--faults=<probability>] "
               "[--delay | --seeded]\n",
               problem);
  std::exit(2);
}

/// A whole number, all of `text` (no sign, no spaces, no trailing characters), at most `max`.
std::uint64_t parse_count(std::string_view flag, std::string_view text, std::uint64_t max) {
  std::uint64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc() || end != text.data() + text.size() || value > max) {
    usage(("--" + std::string(flag) + ": '" + std::string(text) +
           "' is not a whole number from 0 to " + std::to_string(max))
              .c_str());
  }
  return value;
}

/// A finite number, all of `text`.
double parse_number(std::string_view flag, std::string_view text) {
  const std::string number(text);
  char* end = nullptr;
  errno = 0;
  const double value = std::strtod(number.c_str(), &end);
  if (number.empty() || end != number.c_str() + number.size() || errno == ERANGE ||
      !std::isfinite(value) || std::isspace(static_cast<unsigned char>(number.front())) != 0) {
    usage(("--" + std::string(flag) + ": '" + number + "' is not a number").c_str());
  }
  return value;
}

/// "90", "90s", "30m", "2h" in seconds.
double parse_duration(std::string_view flag, std::string_view text) {
  if (text.empty()) usage(("--" + std::string(flag) + ": empty duration").c_str());
  double scale = 1;
  switch (text.back()) {
    case 'h':
      scale = 3600;
      text.remove_suffix(1);
      break;
    case 'm':
      scale = 60;
      text.remove_suffix(1);
      break;
    case 's':
      text.remove_suffix(1);
      break;
    default:
      break;
  }
  const double value = parse_number(flag, text);
  if (value < 0) usage(("--" + std::string(flag) + ": a duration is not negative").c_str());
  return value * scale;
}

Arguments parse(int argc, char** argv) {
  Arguments args;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    auto value = [&](std::string_view name) -> const char* {
      if (arg.size() > name.size() + 3 && arg.substr(2, name.size()) == name &&
          arg[name.size() + 2] == '=') {
        return argv[i] + name.size() + 3;
      }
      return nullptr;
    };
    if (const char* v = value("duration")) {
      args.duration_s = parse_duration("duration", v);
    } else if (const char* t = value("threads")) {
      args.threads = static_cast<std::size_t>(parse_count("threads", t, 64));
    } else if (const char* s = value("seed")) {
      args.seed = parse_count("seed", s, std::numeric_limits<std::uint64_t>::max());
    } else if (const char* r = value("report")) {
      args.report_s = parse_duration("report", r);
    } else if (const char* c = value("check-every")) {
      args.check_every = static_cast<std::size_t>(parse_count("check-every", c, 1'000'000'000));
    } else if (const char* f = value("faults")) {
      args.faults = parse_number("faults", f);
    } else if (arg == "--delay") {
      args.delay = true;
    } else if (arg == "--seeded") {
      args.seeded = true;
    } else if (arg == "--help" || arg == "-h") {
      usage("help");
    } else {
      usage(("unknown argument " + std::string(arg)).c_str());
    }
  }
  if (args.threads == 0 || args.threads > 64) usage("--threads must be 1 to 64");
  if (args.check_every == 0) usage("--check-every must be at least 1");
  if (args.delay && args.seeded) usage("--delay is for stream threads, not --seeded");
  if (!(args.faults >= 0 && args.faults <= 1)) usage("--faults must be a probability");
  return args;
}

/// The process's resident memory (Linux; 0 where /proc is missing). Host memory that grows run
/// after run is a leak the device accounting cannot see: control blocks, callbacks, records.
std::size_t resident_bytes() {
  std::FILE* statm = std::fopen("/proc/self/statm", "r");
  if (statm == nullptr) return 0;
  unsigned long long total_pages = 0;
  unsigned long long resident_pages = 0;
  const int read = std::fscanf(statm, "%llu %llu", &total_pages, &resident_pages);
  std::fclose(statm);
  return read == 2 ? static_cast<std::size_t>(resident_pages) *
                         static_cast<std::size_t>(sysconf(_SC_PAGESIZE))
                   : 0;
}

// ---- the leak report ---------------------------------------------------------------------------

void configure(gpulife::ContextOptions& options) {
  options.debug.leaks = true;  // every tensor's site, so that the final report can name a leak
  // The report below, once everything was let go, is the one that counts; the shutdown check
  // then destroys the context with tensors alive on purpose, which is not a leak.
  options.debug.report_at_shutdown = false;
}

/// Prints the leak report of the live set once every handle is gone. The warm tier is the
/// cache's own reference, not a leak: it is let go first, as a context's shutdown does.
/// @return true when nothing leaked (pinned cache entries are listed, and are not leaks)
bool print_leak_report(gpulife::Context& ctx) {
  (void)ctx.cache().clear_warm();
  const gpulife::LeakReport report = ctx.leak_report();
  std::printf("%s", report.to_text().c_str());
  return report.tracking && !report.has_leaks();
}

// -------------------------------------------------------------------------------------------------

}  // namespace

int main(int argc, char** argv) {
  const Arguments args = parse(argc, argv);
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);

  gpulife::workload::Config config;
  config.seed = args.seed;
  config.actors = args.threads;
  config.sim_delay = args.delay;
  // Stream worker threads by default: the soak is a concurrency test.
  config.schedule = args.seeded ? gpulife::SimSchedule::seeded : gpulife::SimSchedule::threads;
  config.device_faults.probability = args.faults;
  config.pool_faults.probability = args.faults;
  config.context_options = configure;
  std::printf(
      "gpulife_soak: %.0f s, %zu threads, seed %llu, faults %.3f%s, checks every %zu "
      "rounds\n",
      args.duration_s, args.threads, static_cast<unsigned long long>(args.seed), args.faults,
      args.delay    ? ", sim delays"
      : args.seeded ? ", seeded scheduler"
                    : "",
      args.check_every);
  std::fflush(stdout);

  gpulife::workload::Workload workload(config);
  const Clock::time_point start = Clock::now();
  Clock::time_point last_report = start;
  std::uint64_t last_operations = 0;
  std::uint64_t rounds = 0;
  auto seconds_since = [](Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
  };
  try {
    while (!stop_requested.load() && seconds_since(start) < args.duration_s) {
      workload.round(8);
      if (++rounds % args.check_every == 0) workload.check();
      if (seconds_since(last_report) >= args.report_s) {
        const gpulife::workload::Counters c = workload.counters();
        const double interval = seconds_since(last_report);
        std::printf(
            "[%8.0f s] %llu operations (%.0f/s), %zu %s alive (%zu B), pool %zu B in "
            "use, %llu faults injected, %llu checks, host RSS %.1f MiB\n",
            seconds_since(start), static_cast<unsigned long long>(c.operations),
            static_cast<double>(c.operations - last_operations) / interval, c.live_tensors,
            c.live_tensors == 1 ? "tensor" : "tensors", c.live_bytes,
            workload.pool().statistics().bytes_in_use,
            static_cast<unsigned long long>(c.device_faults + c.pool_faults),
            static_cast<unsigned long long>(c.checks),
            static_cast<double>(resident_bytes()) / (1 << 20));
        std::fflush(stdout);
        last_report = Clock::now();
        last_operations = c.operations;
      }
    }
    workload.check();
    workload.release_all();
    const bool clean = print_leak_report(workload.context());
    std::printf(
        "shutdown check: the context is destroyed while a few tensors outlive it on purpose\n");
    std::fflush(stdout);
    workload.finish();
    if (!clean) {
      std::printf("gpulife_soak: FAILED after %.0f s: the leak report lists leaks\n%s\n",
                  seconds_since(start), workload.summary().c_str());
      return 1;
    }
  } catch (const gpulife::workload::InvariantViolation& e) {
    std::printf("gpulife_soak: FAILED after %.0f s, round %llu: %s\n%s\n", seconds_since(start),
                static_cast<unsigned long long>(rounds), e.what(), workload.summary().c_str());
    return 1;
  }
  std::printf("gpulife_soak: passed, %.0f s: %s\n", seconds_since(start),
              workload.summary().c_str());
  return 0;
}
