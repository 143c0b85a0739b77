// SPDX-License-Identifier: Apache-2.0
// Built by nvcc: its for_each_index launches on a CUDA stream.
#include "kernels/launch_odr.hpp"

namespace gpulife::testing {

OdrLauncher launcher_of_cuda_unit() { return &for_each_index<OdrBody>; }

}  // namespace gpulife::testing
