// SPDX-License-Identifier: Apache-2.0
// The main job: runs the step, dedup and pool benchmark families in-process on the default
// device (Google Benchmark, the same code as gpulife_bench_step, _dedup and _pool), then prints
// what reuse buys over reallocation, writes the Google Benchmark JSON, draws a PNG with gnuplot
// and checks the run for leaks.
//
//   gpulife_report [--report_dir=DIR] [Google Benchmark flags...]
//
// DIR (default: report) receives gpulife_report.json, the chart's data and script, and
// gpulife_report.png. Flags such as --benchmark_min_time=2 or --benchmark_repetitions=3 pass
// through; a --benchmark_filter narrows the run (the tables show what ran).

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <benchmark/benchmark.h>

#include "support/bench_support.hpp"
#include "support/model.hpp"

namespace gpulife::bench {
namespace {

using Run = benchmark::BenchmarkReporter::Run;

/// Shows the runs as the default console reporter does and keeps them for the tables.
class CollectingReporter final : public benchmark::BenchmarkReporter {
 public:
  explicit CollectingReporter(benchmark::BenchmarkReporter* display) : display_(display) {}

  bool ReportContext(const Context& context) override { return display_->ReportContext(context); }
  void ReportRuns(const std::vector<Run>& runs) override {
    // With repetitions, the median stands for the benchmark (on a shared machine it is the
    // estimate least moved by other load), and only it is shown; the JSON has every run.
    std::vector<Run> shown;
    for (const Run& run : runs) {
      const bool median = run.run_type == Run::RT_Aggregate && run.aggregate_name == "median";
      const bool single = run.run_type == Run::RT_Iteration && run.repetitions <= 1;
      if (median || single || run.error_occurred) {
        shown.push_back(run);
        // A repetition that failed stays what the report shows for the benchmark.
        auto [it, added] =
            runs_.try_emplace(run.run_name.function_name + "/" + run.run_name.args, run);
        if (!added && !it->second.error_occurred) it->second = run;
      }
    }
    if (!shown.empty()) display_->ReportRuns(shown);
  }
  void Finalize() override { display_->Finalize(); }

  /// @return the run of `function_name` with `args` ("" when it has none)
  [[nodiscard]] const Run* find(std::string_view function_name, std::string_view args = {}) const {
    auto it = runs_.find(std::string(function_name) + "/" + std::string(args));
    return it == runs_.end() ? nullptr : &it->second;
  }
  [[nodiscard]] const std::map<std::string, Run>& runs() const noexcept { return runs_; }

