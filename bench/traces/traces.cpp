// SPDX-License-Identifier: Apache-2.0
// The trace generators and the CSV format of LoggingAdaptor logs. See trace.hpp for what each
// workload is; the comments here say how the shapes were chosen.

#include "traces/trace.hpp"
#include "traces/trace_builder.hpp"

#include <algorithm>
#include <cstdio>
#include <functional>
#include <istream>
#include <map>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <unordered_map>

namespace gpulife::traces {
namespace {

using detail::Builder;
using detail::GiB;
using detail::MiB;
using detail::Random;

/// "llama/KEY[=VALUE]/...": paged, growing, eager, fused, all-logits, last-logits,
/// budget=GIB, batches=N, seed=N.
LlamaOptions parse_llama(const std::string& name) {
  LlamaOptions o;
  std::stringstream ss(name.substr(6));
  std::string item;
  while (std::getline(ss, item, '/')) {
    const auto eq = item.find('=');
    const std::string key = item.substr(0, eq);
    const std::string value = eq == std::string::npos ? "" : item.substr(eq + 1);
    try {
      if (key == "paged") {
        o.cache = LlamaOptions::Cache::paged;
      } else if (key == "growing") {
        o.cache = LlamaOptions::Cache::growing;
      } else if (key == "eager") {
        o.engine = LlamaOptions::Engine::hf_eager;
      } else if (key == "fused") {
        o.engine = LlamaOptions::Engine::fused;
      } else if (key == "all-logits") {
        o.all_logits = true;
      } else if (key == "last-logits") {
        o.all_logits = false;
      } else if (key == "budget") {
        o.budget = static_cast<std::uint64_t>(std::stod(value) * static_cast<double>(GiB));
      } else if (key == "batches") {
        o.batches = std::stoi(value);
      } else if (key == "seed") {
        o.seed = std::stoull(value);
      } else {
        throw std::invalid_argument(key);
      }
    } catch (const std::exception&) {
      throw std::invalid_argument("trace: '" + name + "': cannot read '" + item + "'");
    }
  }
  return o;
}

}  // namespace

std::uint64_t Trace::peak_live_bytes() const {
  std::uint64_t live = 0;
  std::uint64_t peak = 0;
  for (const TraceOp& op : ops) {
    if (op.kind == TraceOp::Kind::allocate) {
      live += op.bytes;
      peak = std::max(peak, live);
    } else {
      live -= op.bytes;
    }
  }
  return peak;
}

Trace random_allocations(std::uint64_t max_bytes, std::uint64_t count, std::uint64_t seed,
                         std::uint64_t max_live) {
  // RMM's benchmarks/random_allocations: 73 % allocations while below the allocation count and
  // a 16000 MiB budget, otherwise a random live allocation is freed; 2 x count steps, then the
  // rest is freed.
  Trace trace;
  trace.name = "random";
  trace.description = "RMM random_allocations, uniform sizes up to " + std::to_string(max_bytes) +
                      " B, " + std::to_string(count) + " allocations";
  Builder b(trace);
  Random random(seed);
  constexpr std::uint64_t budget = 16000 * MiB;
  std::vector<std::uint64_t> live;
  std::vector<std::uint64_t> live_bytes;
  std::uint64_t in_use = 0;
  std::uint64_t made = 0;
  for (std::uint64_t i = 0; i < 2 * count; ++i) {
    const std::uint64_t size = random.uniform(1, max_bytes);
    bool allocate = true;
    if (!live.empty()) {
      allocate = random.uniform(0, 99) < 73 && made < count && in_use + size < budget &&
                 (max_live == 0 || live.size() < max_live);
    }
    if (allocate) {
      if (made >= count) continue;
      live.push_back(b.alloc(size));
      live_bytes.push_back(size);
      in_use += size;
      ++made;
    } else {
      const std::size_t index = static_cast<std::size_t>(random.uniform(0, live.size() - 1));
      b.free(live[index]);
      in_use -= live_bytes[index];
      live[index] = live.back();
      live_bytes[index] = live_bytes.back();
      live.pop_back();
      live_bytes.pop_back();
    }
  }
  for (std::uint64_t id : live) b.free(id);
  return trace;
}

Trace multi_stream(std::uint64_t seed, int requests) {
  // Streams: 0..7 compute, 8 upload, 9 download.
  constexpr std::uint32_t compute_streams = 8;
  constexpr std::uint32_t upload = 8;
  constexpr std::uint32_t download = 9;
  Trace trace;
  trace.name = "multi-stream";
  trace.description = "serving on 8 compute streams with an upload and a download stream, " +
                      std::to_string(requests) + " requests";
  Builder b(trace);
  Random random(seed);
  struct Request {
    std::uint32_t stream = 0;
    int stage = 0;
    std::uint64_t input = 0;
    std::uint64_t act1 = 0;
    std::uint64_t act2 = 0;
    std::uint64_t output = 0;
  };
  std::vector<Request> in_flight;
  for (std::uint32_t s = 0; s < compute_streams; ++s) in_flight.push_back({s});
  int started = static_cast<int>(compute_streams);
  int finished = 0;
  while (finished < requests) {
    Request& r = in_flight[static_cast<std::size_t>(random.uniform(0, in_flight.size() - 1))];
    switch (r.stage++) {
      case 0:  // the host uploads the input on the upload stream
        r.input = b.alloc(random.uniform(MiB, 16 * MiB), upload);
        break;
      case 1:
        r.act1 = b.alloc(random.uniform(4 * MiB, 64 * MiB), r.stream);
        break;
      case 2:
        r.act2 = b.alloc(random.uniform(4 * MiB, 64 * MiB), r.stream);
        b.free(r.act1, r.stream);
        b.free(r.input, r.stream);  // the compute stream consumed it
        break;
      case 3:
        r.output = b.alloc(random.uniform(MiB, 8 * MiB), r.stream);
        b.free(r.act2, r.stream);
        break;
      default:
        // Downloaded on the download stream: freed on the compute stream after it
        // (record_stream).
        b.free(r.output, r.stream, download);
        ++finished;
        if (started < requests) {
          r = Request{r.stream};
          ++started;
        } else {
          r.stage = -1000;  // done; drained below
        }
        break;
    }
    std::erase_if(in_flight, [](const Request& q) { return q.stage < 0; });
    if (in_flight.empty()) break;
  }
  return trace;
}

std::vector<std::string> standard_trace_names() {
  return {"llama-paged", "llama-growing", "random-1MiB", "random-64MiB", "random-4GiB",
          "multi-stream"};
}

std::vector<std::string> extra_trace_names() {
  return {"llama-paged-lite", "llama-growing-lite", "llama-paged-fused", "llama-growing-fused"};
}

Trace standard_trace(const std::string& name) {
  Trace trace;
  if (name == "llama-paged") {
    trace = llama_paged();
  } else if (name == "llama-growing") {
    trace = llama_growing();
  } else if (name == "llama-paged-lite") {
    trace = llama_lite(true);
  } else if (name == "llama-growing-lite") {
    trace = llama_lite(false);
  } else if (name == "llama-paged-fused" || name == "llama-growing-fused") {
    LlamaOptions o;
    o.engine = LlamaOptions::Engine::fused;
    if (name == "llama-growing-fused") o.cache = LlamaOptions::Cache::growing;
    trace = llama(o);
  } else if (name.rfind("llama/", 0) == 0) {
    trace = llama(parse_llama(name));
  } else if (name == "random-1MiB") {
    trace = random_allocations(MiB, 100000);
  } else if (name == "random-64MiB") {
    trace = random_allocations(64 * MiB, 10000);
  } else if (name == "random-4GiB") {
    trace = random_allocations(4 * GiB, 1000);
  } else if (name == "multi-stream") {
    trace = multi_stream();
  } else {
    throw std::invalid_argument("trace: no standard trace named '" + name + "'");
  }
  trace.name = name;
  return trace;
}

void write_csv(const Trace& trace, std::ostream& out) {
  out << "thread,time,action,pointer,size,stream,after\n";
  std::uint64_t time = 0;
  for (const TraceOp& op : trace.ops) {
    out << "0," << time++ << ',' << (op.kind == TraceOp::Kind::allocate ? "allocate" : "free")
        << ",0x" << std::hex << (op.id + 1) * 512 << std::dec << ',' << op.bytes << ','
        << op.stream << ',';
    if (op.after_stream != no_stream) out << op.after_stream;
    out << '\n';
  }
}

Trace read_csv(std::istream& in, std::string name) {
  Trace trace;
  trace.name = std::move(name);
  trace.description = "log " + trace.name;
  Builder b(trace);
  std::unordered_map<std::string, std::uint64_t> live;  // pointer text -> id
  std::map<std::string, std::uint32_t> streams;          // stream text -> dense index
  auto stream_of = [&](const std::string& text) {
    auto [it, added] = streams.emplace(text, static_cast<std::uint32_t>(streams.size()));
    (void)added;
    return it->second;
  };
  std::string line;
  std::size_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line.rfind("thread,", 0) == 0 || line[0] == '#') continue;
    std::vector<std::string> fields;
    std::stringstream ss(line);
    std::string field;
    while (std::getline(ss, field, ',')) fields.push_back(field);
    if (!line.empty() && line.back() == ',') fields.emplace_back();
    if (fields.size() < 6) {
      throw std::invalid_argument("log: line " + std::to_string(number) +
                                  " has fewer than 6 fields: " + line);
    }
    const std::string& action = fields[2];
    const std::string& pointer = fields[3];
    std::uint64_t bytes = 0;
    try {
      bytes = std::stoull(fields[4]);
    } catch (...) {
      throw std::invalid_argument("log: line " + std::to_string(number) + ": bad size '" +
                                  fields[4] + "'");
    }
    const std::uint32_t stream = stream_of(fields[5]);
    const std::uint32_t after =
        fields.size() > 6 && !fields[6].empty() ? stream_of(fields[6]) : no_stream;
    if (action == "allocate") {
      live[pointer] = b.alloc(bytes, stream);
    } else if (action == "free") {
      auto it = live.find(pointer);
      if (it == live.end()) continue;
      b.free(it->second, stream, after);
      live.erase(it);
    } else if (action != "allocate_failure") {
      throw std::invalid_argument("log: line " + std::to_string(number) + ": unknown action '" +
                                  action + "'");
    }
  }
  trace.streams = std::max<std::uint32_t>(1, static_cast<std::uint32_t>(streams.size()));
  return trace;
}

}  // namespace gpulife::traces
