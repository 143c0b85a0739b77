// SPDX-License-Identifier: Apache-2.0
// The simulated device's stream capture and graphs (see sim_graph.hpp for the model).

#include <algorithm>

#include <gpulife/runtime/device_guard.hpp>

#include "runtime/sim_device.hpp"

namespace gpulife::detail::sim {
namespace {

// CUDA's error codes for capture (driver_types.h).
constexpr int illegal_state = 401;
constexpr int capture_unsupported = 900;
constexpr int capture_invalidated = 901;
constexpr int capture_merge = 902;
constexpr int capture_unmatched = 903;
constexpr int capture_unjoined = 904;
constexpr int capture_isolation = 905;
constexpr int captured_event = 907;
constexpr int capture_wrong_thread = 908;

std::atomic<std::uint64_t> next_capture_id{1};
thread_local CaptureMode thread_mode = CaptureMode::global;  // cudaThreadExchangeStreamCaptureMode
thread_local int free_depth = 0;                             // inside cudaFree (FreeScope)

std::string stream_name(const SimStream& stream) { return "stream " + std::to_string(stream.id()); }

[[noreturn]] void fail_invalidated(const char* call, const SimStream& stream) {
  throw_cuda_error(capture_invalidated, "cudaErrorStreamCaptureInvalidated", call,
                   "queueing on " + stream_name(stream) +
                       ", whose capture was invalidated by an earlier invalid operation; end "
                       "the capture (it fails too) and capture again");
}

// ---- graphs ------------------------------------------------------------------------------------

class SimGraphExec final : public GraphExecImpl {
 public:
  SimGraphExec(SimDevice& device, std::shared_ptr<const std::vector<SimGraphNode>> nodes,
               std::size_t lanes, std::size_t slots)
      : device_(device), nodes_(std::move(nodes)) {
    try {
      lanes_.push_back(nullptr);  // lane 0: the launch stream
      for (std::size_t i = 1; i < lanes; ++i) {
        lanes_.push_back(static_cast<SimStream*>(&device.acquire_stream()));
        joins_.push_back(static_cast<SimEvent*>(&device.acquire_event()));
      }
      for (std::size_t i = 0; i < slots; ++i) {
        slots_.push_back(static_cast<SimEvent*>(&device.acquire_event()));
      }
      fork_ = static_cast<SimEvent*>(&device.acquire_event());
      done_ = static_cast<SimEvent*>(&device.acquire_event());
    } catch (...) {
      release();
      throw;
    }
  }
  ~SimGraphExec() override { release(); }

  DeviceImpl& device() noexcept override { return device_; }

  void launch(StreamImpl& stream) override {
    auto& origin = static_cast<SimStream&>(stream);
    device_.called_from_host_function("cudaGraphLaunch");
    if (origin.capture.active()) {
      throw_cuda_error(capture_unsupported, "cudaErrorStreamCaptureUnsupported", "cudaGraphLaunch",
                       "launching a graph into capturing " + stream_name(origin) +
                           " (a child graph node): the simulated device does not model it");
    }
    std::scoped_lock lock(mutex_);
    const DeviceGuard current(device_);  // replayed kernels need the device current
    if (launched_) origin.wait(*done_);  // after the previous launch of this executable
    if (lanes_.size() > 1) origin.record(*fork_);
    for (std::size_t lane = 1; lane < lanes_.size(); ++lane) lanes_[lane]->wait(*fork_);
    for (const SimGraphNode& node : *nodes_) {
      SimStream& on = node.lane == 0 ? origin : *lanes_[node.lane];
      switch (node.kind) {
        case SimGraphNode::Kind::op:
          node.replay(on);
          break;
        case SimGraphNode::Kind::record:
          on.record(*slots_[node.slot]);
          break;
        case SimGraphNode::Kind::wait:
          on.wait(*slots_[node.slot]);
          break;
      }
    }
    for (std::size_t lane = 1; lane < lanes_.size(); ++lane) {
      lanes_[lane]->record(*joins_[lane - 1]);
      origin.wait(*joins_[lane - 1]);
    }
    origin.record(*done_);
    launched_ = true;
  }

