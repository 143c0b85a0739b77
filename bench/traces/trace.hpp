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

/// Llama-2-7B serving on one stream: fp16 weights (291 tensors, 12.55 GiB), then `batches`
/// batches of 1..64 sequences with prompts of 16..2048 tokens (capped so that a batch's KV cache
/// stays within 24 GiB) and 16..192 decode steps; per layer the activations of a real forward
/// pass (packed prefill, then one token per sequence per step); a paged KV cache of 16-token
/// blocks allocated per layer (256 KiB each) as sequences grow, freed at the end of the batch.
Trace llama_paged(std::uint64_t seed = 1, int batches = 24);
/// The same model and batches with a growing KV cache: per layer K and V of [B, 32, len, 128]
/// fp16, reallocated one token larger every decode step (HF `DynamicCache` with `torch.cat`).
Trace llama_growing(std::uint64_t seed = 1, int batches = 24);
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
/// @throws std::invalid_argument naming `name` if it is not a standard trace
Trace standard_trace(const std::string& name);

/// Writes `trace` as a LoggingAdaptor CSV log (header `thread,time,action,pointer,size,stream,
/// after`; pointers are the allocation ids).
void write_csv(const Trace& trace, std::ostream& out);
/// Reads a LoggingAdaptor CSV log (or one `write_csv` wrote). Streams are renumbered densely in
/// order of appearance; frees of pointers never allocated in the log are skipped.
/// @throws std::invalid_argument on a malformed line, naming its number
Trace read_csv(std::istream& in, std::string name);

}  // namespace gpulife::traces
