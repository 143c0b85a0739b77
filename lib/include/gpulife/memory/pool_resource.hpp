// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `PoolResource`: a caching allocator that carves blocks best-fit out of segments,
/// splits and coalesces them, and reuses them across streams in stream order.

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <gpulife/memory/device_memory_resource.hpp>
#include <gpulife/memory/pool_statistics.hpp>

namespace gpulife {

/// @brief When a block last used by other streams may serve an allocation on this one.
enum class CrossStreamReuse : std::uint8_t {
  /// Only blocks whose previous users are known to have finished (their events completed,
  /// checked without blocking), or that were last used on this stream. Never adds a dependency
  /// between streams; may hold more memory while the device lags behind the host.
  completed,
  /// As `completed`, and when no such block fits and the pool would otherwise take more memory
  /// from upstream, the best-fitting block of another stream, after making this stream wait on
  /// the device (`cudaStreamWaitEvent`) for the work that used it. The default: memory does not
  /// inflate, and a dependency is added only where the alternative is growing.
  wait_before_growing,
  /// The best-fitting block of any stream, waiting on the device when needed: the least memory,
  /// the most dependencies.
  wait,
  /// Only blocks last used on this stream (PyTorch's rule for blocks; no event is ever polled).
  own_stream,
};

/// @brief Options of a `PoolResource`. The defaults suit inference serving.
struct PoolOptions {
  /// Requests up to this many bytes come from the small pool (segments of `small_segment`
  /// bytes), larger ones from the large pool.
  std::size_t small_size = std::size_t{1} << 20;
  /// Segment size of the small pool.
  std::size_t small_segment = std::size_t{2} << 20;
  /// Large requests below this size get a segment of `medium_segment` bytes, which later
  /// requests of similar size share; larger ones a segment of their size rounded up to
  /// `large_rounding`.
  std::size_t medium_limit = std::size_t{10} << 20;
  /// Segment size for large requests below `medium_limit`.
  std::size_t medium_segment = std::size_t{20} << 20;
  /// Large segments are rounded up to a multiple of this.
  std::size_t large_rounding = std::size_t{2} << 20;
  /// Blocks of at least this size are never split, and requests below it never take one (so
  /// that small tensors do not pin huge segments); a request of at least this size takes a
  /// block at most `oversize_slack` larger. Unlimited by default.
  std::size_t max_split_size = std::numeric_limits<std::size_t>::max();
  /// See `max_split_size`.
  std::size_t oversize_slack = std::size_t{20} << 20;

  /// Expandable segments: one virtual address range per stream and size pool, grown and shrunk
  /// by mapping physical memory in chunks of the device's granularity (CUDA's virtual memory
  /// management), instead of segments from the upstream resource. Used where the device supports
  /// it (the CUDA driver's VMM, the simulated device); elsewhere the pool uses segments.
  bool expandable_segments = true;

  /// Cached (reserved and free) bytes above this are given back: whole free segments first,
  /// least recently used first, in stream order, without synchronising the device.
  std::size_t max_cached_bytes = std::numeric_limits<std::size_t>::max();
  /// A whole free segment (or free mapped memory of an expandable segment) that no allocation
  /// has used for this many of the pool's allocations is given back in stream order; 0 never.
  /// The pool counts allocations, not time: an idle program keeps its cache for when work
  /// returns, a busy one gives back what its current shapes no longer use.
  std::uint64_t release_after_allocations = 200000;

  /// When the pool must take more memory (map more of a range, or a new segment), it first
  /// gives back as much memory that is free and whose users are known to have finished (free
  /// mapped chunks of any range, whole free segments), so that it holds about what is in use
  /// rather than the sum of each size pool's and each stream's own peak. Costs upstream calls
  /// when the shapes of a workload change; none in a steady state.
  bool give_back_before_growing = true;

