// SPDX-License-Identifier: Apache-2.0
#pragma once

// The one place that includes xxhash.h: the dependency stays private to the library.
//
// XXH3 is called through Debian's libxxhash rather than inlined (XXH_INLINE_ALL) because the
// library's code is faster than what our flags make of the header: on the build VM (AMD EPYC),
// 1 MiB in cache, 46.6 GB/s through the library (the same as its AVX dispatch entry, and as
// memcpy: the core's cache bandwidth), 20.4 GB/s inlined at -O2, 29.1 GB/s at -O3.

#include <cstddef>
#include <cstdint>

#include <xxhash.h>

#include <gpulife/cache/digest.hpp>

namespace gpulife::detail {

inline Digest128 to_digest(XXH128_hash_t hash) noexcept { return {hash.high64, hash.low64}; }

/// XXH3-128 of one chunk (or of a whole buffer of at most one chunk).
inline Digest128 xxh3_128(const std::byte* data, std::size_t size) noexcept {
  return to_digest(XXH3_128bits(data, size));
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
  XXH128_canonicalFromHash(&canonical, XXH3_128bits(data + begin, length));
  static_assert(sizeof canonical.digest == tree_entry_bytes);
  for (std::size_t i = 0; i < tree_entry_bytes; ++i)
    list[index * tree_entry_bytes + i] = canonical.digest[i];
}

/// Appends the length and hashes the root list of `chunks` chunk digests.
inline Digest128 hash_root(std::size_t size, std::size_t chunks, unsigned char* list) noexcept {
  auto length = static_cast<std::uint64_t>(size);
  unsigned char* tail = list + chunks * tree_entry_bytes;
  for (std::size_t i = 0; i < tree_length_bytes; ++i) {
    tail[i] = static_cast<unsigned char>(length & 0xff);
    length >>= 8;
  }
  return to_digest(
      XXH3_128bits_withSeed(list, chunks * tree_entry_bytes + tree_length_bytes, digest_tree_seed));
}

constexpr std::size_t chunk_count(std::size_t size) noexcept {
  return (size + digest_chunk_bytes - 1) / digest_chunk_bytes;
}

constexpr std::size_t root_list_bytes(std::size_t chunks) noexcept {
  return chunks * tree_entry_bytes + tree_length_bytes;
}

}  // namespace gpulife::detail
