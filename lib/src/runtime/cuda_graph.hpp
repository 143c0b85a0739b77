// SPDX-License-Identifier: Apache-2.0
#pragma once

// Stream capture and graphs on the CUDA backend (cuda_graph.cpp): cudaStreamBeginCapture,
// cudaStreamEndCapture, cudaStreamGetCaptureInfo, cudaThreadExchangeStreamCaptureMode,
// cudaGraphInstantiate, cudaGraphLaunch. The caller makes the stream's device current. Not run in
// this repository's CI (no GPU): compiled and linked whenever the CUDA backend is.

#include <cuda_runtime_api.h>

#include <memory>
#include <string>

#include <gpulife/runtime/detail/backend.hpp>

namespace gpulife::detail::cuda_graph {

void begin_capture(cudaStream_t stream, CaptureMode mode, const std::string& what);
std::unique_ptr<GraphImpl> end_capture(DeviceImpl& device, cudaStream_t stream,
                                       const std::string& what);
CaptureInfo capture_info(cudaStream_t stream, const std::string& what);
CaptureMode exchange_mode(CaptureMode mode);

}  // namespace gpulife::detail::cuda_graph
