// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `checksum`: a 64-bit checksum of device bytes, to verify device contents in tests and
/// benchmarks against `checksum_host` of the bytes they should hold.
///
/// The bytes are read as little-endian 64-bit words, the last one zero-padded. Word `i` with
/// value `w` contributes `mix(w ^ mix((i + 1) * G))` (G: the 64-bit golden-ratio constant), where
/// `mix` is a bijective 64-bit finaliser (SplitMix64's), and the checksum is the wrapping sum of
/// the contributions plus a term for the length:
/// - changing any bytes of one word always changes the checksum (for a fixed index the
///   contribution is a bijection of the word, and no other term changes);
/// - moving a word to another index (swapping elements, a permutation) changes it but for a
///   coincidence of odds about 2^-64 (taking mix as random), since the contribution depends on
///   the index;
/// - a wrapping sum is associative and commutative, so a parallel reduction in any order gives
///   the same value as the host reference, bit for bit.
///
/// It is a checksum against accidents, not a cryptographic hash.

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include <gpulife/memory/device_memory_resource.hpp>
#include <gpulife/runtime/host_device.hpp>
#include <gpulife/runtime/stream_view.hpp>

namespace gpulife::kernels {

/// @brief SplitMix64's finaliser: a bijection of 64-bit values with full avalanche.
GPULIFE_HOST_DEVICE constexpr std::uint64_t mix64(std::uint64_t x) {
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ULL;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBULL;
  x ^= x >> 31;
  return x;
}

/// @brief The contribution of word `index` holding `word` to the checksum.
GPULIFE_HOST_DEVICE constexpr std::uint64_t checksum_term(std::size_t index, std::uint64_t word) {
  // (index + 1) * an odd constant is a bijection of the index, and so is mix64: distinct
  // indices get distinct keys.
  const std::uint64_t key = mix64((static_cast<std::uint64_t>(index) + 1) * 0x9E3779B97F4A7C15ULL);
  return mix64(word ^ key);
}

/// @brief The checksum's starting value: the term for the length, so that bytes that differ
/// only in trailing zero bytes differ.
GPULIFE_HOST_DEVICE constexpr std::uint64_t checksum_seed(std::size_t bytes) {
  return mix64(static_cast<std::uint64_t>(bytes) ^ 0xC2B2AE3D27D4EB4FULL);
}

/// @return the number of 64-bit words a checksum of `bytes` bytes reads
GPULIFE_HOST_DEVICE constexpr std::size_t checksum_words(std::size_t bytes) {
  return bytes / 8 + (bytes % 8 != 0 ? 1 : 0);
}

/// @brief The per-word kernel body: `checksum_term(i, word i of data)`.
///
/// Whole words at an 8-byte aligned address are loaded as one word; other words byte by byte.
struct ChecksumBody {
  const unsigned char* data;  ///< the bytes
  std::size_t bytes;          ///< how many
  bool aligned;               ///< `data` is 8-byte aligned

  /// @return the term of word `index`
  GPULIFE_HOST_DEVICE std::uint64_t operator()(std::size_t index) const {
    const std::size_t offset = index * 8;
    std::uint64_t word = 0;
    if (aligned && bytes - offset >= 8) {
#if defined(__CUDA_ARCH__)
      word = *reinterpret_cast<const std::uint64_t*>(data + offset);
#else
      std::memcpy(&word, data + offset, sizeof word);
#endif
    } else {
      const std::size_t count = bytes - offset < 8 ? bytes - offset : 8;
      for (std::size_t k = 0; k < count; ++k) {
        word |= static_cast<std::uint64_t>(data[offset + k]) << (8 * k);
      }
    }
    return checksum_term(index, word);
  }
};

// Loading whole words natively equals assembling them little-endian only on a little-endian host
// (every CUDA device is one).
static_assert(
    std::endian::native == std::endian::little,
    "checksum assumes a little-endian host, as the simulated device reads words natively");

/// @brief The checksum of `bytes` host bytes: the reference that `checksum` must equal.
[[nodiscard]] std::uint64_t checksum_host(std::span<const std::byte> bytes) noexcept;

/// @brief The checksum of `bytes` device bytes at `data`, computed on `stream`.
///
/// Ordered after the work queued on `stream` so far; **synchronises the stream** to return the
/// value. On the CUDA backend the reduction is `thrust::transform_reduce` with
/// `thrust_policy_nosync(temp, stream)`, so its temporaries come from `temp`; on the simulated
/// device it is a kernel on the stream's worker (no temporaries), which checks that the range is
/// live: reading freed memory is a violation, and the kernel does not run (the value returned
/// is then 0).
/// @param stream the stream; its device holds `data`
/// @param data   device bytes (8-byte alignment is faster, not required); may be null if
///               `bytes` is zero
/// @param bytes  how many bytes
/// @param temp   the resource for temporary storage on the CUDA backend
/// @return the same value as `checksum_host` of the bytes
/// @throws std::invalid_argument if `stream` is empty or `data` is null while `bytes` is not zero
/// @throws OutOfMemoryError if `temp` cannot provide temporary storage
/// @throws CudaError if the reduction fails
[[nodiscard]] std::uint64_t checksum(StreamView stream, const void* data, std::size_t bytes,
                                     DeviceMemoryResource& temp);

/// @brief Like `checksum(stream, data, bytes, temp)`, with Thrust's own temporary storage on the
/// CUDA backend (in CCCL 3: cudaMallocAsync on the stream, which no gpulife resource counts).
/// For tests and one-off checks; code that accounts for its memory passes a resource.
/// @throws std::invalid_argument if `stream` is empty or `data` is null while `bytes` is not zero
/// @throws OutOfMemoryError if Thrust cannot allocate its temporary storage
/// @throws CudaError if the reduction fails
[[nodiscard]] std::uint64_t checksum(StreamView stream, const void* data, std::size_t bytes);

/// @brief Queues the checksum of `bytes` device bytes at `data` on `stream`; it lands in the
/// device word `*result` when the stream reaches it. The host does not wait.
///
/// On the CUDA backend it is `cub::DeviceReduce::TransformReduce` with temporaries from `temp`,
/// released in stream order.
/// @param stream the stream; its device holds `data`
/// @param data   device bytes; may be null if `bytes` is zero
/// @param bytes  how many bytes
/// @param result device memory for one `std::uint64_t` (not pinned host memory: the simulated
///               device checks that it is device memory)
/// @param temp   the resource for temporary storage on the CUDA backend
/// @throws std::invalid_argument if `stream` is empty, `result` is null, or `data` is null while
///         `bytes` is not zero
/// @throws OutOfMemoryError if `temp` cannot provide temporary storage
/// @throws CudaError if queueing fails
void checksum_async(StreamView stream, const void* data, std::size_t bytes, std::uint64_t* result,
                    DeviceMemoryResource& temp);

}  // namespace gpulife::kernels
