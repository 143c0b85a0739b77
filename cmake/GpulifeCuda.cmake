# SPDX-License-Identifier: Apache-2.0
# Finds the CUDA toolkit when it is there and enables the CUDA language; without it gpulife
# builds host-only (simulated device). Sets GPULIFE_HAS_CUDA.
set(GPULIFE_HAS_CUDA OFF)
if(NOT GPULIFE_ENABLE_CUDA)
  if(GPULIFE_DEVICE_REQUIRED)
    message(FATAL_ERROR "gpulife: GPULIFE_DEVICE_REQUIRED is ON but GPULIFE_ENABLE_CUDA is OFF")
  endif()
  return()
endif()
if(GPULIFE_SANITIZER)
  # The sanitizer runtimes and nvcc-compiled objects do not mix well; sanitized builds test the
  # library on the simulated device, which is all host code.
  message(STATUS "gpulife: sanitizer build, CUDA backend disabled")
  return()
endif()

# nvcc is often not on PATH; the toolkit's usual home is /usr/local/cuda.
if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX})
  find_program(GPULIFE_NVCC nvcc HINTS /usr/local/cuda/bin ENV CUDA_HOME PATH_SUFFIXES bin)
  if(GPULIFE_NVCC)
    set(CMAKE_CUDA_COMPILER "${GPULIFE_NVCC}" CACHE FILEPATH "CUDA compiler")
  endif()
endif()

include(CheckLanguage)
check_language(CUDA)
if(NOT CMAKE_CUDA_COMPILER)
  if(GPULIFE_DEVICE_REQUIRED)
    # The gpu preset: a build without the CUDA backend would only fail later, in the tests.
    message(FATAL_ERROR
      "gpulife: GPULIFE_DEVICE_REQUIRED is ON (the gpu preset), but no working CUDA compiler "
      "was found: install the CUDA toolkit, or point CUDACXX (or PATH) at its nvcc")
  endif()
  message(STATUS "gpulife: no CUDA compiler found; building for the simulated device only")
  return()
endif()

if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES "${GPULIFE_CUDA_ARCHITECTURES}")
endif()
enable_language(CUDA)
# "native" builds for the GPUs that a probe program finds. CMake itself stops only at the
# generate step, with a terse message; say here what went wrong and what to do. (The probe's
# result, CMAKE_CUDA_ARCHITECTURES_NATIVE, is CMake's; it is empty when the probe found none.)
if(CMAKE_CUDA_ARCHITECTURES STREQUAL "native" AND DEFINED CMAKE_CUDA_ARCHITECTURES_NATIVE
   AND CMAKE_CUDA_ARCHITECTURES_NATIVE STREQUAL "")
  message(FATAL_ERROR
    "gpulife: CUDA architectures 'native' (the gpu preset), but CMake's probe found no GPU. "
    "Check that nvidia-smi lists one and that the driver is recent enough for CUDA "
    "${CMAKE_CUDA_COMPILER_VERSION} (the probe's output is in ${CMAKE_BINARY_DIR}/CMakeFiles/"
    "CMakeError.log), or name the architecture: -DGPULIFE_CUDA_ARCHITECTURES=90 for an H100.")
endif()
include(GpulifeCudaDialect)
gpulife_find_dependency(PUBLIC CUDAToolkit)
set(GPULIFE_HAS_CUDA ON)
message(STATUS "gpulife: CUDA ${CUDAToolkit_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES}")
