// SPDX-License-Identifier: Apache-2.0
// The Llama-2-7B serving traces: what an inference engine allocates, tensor by tensor, while it
// loads the weights and serves batches. See trace.hpp (LlamaOptions) for the two engines and the
// two KV caches; the comments here say which PyTorch operation each allocation stands for.

#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "traces/trace.hpp"
#include "traces/trace_builder.hpp"

namespace gpulife::traces {
namespace {

using detail::Builder;
using detail::GiB;
using detail::Random;

// Llama-2-7B: 32 layers of 32 heads of 128, hidden 4096, MLP 11008, vocabulary 32000.
constexpr std::uint64_t hidden = 4096;
constexpr std::uint64_t heads = 32;
constexpr std::uint64_t head_dim = 128;
constexpr std::uint64_t mlp = 11008;
constexpr std::uint64_t vocab = 32000;
constexpr int layers = 32;
constexpr std::uint64_t f16 = 2;
constexpr std::uint64_t f32 = 4;
constexpr std::uint64_t i64 = 8;
constexpr std::uint64_t kv_block_tokens = 16;
// K and V of one token in every layer: 2 x 32 x 4096 x 2 bytes.
constexpr std::uint64_t kv_token_bytes = 2 * hidden * f16 * layers;

std::vector<std::uint64_t> load_weights(Builder& b) {
  std::vector<std::uint64_t> w;
  w.push_back(b.alloc(vocab * hidden * f16));  // embedding
  for (int l = 0; l < layers; ++l) {
    w.push_back(b.alloc(hidden * f16));  // input norm
    for (int i = 0; i < 4; ++i) w.push_back(b.alloc(hidden * hidden * f16));  // q k v o
    w.push_back(b.alloc(hidden * f16));  // post-attention norm
    for (int i = 0; i < 3; ++i) w.push_back(b.alloc(mlp * hidden * f16));  // gate up down
  }
  w.push_back(b.alloc(hidden * f16));          // final norm
  w.push_back(b.alloc(vocab * hidden * f16));  // lm head
  return w;
}

std::uint64_t div_up(std::uint64_t a, std::uint64_t b) { return (a + b - 1) / b; }

/// One batch: its prompts and how many tokens each sequence generates.
struct Batch {
  std::vector<std::uint64_t> prompts;
  std::uint64_t steps = 0;
  std::uint64_t longest = 0;
  std::uint64_t tokens = 0;  // sum of the prompts
};

// ---------------------------------------------------------------------------------------------
// The engines

/// Allocations of one engine for one batch. `past` is the number of tokens already cached
/// before a forward pass (0 in prefill); `len` the tokens per sequence it processes (the padded
/// prompt, or 1 in decode); `rows` the rows of its activations (B x len padded, or the packed
/// prompt tokens).
class Engine {
 public:
  Engine(Builder& b, const LlamaOptions& o, const Batch& batch)
      : b_(b), o_(o), batch_(batch), seqs_(batch.prompts.size()) {
    if (o_.cache == LlamaOptions::Cache::paged) {
      length_ = batch.prompts;
      tables_.resize(seqs_);
    } else {
      k_.resize(layers);
      v_.resize(layers);
    }
  }

  void run() {
    const bool eager = o_.engine == LlamaOptions::Engine::hf_eager;
    // Prefill: HF pads the batch to its longest prompt; the fused engine packs the prompts.
    const std::uint64_t len = eager ? batch_.longest : 0;
    const std::uint64_t rows = eager ? seqs_ * batch_.longest : batch_.tokens;
    if (o_.cache == LlamaOptions::Cache::paged) {
      for (std::size_t s = 0; s < seqs_; ++s) grow_paged(s, 0, batch_.prompts[s]);
    }
    forward(rows, len, 0, true);
    std::uint64_t past = batch_.longest;
    for (std::uint64_t step = 0; step < batch_.steps; ++step) {
      if (o_.cache == LlamaOptions::Cache::paged) {
        for (std::size_t s = 0; s < seqs_; ++s) {
          grow_paged(s, length_[s], length_[s] + 1);
          ++length_[s];
        }
      }
      forward(seqs_, 1, past, false);
      ++past;
    }
    // The batch is done: its cache goes.
    for (const auto& table : tables_) {
      for (std::uint64_t id : table) b_.free(id);
    }
    for (int l = 0; l < layers; ++l) {
      const auto i = static_cast<std::size_t>(l);
      if (!k_.empty()) {
        b_.free(k_[i]);
        b_.free(v_[i]);
      }
    }
  }

