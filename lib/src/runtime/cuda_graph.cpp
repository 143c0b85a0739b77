// SPDX-License-Identifier: Apache-2.0
// Stream capture and graphs on the CUDA backend; see cuda_graph.hpp.

#include "runtime/cuda_graph.hpp"

#include <gpulife/error_handler.hpp>
#include <gpulife/errors.hpp>
#include <gpulife/runtime/device_guard.hpp>

namespace gpulife::detail::cuda_graph {
namespace {

void check(cudaError_t err, const char* call, const std::string& doing) {
  if (err == cudaSuccess) return;
  // The runtime also keeps it as the thread's last error: clear it there if it is ours.
  if (cudaPeekAtLastError() == err) (void)cudaGetLastError();
  throw_cuda_error(static_cast<int>(err), cudaGetErrorName(err), call, doing);
}

cudaStreamCaptureMode to_cuda(CaptureMode mode) {
  switch (mode) {
    case CaptureMode::global:
      return cudaStreamCaptureModeGlobal;
    case CaptureMode::per_thread:
      return cudaStreamCaptureModeThreadLocal;
    case CaptureMode::relaxed:
      return cudaStreamCaptureModeRelaxed;
  }
  throw std::invalid_argument("mode: not a CaptureMode (" +
                              std::to_string(static_cast<int>(mode)) + ")");
}

CaptureMode from_cuda(cudaStreamCaptureMode mode) noexcept {
  switch (mode) {
    case cudaStreamCaptureModeThreadLocal:
      return CaptureMode::per_thread;
    case cudaStreamCaptureModeRelaxed:
      return CaptureMode::relaxed;
    default:
      return CaptureMode::global;
  }
}

class CudaGraphExec final : public GraphExecImpl {
 public:
  CudaGraphExec(DeviceImpl& device, cudaGraphExec_t exec) noexcept
      : device_(device), exec_(exec) {}
  ~CudaGraphExec() override {
    const cudaError_t err = cudaGraphExecDestroy(exec_);
    if (err != cudaSuccess) {
      if (cudaPeekAtLastError() == err) (void)cudaGetLastError();
      report_error(std::string("cudaGraphExecDestroy failed: ") + cudaGetErrorName(err));
    }
  }
  DeviceImpl& device() noexcept override { return device_; }
  void launch(StreamImpl& stream) override {
    const DeviceGuard current(device_);
    check(cudaGraphLaunch(exec_, static_cast<cudaStream_t>(stream.native_handle())),
          "cudaGraphLaunch", "launching a graph on stream " + std::to_string(stream.id()));
  }

 private:
  DeviceImpl& device_;
  cudaGraphExec_t exec_;
};

class CudaGraph final : public GraphImpl {
 public:
  CudaGraph(DeviceImpl& device, cudaGraph_t graph) noexcept : device_(device), graph_(graph) {}
  ~CudaGraph() override {
    const cudaError_t err = cudaGraphDestroy(graph_);
    if (err != cudaSuccess) {
      if (cudaPeekAtLastError() == err) (void)cudaGetLastError();
      report_error(std::string("cudaGraphDestroy failed: ") + cudaGetErrorName(err));
    }
  }
  std::size_t node_count() const override {
    std::size_t count = 0;
    check(cudaGraphGetNodes(graph_, nullptr, &count), "cudaGraphGetNodes",
          "counting a captured graph's nodes");
    return count;
  }
  std::unique_ptr<GraphExecImpl> instantiate() override {
    const DeviceGuard current(device_);
    cudaGraphExec_t exec = nullptr;
    check(cudaGraphInstantiate(&exec, graph_, 0), "cudaGraphInstantiate",
          "instantiating a captured graph");
    try {
      return std::make_unique<CudaGraphExec>(device_, exec);
    } catch (...) {
      (void)cudaGraphExecDestroy(exec);
      throw;
    }
  }

 private:
  DeviceImpl& device_;
  cudaGraph_t graph_;
};

}  // namespace

void begin_capture(cudaStream_t stream, CaptureMode mode, const std::string& what) {
  check(cudaStreamBeginCapture(stream, to_cuda(mode)), "cudaStreamBeginCapture",
        "beginning a capture on " + what);
}

std::unique_ptr<GraphImpl> end_capture(DeviceImpl& device, cudaStream_t stream,
                                       const std::string& what) {
  cudaGraph_t graph = nullptr;
  check(cudaStreamEndCapture(stream, &graph), "cudaStreamEndCapture",
        "ending the capture on " + what);
  try {
    return std::make_unique<CudaGraph>(device, graph);
  } catch (...) {
    (void)cudaGraphDestroy(graph);
    throw;
  }
}

CaptureInfo capture_info(cudaStream_t stream, const std::string& what) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  unsigned long long id = 0;
  check(cudaStreamGetCaptureInfo(stream, &status, &id), "cudaStreamGetCaptureInfo",
        "asking for the capture status of " + what);
  CaptureInfo info;
  info.id = status == cudaStreamCaptureStatusNone ? 0 : static_cast<std::uint64_t>(id);
  info.status = status == cudaStreamCaptureStatusActive        ? CaptureStatus::active
                : status == cudaStreamCaptureStatusInvalidated ? CaptureStatus::invalidated
                                                               : CaptureStatus::none;
  return info;
}

CaptureMode exchange_mode(CaptureMode mode) {
  cudaStreamCaptureMode value = to_cuda(mode);
  check(cudaThreadExchangeStreamCaptureMode(&value), "cudaThreadExchangeStreamCaptureMode",
        "setting the thread's stream capture mode");
  return from_cuda(value);
}

}  // namespace gpulife::detail::cuda_graph
