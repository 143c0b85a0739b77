# SPDX-License-Identifier: Apache-2.0
# cmake -DREADME=... -DEXAMPLE=... -P check_readme.cmake
# The README's quick start must be the code between the `--8<-- [quickstart]` marks of the
# example (less its indentation; the README may add trailing `// TODO(...)` notes).
cmake_minimum_required(VERSION 3.25)
file(READ "${EXAMPLE}" example)
string(REGEX MATCH "// --8<-- \\[quickstart\\]\n(.*)\n[ ]*// --8<-- \\[quickstart\\]" _ "${example}")
set(code "${CMAKE_MATCH_1}")
if(code STREQUAL "")
  message(FATAL_ERROR "${EXAMPLE}: no quickstart marks")
endif()
string(REGEX REPLACE "\n  " "\n" code "\n${code}")
file(READ "${README}" readme)
string(REGEX REPLACE "  // TODO\\([a-z]+\\)" "" readme "${readme}")
string(FIND "${readme}" "${code}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "README.md's quick start is not the code of ${EXAMPLE}:\n${code}")
endif()
message(STATUS "README.md shows ${EXAMPLE}")
