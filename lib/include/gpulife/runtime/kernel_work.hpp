// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief What a kernel computes, as a hint for the simulated device's virtual time.

namespace gpulife {

/// @brief The arithmetic a kernel does, beside the memory it declares (`MemoryRange`).
///
/// Only the simulated device's virtual time reads it (`SimOptions::profile`): a kernel then
/// takes the longer of its declared bytes over the profile's `memory_gbps` and `flops` over its
/// `compute_gflops` (a roofline), and at least the profile's `kernel_min_us`. Without a hint a
/// kernel is costed by its bytes alone, which underestimates a compute-bound kernel. CUDA and the
/// sim's checks ignore it.
struct KernelWork {
  /// Floating-point operations of the whole launch (a multiply-add counts as two); 0: none said.
  /// Must be finite and not negative.
  double flops = 0;
};

}  // namespace gpulife
