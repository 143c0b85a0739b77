// SPDX-License-Identifier: Apache-2.0
// Built by the host compiler: its for_each_index cannot launch on a CUDA stream.
#include "kernels/launch_odr.hpp"

namespace gpulife::testing {

OdrLauncher launcher_of_host_unit() { return &for_each_index<OdrBody>; }

}  // namespace gpulife::testing
