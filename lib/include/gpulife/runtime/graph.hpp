// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief Stream capture and CUDA graphs at the runtime layer: capture modes, capture status, a
/// captured graph (`cudaGraph_t`) and an instantiated one (`cudaGraphExec_t`). Tensor memory
/// during capture is `GraphPool`'s business (tensor/graph_pool.hpp); these are the raw pieces.

#include <cstddef>
#include <cstdint>
#include <memory>

#include <gpulife/runtime/capture_mode.hpp>
#include <gpulife/runtime/stream_view.hpp>

namespace gpulife {

class Device;

namespace detail {
class GraphImpl;
class GraphExecImpl;
}  // namespace detail

/// @brief The calling thread's capture interaction mode, set for a scope
/// (cudaThreadExchangeStreamCaptureMode in push-pop fashion). PyTorch's allocator does this
/// around its cudaMalloc so that a capture in `global` mode survives it.
///
/// @par Thread safety
/// A scope object of the thread that made it; destroyed on that thread in reverse order.
class CaptureModeGuard {
 public:
  /// @brief Sets the calling thread's mode on `device`'s backend to `mode`.
  /// @throws CudaError if the backend refuses
  CaptureModeGuard(const Device& device, CaptureMode mode);
  CaptureModeGuard(const CaptureModeGuard&) = delete;
  CaptureModeGuard& operator=(const CaptureModeGuard&) = delete;
  /// Restores the previous mode; a failure is reported, never thrown.
  ~CaptureModeGuard();

 private:
  detail::DeviceImpl* device_;
  CaptureMode previous_;
};

class GraphExec;

/// @brief A captured graph (cudaGraph_t), from `end_capture`. Move-only; destroying it
/// destroys the graph (not the executables instantiated from it).
class CapturedGraph {
 public:
  /// An empty graph.
  CapturedGraph() noexcept;
  /// Internal: wraps a backend's graph.
  explicit CapturedGraph(std::unique_ptr<detail::GraphImpl> impl) noexcept;
  /// Takes the graph; `other` is left empty.
  CapturedGraph(CapturedGraph&& other) noexcept;
  /// Destroys the graph held, then takes `other`'s.
  CapturedGraph& operator=(CapturedGraph&& other) noexcept;
  /// Destroys the graph (cudaGraphDestroy).
  ~CapturedGraph();

  /// @return true unless empty (default-constructed or moved from)
  [[nodiscard]] bool valid() const noexcept { return impl_ != nullptr; }
  /// @return the number of nodes (cudaGraphGetNodes)
  /// @throws std::invalid_argument if empty
  [[nodiscard]] std::size_t node_count() const;
  /// @brief Instantiates the graph (cudaGraphInstantiate).
  /// @throws std::invalid_argument if empty; CudaError if the backend fails
  [[nodiscard]] GraphExec instantiate() const;

 private:
  std::unique_ptr<detail::GraphImpl> impl_;
};

/// @brief An instantiated graph (cudaGraphExec_t). Move-only.
///
/// @par Stream order
/// `launch(stream)` queues the whole graph on `stream`: it starts after the work queued there
/// before, later work there waits for all of it, and each launch is ordered after the previous
/// launch of the same executable (as cudaGraphLaunch). Launches of one executable from several
/// threads at once are serialised.
class GraphExec {
 public:
  /// An empty executable.
  GraphExec() noexcept;
  /// Internal: wraps a backend's executable.
  explicit GraphExec(std::unique_ptr<detail::GraphExecImpl> impl) noexcept;
  /// Takes the executable; `other` is left empty.
  GraphExec(GraphExec&& other) noexcept;
  /// Destroys the executable held, then takes `other`'s.
  GraphExec& operator=(GraphExec&& other) noexcept;
  /// Destroys the executable (cudaGraphExecDestroy); launches already queued still run.
  ~GraphExec();

  /// @return true unless empty
  [[nodiscard]] bool valid() const noexcept { return impl_ != nullptr; }
  /// @brief Queues the graph on `stream` (cudaGraphLaunch).
  /// @throws std::invalid_argument if empty or `stream` is empty or of another device;
  ///         CudaError if the launch fails
  void launch(StreamView stream,
              SourceLocation where = SourceLocation::current()) const;

 private:
  std::unique_ptr<detail::GraphExecImpl> impl_;
};

}  // namespace gpulife
