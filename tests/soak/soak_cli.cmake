# SPDX-License-Identifier: Apache-2.0
# cmake -DSOAK=<gpulife_soak> -DMODE=flags|run -P soak_cli.cmake
#   flags: every malformed flag value makes gpulife_soak exit with status 2, naming the flag
#   run:   a two-second run passes, and nothing it prints speaks of a leak
cmake_minimum_required(VERSION 3.25)
if(MODE STREQUAL "flags")
  foreach(arg
      --seed=abc --seed=-1 --seed=12x "--seed= 7" --seed= --seed=99999999999999999999999
      --threads=2x --threads=0 --threads=65 --threads=1.5
      --duration=5q --duration= --duration=-3 --duration=1e999 --duration=nanm
      --report=x --check-every=0 --check-every=ten
      --faults=nan --faults=0.5x --faults=2 --faults=inf)
    execute_process(COMMAND "${SOAK}" "${arg}" RESULT_VARIABLE rc OUTPUT_VARIABLE out
                    ERROR_VARIABLE err TIMEOUT 30)
    string(REGEX MATCH "^--[a-z-]+" flag "${arg}")
    if(NOT rc EQUAL 2)
      message(FATAL_ERROR "gpulife_soak ${arg}: exit status ${rc}, not 2 (a bad value must be "
                          "refused)\n${out}${err}")
    endif()
    string(FIND "${err}" "${flag}" at)
    if(at EQUAL -1)
      message(FATAL_ERROR "gpulife_soak ${arg}: the message does not name ${flag}:\n${err}")
    endif()
  endforeach()
  message(STATUS "every malformed flag was refused")
elseif(MODE STREQUAL "run")
  execute_process(COMMAND "${SOAK}" --duration=2 --threads=2 --report=1 --seed=3
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 120)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "gpulife_soak failed (${rc}):\n${out}${err}")
  endif()
  string(FIND "${out}" "gpulife_soak: passed" passed)
  if(passed EQUAL -1)
    message(FATAL_ERROR "gpulife_soak did not say it passed:\n${out}${err}")
  endif()
  if("${out}${err}" MATCHES "[0-9]+ tensors? leaked|tensors? still alive|(^|[^0-9])1 tensors")
    message(FATAL_ERROR "a passing run speaks of leaks (or counts wrong):\n${out}${err}")
  endif()
  message(STATUS "${out}")
else()
  message(FATAL_ERROR "MODE: flags or run")
endif()
