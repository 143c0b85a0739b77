// SPDX-License-Identifier: Apache-2.0
#pragma once

// Allocation traces: what a program allocated and freed, on which streams, in which order. The
// generators below make the workloads that PoolResource is judged by (seeded, so that every run
// sees the same trace); `gpulife_replay` replays a trace, generated or read from a
// LoggingAdaptor's CSV log, against pool configurations.

#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

namespace gpulife::traces {

/// No stream (a free without `record_stream`).
constexpr std::uint32_t no_stream = 0xFFFFFFFFU;

/// One call of a program on its memory resource.
struct TraceOp {
  enum class Kind : std::uint8_t { allocate, free };
  Kind kind = Kind::allocate;
  std::uint32_t stream = 0;        ///< the stream of the call (0: the default stream)
  std::uint32_t after_stream = no_stream;  ///< a free: another stream whose work so far also
                                          ///< uses the block (`record_stream`)
  std::uint64_t id = 0;            ///< the allocation this call makes or frees
  std::uint64_t bytes = 0;         ///< its size
};

/// A whole trace. Allocation ids are dense (0 .. allocations - 1).
struct Trace {
  std::string name;
  std::string description;
  std::vector<TraceOp> ops;
  std::uint64_t allocations = 0;
  std::uint32_t streams = 1;  ///< streams used are 0 .. streams - 1

  /// @return the most bytes live at once (the sum of the sizes requested)
  [[nodiscard]] std::uint64_t peak_live_bytes() const;
};

/// How the Llama-2-7B serving traces are made. Both engines load the fp16 weights (291 tensors,
/// 12.55 GiB) and then serve `batches` batches on one stream: a batch of 1..64 sequences (as many
/// as the scheduler's `budget` admits) with prompts of 16..2048 tokens and 16..192 decode steps,
/// a prefill pass and one decode pass per step; every tensor of every pass is allocated and
/// freed where PyTorch would.
struct LlamaOptions {
  /// The KV cache.
  enum class Cache : std::uint8_t {
    /// vLLM's paged cache: per layer one 16-token block of K and V (256 KiB) whenever a
    /// sequence crosses a block boundary, freed when the batch ends.
    paged,
    /// HF `DynamicCache`: per layer K and V of [B, 32, len, 128], reallocated one token larger
    /// every decode step (`torch.cat`).
    growing,
  };
  /// The forward pass.
  enum class Engine : std::uint8_t {
    /// HF transformers' eager Llama: the batch padded to its longest prompt; RMSNorm through
    /// float32 temporaries; separate q, k, v projections; rotary embeddings through
    /// `rotate_half`; eager attention (scores [B, 32, len, past + len]: matmul, scaling, causal
    /// mask, softmax in float32, back to float16); an unfused MLP; logits for every position of
    /// the prefill (`all_logits`) upcast to float32; sampling with temperature and top-p.
    /// Over a paged cache eager attention gathers K and V out of the blocks in decode.
    hf_eager,
    /// An engine of fused kernels (vLLM-like): packed prompts, fused RMSNorm, one QKV
    /// projection, flash attention in prefill, paged attention's partition workspace in
    /// decode, merged gate-up projection with fused SiLU, logits of the last tokens only.
    fused,
  };
  Cache cache = Cache::paged;
  Engine engine = Engine::hf_eager;
  std::uint64_t seed = 1;
  int batches = 24;
  /// What one batch may take beyond the weights: its whole KV cache plus its prefill's largest
  /// workspace (attention scores, logits, MLP). The default keeps the live peak of the paged
  /// trace near the 38.5 GiB the issue measured.
  std::uint64_t budget = std::uint64_t{26} << 30;
  /// The eager engine's prefill computes logits for every position (HF before
  /// `logits_to_keep`); false: only for each sequence's last token.
  bool all_logits = true;
};

/// Llama-2-7B serving (see LlamaOptions).
Trace llama(const LlamaOptions& options);
/// `llama` with the paged cache and the HF eager engine ("llama-paged").
Trace llama_paged(std::uint64_t seed = 1, int batches = 24);
/// `llama` with the growing cache and the HF eager engine ("llama-growing").
Trace llama_growing(std::uint64_t seed = 1, int batches = 24);
/// The first, lighter generators ("llama-paged-lite", "llama-growing-lite"): packed prefill,
/// one tensor per projection and no attention scores, rotary, norm or sampling temporaries;
/// batches capped so that their KV cache stays within 24 GiB.
Trace llama_lite(bool paged, std::uint64_t seed = 1, int batches = 24);
/// RMM's `random_allocations`: `count` allocations of uniform sizes in [1, max_bytes], each
/// freed at a random later point, at most `max_live` live (RMM's benchmark frees one of the
/// live ones at random with probability 1/2 per step).
Trace random_allocations(std::uint64_t max_bytes, std::uint64_t count, std::uint64_t seed = 1,
                         std::uint64_t max_live = 0);
/// Multi-stream serving: 8 compute streams, an upload and a download stream. Each request
/// allocates its input on the upload stream, which a compute stream frees; activations live on
/// the compute stream; the output, allocated on the compute stream, is read by the download
/// stream (`record_stream`) and freed after it. Eight requests are in flight at once.
Trace multi_stream(std::uint64_t seed = 1, int requests = 4000);

/// The traces the report and `gpulife_replay --trace=all` replay, by name: llama-paged,
/// llama-growing, random-1MiB, random-64MiB, random-4GiB, multi-stream.
std::vector<std::string> standard_trace_names();
/// Further traces `standard_trace` knows: llama-paged-lite, llama-growing-lite,
/// llama-paged-fused, llama-growing-fused.
std::vector<std::string> extra_trace_names();
/// @throws std::invalid_argument naming `name` if it is neither a standard nor an extra trace
Trace standard_trace(const std::string& name);

/// Writes `trace` as a LoggingAdaptor CSV log (header `thread,time,action,pointer,size,stream,
/// after`; pointers are the allocation ids).
void write_csv(const Trace& trace, std::ostream& out);
/// Reads a LoggingAdaptor CSV log (or one `write_csv` wrote). Streams are renumbered densely in
/// order of appearance; frees of pointers never allocated in the log are skipped.
/// @throws std::invalid_argument on a malformed line, naming its number
Trace read_csv(std::istream& in, std::string name);

}  // namespace gpulife::traces
