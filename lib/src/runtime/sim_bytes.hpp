// SPDX-License-Identifier: Apache-2.0
// The simulated device's own fills and scans of simulated device memory.
#pragma once

#include <cstddef>

namespace gpulife::detail::sim {

/// Sets [dst, +bytes) to `value`: the sim filling fresh memory, poisoning freed memory, or running
/// a queued memset. Under AddressSanitizer these bypass its memset check, which reads the shadow
/// of the whole range (and, for the new addresses that simulated memory keeps getting, faults
/// that shadow in page by page): the ranges are the sim's own allocations, whose bounds it
/// checked itself, and mostly mmap'd memory that ASan does not track. ThreadSanitizer still sees
/// them (its builds take the plain memset).
void fill_device_bytes(void* dst, unsigned char value, std::size_t bytes) noexcept;

/// The offset of the first byte of [ptr, +bytes) that is not `value`, or `bytes`: the sim's
/// check that freed memory still holds its poison. Unchecked by ASan, as `fill_device_bytes`.
[[nodiscard]] std::size_t first_byte_not(const void* ptr, unsigned char value,
                                         std::size_t bytes) noexcept;

}  // namespace gpulife::detail::sim
