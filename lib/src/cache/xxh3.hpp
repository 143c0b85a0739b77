// SPDX-License-Identifier: Apache-2.0
#pragma once

// The one place that includes xxhash.h: the dependency stays private to the library.
//
// XXH3 comes from Debian's libxxhash, through its x86 run-time dispatch entry points where the
// library has them: its plain entry points, like code inlined with XXH_INLINE_ALL for baseline
// x86-64, are SSE2 only. Measured on the build VM (AMD EPYC with AVX-512), buffers in cache:
// XXH3_128bits_dispatch 45-47 GB/s (the core's cache bandwidth; memcpy 47-49 GB/s),
// XXH3_128bits 20 GB/s, XXH_INLINE_ALL 20.4 GB/s at -O2 and 29.1 GB/s at -O3. From DRAM the
// two meet at the memory bandwidth (19-31 GB/s per core on this VM, depending on neighbours).

#include <cstddef>
#include <cstdint>
#include <cstring>

#include <xxhash.h>
#if defined(GPULIFE_XXH3_X86_DISPATCH)
// Declares the *_dispatch functions without redefining the plain names as macros.
#define XXH_DISPATCH_DISABLE_REPLACE 1
#include <xxh_x86dispatch.h>
#endif

#include <gpulife/cache/digest.hpp>

namespace gpulife::detail {

inline Digest128 to_digest(XXH128_hash_t hash) noexcept { return {hash.high64, hash.low64}; }

inline XXH128_hash_t xxh3_128bits(const void* data, std::size_t size) noexcept {
#if defined(GPULIFE_XXH3_X86_DISPATCH)
  return XXH3_128bits_dispatch(data, size);
#else
  return XXH3_128bits(data, size);
#endif
}

inline XXH128_hash_t xxh3_128bits_with_seed(const void* data, std::size_t size,
                                            std::uint64_t seed) noexcept {
#if defined(GPULIFE_XXH3_X86_DISPATCH)
  return XXH3_128bits_withSeed_dispatch(data, size, seed);
#else
  return XXH3_128bits_withSeed(data, size, seed);
#endif
}

/// XXH3-128 of one chunk (or of a whole buffer of at most one chunk).
inline Digest128 xxh3_128(const std::byte* data, std::size_t size) noexcept {
  return to_digest(xxh3_128bits(data, size));
}

/// Bytes of the tree form's root list per chunk, and after the chunks (the length).
inline constexpr std::size_t tree_entry_bytes = sizeof(XXH128_canonical_t);
inline constexpr std::size_t tree_length_bytes = 8;

/// Writes chunk `index`'s digest in canonical (big-endian) form into its slot of the root list.
inline void hash_chunk(const std::byte* data, std::size_t size, std::size_t index,
                       unsigned char* list) noexcept {
  const std::size_t begin = index * digest_chunk_bytes;
  const std::size_t length = size - begin < digest_chunk_bytes ? size - begin : digest_chunk_bytes;
  XXH128_canonical_t canonical;
  XXH128_canonicalFromHash(&canonical, xxh3_128bits(data + begin, length));
  static_assert(sizeof canonical.digest == tree_entry_bytes);
  std::memcpy(list + index * tree_entry_bytes, canonical.digest, tree_entry_bytes);
}

/// Appends the length and hashes the root list of `chunks` chunk digests.
inline Digest128 hash_root(std::size_t size, std::size_t chunks, unsigned char* list) noexcept {
  auto length = static_cast<std::uint64_t>(size);
  unsigned char* tail = list + chunks * tree_entry_bytes;
  for (std::size_t i = 0; i < tree_length_bytes; ++i) {
    tail[i] = static_cast<unsigned char>(length & 0xff);
    length >>= 8;
  }
  return to_digest(xxh3_128bits_with_seed(list, chunks * tree_entry_bytes + tree_length_bytes,
                                          digest_tree_seed));
}

constexpr std::size_t chunk_count(std::size_t size) noexcept {
  return (size + digest_chunk_bytes - 1) / digest_chunk_bytes;
}

constexpr std::size_t root_list_bytes(std::size_t chunks) noexcept {
  return chunks * tree_entry_bytes + tree_length_bytes;
}

}  // namespace gpulife::detail