 private:
  benchmark::BenchmarkReporter* display_;
  std::map<std::string, Run> runs_;
};

double seconds(const Run& run) {
  return run.GetAdjustedRealTime() / benchmark::GetTimeUnitMultiplier(run.time_unit);
}

double counter(const Run& run, const char* name) {
  auto it = run.counters.find(name);
  return it == run.counters.end() ? 0.0 : it->second.value;
}

std::string format_time(double s) {
  char text[32];
  if (s >= 1.0) {
    std::snprintf(text, sizeof text, "%.3g s", s);
  } else if (s >= 1e-3) {
    std::snprintf(text, sizeof text, "%.3g ms", s * 1e3);
  } else if (s >= 1e-6) {
    std::snprintf(text, sizeof text, "%.3g us", s * 1e6);
  } else {
    std::snprintf(text, sizeof text, "%.3g ns", s * 1e9);
  }
  return text;
}

std::string format_ratio(double ratio) {
  char text[32];
  std::snprintf(text, sizeof text, "%.2fx", ratio);
  return text;
}

std::string format_rate(double per_second) {
  char text[32];
  if (per_second >= 1e6) {
    std::snprintf(text, sizeof text, "%.3gM/s", per_second * 1e-6);
  } else if (per_second >= 1e3) {
    std::snprintf(text, sizeof text, "%.3gk/s", per_second * 1e-3);
  } else {
    std::snprintf(text, sizeof text, "%.3g/s", per_second);
  }
  return text;
}

std::string format_count(double count) {
  char text[32];
  std::snprintf(text, sizeof text,
                count == static_cast<double>(static_cast<long long>(count)) ? "%.0f" : "%.2f",
                count);
  return text;
}

/// A plain-text table with left-aligned columns.
class Table {
 public:
  explicit Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  void print() const {
    std::vector<std::size_t> widths;
    for (const auto& row : rows_) {
      widths.resize(std::max(widths.size(), row.size()));
      for (std::size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
    }
    for (std::size_t r = 0; r < rows_.size(); ++r) {
      std::string line = "  ";
      for (std::size_t i = 0; i < rows_[r].size(); ++i) {
        line += rows_[r][i];
        if (i + 1 < rows_[r].size()) line += std::string(widths[i] - rows_[r][i].size() + 2, ' ');
      }
      std::printf("%s\n", line.c_str());
      if (r == 0) {
        std::size_t total = 0;
        for (std::size_t w : widths) total += w + 2;
        std::printf("  %s\n", std::string(total - 2, '-').c_str());
      }
    }
  }
  [[nodiscard]] bool empty() const noexcept { return rows_.size() == 1; }

 private:
  std::vector<std::vector<std::string>> rows_;
};

void print_errors(const CollectingReporter& collected, int& failures) {
  for (const auto& [key, run] : collected.runs()) {
    if (run.error_occurred) {
      std::printf("  ERROR %s: %s\n", run.benchmark_name().c_str(), run.error_message.c_str());
      ++failures;
    }
  }
}

struct StepRow {
  std::string strategy;
  double seconds = 0.0;
};

void print_steps(const CollectingReporter& collected, const ModelSpec& spec,
                 std::vector<StepRow>& rows) {
  Table table({"strategy", "time/step", "vs realloc", "uploaded/step", "upstream allocs/step",
               "device bytes (peak)", "held between steps"});
  const Run* realloc = collected.find("step/realloc");
  for (const char* strategy : {"realloc", "async", "pool", "cache"}) {
    const Run* run = collected.find(std::string("step/") + strategy);
    if (run == nullptr || run->error_occurred) continue;
    const double s = seconds(*run);
    const std::string speedup =
        realloc != nullptr && !realloc->error_occurred ? format_ratio(seconds(*realloc) / s) : "-";
    table.add({strategy, format_time(s), speedup, format_bytes(counter(*run, "bytes_uploaded")),
               format_count(counter(*run, "upstream_allocs")),
               format_bytes(counter(*run, "device_bytes")),
               format_bytes(counter(*run, "device_bytes_held"))});
    rows.push_back({strategy, s});
  }
  if (table.empty()) return;
  std::printf("\nOne inference step (%s; steady state, after one untimed step):\n",
              spec.describe().c_str());
  table.print();
}

struct DedupRow {
  double instances = 0.0;
  double no_cache_bytes = 0.0;
  double cache_bytes = 0.0;
};

void print_dedup(const CollectingReporter& collected, std::vector<DedupRow>& rows) {
  Table table({"instances", "device bytes, no cache", "with the cache", "saved",
               "load time, no cache", "with the cache", "uploaded, no cache", "with the cache"});
  for (const int instances : {1, 2, 4, 8}) {
    const std::string args = "instances:" + std::to_string(instances);
    const Run* plain = collected.find("dedup/load/no_cache", args);
    const Run* cached = collected.find("dedup/load/gpulife_cache", args);
    if (plain == nullptr || cached == nullptr || plain->error_occurred || cached->error_occurred) {
      continue;
    }
    const double plain_bytes = counter(*plain, "device_bytes");
    const double cached_bytes = counter(*cached, "device_bytes");
    table.add({std::to_string(instances), format_bytes(plain_bytes), format_bytes(cached_bytes),
               format_bytes(plain_bytes - cached_bytes), format_time(seconds(*plain)),
               format_time(seconds(*cached)), format_bytes(counter(*plain, "bytes_uploaded")),
               format_bytes(counter(*cached, "bytes_uploaded"))});
    rows.push_back({static_cast<double>(instances), plain_bytes, cached_bytes});
  }
  if (table.empty()) return;
  std::printf("\nN model instances loading the same weights (device bytes once all are loaded):\n");
  table.print();
}

void print_pool(const CollectingReporter& collected) {
  Table table({"resource", "time/trace", "allocs+frees/s", "vs direct", "vs async",
               "upstream allocs/trace", "device bytes (peak)"});
  const Run* direct = collected.find("pool/alloc_free/direct");
  const Run* async = collected.find("pool/alloc_free/async");
  for (const char* resource : {"gpulife_pool", "direct", "async"}) {
    const Run* run = collected.find(std::string("pool/alloc_free/") + resource);
    if (run == nullptr || run->error_occurred) continue;
    const double s = seconds(*run);
    auto versus = [&](const Run* base) {
      return base != nullptr && !base->error_occurred ? format_ratio(seconds(*base) / s)
                                                      : std::string("-");
    };
    table.add({resource, format_time(s), format_rate(counter(*run, "items_per_second")),
               versus(direct), versus(async), format_count(counter(*run, "upstream_allocs")),
               format_bytes(counter(*run, "device_bytes"))});
  }
  if (table.empty()) return;
  std::printf(
      "\nAllocation trace (2000 allocations, 256 B - 4 MiB log-uniform, at most 64 live, fixed "
      "seed; time per pass of the trace):\n");
  table.print();
}

void print_pool_replays(const CollectingReporter& collected) {
  Table steady({"pool", "ns per allocate+free", "upstream calls/step"});
  for (const char* pool : {"gpulife_pool", "v1_pool"}) {
    const Run* run = collected.find(std::string("pool/steady_state/") + pool);
    if (run == nullptr || run->error_occurred) continue;
    steady.add({pool, format_count(std::round(1e9 / counter(*run, "items_per_second"))),
                format_count(counter(*run, "upstream_calls"))});
  }
  if (!steady.empty()) {
    std::printf(
        "\nSteady state: a Llama-2-7B decode step's tensors at batch 8 on one stream, on the "
        "replay's model device (host time of the pool alone):\n");
    steady.print();
  }
  Table table({"trace", "pool", "peak reserved / peak live", "peak reserved", "upstream calls",
               "syncs", "ns/op"});
  for (const char* trace : {"llama-paged", "llama-growing", "random-64MiB", "multi-stream"}) {
    for (const char* pool : {"gpulife_pool", "v1_pool", "async"}) {
      const Run* run =
          collected.find(std::string("pool/replay/") + trace + "/" + pool);
      if (run == nullptr || run->error_occurred) continue;
      table.add({trace, pool, format_ratio(counter(*run, "ratio")),
                 format_bytes(counter(*run, "peak_reserved")),
                 format_count(counter(*run, "upstream_calls")), format_count(counter(*run, "syncs")),
                 format_count(std::round(counter(*run, "ns_per_op")))});
    }
  }
  if (table.empty()) return;
  std::printf(
      "\nPool replays (short versions of the traces of tools/replay: 2 Llama-2-7B batches, 2000 "
      "random allocations, 1000 multi-stream requests; model device, 80 GB, no lag; async is an "
      "ideal stream-ordered allocator; full traces: gpulife_replay):\n");
  table.print();
}

std::string gnuplot_text(std::string text) {
  for (char& c : text) {
    if (c == '"' || c == '\\') c = '\'';
  }
  return text;
}

/// Writes the chart's data and script to `dir` and runs gnuplot; says why when it cannot.
void draw_chart(const std::filesystem::path& dir, const std::string& device_name,
                const ModelSpec& spec, const std::vector<StepRow>& steps,
                const std::vector<DedupRow>& dedup) {
  if (steps.empty() && dedup.empty()) return;
  const std::filesystem::path png = dir / "gpulife_report.png";
  const std::filesystem::path script = dir / "gpulife_report.gp";
  {
    std::ofstream data(dir / "step_times.dat");
    data << "# strategy ms_per_step\n";
    for (const StepRow& row : steps) data << row.strategy << ' ' << row.seconds * 1e3 << '\n';
  }
  {
    std::ofstream data(dir / "dedup_memory.dat");
    data << "# instances MiB_no_cache MiB_cache\n";
    for (const DedupRow& row : dedup) {
      data << row.instances << ' ' << row.no_cache_bytes / (1024.0 * 1024.0) << ' '
           << row.cache_bytes / (1024.0 * 1024.0) << '\n';
    }
  }
  {
    std::ofstream gp(script);
    gp << "set terminal pngcairo size 1280,520 font 'sans,10'\n"
       << "set output '" << png.string() << "'\n"
       << "set multiplot layout 1,2 title \"gpulife report on " << gnuplot_text(device_name)
       << "\"\n"
       << "set grid ytics\nset key top left\n";
    if (!steps.empty()) {
      gp << "set title \"time per step, " << gnuplot_text(spec.describe()) << "\"\n"
         << "set style data histograms\nset style histogram clustered gap 1\n"
         << "set style fill solid 0.8 border -1\n"
         << "set ylabel 'ms per step'\nset yrange [0:*]\nset offsets 0,0,graph 0.1,0\n"
         << "plot '" << (dir / "step_times.dat").string()
         << "' using 2:xtic(1) notitle lc rgb '#4477aa', '' using 0:2:(sprintf('%.2f', $2)) "
            "with labels offset 0,0.8 notitle\n";
    } else {
      gp << "set multiplot next\n";
    }
    if (!dedup.empty()) {
      gp << "set title 'device memory of N model instances'\nset style data linespoints\n"
         << "set offsets 0,0,0,0\nset xlabel 'instances'\nset ylabel 'MiB'\nset logscale x 2\n"
         << "set xtics (1, 2, 4, 8)\nset xrange [0.8:10]\nset yrange [0:*]\n"
         << "plot '" << (dir / "dedup_memory.dat").string()
         << "' using 1:2 title 'no cache' lw 2 pt 7 lc rgb '#cc6677', '' using 1:3 title "
            "'gpulife TensorCache' lw 2 pt 5 lc rgb '#117733'\n";
    }
    gp << "unset multiplot\n";
  }
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) {
    std::printf(
        "chart:  skipped: gnuplot is not installed (Debian: apt-get install gnuplot-nox);"
        " data and script are in %s\n",
        dir.string().c_str());
    return;
  }
  const std::string command = "gnuplot '" + script.string() + "'";
  if (std::system(command.c_str()) != 0) {
    std::printf("chart:  gnuplot failed on %s; the data files are beside it\n",
                script.string().c_str());
    return;
  }
  std::printf("chart:  %s\n", png.string().c_str());
}

int run_report(int argc, char** argv) {
  std::filesystem::path dir = "report";
  std::vector<std::string> args = {argv[0]};
  std::vector<std::string> passed;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg.starts_with("--report_dir=")) {
      dir = std::string(arg.substr(std::string_view("--report_dir=").size()));
    } else if (arg == "--help" || arg == "-h") {
      std::printf("usage: %s [--report_dir=DIR] [Google Benchmark flags...]\n", argv[0]);
      return 0;
    } else {
      passed.emplace_back(arg);
    }
  }
  std::filesystem::create_directories(dir);
  const std::filesystem::path json = dir / "gpulife_report.json";
  args.push_back("--benchmark_filter=^(step|dedup|pool)/");
  args.push_back("--benchmark_out=" + json.string());
  args.push_back("--benchmark_out_format=json");
  // Three interleaved repetitions: the load of a shared machine drifts, and interleaving spreads
  // the drift over all strategies instead of penalising whichever ran during a busy spell.
  args.push_back("--benchmark_repetitions=3");
  args.push_back("--benchmark_enable_random_interleaving=true");
  args.push_back("--benchmark_min_time=0.2");
  // Later flags win: what the caller passed overrides the defaults above.
  args.insert(args.end(), passed.begin(), passed.end());

