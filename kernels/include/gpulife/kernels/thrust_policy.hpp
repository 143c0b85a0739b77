// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief Thrust execution policies whose temporary storage comes from a gpulife memory resource
/// (RMM's `rmm::exec_policy`).
///
/// ```cpp
/// // in a .cu file: sorts on `stream`; Thrust's temporaries come from the pool, in stream order
/// thrust::sort(gpulife::thrust_policy_nosync(pool, stream), keys, keys + n);
/// ```
///
/// `thrust_policy` and `thrust_policy_nosync` run Thrust's CUDA system and exist only in
/// translation units compiled by nvcc (Thrust's CUDA algorithms need it). `thrust_host_policy`
/// runs Thrust's host system with the same allocator, in any translation unit; it is what code
/// tested on the simulated device uses, whose device memory is host memory.
///
/// Including this header needs the CCCL headers (gpulife::kernels puts them on the include path
/// when it found them; see cmake/GpulifeThrust.cmake).
///
/// The policies are function templates over a Thrust tag that is always left defaulted: Thrust
/// puts its types in a namespace that differs between nvcc and host-compiled translation units
/// (and between architecture lists), and the tag keeps each kind of unit's definition a separate
/// symbol instead of one inline function defined two ways.

#include <cstddef>
#include <stdexcept>
#include <string>

#include <thrust/execution_policy.h>

#if defined(__CUDACC__)
#include <cuda_runtime.h>
#include <thrust/system/cuda/execution_policy.h>
#endif

#include <gpulife/errors.hpp>
#include <gpulife/memory/thrust_allocator.hpp>
#include <gpulife/runtime/backend_kind.hpp>
#include <gpulife/runtime/stream_view.hpp>

namespace gpulife {

namespace detail {

/// `ThrustAllocator` for Thrust's host system, whose calling thread touches temporaries at once:
/// an allocation returns only when the stream has reached it. In stream order the block may
/// still be in use by earlier work (a pool reuses a block on its stream at once; on the
/// simulated device the poisoning of its last free is still queued), which a kernel on the
/// stream would wait for but a host thread does not.
template <class T>
class HostThrustAllocator : public ThrustAllocator<T> {
 public:
  using ThrustAllocator<T>::ThrustAllocator;
  template <class U>
  HostThrustAllocator(const HostThrustAllocator<U>& other) noexcept  // NOLINT: implicit rebind
      : ThrustAllocator<T>(other) {}

  [[nodiscard]] T* allocate(std::size_t n) {
    T* ptr = ThrustAllocator<T>::allocate(n);
    try {
      this->stream().synchronize();
    } catch (...) {
      ThrustAllocator<T>::deallocate(ptr, n);
      throw;
    }
    return ptr;
  }
};

}  // namespace detail

/// @brief Thrust's host system with temporaries from `resource` on `stream`.
///
/// The algorithm runs on the calling thread when it is called, not in the stream's order: the
/// device work that produces its input must have executed (synchronise the stream first), and
/// each temporary allocation waits for the stream to reach it. On the simulated device, whose
/// device memory is host memory, that makes it the counterpart of `thrust_policy`; with the CUDA
/// backend the data must be host-accessible.
/// @param resource where temporaries come from; must outlive the policy
/// @param stream   the stream that temporaries are allocated and released on
/// @throws std::invalid_argument if `stream` is empty or belongs to another device
template <class Tag = thrust::host_system_tag>
[[nodiscard]] auto thrust_host_policy(DeviceMemoryResource& resource, StreamView stream) {
  // A prvalue allocator: Thrust stores it by value (an lvalue would be held by reference).
  return thrust::host(detail::HostThrustAllocator<std::byte>(resource, stream));
}

#if defined(__CUDACC__)

namespace detail {

/// The `cudaStream_t` behind `stream`, for Thrust's CUDA system. Thrust launches on the calling
/// thread's current device, which must therefore be the stream's.
inline cudaStream_t thrust_cuda_stream(StreamView stream) {
  if (!stream.valid()) throw std::invalid_argument("stream: empty StreamView");
  if (stream.backend() != BackendKind::cuda) {
    throw std::invalid_argument(
        "stream: not a CUDA stream; Thrust's CUDA system cannot run on the simulated device "
        "(use thrust_host_policy there)");
  }
  int current = -1;
  if (const cudaError_t err = cudaGetDevice(&current); err != cudaSuccess) {
    ::gpulife::detail::throw_cuda_error(static_cast<int>(err), cudaGetErrorName(err),
                                        "cudaGetDevice", "finding the device Thrust launches on");
  }
  if (current != stream.device().ordinal()) {
    throw std::invalid_argument("stream: belongs to " + stream.device().name() +
                                ", but the calling thread's current device is cuda:" +
                                std::to_string(current) +
                                "; Thrust would launch there. Hold a gpulife::DeviceGuard "
                                "guard(stream) around the algorithm");
  }
  return static_cast<cudaStream_t>(stream.native_handle());
}

}  // namespace detail

/// @brief Thrust's CUDA system on `stream` (`thrust::cuda::par.on(stream)`) with temporaries
/// from `resource`. Algorithms synchronise the stream before they return, as with `par`.
///
/// Only in translation units compiled by nvcc. A failing algorithm throws
/// `thrust::system_error`. Thrust launches on the calling thread's current device: make the
/// stream's device current for the algorithm (`DeviceGuard guard(stream);`).
/// @param resource where temporaries come from; must outlive the policy
/// @param stream   a CUDA stream of the resource's device
/// @throws std::invalid_argument if `stream` is empty, simulated or of another device, or if
///         the calling thread's current device is not the stream's
template <class Tag = thrust::device_system_tag>
[[nodiscard]] auto thrust_policy(DeviceMemoryResource& resource, StreamView stream) {
  const cudaStream_t native = detail::thrust_cuda_stream(stream);
  return thrust::cuda::par(ThrustAllocator<std::byte>(resource, stream)).on(native);
}

/// @brief Like `thrust_policy` with `thrust::cuda::par_nosync`: algorithms skip the
/// synchronisations they do not need, so work stays asynchronous where it can (an algorithm that
/// returns a value to the host still waits for it). Current device: as `thrust_policy`.
/// @throws std::invalid_argument if `stream` is empty, simulated or of another device, or if
///         the calling thread's current device is not the stream's
template <class Tag = thrust::device_system_tag>
[[nodiscard]] auto thrust_policy_nosync(DeviceMemoryResource& resource, StreamView stream) {
  const cudaStream_t native = detail::thrust_cuda_stream(stream);
  return thrust::cuda::par_nosync(ThrustAllocator<std::byte>(resource, stream)).on(native);
}

#endif  // __CUDACC__

}  // namespace gpulife
