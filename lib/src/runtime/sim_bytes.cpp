// SPDX-License-Identifier: Apache-2.0
// The sim's fills and scans of simulated device memory (see sim_bytes.hpp).

#include "runtime/sim_bytes.hpp"

#include <cstdint>
#include <cstring>
#include <cwchar>

#if defined(__SANITIZE_ADDRESS__)
#define GPULIFE_SIM_BYTES_UNCHECKED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GPULIFE_SIM_BYTES_UNCHECKED 1
#endif
#endif

namespace gpulife::detail::sim {

namespace {

#if defined(GPULIFE_SIM_BYTES_UNCHECKED)
// Under ASan the C library's wide-character wmemset and wmemcmp do the work: the same vector
// code as memset and memcmp, and not intercepted (ASan checks memset, memcmp and bcmp only).
static_assert(sizeof(wchar_t) == sizeof(std::uint32_t), "wmemset fills 4-byte words");
constexpr std::size_t unit = sizeof(wchar_t);

wchar_t splat(unsigned char value) noexcept {
  return static_cast<wchar_t>(std::uint32_t{value} * 0x01010101U);
}

void fill(unsigned char* p, unsigned char value, std::size_t bytes) noexcept {
  while (bytes > 0 && reinterpret_cast<std::uintptr_t>(p) % unit != 0) {
    *p++ = value;
    --bytes;
  }
  std::wmemset(reinterpret_cast<wchar_t*>(p), splat(value), bytes / unit);
  p += bytes / unit * unit;
  for (std::size_t i = 0; i < bytes % unit; ++i) p[i] = value;
}

/// Whether [p, +bytes) are all `value` (p aligned to `unit`, bytes a multiple of it).
bool all_equal(const unsigned char* p, const wchar_t* pattern, std::size_t bytes) noexcept {
  return std::wmemcmp(reinterpret_cast<const wchar_t*>(p), pattern, bytes / unit) == 0;
}
#else
constexpr std::size_t unit = 1;

void fill(unsigned char* p, unsigned char value, std::size_t bytes) noexcept {
  std::memset(p, value, bytes);
}

bool all_equal(const unsigned char* p, const unsigned char* pattern, std::size_t bytes) noexcept {
  return std::memcmp(p, pattern, bytes) == 0;
}
#endif

}  // namespace

void fill_device_bytes(void* dst, unsigned char value, std::size_t bytes) noexcept {
  fill(static_cast<unsigned char*>(dst), value, bytes);
}

std::size_t first_byte_not(const void* ptr, unsigned char value, std::size_t bytes) noexcept {
  const auto* p = static_cast<const unsigned char*>(ptr);
  std::size_t i = 0;
  while (i < bytes && reinterpret_cast<std::uintptr_t>(p + i) % unit != 0) {
    if (p[i] != value) return i;
    ++i;
  }
  // A page at a time against a page of the value (the C library's vector code), then byte by
  // byte from the page that differs.
  constexpr std::size_t page = 4096;
#if defined(GPULIFE_SIM_BYTES_UNCHECKED)
  wchar_t pattern[page / unit];
  std::wmemset(pattern, splat(value), page / unit);
#else
  unsigned char pattern[page];
  std::memset(pattern, value, bytes - i < page ? bytes - i : page);
#endif
  while (bytes - i >= unit) {
    const std::size_t n = (bytes - i < page ? bytes - i : page) / unit * unit;
    if (!all_equal(p + i, pattern, n)) break;
    i += n;
  }
  for (; i < bytes; ++i) {
    if (p[i] != value) return i;
  }
  return bytes;
}

}  // namespace gpulife::detail::sim
