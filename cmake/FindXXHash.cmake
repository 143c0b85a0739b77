# SPDX-License-Identifier: Apache-2.0
# FindXXHash: the xxHash library (Debian: libxxhash-dev).
#
# Provides the imported target XXHash::XXHash and XXHash_FOUND, XXHash_VERSION,
# XXHash_INCLUDE_DIR, XXHash_LIBRARY. pkg-config's libxxhash is used as a hint when present.
#
# XXHash_HAS_X86_DISPATCH is true when the library exports the x86 run-time dispatch entry points
# of xxh_x86dispatch.h (XXH3_128bits_dispatch, ...), which pick AVX2 or AVX-512 code for the CPU;
# Debian's libxxhash does on x86-64. Its plain XXH3 entry points are baseline (SSE2) code.

find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(PC_XXHash QUIET libxxhash)
endif()

find_path(XXHash_INCLUDE_DIR NAMES xxhash.h HINTS ${PC_XXHash_INCLUDE_DIRS})
find_library(XXHash_LIBRARY NAMES xxhash HINTS ${PC_XXHash_LIBRARY_DIRS})

if(XXHash_INCLUDE_DIR AND EXISTS "${XXHash_INCLUDE_DIR}/xxhash.h")
  file(STRINGS "${XXHash_INCLUDE_DIR}/xxhash.h" _xxhash_version_lines
       REGEX "^#define XXH_VERSION_(MAJOR|MINOR|RELEASE) +[0-9]+")
  foreach(_part MAJOR MINOR RELEASE)
    string(REGEX REPLACE ".*#define XXH_VERSION_${_part} +([0-9]+).*" "\\1" _xxhash_${_part}
           "${_xxhash_version_lines}")
  endforeach()
  set(XXHash_VERSION "${_xxhash_MAJOR}.${_xxhash_MINOR}.${_xxhash_RELEASE}")
  unset(_xxhash_version_lines)
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(XXHash
  REQUIRED_VARS XXHash_LIBRARY XXHash_INCLUDE_DIR
  VERSION_VAR XXHash_VERSION)

if(XXHash_FOUND AND NOT TARGET XXHash::XXHash)
  add_library(XXHash::XXHash UNKNOWN IMPORTED)
  set_target_properties(XXHash::XXHash PROPERTIES
    IMPORTED_LOCATION "${XXHash_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${XXHash_INCLUDE_DIR}")
endif()
get_property(_xxhash_languages GLOBAL PROPERTY ENABLED_LANGUAGES)
# A consumer of an installed gpulife may find this module from a project without C++; only the
# build of gpulife needs the answer.
if(XXHash_FOUND AND "CXX" IN_LIST _xxhash_languages AND NOT DEFINED XXHash_HAS_X86_DISPATCH)
  include(CheckCXXSymbolExists)
  include(CMakePushCheckState)
  cmake_push_check_state(RESET)
  set(CMAKE_REQUIRED_INCLUDES "${XXHash_INCLUDE_DIR}")
  set(CMAKE_REQUIRED_LIBRARIES "${XXHash_LIBRARY}")
  set(CMAKE_REQUIRED_DEFINITIONS -DXXH_DISPATCH_DISABLE_REPLACE)
  set(CMAKE_REQUIRED_QUIET ON)
  check_cxx_symbol_exists(XXH3_128bits_dispatch "xxh_x86dispatch.h" XXHash_HAS_X86_DISPATCH)
  cmake_pop_check_state()
endif()
unset(_xxhash_languages)
mark_as_advanced(XXHash_INCLUDE_DIR XXHash_LIBRARY)
