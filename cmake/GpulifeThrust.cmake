# SPDX-License-Identifier: Apache-2.0
# Finds the CCCL headers (Thrust, CUB, libcu++) that the kernels use for reductions and that
# `gpulife/kernels/thrust_policy.hpp` wraps. Sets GPULIFE_HAS_THRUST and GPULIFE_CCCL_INCLUDE_DIR.
#
# nvcc puts CCCL on its own include path; host-compiled translation units need the directory,
# which CUDA 13 keeps in include/cccl and older toolkits in include. Without a toolkit at all the
# kernels fall back to the standard library (std::transform_reduce) and Thrust is not offered.
# GPULIFE_USE_THRUST=OFF tests that fallback on a machine that has the toolkit; a CUDA build
# always uses Thrust (the CUDA kernels are built on it).
option(GPULIFE_USE_THRUST "Host-only builds: use Thrust when the CCCL headers are found" ON)
set(GPULIFE_HAS_THRUST OFF)
if(NOT GPULIFE_USE_THRUST AND NOT GPULIFE_HAS_CUDA)
  message(STATUS "gpulife: Thrust disabled (GPULIFE_USE_THRUST=OFF); kernels reduce with the "
                 "standard library")
  return()
endif()

# Thrust's host algorithms bind references through null system pointers (thrust::reference,
# select_system), which UBSan reports in every sort; a sanitized build is host-only anyway, so it
# tests the standard-library fallback instead.
if("undefined" IN_LIST GPULIFE_SANITIZER)
  message(STATUS "gpulife: UndefinedBehaviorSanitizer build: Thrust not used (its host headers "
                 "trip UBSan's null-reference check); kernels reduce with the standard library")
  return()
endif()

if(NOT CUDAToolkit_FOUND)
  find_package(CUDAToolkit QUIET)
endif()
set(gpulife_cccl_hints)
foreach(dir IN LISTS CUDAToolkit_INCLUDE_DIRS)
  list(APPEND gpulife_cccl_hints "${dir}/cccl" "${dir}")
endforeach()
find_path(GPULIFE_CCCL_INCLUDE_DIR thrust/version.h
  HINTS ${gpulife_cccl_hints} ENV CUDA_HOME
  PATH_SUFFIXES include/cccl include
  PATHS /usr/local/cuda/include/cccl
  DOC "Directory holding thrust/, cub/ and cuda/ (CCCL)")
unset(gpulife_cccl_hints)

if(GPULIFE_CCCL_INCLUDE_DIR)
  set(GPULIFE_HAS_THRUST ON)
  message(STATUS "gpulife: Thrust from ${GPULIFE_CCCL_INCLUDE_DIR}")
elseif(GPULIFE_HAS_CUDA)
  message(FATAL_ERROR "gpulife: CUDA ${CUDAToolkit_VERSION} was found but not its Thrust headers; "
                      "set GPULIFE_CCCL_INCLUDE_DIR")
else()
  message(STATUS "gpulife: no Thrust headers found; kernels reduce with the standard library")
endif()