  const Device& device = bench_device();
  const ModelSpec spec = model_for(device.kind());
  std::printf("gpulife report: reuse against reallocation\n");
  std::printf("device: %s\n", describe_device(device).c_str());
  if (device.kind() == BackendKind::sim) {
    std::printf(
        "        No GPU answered, so this ran on the simulated device: device memory is host\n"
        "        memory (cudaMalloc is a host malloc, far cheaper than the driver's), kernels\n"
        "        are host loops on one worker thread per stream, and freed memory is not\n"
        "        poisoned here. These are host figures: the bytes and calls are what a GPU would\n"
        "        see, the times are not GPU times.\n");
  } else {
    std::printf("        times are CUDA-event times of each step on its stream\n");
  }
  std::printf("model:  %s\n", spec.describe().c_str());
  std::printf("host:   %u hardware threads\n\n", std::thread::hardware_concurrency());
  std::fflush(stdout);

  std::vector<char*> arg_pointers;
  for (std::string& arg : args) arg_pointers.push_back(arg.data());
  int benchmark_argc = static_cast<int>(arg_pointers.size());
  benchmark::Initialize(&benchmark_argc, arg_pointers.data());
  if (benchmark::ReportUnrecognizedArguments(benchmark_argc, arg_pointers.data())) return 2;
  CollectingReporter collected(benchmark::CreateDefaultDisplayReporter());
  const std::size_t matched = benchmark::RunSpecifiedBenchmarks(&collected);
  benchmark::Shutdown();
  std::fflush(stdout);
  if (matched == 0) {
    std::printf("no benchmark matched the filter\n");
    return 2;
  }

  int failures = 0;
  print_errors(collected, failures);
  std::vector<StepRow> steps;
  std::vector<DedupRow> dedup;
  print_steps(collected, spec, steps);
  print_dedup(collected, dedup);
  print_pool(collected);
  print_pool_replays(collected);
  std::printf("\n");
  std::printf("ran on: %s\n", describe_device(device).c_str());
  std::printf("json:   %s\n", json.string().c_str());
  draw_chart(dir, device.name(), spec, steps, dedup);

  const std::vector<std::string> leaks = leak_summary(device);
  if (leaks.empty()) {
    std::printf("leak check: no leaks\n");
  } else {
    std::printf("leak check: %zu findings\n", leaks.size());
    for (const std::string& line : leaks) std::printf("  %s\n", line.c_str());
  }
  return leaks.empty() && failures == 0 ? 0 : 1;
}

}  // namespace
}  // namespace gpulife::bench

int main(int argc, char** argv) {
  try {
    return gpulife::bench::run_report(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpulife_report: %s\n", e.what());
    return 1;
  }
}
