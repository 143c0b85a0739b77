// SPDX-License-Identifier: Apache-2.0
#include <gpulife/kernels/checksum.hpp>

#include <algorithm>
#include <cstdint>
#include <new>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>

#include <gpulife/errors.hpp>
#include <gpulife/runtime/detail/backend.hpp>
#include <gpulife/runtime/device_guard.hpp>
#include <gpulife/runtime/device_guard.hpp>

#if GPULIFE_HAS_THRUST
#include <thrust/execution_policy.h>
#include <thrust/functional.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/transform_reduce.h>
#endif

#if defined(__CUDACC__)
#include <cuda_runtime.h>
#include <thrust/system/cuda/error.h>
#include <thrust/system/cuda/execution_policy.h>
#include <thrust/system_error.h>
#include <cub/device/device_reduce.cuh>
#include <cuda/std/functional>

#include <gpulife/kernels/thrust_policy.hpp>
#endif

namespace gpulife::kernels {
namespace {

void validate(StreamView stream, const void* data, std::size_t bytes) {
  if (!stream.valid()) throw std::invalid_argument("stream: empty StreamView");
  if (data == nullptr && bytes != 0) {
    throw std::invalid_argument("data: null pointer for a checksum of " + std::to_string(bytes) +
                                " bytes");
  }
}

void validate_temp(StreamView stream, const DeviceMemoryResource& temp) {
  if (&stream.device() != &temp.device().impl()) {
    throw std::invalid_argument("temp: resource " + temp.name() + " allocates on " +
                                temp.device().name() + ", not on the stream's device " +
                                stream.device().name());
  }
}

ChecksumBody make_body(const void* data, std::size_t bytes) {
  return {static_cast<const unsigned char*>(data), bytes,
          reinterpret_cast<std::uintptr_t>(data) % 8 == 0};
}

/// The reduction run on the host: the simulated device's kernel.
std::uint64_t reduce_on_host(const ChecksumBody& body) {
  const std::size_t words = checksum_words(body.bytes);
  const std::uint64_t seed = checksum_seed(body.bytes);
#if GPULIFE_HAS_THRUST
  return thrust::transform_reduce(thrust::host, thrust::counting_iterator<std::size_t>(0),
                                  thrust::counting_iterator<std::size_t>(words), body, seed,
                                  thrust::plus<std::uint64_t>());
#else
  // A plain loop rather than std::views::iota: Clang 14 (the fuzzing build) cannot instantiate
  // libstdc++ 12's iota_view. The sum wraps, so the order does not matter.
  std::uint64_t sum = seed;
  for (std::size_t i = 0; i < words; ++i) sum += body(i);
  return sum;
#endif
}

/// Queues the checksum as a kernel on a simulated stream, which checks `ranges` when it runs.
/// `result` is device memory declared in `ranges`, or host memory the caller keeps until then.
void launch_on_sim(StreamView stream, const ChecksumBody& body, std::span<const MemoryRange> ranges,
                   std::uint64_t* result) {
  const DeviceGuard guard(stream);  // a launch needs the stream's device current
  stream.impl()->launch_host_kernel("checksum", ranges,
                                    [body, result] { *result = reduce_on_host(body); });
}

std::uint64_t checksum_on_sim(StreamView stream, const ChecksumBody& body) {
  std::uint64_t result = 0;  // stays 0 if the device refuses the kernel
  const MemoryRange range{body.data, body.bytes, Access::read};
  launch_on_sim(stream, body, std::span<const MemoryRange>(&range, 1), &result);
  stream.synchronize();
  return result;
}

#if defined(__CUDACC__)

std::string doing(StreamView stream, const ChecksumBody& body) {
  return "computing the checksum of " + std::to_string(body.bytes) + " bytes on stream " +
         std::to_string(stream.id());
}

[[noreturn]] void throw_thrust_error(const thrust::system_error& error, const char* call,
                                     std::string what) {
  const int code = error.code().value();
  const bool cuda = error.code().category() == thrust::cuda_category();
  ::gpulife::detail::throw_cuda_error(
      code, cuda ? cudaGetErrorName(static_cast<cudaError_t>(code)) : "thrust error", call,
      std::move(what) + " (" + error.what() + ")");
}

void check(cudaError_t err, const char* call, const std::string& what) {
  if (err != cudaSuccess) {
    ::gpulife::detail::throw_cuda_error(static_cast<int>(err), cudaGetErrorName(err), call, what);
  }
}

template <class Policy>
std::uint64_t checksum_on_cuda(const Policy& policy, StreamView stream, const ChecksumBody& body) {
  try {
    return thrust::transform_reduce(
        policy, thrust::counting_iterator<std::size_t>(0),
        thrust::counting_iterator<std::size_t>(checksum_words(body.bytes)), body,
        checksum_seed(body.bytes), thrust::plus<std::uint64_t>());
  } catch (const thrust::system_error& error) {
    throw_thrust_error(error, "thrust::transform_reduce", doing(stream, body));
  } catch (const OutOfMemoryError&) {
    throw;  // from gpulife's allocator: it already says what was in use
  } catch (const std::bad_alloc& error) {
    // Thrust's own temporaries: the same failure as ours, so it gets the same type
    throw OutOfMemoryError("out of memory: Thrust's temporary storage for " + doing(stream, body) +
                               ": " + error.what(),
                           0);
  }
}

void checksum_async_on_cuda(StreamView stream, const ChecksumBody& body, std::uint64_t* result,
                            DeviceMemoryResource& temp) {
  const auto native = static_cast<cudaStream_t>(stream.native_handle());
  const thrust::counting_iterator<std::size_t> first(0);
  const std::size_t words = checksum_words(body.bytes);
  const std::uint64_t seed = checksum_seed(body.bytes);
  const ::cuda::std::plus<std::uint64_t> plus;
  std::size_t temp_bytes = 0;
  check(cub::DeviceReduce::TransformReduce(nullptr, temp_bytes, first, result, words, plus, body,
                                           seed, native),
        "cub::DeviceReduce::TransformReduce",
        "sizing temporary storage for " + doing(stream, body));
  // CUB takes a null buffer for a size query, so never hand it one.
  temp_bytes = std::max<std::size_t>(temp_bytes, 1);
  void* storage = temp.allocate(temp_bytes, stream);
  const cudaError_t err = cub::DeviceReduce::TransformReduce(storage, temp_bytes, first, result,
                                                             words, plus, body, seed, native);
  temp.deallocate(storage, temp_bytes, stream);  // stream-ordered: after the reduction
  check(err, "cub::DeviceReduce::TransformReduce", doing(stream, body));
}

#endif  // __CUDACC__

}  // namespace

std::uint64_t checksum_host(std::span<const std::byte> bytes) noexcept {
  // Written independently of ChecksumBody's loads, so that tests compare two implementations.
  std::uint64_t sum = checksum_seed(bytes.size());
  for (std::size_t index = 0; index < checksum_words(bytes.size()); ++index) {
    std::uint64_t word = 0;
    for (std::size_t k = 0; k < 8 && index * 8 + k < bytes.size(); ++k) {
      word |= std::to_integer<std::uint64_t>(bytes[index * 8 + k]) << (8 * k);
    }
    sum += checksum_term(index, word);
  }
  return sum;
}

std::uint64_t checksum(StreamView stream, const void* data, std::size_t bytes,
                       DeviceMemoryResource& temp) {
  validate(stream, data, bytes);
  validate_temp(stream, temp);
  if (bytes == 0) return checksum_seed(0);
  const ChecksumBody body = make_body(data, bytes);
  if (stream.backend() == BackendKind::sim) return checksum_on_sim(stream, body);
#if defined(__CUDACC__)
  const DeviceGuard guard(stream);  // Thrust launches on the calling thread's current device
  return checksum_on_cuda(thrust_policy_nosync(temp, stream), stream, body);
#else
  throw std::logic_error("checksum: compiled without nvcc, it cannot run on a CUDA stream");
#endif
}

std::uint64_t checksum(StreamView stream, const void* data, std::size_t bytes) {
  validate(stream, data, bytes);
  if (bytes == 0) return checksum_seed(0);
  const ChecksumBody body = make_body(data, bytes);
  if (stream.backend() == BackendKind::sim) return checksum_on_sim(stream, body);
#if defined(__CUDACC__)
  const DeviceGuard guard(stream);
  return checksum_on_cuda(
      thrust::cuda::par_nosync.on(static_cast<cudaStream_t>(stream.native_handle())), stream, body);
#else
  throw std::logic_error("checksum: compiled without nvcc, it cannot run on a CUDA stream");
#endif
}

void checksum_async(StreamView stream, const void* data, std::size_t bytes, std::uint64_t* result,
                    DeviceMemoryResource& temp) {
  validate(stream, data, bytes);
  validate_temp(stream, temp);
  if (result == nullptr) throw std::invalid_argument("result: null pointer");
  if (bytes == 0) {
    const std::uint64_t seed = checksum_seed(0);
    // from pageable memory: the copy takes the value before it returns
    stream.copy(result, &seed, sizeof seed, CopyKind::host_to_device);
    return;
  }
  const ChecksumBody body = make_body(data, bytes);
  if (stream.backend() == BackendKind::sim) {
    const MemoryRange ranges[] = {{body.data, body.bytes, Access::read},
                                  {result, sizeof *result, Access::write}};
    launch_on_sim(stream, body, ranges, result);
    return;
  }
#if defined(__CUDACC__)
  const DeviceGuard guard(stream);  // CUB launches on the calling thread's current device
  checksum_async_on_cuda(stream, body, result, temp);
#else
  throw std::logic_error("checksum_async: compiled without nvcc, it cannot run on a CUDA stream");
#endif
}

}  // namespace gpulife::kernels
