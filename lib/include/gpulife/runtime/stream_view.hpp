// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `StreamView`: a non-owning, cheap-to-copy reference to a device stream.

#include <cstddef>
#include <cstdint>
#include <functional>

#include <gpulife/runtime/backend_kind.hpp>
#include <gpulife/runtime/capture_mode.hpp>
#include <gpulife/runtime/memory_range.hpp>
#include <gpulife/source_location.hpp>

namespace gpulife {

class Event;
class CapturedGraph;
namespace detail {
class StreamImpl;
class DeviceImpl;
}  // namespace detail

/// @brief A non-owning reference to a stream: an in-order queue of device work.
///
/// Like `rmm::cuda_stream_view` it is a pointer in size and is passed by value. An empty view
/// (default-constructed) means "the default stream" where a gpulife API takes a stream; calling
/// an operation on an empty view throws `std::invalid_argument`.
///
/// All operations are asynchronous with respect to the host unless stated otherwise, and ordered
/// with respect to other work on the same stream. They follow CUDA's rules on both backends:
/// a copy to device from pageable host memory consumes the host bytes before it returns; a copy
/// to pageable host memory returns only once it has completed; copies to or from pinned memory
/// (`Device::allocate_pinned`) are fully asynchronous.
///
/// Each operation takes a defaulted `where` (leave it): the simulated device names that call
/// site when it reports the operation.
///
/// @par Thread safety
/// Any number of threads may enqueue on the same stream; the order between their calls is the
/// order in which the calls happen.
class StreamView {
 public:
  constexpr StreamView() noexcept = default;
  /// Wraps a backend stream; used by `Stream` and `Device`.
  constexpr explicit StreamView(detail::StreamImpl* impl) noexcept : impl_(impl) {}

  /// @return true unless default-constructed
  [[nodiscard]] constexpr bool valid() const noexcept { return impl_ != nullptr; }
  /// @return the backend stream (null for an empty view)
  [[nodiscard]] constexpr detail::StreamImpl* impl() const noexcept { return impl_; }

  /// @return a process-unique id, never reused (0 for an empty view)
  [[nodiscard]] std::uint64_t id() const noexcept;
  /// @return the backend of the stream's device
  /// @throws std::invalid_argument for an empty view
  [[nodiscard]] BackendKind backend() const;
  /// @return the device the stream belongs to
  /// @throws std::invalid_argument for an empty view
  [[nodiscard]] detail::DeviceImpl& device() const;
  /// @return the `cudaStream_t` on the CUDA backend, an opaque pointer on the sim
  [[nodiscard]] void* native_handle() const;

  /// @brief Copies `bytes` bytes (cudaMemcpyAsync).
  /// @throws std::invalid_argument if a pointer is null while `bytes` is non-zero
  /// @throws CudaError if the backend rejects the copy
  void copy(void* dst, const void* src, std::size_t bytes, CopyKind kind,
            SourceLocation where = SourceLocation::current()) const;
  /// @brief Sets `bytes` bytes to `value` (cudaMemsetAsync).
  /// @throws std::invalid_argument if `dst` is null while `bytes` is non-zero
  /// @throws CudaError on backend failure
  void memset(void* dst, int value, std::size_t bytes,
              SourceLocation where = SourceLocation::current()) const;
  /// @brief Runs `fn` on a host thread after the work queued so far (cudaLaunchHostFunc).
  ///
  /// `fn` must not wait for device work (CUDA forbids it). An exception from `fn` is reported
  /// through the error handler.
  /// @throws CudaError on backend failure
  void host_callback(std::function<void()> fn,
                     SourceLocation where = SourceLocation::current()) const;
  /// @brief Records `event` at the current end of the stream (cudaEventRecord).
  /// @throws std::invalid_argument if the event is empty or belongs to another device (CUDA
  ///         fails such a record too)
  void record(const Event& event, SourceLocation where = SourceLocation::current()) const;
  /// @brief Makes later work on this stream wait, on the device, for the event's latest record
  /// (cudaStreamWaitEvent). The host does not block. Waiting on a never-recorded event is a no-op.
  /// As in CUDA, the event may belong to another device of the same backend.
  /// @throws std::invalid_argument if the event is empty or belongs to another backend
  void wait(const Event& event, SourceLocation where = SourceLocation::current()) const;
  /// @brief Blocks the host until all work queued so far has executed.
  void synchronize() const;
  /// @return true when all work queued so far has executed
  [[nodiscard]] bool query() const;

  /// @return true if both views refer to the same stream
  /// @brief Begins capturing this stream (cudaStreamBeginCapture): work queued on it, and on
  /// streams that wait on events recorded in the capture, is recorded into a graph instead of
  /// executed, until `end_capture`. See runtime/graph.hpp and README "CUDA graphs".
  /// @throws std::invalid_argument if empty; CudaError (cudaErrorStreamCaptureUnsupported on
  ///         the legacy default stream, cudaErrorIllegalState if already capturing)
  void begin_capture(CaptureMode mode = CaptureMode::global) const;
  /// @brief Ends the capture begun on this stream (cudaStreamEndCapture); the captured graph.
  /// @throws CudaError: cudaErrorStreamCaptureInvalidated (an invalid operation broke it; the
  ///         capture is over), cudaErrorStreamCaptureUnjoined (a joined stream was not joined
  ///         back; over), cudaErrorStreamCaptureWrongThread (not the thread that began it, in
  ///         a mode other than relaxed; still capturing), cudaErrorStreamCaptureUnmatched (not
  ///         begun on this stream), cudaErrorIllegalState (not capturing)
  [[nodiscard]] CapturedGraph end_capture() const;
  /// @return the stream's capture status and capture id (cudaStreamGetCaptureInfo)
  [[nodiscard]] CaptureInfo capture_info() const;

  friend constexpr bool operator==(StreamView, StreamView) noexcept = default;

 private:
  detail::StreamImpl* impl_ = nullptr;
};

}  // namespace gpulife