  /// How blocks move between streams (see `CrossStreamReuse`).
  CrossStreamReuse cross_stream = CrossStreamReuse::wait_before_growing;
};

/// @brief A caching allocator over an upstream resource: steady-state allocation makes no
/// upstream call.
///
/// Requests are rounded up to 512 bytes. Small ones (up to `PoolOptions::small_size`) are carved
/// out of 2 MiB segments of a small pool, large ones out of segments of a large pool; a request
/// takes the smallest free block that fits (best fit, in address-ordered structures with
/// logarithmic operations), the rest of the block is split off as a free block, and a freed
/// block merges with its free neighbours. With expandable segments (the default where the
/// device supports virtual memory management) each stream and size pool has one virtual address
/// range whose physical memory is mapped in chunks as it grows and unmapped when it is given back.
///
/// Stream order: a block freed on stream A serves the next allocation on A at once. Another
/// stream B takes it when the work that used it is known to have finished, or, as
/// `PoolOptions::cross_stream` allows, after B was made to wait for that work on the device.
/// Blocks freed with `deallocate_after` (`DeviceTensor::record_stream`) wait for those events
/// too. Events are recorded lazily, one per stream and batch of frees, only when another stream
/// needs to know; they are never created, recorded or queried while the pool's lock is held.
///
/// Memory goes back upstream, in stream order and without a device-wide synchronisation, by the
/// release policy (`max_cached_bytes`, `release_after_allocations`) and by `trim()`. When the
/// upstream runs out the pool gives back its whole free segments and retries, and only then
/// synchronises the device, asks its upstream to release what it caches, and retries once
/// more; then it throws `OutOfMemoryError` naming the request, the bytes allocated, reserved but
/// unallocated, and the largest free block.
///
/// On the simulated device the pool reports which blocks it has handed out
/// (`mark_allocated`/`mark_freed`), so that a kernel that touches a block after its release is
/// caught even though the pool still holds the memory.
///
/// @par Thread safety
/// All members are thread-safe; one mutex guards the blocks and a second one the pool's events.
/// Upstream calls and event operations happen outside the first.
class PoolResource final : public DeviceMemoryResource {
 public:
  /// A block handed out and not yet returned.
  struct LiveBlock {
    void* ptr = nullptr;          ///< the block's address
    std::size_t bytes = 0;        ///< the bytes requested
    std::size_t capacity = 0;     ///< the block's own size (`size_class(bytes)` or more)
    std::uint64_t stream_id = 0;  ///< the stream it was allocated on
  };

  /// @param upstream where segments come from (shared: the pool keeps it alive)
  /// @param options  sizes, release policy and stream policy
  /// @throws std::invalid_argument if `upstream` is null or an option is out of range (named)
  explicit PoolResource(std::shared_ptr<DeviceMemoryResource> upstream, PoolOptions options = {});
  /// Gives every segment back upstream. Blocks still handed out are reported through the
  /// error handler and freed in their streams' order.
  ~PoolResource() override;

  /// @brief Gives back every whole free segment and every free mapped chunk whose last users
  /// have finished, in stream order, without synchronising the device.
  /// @return bytes released
  std::size_t trim() noexcept;

  /// @brief If nothing is allocated from the pool, returns it to the state of a new pool:
  /// synchronises the device, gives every segment back upstream, unmaps and releases every
  /// expandable range, and forgets the streams it served (their batches of frees, events, quick
  /// lists and waits), its clocks, peaks and statistics. A program that reuses one pool for
  /// independent runs (a fuzzer, a test harness that proves each run clean) then sees every run
  /// behave exactly as it would on a new pool, which `trim()` alone does not promise.
  /// @return true if the pool was reset; false, changing nothing, if a block is still allocated,
  ///         or if the device could not be synchronised or the new state not be made (then
  ///         reported through the error handler)
  /// @par Thread safety
  /// Unlike the other members, not safe to call while another thread uses the pool.
  bool reset_if_unused() noexcept;

