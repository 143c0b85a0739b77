# SPDX-License-Identifier: Apache-2.0
# cmake -DBUILD_DIR=... -DSOURCE_DIR=... -DPREFIX=... [-DWITH_VIEW=1] -P install_package.cmake
# Installs the build into a fresh PREFIX and checks what a consumer gets: the public headers and
# nothing private, the libraries, a package config that names no path of this machine's build.
cmake_minimum_required(VERSION 3.25)
file(REMOVE_RECURSE "${PREFIX}")
execute_process(COMMAND "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${PREFIX}"
                COMMAND_ECHO STDOUT COMMAND_ERROR_IS_FATAL ANY)

include(GNUInstallDirs)
set(cmake_dir "${PREFIX}/${CMAKE_INSTALL_LIBDIR}/cmake/gpulife")
foreach(file
    include/gpulife/gpulife.hpp
    include/gpulife/version.hpp
    include/gpulife/interop/dlpack.hpp
    include/gpulife/runtime/detail/backend.hpp
    include/gpulife/kernels/fill.hpp
    include/gpulife/testing/leak_guard.hpp
    include/gpulife/debug/timeline_view.hpp
    ${CMAKE_INSTALL_LIBDIR}/cmake/gpulife/gpulifeTestingTargets.cmake
    ${CMAKE_INSTALL_LIBDIR}/cmake/gpulife/gpulifeConfig.cmake
    ${CMAKE_INSTALL_LIBDIR}/cmake/gpulife/gpulifeConfigVersion.cmake
    ${CMAKE_INSTALL_LIBDIR}/cmake/gpulife/gpulifeTargets.cmake
    ${CMAKE_INSTALL_LIBDIR}/cmake/gpulife/GpulifeCudaDialect.cmake)
  if(NOT EXISTS "${PREFIX}/${file}")
    message(FATAL_ERROR "package: ${file} was not installed")
  endif()
endforeach()
if(WITH_VIEW AND NOT EXISTS "${PREFIX}/${CMAKE_INSTALL_BINDIR}/gpulife_view")
  message(FATAL_ERROR "package: the timeline viewer gpulife_view was not installed")
endif()
file(GLOB libraries "${PREFIX}/${CMAKE_INSTALL_LIBDIR}/libgpulife*")
list(LENGTH libraries count)
if(count LESS 2)
  message(FATAL_ERROR "package: expected libgpulife and libgpulife_kernels, found: ${libraries}")
endif()

# Private headers stay in the source tree; templates are not headers.
file(GLOB_RECURSE installed RELATIVE "${PREFIX}/include" "${PREFIX}/include/*")
foreach(file IN LISTS installed)
  if(NOT file MATCHES "^gpulife/.*\\.hpp$")
    message(FATAL_ERROR "package: include/${file} is not a public header")
  endif()
endforeach()
file(GLOB_RECURSE private RELATIVE "${SOURCE_DIR}/lib/src" "${SOURCE_DIR}/lib/src/*.hpp")
foreach(file IN LISTS private)
  if("gpulife/${file}" IN_LIST installed)
    message(FATAL_ERROR "package: the private header lib/src/${file} was installed")
  endif()
endforeach()

# The exported interface must be relocatable and must not point into the build machine's trees.
file(GLOB package_files "${cmake_dir}/*.cmake")
foreach(file IN LISTS package_files)
  file(READ "${file}" text)
  foreach(tree "${SOURCE_DIR}" "${BUILD_DIR}")
    string(FIND "${text}" "${tree}" at)
    if(NOT at EQUAL -1)
      message(FATAL_ERROR "package: ${file} names ${tree}")
    endif()
  endforeach()
endforeach()
message(STATUS "package: installed into ${PREFIX}")
