// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `LeakReport`: the live tensors of a context in leak mode, where they were made, and
/// what keeps them alive.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <gpulife/tensor/dtype.hpp>
#include <gpulife/tensor/shape.hpp>

namespace gpulife {

/// @brief The call that made a tensor (the caller's `SourceLocation`).
struct AllocationSite {
  std::string file;         ///< source file of the call
  std::uint32_t line = 0;   ///< its line
  std::uint32_t column = 0; ///< its column
  std::string function;     ///< the calling function's signature

  /// @return "file:line in function"
  [[nodiscard]] std::string to_string() const;
  /// Sites are equal when every field is (reports group tensors by site).
  friend bool operator==(const AllocationSite&, const AllocationSite&) = default;
};

/// @brief Why a live tensor is alive.
enum class LiveTensorStatus : std::uint8_t {
  /// Held by handles the program still owns: a leak if nobody meant to keep it.
  leaked,
  /// Held only by handles that its own pending finalizers or expiry callbacks captured: the
  /// cycle of a finalizer that references its object, which keeps it alive for ever. A leak.
  kept_by_callback,
  /// Held by a pinned tensor-cache entry: expected to live as long as the context, not a leak.
  pinned,
  /// Released during a stream capture: its memory is kept by a `GraphPool` (a graph may use it
  /// at every replay) until the pool gives its memory back. Not a leak while the pool lives.
  kept_by_graph_pool,
};

/// @return "leaked", "kept_by_callback", "pinned" or "kept_by_graph_pool"
[[nodiscard]] std::string_view to_string(LiveTensorStatus status) noexcept;

/// @brief One live tensor in a `LeakReport`.
struct LiveTensor {
  std::uint64_t id = 0;  ///< the tensor's process-unique id
  /// Bytes of the memory it owns; for a view, the bytes its elements span (not counted in the
  /// report's totals, which its root already counts).
  std::size_t bytes = 0;
  Shape shape{};              ///< its extents
  DType dtype = DType::byte;  ///< its element type
  std::string tag;            ///< its tag
  std::string device;           ///< the device's name
  std::uint64_t stream_id = 0;  ///< its stream (the release is ordered there)
  std::chrono::system_clock::time_point created{};  ///< when it was made
  AllocationSite site;                              ///< where it was made
  /// The call stack of the allocation, innermost first, each "function at file:line"; empty
  /// unless stacks were captured (`DebugOptions::stacks`). gpulife's own frames are left out.
  std::vector<std::string> stack;
  std::uint64_t view_of = 0;  ///< for a view: the id of the tensor that owns the memory; else 0
  bool external = false;      ///< memory owned by someone else (`Context::wrap`)
  std::uint32_t handles = 0;  ///< strong handles when the report was made (a view holds one)
  std::uint32_t callback_handles = 0;  ///< of those, held by its own pending callbacks
  LiveTensorStatus status = LiveTensorStatus::leaked;  ///< why it is alive
};

/// @brief A tensor-cache entry that is pinned (lives as long as the context), as the cache
/// tells the context's leak tracker about it.
struct PinnedEntry {
  std::uint64_t tensor_id = 0;  ///< the tensor the entry holds
  std::size_t bytes = 0;  ///< its size
  std::string tag;        ///< its tag
  std::string key;  ///< the cache's key (`CacheKey::to_string`)
};

/// @brief A block the memory resource (a `PoolResource`) has handed out that no live tensor
/// owns: memory taken by a raw user of the resource and not given back.
struct UnownedBlock {
  const void* ptr = nullptr;    ///< the block
  std::size_t bytes = 0;        ///< the block's size class
  std::uint64_t stream_id = 0;  ///< the stream it was last allocated on
};

/// @brief A point in a context's history: a report made `since` it lists only tensors made
/// afterwards (see `Context::leak_checkpoint`).
struct LeakCheckpoint {
  std::uint64_t sequence = 0;  ///< tensors made from this creation number on are listed
};

/// @brief The live set of a context in leak mode.
///
/// Made by `Context::leak_report()`. Without leak mode the report has `tracking == false` and
/// is empty (it cannot say whether anything leaked, and `to_text()` says so).
struct LeakReport {
  bool tracking = false;  ///< leak mode was on; otherwise the lists are empty
  std::string device;                           ///< the context's device
  std::chrono::system_clock::time_point taken{};  ///< when the report was made
  /// Live tensors (made since the checkpoint, if one was given), largest first.
  std::vector<LiveTensor> tensors;
  /// Pinned tensor-cache entries; their tensors have status `pinned`.
  std::vector<PinnedEntry> pinned;
  /// Pool blocks handed out that no live tensor of this context owns.
  std::vector<UnownedBlock> unowned_blocks;
  /// False when the context's resource is not a `PoolResource`: blocks cannot be listed.
  bool blocks_known = false;
  /// Tensors leak mode could not record (out of host memory while tracking).
  std::uint64_t untracked = 0;
  /// Leaked tensors that `keep_largest` left out of `tensors`, and the memory they own; the
  /// totals (`leaked_tensors`, `leaked_bytes`) include them.
  std::size_t omitted_tensors = 0;
  std::size_t omitted_bytes = 0;  ///< see `omitted_tensors`

  /// @return the number of tensors with status `leaked` or `kept_by_callback`
  [[nodiscard]] std::size_t leaked_tensors() const noexcept;
  /// @return the memory they own (views are not counted twice)
  [[nodiscard]] std::size_t leaked_bytes() const noexcept;
  /// @return true if a tensor leaked or a pool block has no owner (pinned entries are not leaks)
  [[nodiscard]] bool has_leaks() const noexcept;
  /// @brief A report for people: leaked tensors grouped by allocation site, largest site first,
  /// with per-site and overall totals; then the callback cycles, the pinned entries and the
  /// unowned pool blocks.
  [[nodiscard]] std::string to_text() const;
  /// @brief The same for tools: one JSON object (`tracking`, `device`, `summary`, `sites`,
  /// `tensors`, `pinned`, `unowned_blocks`), valid JSON whatever a tag or name holds (invalid
  /// UTF-8 becomes U+FFFD).
  [[nodiscard]] std::string to_json() const;
  /// @brief Bounds the report's size: keeps the `count` largest tensors in `tensors` and
  /// counts the leaked ones left out in `omitted_tensors` and `omitted_bytes`.
  void keep_largest(std::size_t count);
};

}  // namespace gpulife
