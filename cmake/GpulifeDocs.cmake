# SPDX-License-Identifier: Apache-2.0
# `cmake --build <dir> --target docs`: HTML reference of the public headers with Doxygen, when
# Doxygen is installed (apt-get install doxygen); not part of the default build. Doxygen's
# warnings (an undocumented public declaration, a @param that names no parameter) are printed
# and also kept in <build>/docs/warnings.log.
find_package(Doxygen QUIET)
if(NOT DOXYGEN_FOUND)
  message(STATUS "gpulife: Doxygen not found; no docs target (apt-get install doxygen)")
  return()
endif()

set(GPULIFE_DOCS_DIR "${PROJECT_BINARY_DIR}/docs")
set(GPULIFE_DOCS_INPUT "${PROJECT_SOURCE_DIR}/lib/include ${PROJECT_SOURCE_DIR}/kernels/include \
${PROJECT_BINARY_DIR}/lib/include ${PROJECT_SOURCE_DIR}/docs/mainpage.md")
configure_file("${PROJECT_SOURCE_DIR}/docs/Doxyfile.in" "${GPULIFE_DOCS_DIR}/Doxyfile" @ONLY)
add_custom_target(docs
  COMMAND "${DOXYGEN_EXECUTABLE}" "${GPULIFE_DOCS_DIR}/Doxyfile"
  COMMAND "${CMAKE_COMMAND}" -E cat "${GPULIFE_DOCS_DIR}/warnings.log"
  WORKING_DIRECTORY "${GPULIFE_DOCS_DIR}"
  COMMENT "gpulife: API reference in ${GPULIFE_DOCS_DIR}/html/index.html"
  VERBATIM)