 private:
  void release() noexcept {
    for (SimStream* lane : lanes_) {
      if (lane != nullptr) device_.release_stream(*lane);
    }
    for (SimEvent* event : joins_) device_.release_event(*event);
    for (SimEvent* event : slots_) device_.release_event(*event);
    if (fork_ != nullptr) device_.release_event(*fork_);
    if (done_ != nullptr) device_.release_event(*done_);
    lanes_.clear(), joins_.clear(), slots_.clear();
    fork_ = done_ = nullptr;
  }

  SimDevice& device_;
  const std::shared_ptr<const std::vector<SimGraphNode>> nodes_;
  std::mutex mutex_;
  std::vector<SimStream*> lanes_;
  std::vector<SimEvent*> joins_;
  std::vector<SimEvent*> slots_;
  SimEvent* fork_ = nullptr;
  SimEvent* done_ = nullptr;
  bool launched_ = false;
};

class SimGraph final : public GraphImpl {
 public:
  SimGraph(SimDevice& device, std::vector<SimGraphNode> nodes, std::size_t lanes,
           std::size_t slots)
      : device_(device),
        nodes_(std::make_shared<const std::vector<SimGraphNode>>(std::move(nodes))),
        lanes_(lanes),
        slots_(slots) {}

  std::size_t node_count() const override { return nodes_->size(); }
  std::unique_ptr<GraphExecImpl> instantiate() override {
    device_.called_from_host_function("cudaGraphInstantiate");
    return std::make_unique<SimGraphExec>(device_, nodes_, lanes_, slots_);
  }