 private:
  std::uint64_t a(std::uint64_t bytes) { return b_.alloc(bytes); }
  void f(std::uint64_t id) { b_.free(id); }

  /// vLLM-style paged cache: per layer a 16-token block of K and V (256 KiB) whenever a sequence
  /// crosses a block boundary.
  void grow_paged(std::size_t s, std::uint64_t from, std::uint64_t to) {
    const std::uint64_t have = div_up(from, kv_block_tokens);
    const std::uint64_t need = div_up(to, kv_block_tokens);
    for (std::uint64_t block = have; block < need; ++block) {
      for (int l = 0; l < layers; ++l) {
        tables_[s].push_back(a(2 * kv_block_tokens * hidden * f16));
      }
    }
  }

  /// HF LlamaRMSNorm on `rows` rows: to(float32), pow(2), mean(-1), + eps, rsqrt, multiply,
  /// to(float16), times the weight. The input stays (it is the residual).
  std::uint64_t rms_norm(std::uint64_t rows) {
    if (o_.engine == LlamaOptions::Engine::fused) return a(rows * hidden * f16);  // one kernel
    const std::uint64_t x32 = a(rows * hidden * f32);
    const std::uint64_t sq = a(rows * hidden * f32);
    const std::uint64_t mean = a(rows * f32);
    f(sq);
    const std::uint64_t eps = a(rows * f32);
    f(mean);
    const std::uint64_t rs = a(rows * f32);
    f(eps);
    const std::uint64_t y32 = a(rows * hidden * f32);
    f(x32);
    f(rs);
    const std::uint64_t y16 = a(rows * hidden * f16);
    f(y32);
    const std::uint64_t out = a(rows * hidden * f16);
    f(y16);
    return out;
  }

  /// HF apply_rotary_pos_emb for one of q, k: x * cos + rotate_half(x) * sin, where
  /// rotate_half is cat(-x2, x1). Replaces `x`.
  std::uint64_t rope(std::uint64_t x, std::uint64_t rows) {
    const std::uint64_t th = rows * hidden * f16;
    const std::uint64_t xc = a(th);
    const std::uint64_t neg = a(th / 2);
    const std::uint64_t rh = a(th);
    f(neg);
    const std::uint64_t rs = a(th);
    f(rh);
    const std::uint64_t out = a(th);
    f(xc);
    f(rs);
    f(x);
    return out;
  }

