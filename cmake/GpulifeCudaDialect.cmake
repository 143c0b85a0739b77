# SPDX-License-Identifier: Apache-2.0
# CMake 3.25 does not know that nvcc 12+ accepts -std=c++20, so a CUDA target that inherits
# cxx_std_20 from gpulife fails to generate. Teach it the flag; newer CMake already knows it.
# Included after enable_language(CUDA), by gpulife's build and by gpulifeConfig.cmake.
if(CMAKE_CUDA_COMPILER_ID STREQUAL "NVIDIA" AND CMAKE_CUDA_COMPILER_VERSION VERSION_GREATER_EQUAL 12
   AND NOT CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
  set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
  list(APPEND CMAKE_CUDA_COMPILE_FEATURES cuda_std_20)
  set(CMAKE_CUDA20_COMPILE_FEATURES cuda_std_20)
endif()