 private:
  SimDevice& device_;
  const std::shared_ptr<const std::vector<SimGraphNode>> nodes_;  // shared by the executables
  const std::size_t lanes_;
  const std::size_t slots_;
};

}  // namespace

// ---- SimCapture --------------------------------------------------------------------------------

SimCapture::SimCapture(std::uint64_t capture_id, CaptureMode capture_mode,
                       SimStream& origin_stream)
    : id(capture_id),
      mode(capture_mode),
      thread(std::this_thread::get_id()),
      origin(&origin_stream),
      lanes{&origin_stream},
      seen{{0}} {}

int SimCapture::lane_of(const SimStream& stream) const noexcept {
  for (std::size_t i = 0; i < lanes.size(); ++i) {
    if (lanes[i] == &stream) return static_cast<int>(i);
  }
  return -1;
}

std::uint32_t SimCapture::join(SimStream& stream) {
  lanes.push_back(&stream);
  for (auto& row : seen) row.push_back(0);
  seen.emplace_back(lanes.size(), 0);
  return static_cast<std::uint32_t>(lanes.size() - 1);
}

// ---- SimCaptures -------------------------------------------------------------------------------

SimCaptures::FreeScope::FreeScope() noexcept { ++free_depth; }
SimCaptures::FreeScope::~FreeScope() { --free_depth; }

void SimCaptures::invalidate(SimCapture& capture) noexcept {
  std::scoped_lock lock(capture.mutex);
  capture.invalidated = true;
}

CaptureMode SimCaptures::exchange_mode(CaptureMode mode) noexcept {
  return std::exchange(thread_mode, mode);
}

void SimCaptures::begin(SimStream& stream, CaptureMode mode) {
  device_.called_from_host_function("cudaStreamBeginCapture");
  if (mode != CaptureMode::global && mode != CaptureMode::per_thread &&
      mode != CaptureMode::relaxed) {
    throw std::invalid_argument("mode: not a CaptureMode (" +
                                std::to_string(static_cast<int>(mode)) + ")");
  }
  if (&stream == &device_.default_stream()) {
    throw_cuda_error(capture_unsupported, "cudaErrorStreamCaptureUnsupported",
                     "cudaStreamBeginCapture",
                     "beginning a capture on the legacy default stream, which CUDA does not "
                     "capture: use a created stream");
  }
  if (stream.capture.active()) {
    throw_cuda_error(illegal_state, "cudaErrorIllegalState", "cudaStreamBeginCapture",
                     "beginning a capture on " + stream_name(stream) + ", which captures already");
  }
  auto capture = std::make_shared<SimCapture>(next_capture_id.fetch_add(1), mode, stream);
  std::scoped_lock lock(mutex_);
  captures_.push_back(capture);
  active_.fetch_add(1, std::memory_order_acq_rel);
  stream.capture.set(std::move(capture));
}

void SimCaptures::finish(SimCapture& capture) {
  // capture.mutex held by the caller; `ended` set: no stream joins any more
  for (SimStream* lane : capture.lanes) lane->capture.set(nullptr);
}

std::unique_ptr<GraphImpl> SimCaptures::end(SimStream& stream) {
  device_.called_from_host_function("cudaStreamEndCapture");
  const std::shared_ptr<SimCapture> capture = stream.capture.get();
  if (!capture) {
    throw_cuda_error(illegal_state, "cudaErrorIllegalState", "cudaStreamEndCapture",
                     "ending a capture on " + stream_name(stream) + ", which is not capturing");
  }
  std::unique_ptr<GraphImpl> graph;
  int error = 0;
  std::string doing;
  {
    std::scoped_lock lock(capture->mutex);
    if (capture->origin != &stream) {
      throw_cuda_error(capture_unmatched, "cudaErrorStreamCaptureUnmatched",
                       "cudaStreamEndCapture",
                       "ending capture " + std::to_string(capture->id) + " on " +
                           stream_name(stream) + ", which joined it: end it on " +
                           stream_name(*capture->origin) + ", where it began");
    }
    if (capture->mode != CaptureMode::relaxed && capture->thread != std::this_thread::get_id()) {
      throw_cuda_error(capture_wrong_thread, "cudaErrorStreamCaptureWrongThread",
                       "cudaStreamEndCapture",
                       "ending capture " + std::to_string(capture->id) +
                           " on another thread than the one that began it (only a relaxed "
                           "capture may); it is still under way");
    }
    capture->ended = true;
    finish(*capture);
    if (capture->invalidated) {
      error = capture_invalidated;
      doing = "ending capture " + std::to_string(capture->id) +
              ", which an invalid operation invalidated: no graph";
    } else {
      for (std::size_t lane = 1; lane < capture->lanes.size(); ++lane) {
        if (capture->seen[0][lane] < capture->seen[lane][lane]) {
          error = capture_unjoined;
          doing = "ending capture " + std::to_string(capture->id) + ": work captured on " +
                  stream_name(*capture->lanes[lane]) +
                  " was never joined back into the origin stream (record an event there and "
                  "wait on it from " + stream_name(stream) + ")";
          break;
        }
      }
    }
    if (error == 0) {
      graph = std::make_unique<SimGraph>(device_, std::move(capture->nodes),
                                         capture->lanes.size(), capture->slots.size());
    }
  }
  {
    std::scoped_lock lock(mutex_);
    std::erase(captures_, capture);
    active_.fetch_sub(1, std::memory_order_acq_rel);
  }
  if (error == capture_invalidated) {
    throw_cuda_error(error, "cudaErrorStreamCaptureInvalidated", "cudaStreamEndCapture", doing);
  }
  if (error == capture_unjoined) {
    throw_cuda_error(error, "cudaErrorStreamCaptureUnjoined", "cudaStreamEndCapture", doing);
  }
  return graph;
}

CaptureInfo SimCaptures::info(const SimStream& stream) const {
  const std::shared_ptr<SimCapture> capture = stream.capture.get();
  if (!capture) return {};
  std::scoped_lock lock(capture->mutex);
  return {capture->invalidated ? CaptureStatus::invalidated : CaptureStatus::active, capture->id};
}

void SimCaptures::capture_op(SimCapture& capture, SimStream& stream, const char* call,
                             std::function<void(SimStream&)> replay) {
  std::scoped_lock lock(capture.mutex);
  const int lane = capture.lane_of(stream);
  if (capture.ended || lane < 0) {
    throw_cuda_error(illegal_state, "cudaErrorIllegalState", call,
                     "queueing on " + stream_name(stream) +
                         " while another thread ended its capture");
  }
  if (capture.invalidated) fail_invalidated(call, stream);
  SimGraphNode node;
  node.kind = SimGraphNode::Kind::op;
  node.lane = static_cast<std::uint32_t>(lane);
  node.replay = std::move(replay);
  capture.nodes.push_back(std::move(node));
  ++capture.seen[static_cast<std::size_t>(lane)][static_cast<std::size_t>(lane)];
}

void SimCaptures::capture_copy(SimCapture& capture, SimStream& stream, void* dst, const void* src,
                               std::size_t bytes, CopyKind kind) {
  const bool pageable = (kind == CopyKind::host_to_device && !device_.is_pinned(src, bytes)) ||
                        (kind == CopyKind::device_to_host && !device_.is_pinned(dst, bytes));
  if (pageable && bytes != 0) {
    invalidate(capture);
    throw_cuda_error(capture_unsupported, "cudaErrorStreamCaptureUnsupported", "cudaMemcpyAsync",
                     "capturing a copy " + std::string(kind == CopyKind::host_to_device
                                                           ? "from"
                                                           : "to") +
                         " pageable host memory on " + stream_name(stream) +
                         ": CUDA stages such copies synchronously, which a capture cannot "
                         "record; use pinned memory (capture " + std::to_string(capture.id) +
                         " invalidated)");
  }
  capture_op(capture, stream, "cudaMemcpyAsync",
             [=](SimStream& s) { s.copy(dst, src, bytes, kind); });
}

void SimCaptures::capture_record(const std::shared_ptr<SimCapture>& capture, SimStream& stream,
                                 SimEvent& event) {
  auto node = std::make_shared<SimEventNode>();
  node->capture = capture;
  {
    std::scoped_lock lock(capture->mutex);
    const int lane = capture->lane_of(stream);
    if (capture->ended || lane < 0) {
      throw_cuda_error(illegal_state, "cudaErrorIllegalState", "cudaEventRecord",
                       "recording on " + stream_name(stream) +
                           " while another thread ended its capture");
    }
    if (capture->invalidated) fail_invalidated("cudaEventRecord", stream);
    node->capture_slot = static_cast<std::uint32_t>(capture->slots.size());
    capture->slots.push_back(capture->seen[static_cast<std::size_t>(lane)]);
    SimGraphNode record;
    record.kind = SimGraphNode::Kind::record;
    record.lane = static_cast<std::uint32_t>(lane);
    record.slot = node->capture_slot;
    capture->nodes.push_back(std::move(record));
  }
  event.publish(std::move(node));
}

bool SimCaptures::capture_wait(SimStream& stream, SimEvent& event) {
  const std::shared_ptr<SimCapture> mine = stream.capture.get();
  const std::shared_ptr<SimEventNode> node = event.latest();
  const std::shared_ptr<SimCapture> theirs = node ? node->capture : nullptr;
  if (!mine && !theirs) return false;  // an ordinary wait
  if (mine) {
    bool invalidated = false;
    {
      std::scoped_lock lock(mine->mutex);
      invalidated = mine->invalidated;
    }
    if (invalidated) fail_invalidated("cudaStreamWaitEvent", stream);
  }
  if (!theirs) {
    if (!node) return true;  // never recorded: no dependency, as live
    invalidate(*mine);
    throw_cuda_error(capture_isolation, "cudaErrorStreamCaptureIsolation", "cudaStreamWaitEvent",
                     "waiting from capturing " + stream_name(stream) +
                         " on an event recorded outside the capture: the dependency would cross "
                         "the capture's boundary (capture invalidated)");
  }
  if (mine && mine != theirs) {
    invalidate(*mine);
    invalidate(*theirs);
    throw_cuda_error(capture_merge, "cudaErrorStreamCaptureMerge", "cudaStreamWaitEvent",
                     "waiting from " + stream_name(stream) + " (capture " +
                         std::to_string(mine->id) + ") on an event recorded in capture " +
                         std::to_string(theirs->id) +
                         ": two captures cannot be merged (both invalidated)");
  }
  std::scoped_lock lock(theirs->mutex);
  if (theirs->ended) return true;  // the record belongs to a finished graph: nothing to wait for
  if (theirs->invalidated) fail_invalidated("cudaStreamWaitEvent", stream);
  int lane = theirs->lane_of(stream);
  if (lane < 0) {
    lane = static_cast<int>(theirs->join(stream));  // cross-stream capture: the stream joins
    stream.capture.set(theirs);
  }
  auto& row = theirs->seen[static_cast<std::size_t>(lane)];
  const auto& snapshot = theirs->slots[node->capture_slot];
  for (std::size_t k = 0; k < snapshot.size(); ++k) row[k] = std::max(row[k], snapshot[k]);
  SimGraphNode wait;
  wait.kind = SimGraphNode::Kind::wait;
  wait.lane = static_cast<std::uint32_t>(lane);
  wait.slot = node->capture_slot;
  theirs->nodes.push_back(std::move(wait));
  return true;
}

void SimCaptures::stream_sync(const SimStream& stream, const char* call) {
  if (free_depth > 0) return;  // cudaFree's own wait: for the work queued before the capture
  const std::shared_ptr<SimCapture> capture = stream.capture.get();
  if (!capture) return;
  bool was_invalidated = false;
  {
    std::scoped_lock lock(capture->mutex);
    was_invalidated = capture->invalidated;
    capture->invalidated = true;
  }
  if (was_invalidated) fail_invalidated(call, stream);
  throw_cuda_error(capture_unsupported, "cudaErrorStreamCaptureUnsupported", call,
                   "synchronising or querying capturing " + stream_name(stream) +
                       ": its captured work is not scheduled for execution (capture " +
                       std::to_string(capture->id) + " invalidated)");
}

void SimCaptures::event_host_call(const SimEventNode& node, const char* call) {
  SimCapture& capture = *node.capture;
  {
    std::scoped_lock lock(capture.mutex);
    if (capture.ended) return;  // the captured record counts as reached
    capture.invalidated = true;
  }
  throw_cuda_error(captured_event, "cudaErrorCapturedEvent", call,
                   "querying or synchronising an event recorded in capture " +
                       std::to_string(capture.id) + " (capture invalidated)");
}

void SimCaptures::device_sync(const char* call) {
  if (!any() || free_depth > 0) return;
  std::vector<std::shared_ptr<SimCapture>> under_way;
  {
    std::scoped_lock lock(mutex_);
    under_way = captures_;
  }
  if (under_way.empty()) return;
  for (const auto& capture : under_way) invalidate(*capture);
  throw_cuda_error(capture_unsupported, "cudaErrorStreamCaptureUnsupported", call,
                   "synchronising the device while " + std::to_string(under_way.size()) +
                       " stream capture(s) are under way (invalidated)");
}

std::vector<std::shared_ptr<SimCapture>> SimCaptures::forbidding_unsafe_calls() {
  std::vector<std::shared_ptr<SimCapture>> forbidding;
  if (!any() || thread_mode == CaptureMode::relaxed) return forbidding;
  const std::thread::id self = std::this_thread::get_id();
  std::scoped_lock lock(mutex_);
  for (const auto& capture : captures_) {
    const bool own = capture->thread == self && capture->mode != CaptureMode::relaxed;
    const bool global = thread_mode == CaptureMode::global && capture->mode == CaptureMode::global;
    if (own || global) forbidding.push_back(capture);
  }
  return forbidding;
}

void SimCaptures::unsafe_call(const char* call) {
  const auto forbidding = forbidding_unsafe_calls();
  if (forbidding.empty()) return;
  for (const auto& capture : forbidding) invalidate(*capture);
  throw_cuda_error(capture_unsupported, "cudaErrorStreamCaptureUnsupported", call,
                   std::string(call) + " while stream capture " +
                       std::to_string(forbidding.front()->id) +
                       " is under way: a potentially unsafe call in this thread's capture mode "
                       "(capture invalidated; a CaptureModeGuard(relaxed) permits it)");
}

bool SimCaptures::unsafe_call_reported(const char* call) noexcept {
  try {
    unsafe_call(call);
    return false;
  } catch (const std::exception& e) {
    device_.report_api_misuse(call, e.what());
    return true;
  }
}

void SimCaptures::stream_ordered_allocation(SimStream& stream, const char* call) {
  const std::shared_ptr<SimCapture> capture = stream.capture.get();
  if (!capture) return;
  invalidate(*capture);
  throw_cuda_error(capture_unsupported, "cudaErrorStreamCaptureUnsupported", call,
                   std::string(call) + " on capturing " + stream_name(stream) +
                       ": graph memory nodes are not modelled by the simulated device "
                       "(capture invalidated); allocate through a GraphPool");
}

// ---- the stream's and the device's capture calls -----------------------------------------------

void SimStream::begin_capture(CaptureMode mode) { device_.captures().begin(*this, mode); }

std::unique_ptr<GraphImpl> SimStream::end_capture() { return device_.captures().end(*this); }

CaptureInfo SimStream::capture_info() {
  device_.called_from_host_function("cudaStreamGetCaptureInfo");
  return device_.captures().info(*this);
}

CaptureMode SimDevice::exchange_capture_mode(CaptureMode mode) {
  return captures_.exchange_mode(mode);
}

}  // namespace gpulife::detail::sim
