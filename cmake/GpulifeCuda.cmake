# SPDX-License-Identifier: Apache-2.0
# Finds the CUDA toolkit when it is there and enables the CUDA language; without it gpulife
# builds host-only (simulated device). Sets GPULIFE_HAS_CUDA.
set(GPULIFE_HAS_CUDA OFF)
if(NOT GPULIFE_ENABLE_CUDA)
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
  message(STATUS "gpulife: no CUDA compiler found; building for the simulated device only")
  return()
endif()

if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES "${GPULIFE_CUDA_ARCHITECTURES}")
endif()
enable_language(CUDA)
include(GpulifeCudaDialect)
gpulife_find_dependency(PUBLIC CUDAToolkit)
set(GPULIFE_HAS_CUDA ON)
message(STATUS "gpulife: CUDA ${CUDAToolkit_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES}")