  /// @return the blocks handed out and not yet returned (leak reports use it)
  [[nodiscard]] std::vector<LiveBlock> live_blocks() const;

  /// @return counters of the whole pool, of each size pool and of each stream
  [[nodiscard]] PoolStatistics memory_stats() const;
  /// @return a table of `memory_stats()` in the spirit of `torch.cuda.memory_summary()`
  [[nodiscard]] std::string memory_summary() const;

  /// @brief Checks the pool's own invariants (for tests; walks every block): the blocks of each
  /// segment tile it without gap or overlap, so that splitting and merging conserved its bytes;
  /// no two live blocks overlap; free neighbours that could merge have merged; the free index
  /// holds exactly the free mapped blocks and the live map exactly the live ones; the counters
  /// (allocated, requested, reserved and mapped bytes) equal the sums over the blocks.
  /// @return the first invariant that does not hold, or an empty string
  [[nodiscard]] std::string validate() const;

  /// @return true if this pool maps physical memory into expandable segments
  [[nodiscard]] bool uses_expandable_segments() const noexcept;

  /// @return the options the pool was made with
  [[nodiscard]] const PoolOptions& options() const noexcept { return options_; }

  /// @return the upstream resource
  [[nodiscard]] const std::shared_ptr<DeviceMemoryResource>& upstream() const noexcept {
    return upstream_;
  }

  /// @return the size of the block a request of `bytes` bytes needs: `bytes` rounded up to
  ///         512 (at least 512)
  [[nodiscard]] static std::size_t size_class(std::size_t bytes) noexcept;

 private:
  struct State;

  void* do_allocate(std::size_t bytes, StreamView stream) override;
  void do_deallocate(void* ptr, std::size_t bytes, StreamView stream) noexcept override;
  void do_deallocate_after(void* ptr, std::size_t bytes, StreamView stream,
                           std::vector<Event> after) noexcept override;
  std::string do_name() const override;
  ResourceStatistics do_statistics() const override;
  std::size_t do_release_cached() noexcept override;

  /// Allocation when no block is ready at once: events, waits, growth.
  void* allocate_slow(std::size_t bytes, std::size_t size, bool large, StreamView stream);
  /// A new segment from upstream, with the out-of-memory path.
  void* allocate_segment(std::size_t segment_bytes, std::size_t bytes, StreamView stream);
  /// Growth of this stream's expandable range, with the out-of-memory path.
  void* allocate_expandable(std::size_t bytes, std::size_t size, bool large, StreamView stream);
  /// A new pool's state for the options and the upstream.
  [[nodiscard]] std::unique_ptr<State> make_state() const;
  /// Unmaps everything mapped and frees the expandable ranges (destruction, reset_if_unused).
  void release_ranges() noexcept;
  /// Unmaps free chunks (see State::claim_unmaps), none of the range at `keep_range` (its base
  /// address; null: none kept); returns the bytes unmapped.
  std::size_t unmap_free(std::uint64_t idle_after, std::size_t want,
                         const void* keep_range = nullptr) noexcept;
  /// Before growing by `want` bytes beyond the pool's high-water mark: learns which streams'
  /// frees have executed and gives back up to that many bytes of free memory whose users are
  /// done (`give_back_before_growing`): whole free segments, or free chunks of the expandable
  /// ranges other than the growing one at `growing_range` (whose holes its own later requests
  /// reuse: unmapping them would only move memory around).
  std::size_t give_back_for_growth(std::size_t want, const void* growing_range = nullptr) noexcept;
  /// The out-of-memory path's steps: gives back what can go without synchronising (`sync`
  /// false) or after synchronising the device.
  std::size_t release_for_retry(bool sync) noexcept;

  std::shared_ptr<DeviceMemoryResource> upstream_;
  PoolOptions options_;
  std::unique_ptr<State> state_;
};

}  // namespace gpulife
