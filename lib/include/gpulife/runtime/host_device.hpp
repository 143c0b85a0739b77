// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief Annotation for kernel bodies that run on the device (nvcc) and on the simulated device.
///
/// A macro because `__host__ __device__` are keywords of the CUDA dialect that no function or
/// template can supply; everything else in gpulife avoids macros.

#if defined(__CUDACC__)
#define GPULIFE_HOST_DEVICE __host__ __device__
#else
#define GPULIFE_HOST_DEVICE
#endif
