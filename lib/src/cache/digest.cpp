// SPDX-License-Identifier: Apache-2.0
#include <gpulife/cache/digest.hpp>

#include <array>
#include <memory>
#include <stdexcept>
#include <string>

#include "cache/xxh3.hpp"

namespace gpulife {
namespace {

constexpr std::size_t hex_digits = 32;

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::string Digest128::to_hex() const {
  static constexpr char digits[] = "0123456789abcdef";
  std::string text(hex_digits, '0');
  for (std::size_t i = 0; i < 16; ++i) {
    text[15 - i] = digits[(high >> (4 * i)) & 0xf];
    text[31 - i] = digits[(low >> (4 * i)) & 0xf];
  }
  return text;
}

Digest128 Digest128::from_hex(std::string_view hex) {
  if (hex.size() != hex_digits) {
    throw std::invalid_argument("hex: a digest is " + std::to_string(hex_digits) +
                                " hex digits, got " + std::to_string(hex.size()) + " characters");
  }
  Digest128 result;
  for (std::size_t i = 0; i < hex_digits; ++i) {
    const int value = hex_value(hex[i]);
    if (value < 0) {
      throw std::invalid_argument("hex: '" + std::string(hex) + "' is not a hex number (at " +
                                  std::to_string(i) + ")");
    }
    std::uint64_t& word = i < 16 ? result.high : result.low;
    word = (word << 4) | static_cast<std::uint64_t>(value);
  }
  return result;
}

Digest128 digest(std::span<const std::byte> bytes) {
  if (bytes.data() == nullptr && !bytes.empty()) {
    throw std::invalid_argument("bytes: null data with size " + std::to_string(bytes.size()));
  }
  const std::size_t size = bytes.size();
  if (size <= digest_chunk_bytes) return detail::xxh3_128(bytes.data(), size);

  const std::size_t chunks = detail::chunk_count(size);
  // 16 B per chunk: the stack holds the list for up to 256 chunks without an allocation.
  std::array<unsigned char, detail::root_list_bytes(256)> local{};
  std::unique_ptr<unsigned char[]> heap;
  unsigned char* list = local.data();
  if (detail::root_list_bytes(chunks) > local.size()) {
    heap = std::make_unique_for_overwrite<unsigned char[]>(detail::root_list_bytes(chunks));
    list = heap.get();
  }
  for (std::size_t i = 0; i < chunks; ++i) detail::hash_chunk(bytes.data(), size, i, list);
  return detail::hash_root(size, chunks, list);
}

Digest128 digest(const void* data, std::size_t size) {
  if (data == nullptr && size != 0) {
    throw std::invalid_argument("data: null pointer with size " + std::to_string(size));
  }
  return digest(std::span{static_cast<const std::byte*>(data), size});
}

}  // namespace gpulife
