# SPDX-License-Identifier: Apache-2.0
# cmake -DINPUT=<file> -DOUTPUT=<file.cpp> -DSYMBOL=<name> -P GpulifeEmbed.cmake
# Writes a C++ file defining `std::string_view gpulife::detail::<SYMBOL>()`, the bytes of INPUT
# (a text file). The text is split into raw string literals of at most 2000 bytes joined at run
# time: ISO C++ compilers need only support 4095 characters per literal (GCC's -Wpedantic says
# so), and concatenated literals would count as one.
cmake_minimum_required(VERSION 3.25)
file(READ "${INPUT}" content)
string(LENGTH "${content}" length)
set(delimiter "gpulife_embed")
string(FIND "${content}" ")${delimiter}\"" clash)
if(NOT clash EQUAL -1)
  message(FATAL_ERROR "${INPUT} contains the raw string delimiter ${delimiter}")
endif()
set(chunks "")
set(offset 0)
while(offset LESS length)
  string(SUBSTRING "${content}" ${offset} 2000 chunk)
  string(APPEND chunks "    R\"${delimiter}(${chunk})${delimiter}\",\n")
  math(EXPR offset "${offset} + 2000")
endwhile()
get_filename_component(name "${INPUT}" NAME)
file(WRITE "${OUTPUT}.tmp" "// Generated from ${name} by cmake/GpulifeEmbed.cmake; do not edit.
#include <string>
#include <string_view>

namespace gpulife::detail {

std::string_view ${SYMBOL}() {
  static const char* const parts[] = {
${chunks}  };
  static const std::string joined = [] {
    std::string text;
    for (const char* part : parts) text += part;
    return text;
  }();
  return joined;
}

}  // namespace gpulife::detail
")
# Only a change rebuilds the library.
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUTPUT}.tmp")