  /// One decoder layer; `h` (the hidden state) is replaced.
  void layer(int l, std::uint64_t& h, std::uint64_t rows, std::uint64_t len, std::uint64_t past,
             bool prefill) {
    const auto li = static_cast<std::size_t>(l);
    const std::uint64_t th = rows * hidden * f16;
    const std::uint64_t tm = rows * mlp * f16;
    const bool eager = o_.engine == LlamaOptions::Engine::hf_eager;
    const std::uint64_t n1 = rms_norm(rows);
    std::uint64_t attn = 0;
    if (eager) {
      std::uint64_t q = a(th);
      std::uint64_t k = a(th);
      const std::uint64_t v = a(th);
      f(n1);
      q = rope(q, rows);
      k = rope(k, rows);
      const std::uint64_t kv_len = past + len;
      // The cache: DynamicCache concatenates (a copy one token larger per step); a paged cache
      // is written in place, and eager attention gathers K and V out of its blocks.
      bool gathered = false;
      std::uint64_t keys = 0;
      std::uint64_t values = 0;
      const std::uint64_t kv_bytes = seqs_ * kv_len * hidden * f16;
      if (o_.cache == LlamaOptions::Cache::growing) {
        if (prefill) {
          k_[li] = k;  // the cache keeps the prompt's K and V as they are
          v_[li] = v;
        } else {
          const std::uint64_t nk = a(kv_bytes);  // torch.cat([cached, new], dim=-2)
          f(k_[li]);
          k_[li] = nk;
          f(k);
          const std::uint64_t nv = a(kv_bytes);
          f(v_[li]);
          v_[li] = nv;
          f(v);
        }
      } else if (!prefill) {
        keys = a(kv_bytes);
        values = a(kv_bytes);
        gathered = true;
      }
      // Eager attention: matmul, * scaling, + causal mask, softmax in float32, to(float16),
      // matmul with V, transpose(1, 2).contiguous().
      const std::uint64_t scores = seqs_ * heads * len * kv_len;
      const std::uint64_t s1 = a(scores * f16);
      const std::uint64_t s2 = a(scores * f16);
      f(s1);
      const std::uint64_t s3 = a(scores * f16);
      f(s2);
      const std::uint64_t p32 = a(scores * f32);
      f(s3);
      const std::uint64_t p16 = a(scores * f16);
      f(p32);
      const std::uint64_t out = a(seqs_ * heads * len * head_dim * f16);
      f(p16);
      if (o_.cache == LlamaOptions::Cache::paged) {
        f(k);  // written into the blocks
        f(v);
      }
      if (gathered) {
        f(keys);
        f(values);
      }
      f(q);
      attn = a(th);
      f(out);
    } else {
      // Fused engine: one QKV projection, rotary in place, K and V written into the cache
      // blocks, flash attention over the packed prompts (with its log-sum-exp) or paged
      // attention over the blocks in decode (with its per-partition workspace).
      const std::uint64_t qkv = a(3 * th);
      f(n1);
      if (o_.cache == LlamaOptions::Cache::growing) {
        const std::uint64_t kv_bytes = seqs_ * (past + std::max<std::uint64_t>(len, 1)) *
                                       hidden * f16;
        const std::uint64_t nk = a(prefill ? batch_.tokens * hidden * f16 : kv_bytes);
        if (!prefill) f(k_[li]);
        k_[li] = nk;
        const std::uint64_t nv = a(prefill ? batch_.tokens * hidden * f16 : kv_bytes);
        if (!prefill) f(v_[li]);
        v_[li] = nv;
      }
      attn = a(th);
      if (prefill) {
        const std::uint64_t lse = a(heads * rows * f32);
        f(lse);
      } else {
        const std::uint64_t partitions = div_up(past + 1, 512);
        const std::uint64_t tmp = a(seqs_ * heads * partitions * head_dim * f32);
        const std::uint64_t sums = a(seqs_ * heads * partitions * f32);
        const std::uint64_t maxes = a(seqs_ * heads * partitions * f32);
        f(tmp);
        f(sums);
        f(maxes);
      }
      f(qkv);
    }
    const std::uint64_t o = a(th);  // o_proj
    f(attn);
    const std::uint64_t h2 = a(th);  // residual add
    f(o);
    f(h);
    const std::uint64_t n2 = rms_norm(rows);
    std::uint64_t down = 0;
    if (eager) {
      // down_proj(act_fn(gate_proj(x)) * up_proj(x))
      const std::uint64_t gate = a(tm);
      const std::uint64_t act = a(tm);
      f(gate);
      const std::uint64_t up = a(tm);
      const std::uint64_t prod = a(tm);
      f(act);
      f(up);
      f(n2);
      down = a(th);
      f(prod);
    } else {
      // merged gate_up projection, fused SiLU-and-multiply
      const std::uint64_t gate_up = a(2 * tm);
      f(n2);
      const std::uint64_t act = a(tm);
      f(gate_up);
      down = a(th);
      f(act);
    }
    h = a(th);  // residual add
    f(down);
    f(h2);
  }

