// SPDX-License-Identifier: Apache-2.0
// The trace generators and the CSV format of LoggingAdaptor logs. See trace.hpp for what each
// workload is; the comments here say how the shapes were chosen.

#include "traces/trace.hpp"

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

constexpr std::uint64_t KiB = 1024;
constexpr std::uint64_t MiB = KiB * KiB;
constexpr std::uint64_t GiB = MiB * KiB;

/// splitmix64: the same trace on every platform (std:: distributions are not specified bit for
/// bit).
class Random {
 public:
  explicit Random(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  /// Uniform in [lo, hi].
  std::uint64_t uniform(std::uint64_t lo, std::uint64_t hi) { return lo + next() % (hi - lo + 1); }

 private:
  std::uint64_t state_;
};

/// Builds a trace: allocate returns an id, free takes it.
class Builder {
 public:
  explicit Builder(Trace& trace) : trace_(trace) {}
  std::uint64_t alloc(std::uint64_t bytes, std::uint32_t stream = 0) {
    const std::uint64_t id = trace_.allocations++;
    sizes_.push_back(bytes);
    trace_.ops.push_back({TraceOp::Kind::allocate, stream, no_stream, id, bytes});
    trace_.streams = std::max(trace_.streams, stream + 1);
    return id;
  }
  void free(std::uint64_t id, std::uint32_t stream = 0, std::uint32_t after = no_stream) {
    trace_.ops.push_back({TraceOp::Kind::free, stream, after, id, sizes_[id]});
    trace_.streams = std::max(trace_.streams, stream + 1);
    if (after != no_stream) trace_.streams = std::max(trace_.streams, after + 1);
  }

