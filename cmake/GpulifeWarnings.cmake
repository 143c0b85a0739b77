# SPDX-License-Identifier: Apache-2.0
# gpulife_warnings(target): the project's warning set for host code, and a lighter one for nvcc.
function(gpulife_warnings target)
  set(host_flags -Wall -Wextra -Wpedantic -Wconversion -Wsign-conversion -Wshadow
                 -Wnon-virtual-dtor -Wold-style-cast -Woverloaded-virtual)
  if(GPULIFE_WARNINGS_AS_ERRORS)
    list(APPEND host_flags -Werror)
  endif()
  target_compile_options(${target} PRIVATE
    "$<$<COMPILE_LANGUAGE:CXX>:${host_flags}>"
    "$<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall>")
endfunction()
