// SPDX-License-Identifier: Apache-2.0
// A kernel that writes through a null pointer: cudaErrorIllegalAddress, a sticky error.
#include <cuda_runtime.h>

namespace gpulife::testing {
namespace {

__global__ void write_through_null(int* p) { *p = 1; }

}  // namespace

cudaError_t launch_illegal_address(void* stream) {
  write_through_null<<<1, 1, 0, static_cast<cudaStream_t>(stream)>>>(nullptr);
  return cudaPeekAtLastError();
}

}  // namespace gpulife::testing
