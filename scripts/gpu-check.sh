#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The one-shot GPU check, in two steps:
#
#   scripts/gpu-check.sh prepare [--out DIR] [--arch 90] [--build DIR] [--jobs N]
#       On a machine with the build dependencies (scripts/install-deps.sh) and the CUDA toolkit,
#       no GPU needed: builds the test suites, the quickstart, the report, the check's probe and
#       figures and its DLPack shim for the architecture (default 90: H100/H200), as shared
#       libraries, strips them and collects the shared libraries they need (not the driver's)
#       into one folder of at most 64 MiB (default build/gpu-check/bundle).
#
#   DIR/gpu-check.sh run [--summary FILE] [--budget SECONDS]
#       On the GPU machine, from that folder; nothing is built there. Runs the whole test suite
#       on CUDA, compute-sanitizer (memcheck --leak-check full, racecheck, synccheck, initcheck)
#       on the CUDA kernel and runtime suites and on the pool's NVTX probe, a DLPack round trip
#       with the PyTorch found there, the report and the figures, and writes a summary (default
#       DIR/summary.txt). Within 8 minutes on one H200: every step has a time limit. Exit status
#       0 when nothing failed.
#
#   scripts/gpu-check.sh run --from-build BUILD_DIR [--out DIR]
#       The same from a build tree. Without a GPU (or with GPULIFE_DEVICE=sim) it runs what the
#       simulated device can run and skips the rest, saying why; CTest runs it that way.
set -uo pipefail

die() { echo "gpu-check: $*" >&2; exit 2; }
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# The test executables, and which of them carry the CUDA kernel and runtime suites.
test_binaries=(runtime_tests memory_tests kernel_tests tensor_tests cache_tests interop_tests
               reliability_tests debug_tests cuda_lost_tests)
sanitized_binaries=(kernel_tests runtime_tests)
# Only the tests that touch a CUDA device: the simulated device's are host code.
sanitizer_filter='*Cuda*:*cuda*:-CudaLost*:*DISABLED*'

# ---- prepare ------------------------------------------------------------------------------------

