// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `Digest128`, the content digest of a host buffer, and `digest()`, which computes it on
/// the calling thread.
///
/// A content key of the tensor cache is a digest of the host bytes (with dtype, shape and
/// device). There are three ways to supply one, from the fastest:
///
/// 1. **A caller key** (a name, or a digest computed earlier and stored, for example beside the
///    weights file): nothing is hashed. Use it when the caller already knows which bytes these
///    are; the caller answers for the key naming exactly one content.
/// 2. **A `HostBuffer`** (host_buffer.hpp): bytes the caller promises not to change; their digest
///    is taken once and remembered, so the second and later uploads of the same buffer hash
///    nothing. Use it for weights, mapped files and staging buffers that are uploaded repeatedly.
/// 3. **Plain bytes**: hashed on every lookup. Use `DigestWorkers` (digest_workers.hpp) for large
///    buffers: one core hashes at about memory bandwidth, which for a large tensor can be slower
///    than the upload a cache hit avoids.
///
/// XXH3 is fast, not cryptographic: a 128-bit digest makes an accidental collision vanishingly
/// unlikely, but someone who chooses the bytes can make two buffers collide. Do not key a cache
/// shared between mutually untrusted parties on it.

#include <compare>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>

namespace gpulife {

/// @brief A 128-bit content digest: a value type, ordered as the 128-bit number `high:low`.
struct Digest128 {
  std::uint64_t high = 0;  ///< the upper 64 bits (XXH128_hash_t::high64)
  std::uint64_t low = 0;   ///< the lower 64 bits (XXH128_hash_t::low64)

  /// Equal digests: the same bytes, but for a collision.
  friend constexpr bool operator==(const Digest128&, const Digest128&) noexcept = default;
  /// Ordered as the 128-bit number `high:low`.
  // NOLINTBEGIN(modernize-use-nullptr): clang-tidy 14 misreads a defaulted <=>
  friend constexpr std::strong_ordering operator<=>(const Digest128&,
                                                    const Digest128&) noexcept = default;
  // NOLINTEND(modernize-use-nullptr)

  /// @return 32 lower-case hex digits, `high` first: the same text as `xxhsum -H2` prints for a
  /// buffer of at most one chunk
  [[nodiscard]] std::string to_hex() const;
  /// @brief Parses the text `to_hex` writes (upper-case digits are accepted too).
  /// @throws std::invalid_argument naming `hex` if it is not 32 hex digits
  [[nodiscard]] static Digest128 from_hex(std::string_view hex);
};

/// @brief The size of the chunks that a buffer larger than one chunk is digested in.
///
/// Part of the definition of the digest (changing it changes every digest of a larger buffer),
/// and the unit of parallel work. 256 KiB, by measurement: a thread that joins a digest late
/// holds the others up by at most one chunk (about 5 us at 55 GB/s), so smaller chunks let
/// buffers of a few MiB gain from a second thread where 1 MiB chunks lose; below 256 KiB the
/// claims and the root list begin to cost. Single-threaded, every size from 64 KiB to 4 MiB hashes
/// at the same speed.
inline constexpr std::size_t digest_chunk_bytes = std::size_t{256} << 10;

/// @brief The XXH3 seed of the tree form's root hash; it separates the tree form from the
/// one-chunk form ("gpulife1" in ASCII).
inline constexpr std::uint64_t digest_tree_seed = 0x6770756c69666531;

/// @brief The content digest of `bytes`, computed on the calling thread.
///
/// The digest of a buffer of n bytes, with C = `digest_chunk_bytes`:
/// - n <= C: `XXH3_128bits(bytes, n)` (XXH3-128, seed 0, default secret).
/// - n > C (the tree form): split the bytes into k = ceil(n / C) chunks of C bytes, the last one
///   shorter if C does not divide n; hash each with `XXH3_128bits`; the digest is
///   `XXH3_128bits_withSeed(L, digest_tree_seed)` over the list
///   L = canonical(h_0) ... canonical(h_k-1) le64(n), where canonical() is the 16-byte big-endian
///   form of `XXH128_canonicalFromHash` and le64(n) the length as 8 little-endian bytes.
///
/// The digest depends on the bytes only, never on the thread count, the scheduling or the host's
/// byte order, so a digest stored on one machine names the same bytes on another.
///
/// @param bytes the bytes to digest
/// @return the digest
/// @throws std::invalid_argument naming `bytes` if its data is null and its size is not zero
/// @par Thread safety
/// Safe to call from any number of threads at once.
[[nodiscard]] Digest128 digest(std::span<const std::byte> bytes);

/// @brief `digest({data, size})`.
/// @throws std::invalid_argument naming `data` if it is null and `size` is not zero
[[nodiscard]] Digest128 digest(const void* data, std::size_t size);

}  // namespace gpulife

/// Hashes a digest for unordered containers: its bits are already uniformly spread, so the low
/// word is the hash.
template <>
struct std::hash<gpulife::Digest128> {
  [[nodiscard]] std::size_t operator()(const gpulife::Digest128& digest) const noexcept {
    return static_cast<std::size_t>(digest.low);
  }
};
