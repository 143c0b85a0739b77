# SPDX-License-Identifier: Apache-2.0
# cmake -DLIB=<source>/lib -P check_layers.cmake
# A lower layer never includes a higher one (DESIGN.md, STYLE.md). The layers, bottom to top:
#   runtime, memory, tensor, weak, cache, debug, context, interop
# A file's layer is its directory under lib/include/gpulife/ or lib/src/ (context.hpp and
# context/ are the context's); an include names a layer the same way ("gpulife/debug/x.hpp",
# "debug/x.hpp", "gpulife/context.hpp"). The rest (errors, source_location, detail/, ...) is
# beneath every layer.
cmake_minimum_required(VERSION 3.25)
set(layers runtime memory tensor weak cache debug context interop)

# Sets <out> to the layer index of a path relative to include/gpulife or src, or -1.
function(layer_of relative out)
  if(relative MATCHES "^context(\\.hpp|\\.cpp|/)")
    list(FIND layers context index)
  elseif(relative MATCHES "^([a-z_]+)/")
    list(FIND layers "${CMAKE_MATCH_1}" index)
  else()
    set(index -1)
  endif()
  set(${out} ${index} PARENT_SCOPE)
endfunction()

set(violations "")
set(checked 0)
foreach(root "${LIB}/include/gpulife" "${LIB}/src")
  file(GLOB_RECURSE files RELATIVE "${root}" "${root}/*.hpp" "${root}/*.cpp")
  foreach(file IN LISTS files)
    layer_of("${file}" mine)
    if(mine EQUAL -1)
      continue()
    endif()
    math(EXPR checked "${checked} + 1")
    file(STRINGS "${root}/${file}" includes REGEX "^[ \t]*#[ \t]*include[ \t]*[<\"]")
    foreach(line IN LISTS includes)
      if(NOT line MATCHES "include[ \t]*[<\"]([^>\"]+)[>\"]")
        continue()
      endif()
      set(name "${CMAKE_MATCH_1}")
      string(REGEX REPLACE "^gpulife/" "" included "${name}")
      layer_of("${included}" theirs)
      if(theirs GREATER mine)
        list(GET layers ${mine} my_name)
        list(GET layers ${theirs} their_name)
        string(APPEND violations
               "  ${root}/${file} (${my_name}) includes ${name} (${their_name})\n")
      endif()
    endforeach()
  endforeach()
endforeach()
if(checked LESS 20)
  message(FATAL_ERROR "layering: only ${checked} files found under ${LIB}: is LIB right?")
endif()
if(violations)
  message(FATAL_ERROR "layering: a lower layer includes a higher one:\n${violations}")
endif()
message(STATUS "layering: ${checked} files, no lower layer includes a higher one")
