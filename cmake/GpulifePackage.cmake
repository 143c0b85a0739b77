# SPDX-License-Identifier: Apache-2.0
# The installable CMake package: `find_package(gpulife CONFIG REQUIRED)` and
# `target_link_libraries(app PRIVATE gpulife::gpulife)`.
#
# Every package gpulife's targets link against must be found through gpulife_find_dependency,
# so that gpulifeConfig.cmake can find it again for consumers:
#
#   gpulife_find_dependency(PUBLIC  dlpack CONFIG)      # in the public headers or interface
#   gpulife_find_dependency(PRIVATE xxhash)             # only inside the library
#
# A PUBLIC dependency is always looked for by the installed config. A PRIVATE one only when
# gpulife was built as a static library: an archive carries no dependencies of its own, so CMake
# exports its private imported targets as $<LINK_ONLY:...> and the consumer's link needs them; a
# shared library has resolved them already. Find modules in cmake/ (Find<name>.cmake) are
# installed with the package, so a private dependency found through one keeps working.
# gpulife_install_package() refuses to export a target that links an imported target no
# recorded package provides, instead of installing a package that fails in the consumer.

include(CMakePackageConfigHelpers)
include(GNUInstallDirs)

set(GPULIFE_INSTALL_CMAKEDIR "${CMAKE_INSTALL_LIBDIR}/cmake/gpulife" CACHE STRING
  "Where the package's CMake files are installed, relative to the prefix")
mark_as_advanced(GPULIFE_INSTALL_CMAKEDIR)

# gpulife_find_dependency(PUBLIC|PRIVATE <package> [find_package arguments...])
# Calls find_package(<package> ... REQUIRED) here and records the call for the package config.
macro(gpulife_find_dependency visibility package)
  if(NOT "${visibility}" MATCHES "^(PUBLIC|PRIVATE)$")
    message(FATAL_ERROR "gpulife_find_dependency: the first argument is PUBLIC or PRIVATE, "
                        "not '${visibility}'")
  endif()
  get_directory_property(_gpulife_imported_before IMPORTED_TARGETS)
  find_package(${package} ${ARGN} REQUIRED)
  get_directory_property(_gpulife_imported_after IMPORTED_TARGETS)
  list(REMOVE_ITEM _gpulife_imported_after ${_gpulife_imported_before} "")
  # find_dependency repeats the call without REQUIRED/QUIET: it forwards the caller's own.
  set(_gpulife_args ${ARGN})
  list(REMOVE_ITEM _gpulife_args REQUIRED QUIET)
  list(JOIN _gpulife_args " " _gpulife_args)
  set_property(GLOBAL APPEND PROPERTY GPULIFE_DEPENDENCIES
               "${visibility}|${package}|${_gpulife_args}")
  set_property(GLOBAL APPEND PROPERTY GPULIFE_DEPENDENCY_TARGETS ${_gpulife_imported_after})
  unset(_gpulife_imported_before)
  unset(_gpulife_imported_after)
  unset(_gpulife_args)
endmacro()

# Fails configuration if `target` links an imported target that no recorded package provides.
function(_gpulife_check_exported_links target)
  get_property(known GLOBAL PROPERTY GPULIFE_DEPENDENCY_TARGETS)
  get_target_property(links ${target} LINK_LIBRARIES)
  get_target_property(interface_links ${target} INTERFACE_LINK_LIBRARIES)
  foreach(link IN LISTS links interface_links)
    # $<BUILD_INTERFACE:...> and other expressions are not exported as targets to look up;
    # $<LINK_ONLY:x> is how CMake itself writes a static library's private x.
    if(link MATCHES "^\\$<LINK_ONLY:([^$<>]+)>$")
      set(link "${CMAKE_MATCH_1}")
    elseif(link MATCHES "\\$<" OR NOT link)
      continue()
    endif()
    if(NOT TARGET "${link}")
      continue()
    endif()
    get_target_property(imported "${link}" IMPORTED)
    if(imported AND NOT "${link}" IN_LIST known)
      message(FATAL_ERROR
        "gpulife: ${target} links ${link}, but no package found with gpulife_find_dependency "
        "provides it, so the installed gpulifeConfig.cmake could not find it for consumers. "
        "Find its package with gpulife_find_dependency(PRIVATE|PUBLIC <package> ...) "
        "(cmake/GpulifePackage.cmake) instead of find_package.")
    endif()
  endforeach()
endfunction()

# gpulife_install_package(TARGETS <target>...): install rules, the export set, the config and
# version files.
function(gpulife_install_package)
  cmake_parse_arguments(PARSE_ARGV 0 arg "" "" "TARGETS")
  # As a subproject, a dependency may already have been found by the parent, so the imported
  # targets our find_package calls create cannot be told apart: check where gpulife is the
  # project.
  if(PROJECT_IS_TOP_LEVEL)
    foreach(target IN LISTS arg_TARGETS)
      _gpulife_check_exported_links(${target})
    endforeach()
  endif()

  install(TARGETS ${arg_TARGETS}
    EXPORT gpulifeTargets
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
    RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
  install(EXPORT gpulifeTargets
    NAMESPACE gpulife::
    DESTINATION ${GPULIFE_INSTALL_CMAKEDIR})

  # The find_dependency lines of the config.
  get_property(dependencies GLOBAL PROPERTY GPULIFE_DEPENDENCIES)
  list(REMOVE_DUPLICATES dependencies)
  get_target_property(library_type gpulife TYPE)
  set(lines "")
  foreach(entry IN LISTS dependencies)
    string(REPLACE "|" ";" entry "${entry}")
    list(GET entry 0 visibility)
    list(GET entry 1 package)
    list(GET entry 2 arguments)
    if(visibility STREQUAL "PRIVATE" AND NOT library_type STREQUAL "STATIC_LIBRARY")
      continue()  # a shared gpulife has resolved its private dependencies
    endif()
    string(STRIP "${package} ${arguments}" call)
    string(APPEND lines "find_dependency(${call})\n")
  endforeach()
  set(GPULIFE_CONFIG_DEPENDENCIES "${lines}")
  if(library_type STREQUAL "SHARED_LIBRARY")
    set(GPULIFE_SHARED ON)
  else()
    set(GPULIFE_SHARED OFF)
  endif()

  configure_package_config_file(
    "${PROJECT_SOURCE_DIR}/cmake/gpulifeConfig.cmake.in"
    "${PROJECT_BINARY_DIR}/gpulifeConfig.cmake"
    INSTALL_DESTINATION ${GPULIFE_INSTALL_CMAKEDIR})
  # While gpulife is 0.x a minor release may change the API (semantic versioning's rule for 0.y),
  # so find_package(gpulife 0.1) accepts 0.1.z only; from 1.0 on, the same major version.
  if(PROJECT_VERSION_MAJOR EQUAL 0)
    set(compatibility SameMinorVersion)
  else()
    set(compatibility SameMajorVersion)
  endif()
  write_basic_package_version_file(
    "${PROJECT_BINARY_DIR}/gpulifeConfigVersion.cmake"
    VERSION ${PROJECT_VERSION}
    COMPATIBILITY ${compatibility})

  file(GLOB find_modules "${PROJECT_SOURCE_DIR}/cmake/Find*.cmake")
  install(FILES
    "${PROJECT_BINARY_DIR}/gpulifeConfig.cmake"
    "${PROJECT_BINARY_DIR}/gpulifeConfigVersion.cmake"
    "${PROJECT_SOURCE_DIR}/cmake/GpulifeCudaDialect.cmake"
    ${find_modules}
    DESTINATION ${GPULIFE_INSTALL_CMAKEDIR})
endfunction()
