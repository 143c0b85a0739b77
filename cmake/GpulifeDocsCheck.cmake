# SPDX-License-Identifier: Apache-2.0
# cmake -DDOXYGEN=<doxygen> -DDOXYFILE=<the docs target's Doxyfile> -DOUT=<dir> -P GpulifeDocsCheck.cmake
# The docs.complete test: every public declaration has a Doxygen comment and every comment is
# well-formed. Runs Doxygen with the docs target's configuration (XML only, quick) and fails
# with the warnings it printed.
cmake_minimum_required(VERSION 3.25)
file(REMOVE_RECURSE "${OUT}")
file(MAKE_DIRECTORY "${OUT}")
file(WRITE "${OUT}/Doxyfile" "@INCLUDE = ${DOXYFILE}
OUTPUT_DIRECTORY = ${OUT}
GENERATE_HTML = NO
GENERATE_XML = YES
WARN_LOGFILE = ${OUT}/warnings.log
")
execute_process(COMMAND "${DOXYGEN}" "${OUT}/Doxyfile" WORKING_DIRECTORY "${OUT}"
                COMMAND_ERROR_IS_FATAL ANY)
file(READ "${OUT}/warnings.log" warnings)
if(NOT warnings STREQUAL "")
  message(FATAL_ERROR "Doxygen warnings in the public headers (document every public "
                      "declaration; see docs/Doxyfile.in):\n${warnings}")
endif()
message(STATUS "docs: every public declaration is documented")
