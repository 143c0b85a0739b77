// SPDX-License-Identifier: Apache-2.0
// Capture scopes and graphs of tensor work (tensor/graph_capture.hpp).

#include <gpulife/tensor/graph_capture.hpp>

#include <mutex>
#include <string>
#include <stdexcept>
#include <utility>

#include <gpulife/error_handler.hpp>
#include <gpulife/runtime/device.hpp>
#include <gpulife/runtime/event.hpp>
#include <gpulife/runtime/graph.hpp>

#include "tensor/graph_pool_state.hpp"
#include "tensor/tensor_arena.hpp"

namespace gpulife {

// Destroyed in reverse order: the executable first, then the kept tensors, the life token (which
// frees the pool's blocks bound to this graph for reuse) and the pool.
struct Graph::State {
  std::shared_ptr<detail::GraphPoolState> pool;
  std::shared_ptr<void> life;
  std::vector<DeviceTensor> kept;
  Event done;  // recorded after each launch
  GraphExec exec;
  std::size_t nodes = 0;
  std::mutex mutex;
  std::uint64_t launches = 0;
  std::string name;  // "capture <id>", in timeline events
};

Graph::Graph() noexcept = default;
Graph::Graph(std::unique_ptr<State> state) noexcept : state_(std::move(state)) {}
Graph::Graph(Graph&& other) noexcept = default;

Graph& Graph::operator=(Graph&& other) noexcept {
  if (this != &other) {
    Graph dying(std::move(*this));
    state_ = std::move(other.state_);
  }
  return *this;
}

Graph::~Graph() {
  if (!state_) return;
  if (state_->launches > 0) {
    // Launches still queued read the pool's memory and the kept tensors.
    try {
      state_->done.synchronize();
    } catch (const std::exception& e) {
      report_error(std::string("Graph: waiting for the last launch failed: ") + e.what());
    }
  }
}

void Graph::launch(StreamView stream, SourceLocation where) const {
  if (!state_) throw std::invalid_argument("graph: empty Graph");
  std::scoped_lock lock(state_->mutex);
  state_->exec.launch(stream, where);
  stream.record(state_->done, where);
  ++state_->launches;
  if (detail::TensorObserver* observer = state_->pool->arena().observer()) {
    observer->on_event(LifetimeEvent::graph_launch, 0, 0, state_->name, 0);
  }
}

std::size_t Graph::node_count() const noexcept { return state_ ? state_->nodes : 0; }

std::uint64_t Graph::launches() const noexcept {
  if (!state_) return 0;
  std::scoped_lock lock(state_->mutex);
  return state_->launches;
}

GraphPool Graph::pool() const {
  if (!state_) throw std::invalid_argument("graph: empty Graph");
  return GraphPool(state_->pool);
}

// ---- CaptureScope ------------------------------------------------------------------------------

CaptureScope::CaptureScope(detail::TensorArena& arena, StreamView stream, GraphPool pool,
                           CaptureMode mode)
    : stream_(stream), pool_(std::move(pool)) {
  if (!pool_.valid()) throw std::invalid_argument("pool: empty GraphPool");
  if (&pool_.state()->arena() != &arena) {
    throw std::invalid_argument("pool: made by another context");
  }
  stream_.begin_capture(mode);
  try {
    id_ = stream_.capture_info().id;
    life_ = std::make_shared<int>(0);
    arena.begin_graph_capture(id_, pool_.state(), life_);
  } catch (...) {
    try {
      (void)stream_.end_capture();
    } catch (...) {
      // the capture is over either way
    }
    throw;
  }
  arena.ref();
  arena_ = &arena;
}

CaptureScope::CaptureScope(CaptureScope&& other) noexcept
    : arena_(std::exchange(other.arena_, nullptr)),
      stream_(other.stream_),
      pool_(std::move(other.pool_)),
      id_(other.id_),
      life_(std::move(other.life_)),
      kept_(std::move(other.kept_)) {}

CaptureScope::~CaptureScope() {
  if (arena_ == nullptr) return;
  try {
    (void)stream_.end_capture();  // discarded
  } catch (...) {
    // an invalidated capture fails to end; it is over all the same
  }
  close();
}

void CaptureScope::close() noexcept {
  for (detail::TensorImpl* impl : arena_->end_graph_capture(id_)) {
    try {
      kept_.push_back(detail::TensorAccess::adopt(impl));
    } catch (...) {
      detail::drop_strong(impl);  // out of host memory: the graph cannot keep it
    }
  }
  arena_->unref();
  arena_ = nullptr;
}

Graph CaptureScope::end() {
  if (arena_ == nullptr) throw std::logic_error("capture scope: already ended");
  const Device device = arena_->device();
  CapturedGraph captured;
  try {
    captured = stream_.end_capture();
  } catch (...) {
    close();
    throw;
  }
  close();
  auto state = std::make_unique<Graph::State>();
  state->pool = pool_.state();
  state->life = std::move(life_);
  state->kept = std::move(kept_);
  state->nodes = captured.node_count();
  state->exec = captured.instantiate();
  state->done = Event(device);
  state->name = "capture " + std::to_string(id_);
  if (detail::TensorObserver* observer = state->pool->arena().observer()) {
    observer->on_event(LifetimeEvent::graph_capture, 0, state->pool->statistics().reserved_bytes,
                       state->name, 0);
  }
  return Graph(std::move(state));
}

}  // namespace gpulife