  /// Embedding, rotary tables and mask, the layers, the final norm, logits and sampling.
  void forward(std::uint64_t rows, std::uint64_t len, std::uint64_t past, bool prefill) {
    const bool eager = o_.engine == LlamaOptions::Engine::hf_eager;
    std::vector<std::uint64_t> per_pass;
    if (eager) {
      // position ids; rotary: inv_freq @ positions (fp32), cat(freqs, freqs), cos, sin, to fp16;
      // the 4D causal mask [B, 1, len, past + len] in fp16.
      const std::uint64_t pos = a(rows * i64);
      const std::uint64_t freqs = a(rows * (head_dim / 2) * f32);
      const std::uint64_t emb = a(rows * head_dim * f32);
      f(freqs);
      const std::uint64_t cos32 = a(rows * head_dim * f32);
      const std::uint64_t sin32 = a(rows * head_dim * f32);
      f(emb);
      per_pass.push_back(a(rows * head_dim * f16));
      f(cos32);
      per_pass.push_back(a(rows * head_dim * f16));
      f(sin32);
      const std::uint64_t full = a(len * (past + len) * f16);
      per_pass.push_back(a(seqs_ * len * (past + len) * f16));
      f(full);
      per_pass.push_back(pos);
    } else {
      per_pass.push_back(a(rows * i64));  // positions
      per_pass.push_back(a(seqs_ * i64));  // sequence start offsets / block tables
    }
    std::uint64_t h = a(rows * hidden * f16);  // embedding
    for (int l = 0; l < layers; ++l) layer(l, h, rows, len, past, prefill);
    const std::uint64_t norm = rms_norm(rows);
    f(h);
    // Logits: HF computes them for every position of the prefill (before logits_to_keep) and
    // upcasts them; the fused engine only for each sequence's last token.
    const bool all = eager && prefill && o_.all_logits;
    const std::uint64_t logit_rows = all ? rows : seqs_;
    std::uint64_t last = norm;
    if (!all && rows != seqs_) {
      last = a(seqs_ * hidden * f16);  // gather each sequence's last hidden state
      f(norm);
    }
    const std::uint64_t l16 = a(logit_rows * vocab * f16);
    f(last);
    const std::uint64_t l32 = a(logit_rows * vocab * f32);  // .float()
    f(l16);
    sample(l32, all);
    for (std::uint64_t id : per_pass) f(id);
  }

  /// Sampling with temperature and top-p: the last position's logits (a copy when the logits
  /// cover every position), / temperature, sort, softmax, cumsum, mask, scatter back, softmax,
  /// multinomial.
  void sample(std::uint64_t logits, bool copy_last) {
    const std::uint64_t row = seqs_ * vocab * f32;
    std::uint64_t x = logits;
    if (copy_last) {
      x = a(row);
      f(logits);
    }
    const std::uint64_t t = a(row);  // / temperature
    f(x);
    const std::uint64_t sorted = a(row);
    const std::uint64_t index = a(seqs_ * vocab * i64);
    const std::uint64_t probs = a(row);
    const std::uint64_t cum = a(row);
    f(probs);
    const std::uint64_t remove = a(seqs_ * vocab);  // bool
    f(cum);
    const std::uint64_t scattered = a(seqs_ * vocab);
    f(remove);
    f(sorted);
    f(index);
    const std::uint64_t masked = a(row);
    f(scattered);
    f(t);
    const std::uint64_t p = a(row);
    f(masked);
    const std::uint64_t next = a(seqs_ * i64);
    f(p);
    f(next);  // copied into the output ids
  }