prepare() {
  local out="" arch=90 build="" jobs=2
  while [ $# -gt 0 ]; do
    case "$1" in
      --out) out="$2"; shift 2 ;;
      --arch) arch="$2"; shift 2 ;;
      --build) build="$2"; shift 2 ;;
      --jobs) jobs="$2"; shift 2 ;;
      *) die "prepare: unknown argument $1" ;;
    esac
  done
  local source
  source="$(cd "$here/.." && pwd)"
  [ -f "$source/CMakeLists.txt" ] || die "prepare runs from a gpulife checkout (scripts/gpu-check.sh)"
  out="${out:-$source/build/gpu-check/bundle}"
  build="${build:-$source/build/gpu-check/build}"
  local launcher=()
  if command -v ccache > /dev/null; then
    launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
  fi
  # Release, shared libraries (one copy of gpulife and its kernels for every binary), CUDA
  # tests required: on the GPU machine a CUDA test that skips is a failure.
  cmake -S "$source" -B "$build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
    -DGPULIFE_ENABLE_CUDA=ON -DGPULIFE_CUDA_ARCHITECTURES="$arch" -DGPULIFE_DEVICE_REQUIRED=ON \
    -DGPULIFE_TEST_PACKAGE=OFF -DGPULIFE_INSTALL=OFF -DGPULIFE_BUILD_TOOLS=ON \
    -DGPULIFE_BUILD_BENCHMARKS=ON -DGPULIFE_BUILD_EXAMPLES=ON "${launcher[@]}" \
    || die "prepare: configuring failed"
  grep -q '^CMAKE_CUDA_COMPILER:.*nvcc' "$build/CMakeCache.txt" \
    || die "prepare: no CUDA compiler found (install the CUDA toolkit, or set CUDACXX)"
  cmake --build "$build" -j "$jobs" --target "${test_binaries[@]}" cuda_exit_test \
    gpulife_quickstart gpulife_report gpulife_gpu_check gpulife_dlpack_shim \
    || die "prepare: building failed"

  rm -rf "$out"
  mkdir -p "$out/bin" "$out/lib"
  local name path
  for name in "${test_binaries[@]}" cuda_exit_test gpulife_quickstart gpulife_report \
              gpulife_gpu_check; do
    path="$(find "$build" -type f -name "$name" -perm -u+x | head -n 1)"
    [ -n "$path" ] || die "prepare: $name was not built"
    cp "$path" "$out/bin/$name"
  done
  cp "$(find "$build" -name 'libgpulife_dlpack_shim.so' | head -n 1)" "$out/lib/"
  # Every shared library the binaries need, but the C library, the dynamic loader and the
  # driver's (libcuda must be the GPU machine's own).
  local lib
  for path in "$out"/bin/* "$out"/lib/*.so; do
    ldd "$path" | awk '/=> \// { print $3 }'
  done | sort -u | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|ld-linux*|libcuda.so*|libnvidia*) ;;
      *) cp -L "$lib" "$out/lib/$(basename "$lib")" ;;
    esac
  done
  strip --strip-unneeded "$out"/bin/* "$out"/lib/* 2> /dev/null
  cp "$here/gpu-check.sh" "$out/gpu-check.sh"
  cp "$source/tools/gpucheck/dlpack_torch.py" "$out/"
  {
    echo "gpulife $(git -C "$source" describe --always --dirty 2> /dev/null || echo unknown)"
    echo "prepared $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname) for sm_$arch"
    echo "nvcc: $(grep '^CMAKE_CUDA_COMPILER:' "$build/CMakeCache.txt" | cut -d= -f2)"
  } > "$out/PREPARED"
  local bytes
  bytes="$(du -sb "$out" | cut -f1)"
  echo "gpu-check: prepared $out ($((bytes / 1048576)) MiB)"
  [ "$bytes" -le $((64 * 1048576)) ] || die "prepare: $out is larger than 64 MiB"
  echo "gpu-check: copy it to the GPU machine and run: <folder>/gpu-check.sh run"
}

# ---- run ----------------------------------------------------------------------------------------

summary=""
logs=""
failures=0
started=0

# record STATUS STEP SECONDS DETAIL
record() {
  printf '%-5s %-34s %5ss  %s\n' "$1" "$2" "$3" "$4" | tee -a "$summary"
  [ "$1" = FAIL ] && failures=$((failures + 1))
  return 0
}

# locate NAME: a binary of the bundle (bin/) or of the build tree
locate() {
  if [ -n "$from_build" ]; then
    find "$from_build" -type f -name "$1" -perm -u+x -not -path '*/CMakeFiles/*' 2> /dev/null \
      | head -n 1
  elif [ -x "$bundle/bin/$1" ]; then
    echo "$bundle/bin/$1"
  fi
}

# timed LOG SECONDS COMMAND...: runs it with a time limit, output to LOG; sets `rc` and `took`
timed() {
  local log="$1" limit="$2"
  shift 2
  local begin=$SECONDS
  timeout --kill-after=10 "$limit" "$@" > "$log" 2>&1
  rc=$?
  took=$((SECONDS - begin))
}

gtest_counts() {  # LOG -> "passed N, failed N, skipped N"
  local passed failed skipped
  passed="$(grep -Eo '^\[  PASSED  \] [0-9]+' "$1" | grep -Eo '[0-9]+$' | tail -n 1)"
  failed="$(grep -Eo '^\[  FAILED  \] [0-9]+ test' "$1" | grep -Eo '[0-9]+' | tail -n 1)"
  skipped="$(grep -Eo '^\[  SKIPPED \] [0-9]+ test' "$1" | grep -Eo '[0-9]+' | tail -n 1)"
  echo "passed ${passed:-0}, failed ${failed:-0}, skipped ${skipped:-0}"
}

run_versions() {
  local probe_bin="$1"
  {
    echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ), host $(hostname)"
    [ -f "$bundle/PREPARED" ] && sed 's/^/bundle:  /' "$bundle/PREPARED"
    if command -v nvidia-smi > /dev/null; then
      nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 \
        | sed 's/^/gpu:     /'
    else
      echo "gpu:     nvidia-smi not found"
    fi
    "$probe_bin" probe 2>&1 | sed 's/^/probe:   /'
    local sanitizer
    sanitizer="$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2> /dev/null)"
    if [ -n "$sanitizer" ]; then
      echo "sanitizer: $("$sanitizer" --version 2>&1 | tail -n 1)"
    else
      echo "sanitizer: compute-sanitizer not found"
    fi
    if command -v nvcc > /dev/null || [ -x /usr/local/cuda/bin/nvcc ]; then
      echo "toolkit: $({ command -v nvcc > /dev/null && nvcc --version || /usr/local/cuda/bin/nvcc --version; } | tail -n 1)"
    fi
  } | tee -a "$summary"
}

run_tests() {
  local name path log pids=() names=()
  for name in "${test_binaries[@]}"; do
    path="$(locate "$name")"
    if [ -z "$path" ]; then
      record FAIL "tests: $name" 0 "not found"
      continue
    fi
    log="$logs/tests.$name.log"
    ( timed "$log" 240 "$path" --gtest_brief=1; echo "$rc $took" > "$log.rc" ) &
    pids+=($!)
    names+=("$name")
  done
  local i
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}"
    name="${names[$i]}"
    log="$logs/tests.$name.log"
    read -r rc took < "$log.rc"
    if [ "$rc" -eq 0 ]; then
      record PASS "tests: $name" "$took" "$(gtest_counts "$log")"
    else
      record FAIL "tests: $name" "$took" "exit $rc; $(gtest_counts "$log"); see $log"
      grep -E '^\[  FAILED  \] [A-Za-z]' "$log" | head -n 5 | sed 's/^/        /' | tee -a "$summary"
    fi
  done
  path="$(locate cuda_exit_test)"
  if [ -n "$path" ]; then
    timed "$logs/tests.cuda_exit.log" 60 env GPULIFE_DEVICE=cuda "$path"
    if [ "$rc" -eq 0 ] && ! grep -q 'gpulife:' "$logs/tests.cuda_exit.log"; then
      record PASS "tests: exit with objects alive" "$took" "nothing reported at exit"
    else
      record FAIL "tests: exit with objects alive" "$took" \
        "exit $rc$([ "$rc" -eq 77 ] && echo ' (no CUDA device answered)'); $(grep -m1 'gpulife:' "$logs/tests.cuda_exit.log")"
    fi
  fi
}

run_sanitizers() {
  local sanitizer
  sanitizer="$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2> /dev/null)"
  if [ -z "$sanitizer" ]; then
    record SKIP "compute-sanitizer" 0 "compute-sanitizer not found on PATH or in /usr/local/cuda/bin"
    return
  fi
  local pids=() labels=() tool name path log options
  for tool in memcheck racecheck synccheck initcheck; do
    # API errors are the tests' own business (an out-of-memory they provoke, an error they leave
    # pending on purpose), and every gpulife call is checked: count the device-side findings.
    options=(--tool "$tool" --error-exitcode 9 --report-api-errors no)
    [ "$tool" = memcheck ] && options+=(--leak-check full)
    for name in "${sanitized_binaries[@]}"; do
      path="$(locate "$name")"
      [ -n "$path" ] || continue
      log="$logs/sanitizer.$tool.$name.log"
      ( timed "$log" 200 "$sanitizer" "${options[@]}" "$path" --gtest_brief=1 \
          "--gtest_filter=$sanitizer_filter"; echo "$rc $took" > "$log.rc" ) &
      pids+=($!)
      labels+=("$tool $name")
    done
  done
  local i
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}"
    read -r tool name <<< "${labels[$i]}"
    log="$logs/sanitizer.$tool.$name.log"
    read -r rc took < "$log.rc"
    local errors
    errors="$(grep -Eo 'ERROR SUMMARY: [0-9]+ error' "$log" | tail -n 1)"
    if [ "$rc" -eq 0 ]; then
      record PASS "$tool: $name" "$took" "${errors:-no summary}; $(gtest_counts "$log")"
    else
      record FAIL "$tool: $name" "$took" "exit $rc; ${errors:-no summary}; see $log"
    fi
  done
  # The pool's NVTX registration: a kernel on a released pool block must be reported.
  path="$(locate gpulife_gpu_check)"
  log="$logs/sanitizer.memcheck.nvtx_probe.log"
  timed "$log" 60 env GPULIFE_DEVICE=cuda "$sanitizer" --tool memcheck --error-exitcode 9 \
    "$path" touch-released-pool-block
  if [ "$rc" -eq 9 ]; then
    record PASS "memcheck: released pool block" "$took" \
      "reported: $(grep -Eo 'ERROR SUMMARY: [0-9]+ error' "$log" | tail -n 1)"
  else
    record FAIL "memcheck: released pool block" "$took" \
      "exit $rc: a kernel on a released pool block went unreported; see $log"
  fi
}

run_dlpack() {
  local shim
  if [ -n "$from_build" ]; then
    shim="$(find "$from_build" -name libgpulife_dlpack_shim.so | head -n 1)"
  else
    shim="$bundle/lib/libgpulife_dlpack_shim.so"
  fi
  local script="$here/dlpack_torch.py"
  [ -f "$script" ] || script="$here/../tools/gpucheck/dlpack_torch.py"
  if ! command -v python3 > /dev/null; then
    record SKIP "DLPack round trip with PyTorch" 0 "no python3 here"
    return
  fi
  timed "$logs/dlpack_torch.log" 120 env GPULIFE_DEVICE=cuda python3 "$script" "$shim"
  local last
  last="$(tail -n 2 "$logs/dlpack_torch.log" | tr '\n' ' ')"
  case "$rc" in
    0) record PASS "DLPack round trip with PyTorch" "$took" "$last" ;;
    77) record SKIP "DLPack round trip with PyTorch" "$took" "$last" ;;
    *) record FAIL "DLPack round trip with PyTorch" "$took" "exit $rc: $last; see $logs/dlpack_torch.log" ;;
  esac
}

run_report() {
  local device="$1" path
  path="$(locate gpulife_report)"
  if [ -z "$path" ]; then
    record SKIP "report" 0 "gpulife_report was not built (GPULIFE_BUILD_BENCHMARKS=OFF)"
    return
  fi
  timed "$logs/report.log" 150 env GPULIFE_DEVICE="$device" "$path" \
    "--report_dir=$out/report" --benchmark_min_time=0.05 --benchmark_repetitions=1
  if [ "$rc" -eq 0 ]; then
    record PASS "report" "$took" "$(grep -m1 -E '^leak check' "$logs/report.log")"
    sed -n '/^One inference step/,/^$/p' "$logs/report.log" | sed 's/^/        /' | tee -a "$summary"
    grep -m1 '^ran on:' "$logs/report.log" | sed 's/^/        /' | tee -a "$summary"
  else
    record FAIL "report" "$took" "exit $rc; see $logs/report.log"
  fi
}

run_figures() {
  local device="$1" path
  path="$(locate gpulife_gpu_check)"
  timed "$logs/figures.log" 90 env GPULIFE_DEVICE="$device" "$path" figures
  if [ "$rc" -eq 0 ]; then
    record PASS "figures" "$took" "$(grep -m1 '^device=' "$logs/figures.log")"
    grep -E '=' "$logs/figures.log" | grep -v '^device=' | sed 's/^/        /' | tee -a "$summary"
  else
    record FAIL "figures" "$took" "exit $rc; see $logs/figures.log"
  fi
}

run() {
  from_build=""
  out=""
  local summary_arg="" budget=480
  while [ $# -gt 0 ]; do
    case "$1" in
      --from-build) from_build="$(cd "$2" && pwd)" || die "run: no build tree $2"; shift 2 ;;
      --out) out="$2"; shift 2 ;;
      --summary) summary_arg="$2"; shift 2 ;;
      --budget) budget="$2"; shift 2 ;;
      *) die "run: unknown argument $1" ;;
    esac
  done
  bundle="$here"
  if [ -z "$from_build" ]; then
    [ -d "$bundle/bin" ] || die "run: $bundle/bin not found: run the copy in a prepared folder, or pass --from-build"
    export LD_LIBRARY_PATH="$bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
  out="${out:-${from_build:-$bundle}/gpu-check-out}"
  mkdir -p "$out"
  out="$(cd "$out" && pwd)"
  logs="$out/logs"
  rm -rf "$logs"
  mkdir -p "$logs"
  summary="${summary_arg:-$out/summary.txt}"
  : > "$summary"
  started=$SECONDS

  local probe_bin
  probe_bin="$(locate gpulife_gpu_check)"
  [ -n "$probe_bin" ] || die "run: gpulife_gpu_check not found"
  local gpu=0 reason=""
  if [ "${GPULIFE_DEVICE:-}" = sim ]; then
    reason="GPULIFE_DEVICE=sim"
  elif "$probe_bin" probe | grep -q '^cuda_available=1'; then
    gpu=1
  else
    reason="$("$probe_bin" probe | sed -n 's/^cuda_reason=//p')"
    reason="no CUDA device (${reason:-gpulife built without CUDA})"
  fi
  echo "== gpulife GPU check: $([ $gpu = 1 ] && echo "on CUDA" || echo "on the simulated device, $reason")" \
    | tee -a "$summary"
  run_versions "$probe_bin"
  echo "== steps (status, step, seconds, detail); logs in $logs" | tee -a "$summary"

  if [ $gpu = 1 ]; then
    run_tests
    run_sanitizers
    run_dlpack
    run_report cuda
    run_figures cuda
  else
    record SKIP "tests on CUDA" 0 "$reason: the CUDA variants need a GPU (ctest runs the suites on the simulated device)"
    record SKIP "compute-sanitizer" 0 "$reason: the sanitizers check CUDA kernels"
    # The same probe as memcheck's: the simulated device reports the kernel itself.
    timed "$logs/sim.released_pool_block.log" 60 env GPULIFE_DEVICE=sim "$probe_bin" touch-released-pool-block
    if [ "$rc" -eq 0 ] && grep -q 'sim violation: use after free' "$logs/sim.released_pool_block.log"; then
      record PASS "sim: released pool block" "$took" "the simulated device reports the kernel (use after free)"
    else
      record FAIL "sim: released pool block" "$took" "exit $rc, no use-after-free report; see $logs/sim.released_pool_block.log"
    fi
    record SKIP "DLPack round trip with PyTorch" 0 "$reason: PyTorch's CUDA tensors need a GPU"
    run_report sim
    run_figures sim
  fi
  local total=$((SECONDS - started))
  echo "== $failures failed; $total s in all (budget ${budget} s)" | tee -a "$summary"
  [ "$total" -le "$budget" ] || echo "gpu-check: over the time budget" | tee -a "$summary"
  echo "summary: $summary"
  [ "$failures" -eq 0 ]
}

case "${1:-}" in
  prepare) shift; prepare "$@" ;;
  run) shift; run "$@" ;;
  *) sed -n '3,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
