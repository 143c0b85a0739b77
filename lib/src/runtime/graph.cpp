// SPDX-License-Identifier: Apache-2.0
// Stream capture and graphs: the backend-independent handles (runtime/graph.hpp).

#include <gpulife/runtime/graph.hpp>

#include <stdexcept>
#include <utility>

#include <gpulife/error_handler.hpp>
#include <gpulife/runtime/detail/backend.hpp>
#include <gpulife/runtime/detail/enqueue_site.hpp>
#include <gpulife/runtime/device.hpp>

namespace gpulife {

// ---- StreamView's capture calls ----------------------------------------------------------------

namespace {

detail::StreamImpl& capture_stream(detail::StreamImpl* impl) {
  if (impl == nullptr) throw std::invalid_argument("stream: empty StreamView");
  return *impl;
}

}  // namespace

void StreamView::begin_capture(CaptureMode mode) const {
  capture_stream(impl_).begin_capture(mode);
}

CapturedGraph StreamView::end_capture() const {
  return CapturedGraph(capture_stream(impl_).end_capture());
}

CaptureInfo StreamView::capture_info() const { return capture_stream(impl_).capture_info(); }

// ---- CaptureModeGuard --------------------------------------------------------------------------

CaptureModeGuard::CaptureModeGuard(const Device& device, CaptureMode mode)
    : device_(&device.impl()), previous_(device_->exchange_capture_mode(mode)) {}

CaptureModeGuard::~CaptureModeGuard() {
  try {
    (void)device_->exchange_capture_mode(previous_);
  } catch (const std::exception& e) {
    report_error(std::string("CaptureModeGuard: restoring the capture mode failed: ") + e.what());
  }
}

// ---- CapturedGraph -----------------------------------------------------------------------------

CapturedGraph::CapturedGraph() noexcept = default;
CapturedGraph::CapturedGraph(std::unique_ptr<detail::GraphImpl> impl) noexcept
    : impl_(std::move(impl)) {}
CapturedGraph::CapturedGraph(CapturedGraph&&) noexcept = default;
CapturedGraph& CapturedGraph::operator=(CapturedGraph&&) noexcept = default;
CapturedGraph::~CapturedGraph() = default;

std::size_t CapturedGraph::node_count() const {
  if (!impl_) throw std::invalid_argument("graph: empty CapturedGraph");
  return impl_->node_count();
}

GraphExec CapturedGraph::instantiate() const {
  if (!impl_) throw std::invalid_argument("graph: empty CapturedGraph");
  return GraphExec(impl_->instantiate());
}

// ---- GraphExec ---------------------------------------------------------------------------------

GraphExec::GraphExec() noexcept = default;
GraphExec::GraphExec(std::unique_ptr<detail::GraphExecImpl> impl) noexcept
    : impl_(std::move(impl)) {}
GraphExec::GraphExec(GraphExec&&) noexcept = default;
GraphExec& GraphExec::operator=(GraphExec&&) noexcept = default;
GraphExec::~GraphExec() = default;

void GraphExec::launch(StreamView stream, SourceLocation where) const {
  if (!impl_) throw std::invalid_argument("graph: empty GraphExec");
  detail::StreamImpl& on = capture_stream(stream.impl());
  if (&on.device() != &impl_->device()) {
    throw std::invalid_argument("stream: belongs to " + on.device().name() + ", the graph to " +
                                impl_->device().name());
  }
  const detail::EnqueueSite site(where);
  impl_->launch(on);
}

}  // namespace gpulife
