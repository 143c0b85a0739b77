// SPDX-License-Identifier: Apache-2.0
#pragma once

// One kernel body launched with for_each_index from a host-compiled unit and from an
// nvcc-compiled unit (launch_odr_host.cpp, launch_odr_cuda.cu).

#include <cstddef>
#include <initializer_list>
#include <string_view>

#include <gpulife/runtime/launch.hpp>

namespace gpulife::testing {

struct OdrBody {
  int* out;
  GPULIFE_HOST_DEVICE void operator()(std::size_t i) const { out[i] = static_cast<int>(i) + 1; }
};

using OdrLauncher = void (*)(StreamView, std::size_t, const OdrBody&,
                             std::initializer_list<MemoryRange>, std::string_view, SourceLocation);

/// `for_each_index<OdrBody>` as the host-compiled unit sees it.
OdrLauncher launcher_of_host_unit();
/// `for_each_index<OdrBody>` as the nvcc-compiled unit sees it.
OdrLauncher launcher_of_cuda_unit();

}  // namespace gpulife::testing
