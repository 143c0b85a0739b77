// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief Capturing tensor work into a CUDA graph: `CaptureScope` (from `Context::capture`) and
/// the replayable `Graph` it makes.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include <gpulife/runtime/capture_mode.hpp>
#include <gpulife/runtime/stream_view.hpp>
#include <gpulife/source_location.hpp>
#include <gpulife/tensor/device_tensor.hpp>
#include <gpulife/tensor/graph_pool.hpp>

namespace gpulife {

namespace detail {
class TensorArena;
}  // namespace detail

/// @brief An instantiated graph captured through `Context::capture`, with what it needs at
/// every replay: its `GraphPool` (the memory of the tensors made during the capture) and the
/// tensors from elsewhere that were `record_stream`ed onto the capture.
///
/// @par Stream order and lifetime
/// `launch(stream)` queues one replay on `stream` (cudaGraphLaunch), ordered after the work
/// queued there and after the previous launch; it allocates nothing and makes no upstream
/// call. Outputs (tensors made in the capture and still held) are written at every replay and
/// valid after it in `stream` order. The destructor waits on the host for the last launch, then
/// lets go of the pool and the kept tensors.
///
/// @par Thread safety
/// `launch` may be called from several threads; the launches are serialised.
class Graph {
 public:
  /// An empty graph.
  Graph() noexcept;
  /// Takes the graph; `other` is left empty.
  Graph(Graph&& other) noexcept;
  /// Lets go of the graph held (as the destructor does), then takes `other`'s.
  Graph& operator=(Graph&& other) noexcept;
  /// Waits on the host for the last launch, then lets go of the executable, the kept tensors
  /// and the pool; a failure is reported, never thrown.
  ~Graph();

  /// @return true unless empty
  [[nodiscard]] bool valid() const noexcept { return state_ != nullptr; }
  /// @brief Replays the graph on `stream`.
  /// @throws std::invalid_argument if empty, or `stream` is empty or of another device;
  ///         CudaError if the launch fails
  void launch(StreamView stream, SourceLocation where = SourceLocation::current()) const;
  /// @return the captured graph's node count
  [[nodiscard]] std::size_t node_count() const noexcept;
  /// @return how many launches were queued
  [[nodiscard]] std::uint64_t launches() const noexcept;
  /// @return the pool its tensors live in
  [[nodiscard]] GraphPool pool() const;

  struct State;  ///< internal

 private:
  friend class CaptureScope;
  explicit Graph(std::unique_ptr<State> state) noexcept;
  std::unique_ptr<State> state_;
};

/// @brief An open stream capture (see `Context::capture`). Move-only.
///
/// While it is open, work queued on its stream (and on streams that wait on events recorded in
/// it) is captured, not executed; tensors made on those streams take their memory from the
/// scope's `GraphPool`; tensors released on them are kept, memory and finalizers, until the pool
/// gives its memory back (the graph may use them at every replay), except blocks of the pool
/// itself, which later allocations of the same stream in the capture may reuse. The cache
/// refuses a miss on a capturing stream (`std::logic_error`): an upload would be replayed.
///
/// @par Thread safety
/// A scope belongs to the thread that opened it (CUDA: a capture not in relaxed mode must end on
/// the thread that began it).
class CaptureScope {
 public:
  /// Takes the open capture; `other` is left closed.
  CaptureScope(CaptureScope&& other) noexcept;
  CaptureScope& operator=(CaptureScope&&) = delete;
  CaptureScope(const CaptureScope&) = delete;
  CaptureScope& operator=(const CaptureScope&) = delete;
  /// Ends a capture still open and discards it (errors are not reported: a scope left by an
  /// exception usually ends an invalidated capture).
  ~CaptureScope();

  /// @brief Ends the capture and instantiates the graph.
  /// @throws std::logic_error if already ended; CudaError from cudaStreamEndCapture (an
  ///         invalidated or unjoined capture: the scope is over all the same) or instantiation
  [[nodiscard]] Graph end();
  /// @return the capturing stream
  [[nodiscard]] StreamView stream() const noexcept { return stream_; }
  /// @return the capture sequence's id
  [[nodiscard]] std::uint64_t id() const noexcept { return id_; }

  /// Internal: opens the scope (Context::capture does).
  CaptureScope(detail::TensorArena& arena, StreamView stream, GraphPool pool, CaptureMode mode);

 private:
  /// Closes the arena's side and takes the tensors kept for the graph.
  void close() noexcept;

  detail::TensorArena* arena_ = nullptr;  // one reference while open
  StreamView stream_;
  GraphPool pool_;
  std::uint64_t id_ = 0;
  std::shared_ptr<void> life_;  // the graph's: pool blocks bound to it wait for its end
  std::vector<DeviceTensor> kept_;  // record_stream'ed onto the capture
};

}  // namespace gpulife
