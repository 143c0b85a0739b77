// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief One way to launch a kernel body on a stream of either backend.
///
/// A kernel body is written once as a `GPULIFE_HOST_DEVICE` functor over an index. In a
/// translation unit compiled by nvcc, `for_each_index` launches it with `<<<>>>` on a CUDA stream
/// and runs it on the stream worker of a simulated stream; compiled by a host compiler, only the
/// simulated device can run it and a CUDA stream throws.

#include <algorithm>
#include <cstddef>
#include <initializer_list>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>

#include <gpulife/errors.hpp>
#include <gpulife/runtime/detail/backend.hpp>
#include <gpulife/runtime/detail/enqueue_site.hpp>
#include <gpulife/runtime/device_guard.hpp>
#include <gpulife/runtime/host_device.hpp>
#include <gpulife/runtime/kernel_work.hpp>
#include <gpulife/runtime/stream_view.hpp>

#if defined(__CUDACC__)
#include <cuda_runtime.h>
#endif

namespace gpulife {

namespace detail {
#if defined(__CUDACC__)
template <class Body>
__global__ void for_each_index_kernel(std::size_t n, Body body) {
  const std::size_t stride = static_cast<std::size_t>(blockDim.x) * gridDim.x;
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    body(i);
  }
}
#endif

/// Runs `body` over `[0, n)` as a kernel on a simulated stream.
template <class Body>
void for_each_index_on_sim(StreamView stream, std::size_t n, const Body& body,
                           std::initializer_list<MemoryRange> ranges, std::string_view name,
                           KernelWork work) {
  const DeviceGuard guard(stream);  // as on CUDA: the launch needs the stream's device current
  stream.impl()->launch_host_kernel(
      name, std::span<const MemoryRange>(ranges.begin(), ranges.size()),
      [body, n] {
        for (std::size_t i = 0; i < n; ++i) body(i);
      },
      work);
}
}  // namespace detail

// The launcher differs between translation units built by nvcc and by a host compiler. Each
// variant lives in its own inline namespace, so that they are distinct functions (distinct
// symbols): a functor instantiated in both kinds of unit cannot have one definition replace the
// other at link time (an ODR violation that would make an nvcc unit throw on CUDA streams, or a
// host unit call device code it never compiled).
#if defined(__CUDACC__)
inline namespace cuda_launcher {
#else
inline namespace host_launcher {
#endif

/// @brief Runs `body(i)` for every `i` in `[0, n)` as a kernel on `stream`.
///
/// On CUDA the stream's device is made current for the launch and the caller's current device
/// is restored afterwards (`DeviceGuard`); the launch's own error is checked
/// (`cudaLaunchKernel`'s return value), so an error that the application left pending is
/// neither taken for this launch's nor cleared.
/// @param stream the stream; the kernel is ordered after the work queued on it
/// @param n      number of indices
/// @param body   a copyable `GPULIFE_HOST_DEVICE` functor taking `std::size_t`
/// @param ranges the device ranges the body reads or writes, each with its `Access` mode; the
///               simulated device checks, when the kernel runs, that each lies in live memory,
///               and when it is queued, that no unordered operation of another stream touches
///               the same bytes (declare inputs `Access::read`: the default counts as a write)
/// @param name   the kernel's name in error messages and violation reports
/// @param work   what the kernel computes: a hint for the simulated device's virtual time
///               (`KernelWork`); CUDA ignores it
/// @param where  the call site the simulated device names in its reports; leave it defaulted
/// @throws std::invalid_argument for an empty stream, or on the simulated device for a
///         negative or non-finite `work.flops`
/// @throws std::logic_error on a CUDA stream from a translation unit not compiled by nvcc
/// @throws CudaError if the launch fails
template <class Body>
void for_each_index(StreamView stream, std::size_t n, const Body& body,
                    std::initializer_list<MemoryRange> ranges, std::string_view name,
                    KernelWork work, SourceLocation where = SourceLocation::current()) {
  if (!stream.valid()) throw std::invalid_argument("stream: empty StreamView");
  const detail::EnqueueSite site(where);
  if (stream.backend() == BackendKind::sim) {
    detail::for_each_index_on_sim(stream, n, body, ranges, name, work);
    return;
  }
#if defined(__CUDACC__)
  if (n == 0) return;
  const DeviceGuard guard(stream);  // a launch goes to the calling thread's current device
  constexpr unsigned block = 256;
  // enough blocks to fill any current GPU; the grid-stride loop covers the rest
  const std::size_t wanted = (n + block - 1) / block;
  const unsigned grid = static_cast<unsigned>(std::min<std::size_t>(wanted, 65536));
  std::size_t count = n;
  Body copy = body;
  void* args[] = {&count, &copy};
  const cudaError_t err =
      cudaLaunchKernel(detail::for_each_index_kernel<Body>, dim3(grid), dim3(block), args, 0,
                       static_cast<cudaStream_t>(stream.native_handle()));
  if (err != cudaSuccess) {
    // The runtime also keeps it as the thread's last error: clear it there if it is ours.
    if (cudaPeekAtLastError() == err) (void)cudaGetLastError();
    detail::throw_cuda_error(static_cast<int>(err), cudaGetErrorName(err), "cudaLaunchKernel",
                             "launching kernel " + std::string(name) + " on stream " +
                                 std::to_string(stream.id()));
  }
#else
  throw std::logic_error("for_each_index: kernel " + std::string(name) +
                         " was compiled without nvcc and cannot run on a CUDA stream");
#endif
}

/// @brief `for_each_index` without a work hint: the simulated device's virtual time costs the
/// kernel by its declared bytes alone.
/// @throws as the overload with `KernelWork`
template <class Body>
void for_each_index(StreamView stream, std::size_t n, const Body& body,
                    std::initializer_list<MemoryRange> ranges, std::string_view name = "kernel",
                    SourceLocation where = SourceLocation::current()) {
  for_each_index(stream, n, body, ranges, name, KernelWork{}, where);
}

}  // inline namespace

}  // namespace gpulife