  Builder& b_;
  const LlamaOptions& o_;
  const Batch& batch_;
  std::size_t seqs_;
  std::vector<std::uint64_t> length_;                  // paged: tokens per sequence
  std::vector<std::vector<std::uint64_t>> tables_;     // paged: blocks per sequence
  std::vector<std::uint64_t> k_;                       // growing: K and V per layer
  std::vector<std::uint64_t> v_;
};

/// The bytes a batch needs beyond the weights at its prefill's peak and for its whole cache,
/// as the scheduler estimates them when it admits sequences.
std::uint64_t batch_need(const LlamaOptions& o, std::uint64_t seqs, std::uint64_t longest,
                         std::uint64_t tokens, std::uint64_t cached_tokens) {
  const bool eager = o.engine == LlamaOptions::Engine::hf_eager;
  const std::uint64_t rows = eager ? seqs * longest : tokens;
  std::uint64_t workspace = rows * (2 * mlp + 2 * hidden) * f16;  // MLP and residuals
  if (eager) {
    workspace = std::max(workspace, seqs * heads * longest * longest * (f32 + f16));
    if (o.all_logits) workspace = std::max(workspace, rows * vocab * (f32 + f16));
  }
  return cached_tokens * kv_token_bytes + workspace;
}

Batch draw_batch(Random& random, const LlamaOptions& o) {
  Batch batch;
  const std::uint64_t size = random.uniform(1, 64);
  batch.steps = random.uniform(16, 192);
  for (std::uint64_t i = 0; i < size; ++i) {
    const std::uint64_t prompt = random.uniform(16, 2048);
    const std::uint64_t seqs = batch.prompts.size() + 1;
    const std::uint64_t longest = std::max(batch.longest, prompt);
    const std::uint64_t tokens = batch.tokens + prompt;
    std::uint64_t cached = 0;
    if (o.cache == LlamaOptions::Cache::paged) {
      for (std::uint64_t p : batch.prompts) {
        cached += div_up(p + batch.steps, kv_block_tokens) * kv_block_tokens;
      }
      cached += div_up(prompt + batch.steps, kv_block_tokens) * kv_block_tokens;
    } else {
      cached = seqs * (longest + batch.steps);
    }
    // The scheduler admits sequences while the batch fits its budget.
    if (!batch.prompts.empty() && batch_need(o, seqs, longest, tokens, cached) > o.budget) break;
    batch.prompts.push_back(prompt);
    batch.longest = longest;
    batch.tokens = tokens;
  }
  return batch;
}

// ---------------------------------------------------------------------------------------------
// The first generators (llama_lite), kept as they were.

namespace lite {

constexpr std::uint64_t half = 2;
// K and V of one 16-token block of one layer: 2 x 16 x 4096 x 2 bytes.
constexpr std::uint64_t kv_block_bytes = 2 * kv_block_tokens * hidden * half;
constexpr std::uint64_t kv_budget = 24 * GiB;


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

Trace generate(std::uint64_t seed, int batches, bool paged) {
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

}  // namespace lite

}  // namespace

Trace llama(const LlamaOptions& options) {
  Trace trace;
  const bool paged = options.cache == LlamaOptions::Cache::paged;
  trace.name = paged ? "llama-paged" : "llama-growing";
  trace.description =
      std::string("Llama-2-7B fp16 serving (") +
      (options.engine == LlamaOptions::Engine::hf_eager ? "HF eager" : "fused kernels") + "), " +
      std::to_string(options.batches) + " batches, " +
      (paged ? "paged KV cache (16-token blocks)" : "KV cache grown one token per step");
  Builder b(trace);
  Random random(options.seed);
  const std::vector<std::uint64_t> weights = load_weights(b);
  for (int n = 0; n < options.batches; ++n) {
    const Batch batch = draw_batch(random, options);
    Engine(b, options, batch).run();
  }
  for (std::uint64_t w : weights) b.free(w);
  return trace;
}

Trace llama_paged(std::uint64_t seed, int batches) {
  return llama(LlamaOptions{.cache = LlamaOptions::Cache::paged, .seed = seed, .batches = batches});
}

Trace llama_growing(std::uint64_t seed, int batches) {
  return llama(
      LlamaOptions{.cache = LlamaOptions::Cache::growing, .seed = seed, .batches = batches});
}

Trace llama_lite(bool paged, std::uint64_t seed, int batches) {
  Trace trace = lite::generate(seed, batches, paged);
  trace.name += "-lite";
  trace.description = "Llama-2-7B fp16 serving (first generator), " + std::to_string(batches) +
                      (paged ? " batches, paged KV cache (16-token blocks)"
                             : " batches, KV cache grown one token per step");
  return trace;
}

}  // namespace gpulife::traces
