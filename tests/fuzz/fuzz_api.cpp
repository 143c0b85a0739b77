// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the input is a sequence of decisions (tools/workload's ByteChoices) that
// picks the faults, then API calls on the simulated device (tensors, views, finalizers, weak
// references, the tensor cache under every retention, streams, bad input) interleaved with full
// checks of the workload's model: no leak, no double free or use after free, finalizers exactly
// once, right bytes, typed exceptions only. A violated invariant aborts with its message, which
// libFuzzer reports as a crash and saves the input.
//
// The device runs in seeded mode, its seed taken from the input, so that an input replays
// exactly. One workload (devices, streams, context, pool) serves every input of the process:
// each input ends by proving the state clean (nothing alive, no device memory in use:
// `Workload::reset`) or, for one input in 32, by shutting the context down (`finish`, after
// which the next input gets a new context); the next starts from there with its own seed.
//
//   build/fuzz/tests/fuzz/gpulife_fuzz_api -max_total_time=600 corpus-dir tests/fuzz/corpus

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>

#include "workload.hpp"

namespace {

// Operations one input may run: enough for the interleavings of a few tensors' lifetimes, few
// enough that an input takes about a millisecond under ASan and UBSan (the checks after the last
// operation prove the state clean whatever ran).
constexpr std::size_t max_operations = 64;

gpulife::workload::Workload& workload() {
  static gpulife::workload::Workload* const instance = [] {
    gpulife::workload::Config config;
    config.actors = 1;
    config.streams = 2;
    config.schedule = gpulife::SimSchedule::seeded;
    // Leaked on purpose: destroying it at exit would run after libFuzzer's own teardown.
    return new gpulife::workload::Workload(config);
  }();
  return *instance;
}

// FNV-1a: cheap for inputs of at most a few dozen bytes, and every byte changes it.
std::uint64_t input_hash(const std::uint8_t* data, std::size_t size) {
  std::uint64_t hash = 0xcbf29ce484222325U;
  for (std::size_t i = 0; i < size; ++i) hash = (hash ^ data[i]) * 0x100000001b3U;
  return hash;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace gpulife::workload;
  ByteChoices choices(std::span<const std::uint8_t>(data, size));
  const std::uint64_t seed = choices.below(1U << 16);
  // The first decisions choose the faults: none, rare, frequent, or every nth call.
  constexpr double probabilities[] = {0.0, 0.01, 0.05, 0.25};
  Config defaults;
  gpulife::SimFaults device_faults = defaults.device_faults;
  device_faults.probability = probabilities[choices.below(4)];
  device_faults.every_nth = choices.chance(25) ? 2 + choices.below(16) : 0;
  gpulife::FaultOptions pool_faults = defaults.pool_faults;
  pool_faults.probability = probabilities[choices.below(4)];
  pool_faults.every_nth = choices.chance(25) ? 2 + choices.below(8) : 0;
  // One input in 32 ends by shutting the context down: often enough to cover shutdown many times
  // a second, rarely enough that rebuilding the context does not cost a tenth of the run. A hash
  // of the whole input decides, not a byte of it: inputs that shut down add coverage and fill
  // the corpus, and their mutants kept the byte, so that over a quarter of all inputs shut down
  // (measured: 27%); a mutant's hash is a new draw. The byte that used to decide is still read,
  // so that saved inputs (the corpus's regressions) decode to the same operations.
  const bool shutdown = input_hash(data, size) % 32 == 31;
  (void)choices.below(32);
  Workload& w = workload();
  try {
    w.restart(seed, device_faults, pool_faults);
    w.drive(choices, max_operations);
    if (shutdown) {
      w.finish();
    } else {
      w.reset();
    }
  } catch (const InvariantViolation& e) {
    std::fprintf(stderr,
                 "gpulife_fuzz_api: invariant violated (sim seed %s; the input replays it): %s\n",
                 w.device().replay_seed().c_str(), e.what());
    std::fflush(stderr);
    std::abort();
  }
  return 0;
}