 private:
  Trace& trace_;
  std::vector<std::uint64_t> sizes_;
};

// Llama-2-7B: 32 layers, hidden 4096, MLP 11008, vocabulary 32000, fp16 weights.
constexpr std::uint64_t hidden = 4096;
constexpr std::uint64_t mlp = 11008;
constexpr std::uint64_t vocab = 32000;
constexpr int layers = 32;
constexpr std::uint64_t half = 2;
constexpr std::uint64_t kv_block_tokens = 16;
// K and V of one 16-token block of one layer: 2 x 16 x 4096 x 2 bytes.
constexpr std::uint64_t kv_block_bytes = 2 * kv_block_tokens * hidden * half;
constexpr std::uint64_t kv_budget = 24 * GiB;

std::vector<std::uint64_t> load_weights(Builder& b) {
  std::vector<std::uint64_t> w;
  w.push_back(b.alloc(vocab * hidden * half));  // embedding
  for (int l = 0; l < layers; ++l) {
    w.push_back(b.alloc(hidden * half));  // input norm
    for (int i = 0; i < 4; ++i) w.push_back(b.alloc(hidden * hidden * half));  // q k v o
    w.push_back(b.alloc(hidden * half));  // post-attention norm
    for (int i = 0; i < 3; ++i) w.push_back(b.alloc(mlp * hidden * half));  // gate up down
  }
  w.push_back(b.alloc(hidden * half));          // final norm
  w.push_back(b.alloc(vocab * hidden * half));  // lm head
  return w;
}

/// One decoder layer's activations for `tokens` tokens; `h` is the hidden state, replaced.
void layer(Builder& b, std::uint64_t& h, std::uint64_t tokens) {
  const std::uint64_t th = tokens * hidden * half;
  const std::uint64_t tm = tokens * mlp * half;
  const std::uint64_t n1 = b.alloc(th);
  const std::uint64_t q = b.alloc(th);
  const std::uint64_t k = b.alloc(th);
  const std::uint64_t v = b.alloc(th);
  b.free(n1);
  const std::uint64_t attn = b.alloc(th);  // k and v were written into the KV cache
  b.free(q);
  b.free(k);
  b.free(v);
  const std::uint64_t o = b.alloc(th);
  b.free(attn);
  const std::uint64_t h2 = b.alloc(th);  // residual
  b.free(o);
  b.free(h);
  const std::uint64_t n2 = b.alloc(th);
  const std::uint64_t gate = b.alloc(tm);
  const std::uint64_t up = b.alloc(tm);
  b.free(n2);
  const std::uint64_t act = b.alloc(tm);
  b.free(gate);
  b.free(up);
  const std::uint64_t down = b.alloc(th);
  b.free(act);
  h = b.alloc(th);  // residual
  b.free(down);
  b.free(h2);
}

/// Embedding, the layers, then logits and sampling for `sequences` sequences.
void forward(Builder& b, std::uint64_t tokens, std::uint64_t sequences,
             const std::function<void(int)>& before_layer) {
  std::uint64_t h = b.alloc(tokens * hidden * half);
  for (int l = 0; l < layers; ++l) {
    before_layer(l);
    layer(b, h, tokens);
  }
  const std::uint64_t norm = b.alloc(tokens * hidden * half);
  b.free(h);
  const std::uint64_t last = b.alloc(sequences * hidden * half);
  b.free(norm);
  const std::uint64_t logits = b.alloc(sequences * vocab * 4);  // fp32
  b.free(last);
  const std::uint64_t sampled = b.alloc(sequences * 8);
  b.free(logits);
  b.free(sampled);
}

struct Batch {
  std::vector<std::uint64_t> prompts;
  std::uint64_t steps = 0;
};

Batch draw_batch(Random& random) {
  Batch batch;
  const std::uint64_t size = random.uniform(1, 64);
  batch.steps = random.uniform(16, 192);
  std::uint64_t kv = 0;
  for (std::uint64_t i = 0; i < size; ++i) {
    const std::uint64_t prompt = random.uniform(16, 2048);
    const std::uint64_t need = (prompt + batch.steps + kv_block_tokens - 1) / kv_block_tokens *
                               kv_block_bytes * layers;
    if (!batch.prompts.empty() && kv + need > kv_budget) break;  // the scheduler's KV budget
    kv += need;
    batch.prompts.push_back(prompt);
  }
  return batch;
}

Trace llama(std::uint64_t seed, int batches, bool paged) {
  Trace trace;
  trace.name = paged ? "llama-paged" : "llama-growing";
  Builder b(trace);
  Random random(seed);
  const std::vector<std::uint64_t> weights = load_weights(b);
  for (int n = 0; n < batches; ++n) {
    const Batch batch = draw_batch(random);
    const std::uint64_t sequences = batch.prompts.size();
    std::uint64_t tokens = 0;
    std::uint64_t longest = 0;
    for (std::uint64_t p : batch.prompts) {
      tokens += p;
      longest = std::max(longest, p);
    }
    if (paged) {
      // vLLM-style: blocks per sequence per layer, allocated for the prompt, then one more
      // whenever a sequence crosses a 16-token boundary.
      std::vector<std::uint64_t> kv;
      std::vector<std::uint64_t> length(batch.prompts.begin(), batch.prompts.end());
      auto grow_to = [&](std::uint64_t from, std::uint64_t to) {
        const std::uint64_t have = (from + kv_block_tokens - 1) / kv_block_tokens;
        const std::uint64_t need = (to + kv_block_tokens - 1) / kv_block_tokens;
        for (std::uint64_t block = have; block < need; ++block) {
          for (int l = 0; l < layers; ++l) kv.push_back(b.alloc(kv_block_bytes));
        }
      };
      for (std::uint64_t p : batch.prompts) grow_to(0, p);
      forward(b, tokens, sequences, [](int) {});
      for (std::uint64_t step = 0; step < batch.steps; ++step) {
        for (std::uint64_t& len : length) {
          grow_to(len, len + 1);
          ++len;
        }
        forward(b, sequences, sequences, [](int) {});
      }
      for (std::uint64_t id : kv) b.free(id);
    } else {
      // HF-style: per layer K and V for the padded batch, concatenated one token larger per step.
      std::vector<std::uint64_t> k(layers);
      std::vector<std::uint64_t> v(layers);
      std::uint64_t len = longest;
      auto bytes = [&](std::uint64_t l) { return sequences * l * hidden * half; };
      forward(b, sequences * longest, sequences, [&](int l) {
        k[static_cast<std::size_t>(l)] = b.alloc(bytes(len));
        v[static_cast<std::size_t>(l)] = b.alloc(bytes(len));
      });
      for (std::uint64_t step = 0; step < batch.steps; ++step) {
        forward(b, sequences, sequences, [&](int l) {
          const auto i = static_cast<std::size_t>(l);
          const std::uint64_t nk = b.alloc(bytes(len + 1));
          b.free(k[i]);
          k[i] = nk;
          const std::uint64_t nv = b.alloc(bytes(len + 1));
          b.free(v[i]);
          v[i] = nv;
        });
        ++len;
      }
      for (int l = 0; l < layers; ++l) {
        b.free(k[static_cast<std::size_t>(l)]);
        b.free(v[static_cast<std::size_t>(l)]);
      }
    }
  }
  for (std::uint64_t w : weights) b.free(w);
  return trace;
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

Trace llama_paged(std::uint64_t seed, int batches) {
  Trace trace = llama(seed, batches, true);
  trace.description = "Llama-2-7B fp16 serving, " + std::to_string(batches) +
                      " batches, paged KV cache (16-token blocks)";
  return trace;
}

Trace llama_growing(std::uint64_t seed, int batches) {
  Trace trace = llama(seed, batches, false);
  trace.description = "Llama-2-7B fp16 serving, " + std::to_string(batches) +
                      " batches, KV cache grown one token per step";
  return trace;
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

Trace standard_trace(const std::string& name) {
  Trace trace;
  if (name == "llama-paged") {
    trace = llama_paged();
  } else if (name == "llama-growing") {
    trace = llama_growing();
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
