# SPDX-License-Identifier: Apache-2.0
# cmake -DMODE=package|subdirectory|fetchcontent -DCONSUMER_SOURCE=... -DCONSUMER_BINARY=...
#       -DPREFIX=... -DGPULIFE_SOURCE=... -DGENERATOR=... -DCXX=... [-DFLAGS=...]
#       [-DCUDA_COMPILER=... -DCUDA_ARCHITECTURES=...]  (MODE=package: compile a .cu file too)
#       -P run_consumer.cmake
# Configures, builds and runs the consumer project on the simulated device.
cmake_minimum_required(VERSION 3.25)
file(REMOVE_RECURSE "${CONSUMER_BINARY}")
set(configure
  -S "${CONSUMER_SOURCE}" -B "${CONSUMER_BINARY}" -G "${GENERATOR}"
  "-DCMAKE_CXX_COMPILER=${CXX}"
  "-DCMAKE_CXX_FLAGS=${FLAGS}"
  "-DCMAKE_EXE_LINKER_FLAGS=${FLAGS}"
  "-DCMAKE_SHARED_LINKER_FLAGS=${FLAGS}"
  "-DGPULIFE_CONSUME=${MODE}")
if(MODE STREQUAL "package")
  # Only the test's prefix: neither a system-wide gpulife nor the user package registry.
  list(APPEND configure "-DCMAKE_PREFIX_PATH=${PREFIX}" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
  if(CUDA_COMPILER)
    list(APPEND configure -DGPULIFE_CONSUMER_CUDA=ON "-DCMAKE_CUDA_COMPILER=${CUDA_COMPILER}"
         "-DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES}")
  endif()
else()
  list(APPEND configure "-DGPULIFE_SOURCE_DIR=${GPULIFE_SOURCE}" -DGPULIFE_ENABLE_CUDA=OFF
       -DGPULIFE_WARNINGS_AS_ERRORS=ON)
  if(MODE STREQUAL "fetchcontent")
    list(APPEND configure -DBUILD_SHARED_LIBS=ON)
  endif()
endif()

execute_process(COMMAND "${CMAKE_COMMAND}" ${configure} COMMAND_ERROR_IS_FATAL ANY)
execute_process(COMMAND "${CMAKE_COMMAND}" --build "${CONSUMER_BINARY}" --parallel 2
                COMMAND_ERROR_IS_FATAL ANY)
set(ENV{GPULIFE_DEVICE} sim)
execute_process(COMMAND "${CONSUMER_BINARY}/gpulife_consumer" COMMAND_ECHO STDOUT
                COMMAND_ERROR_IS_FATAL ANY)
execute_process(COMMAND "${CONSUMER_BINARY}/gpulife_consumer_leak_guard" COMMAND_ECHO STDOUT
                COMMAND_ERROR_IS_FATAL ANY)
