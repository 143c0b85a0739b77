// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the input is a sequence of decisions (tools/workload's ByteChoices) that
// picks the faults, then API calls on the simulated device (tensors, views, finalizers, weak
// references, the tensor cache under every retention, streams, bad input) interleaved with full
// checks of the workload's model: no leak, no double free or use after free, finalizers exactly
// once, right bytes, typed exceptions only. A violated invariant aborts with its message, which
// libFuzzer reports as a crash and saves the input.
//
//   build/fuzz/tests/fuzz/gpulife_fuzz_api -max_total_time=600 corpus-dir tests/fuzz/corpus

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>

#include "workload.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace gpulife::workload;
  ByteChoices choices(std::span<const std::uint8_t>(data, size));
  Config config;
  config.actors = 1;
  config.streams = 2;
  config.seed = choices.below(1U << 16);
  // The first decisions choose the faults: none, rare, frequent, or every nth call.
  constexpr double probabilities[] = {0.0, 0.01, 0.05, 0.25};
  config.device_faults.probability = probabilities[choices.below(4)];
  config.device_faults.every_nth = choices.chance(25) ? 2 + choices.below(16) : 0;
  config.pool_faults.probability = probabilities[choices.below(4)];
  config.pool_faults.every_nth = choices.chance(25) ? 2 + choices.below(8) : 0;
  try {
    Workload workload(config);
    workload.drive(choices, 400);
    workload.finish();
  } catch (const InvariantViolation& e) {
    std::fprintf(stderr, "gpulife_fuzz_api: invariant violated: %s\n", e.what());
    std::fflush(stderr);
    std::abort();
  }
  return 0;
}
