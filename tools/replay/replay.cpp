// SPDX-License-Identifier: Apache-2.0
// The replay engine: a model device with a virtual clock and no memory, the policies, and the
// replay loop. See replay.hpp.

#include "replay.hpp"

#include <algorithm>
#include <chrono>
#include <deque>
#include <stdexcept>
#include <utility>

#include <gpulife/errors.hpp>
#include <gpulife/memory/async_resource.hpp>
#include <gpulife/memory/pool_resource.hpp>
#include <gpulife/runtime/detail/backend.hpp>

#include "peer_models.hpp"
#include "v1_pool.hpp"

namespace gpulife::replay {
namespace {

std::size_t round_512(std::size_t bytes) { return (bytes + 511) / 512 * 512; }

}  // namespace

// The model device. Single-threaded: a replay calls it from one thread only.
class ModelDevice::Impl final : public detail::DeviceImpl {
 public:
  class ModelStream;

  class ModelEvent final : public detail::EventImpl {
   public:
    explicit ModelEvent(Impl& device) : device_(device) {}
    bool query() override { return stream_ == nullptr || device_.executed(*stream_, time_); }
    void synchronize() override {
      ++device_.counters_.synchronizations;
      if (stream_ != nullptr) stream_->synced_until = std::max(stream_->synced_until, time_);
    }
    void* native_handle() noexcept override { return this; }
    void record(ModelStream& stream) {
      stream_ = &stream;
      time_ = device_.now_;
    }
    void reset() { stream_ = nullptr; }

   private:
    Impl& device_;
    ModelStream* stream_ = nullptr;
    std::uint64_t time_ = 0;
  };

  class ModelStream final : public detail::StreamImpl {
   public:
    ModelStream(Impl& device, std::uint64_t id) : device_(device), id_(id) {}
    detail::DeviceImpl& device() noexcept override { return device_; }
    std::uint64_t id() const noexcept override { return id_; }
    void* native_handle() noexcept override { return this; }
    void copy(void*, const void*, std::size_t, CopyKind) override {}
    void memset(void*, int, std::size_t) override {}
    void host_callback(std::function<void()> fn) override { fn(); }
    void record(detail::EventImpl& event) override {
      ++device_.counters_.events_recorded;
      static_cast<ModelEvent&>(event).record(*this);
    }
    void wait(detail::EventImpl&) override { ++device_.counters_.stream_waits; }
    void synchronize() override {
      ++device_.counters_.synchronizations;
      synced_until = device_.now_;
    }
    bool query() override { return device_.executed(*this, device_.now_); }
    using StreamImpl::launch_host_kernel;
    void launch_host_kernel(std::string_view, std::span<const MemoryRange>, std::function<void()>,
                            KernelWork) override {
      throw std::logic_error("the replay's model device runs no kernels");
    }

    std::uint64_t synced_until = 0;
    // Stream-ordered frees not yet executed: (tick, bytes), oldest first.
    std::deque<std::pair<std::uint64_t, std::size_t>> pending;
    std::size_t pending_bytes = 0;

   private:
    Impl& device_;
    std::uint64_t id_;
  };

  explicit Impl(DeviceModel model) : model_(model), default_stream_(*this, 1) {}

  BackendKind kind() const noexcept override { return BackendKind::sim; }
  int ordinal() const noexcept override { return 0; }
  std::string name() const override { return "replay model device"; }
  MemoryInfo memory_info() override {
    return {model_.capacity_bytes - std::min(model_.capacity_bytes, counters_.physical_bytes),
            model_.capacity_bytes};
  }
  void synchronize() override {
    ++counters_.synchronizations;
    default_stream_.synced_until = now_;
    for (auto& s : streams_) s->synced_until = now_;
    settle();
  }
  detail::StreamImpl& default_stream() noexcept override { return default_stream_; }
  detail::StreamImpl& acquire_stream() override {
    if (!free_streams_.empty()) {
      ModelStream* s = free_streams_.back();
      free_streams_.pop_back();
      return *s;
    }
    streams_.push_back(std::make_unique<ModelStream>(*this, streams_.size() + 2));
    return *streams_.back();
  }
  void release_stream(detail::StreamImpl& stream) noexcept override {
    free_streams_.push_back(static_cast<ModelStream*>(&stream));
  }
  detail::EventImpl& acquire_event() override {
    if (!free_events_.empty()) {
      ModelEvent* e = free_events_.back();
      free_events_.pop_back();
      return *e;
    }
    events_.push_back(std::make_unique<ModelEvent>(*this));
    return *events_.back();
  }
  void release_event(detail::EventImpl& event) noexcept override {
    auto& e = static_cast<ModelEvent&>(event);
    e.reset();
    free_events_.push_back(&e);
  }

  void* allocate(std::size_t bytes) override {
    take(round_512(bytes), "cudaMalloc");
    ++counters_.allocations;
    return address(bytes);
  }
  void deallocate(void*, std::size_t bytes) noexcept override {
    synchronize();  // cudaFree waits for the device
    ++counters_.frees;
    counters_.physical_bytes -= round_512(bytes);
  }
  void* allocate_async(std::size_t bytes, detail::StreamImpl& stream) override {
    // The stream's own pending frees are reusable in stream order; others' only once executed.
    auto& s = static_cast<ModelStream&>(stream);
    settle();
    std::size_t need = round_512(bytes);
    while (need > 0 && !s.pending.empty()) {
      auto& [tick, pending] = s.pending.back();
      const std::size_t reuse = std::min(need, pending);
      pending -= reuse;
      s.pending_bytes -= reuse;
      counters_.physical_bytes -= reuse;
      need -= reuse;
      if (pending == 0) s.pending.pop_back();
      (void)tick;
    }
    const std::size_t reused = round_512(bytes) - need;
    try {
      take(need, "cudaMallocAsync");
    } catch (...) {
      s.pending.emplace_back(now_, reused);  // give the reused bytes back to their queue
      s.pending_bytes += reused;
      counters_.physical_bytes += reused;
      throw;
    }
    counters_.physical_bytes += reused;
    counters_.peak_physical_bytes = std::max(counters_.peak_physical_bytes, counters_.physical_bytes);
    ++counters_.allocations;
    return address(bytes);
  }
  void deallocate_async(void*, std::size_t bytes, detail::StreamImpl& stream) noexcept override {
    auto& s = static_cast<ModelStream&>(stream);
    ++counters_.frees;
    s.pending.emplace_back(now_, round_512(bytes));
    s.pending_bytes += round_512(bytes);
    settle();
  }
  void* allocate_pinned(std::size_t) override {
    throw std::logic_error("the replay's model device has no pinned memory");
  }
  void deallocate_pinned(void*) noexcept override {}
  bool is_pinned(const void*, std::size_t) override { return false; }
  std::shared_ptr<detail::StreamImpl> native_stream(void*) override {
    throw std::invalid_argument("stream: the replay's model device has no native streams");
  }

  std::size_t vmm_granularity() const noexcept override { return model_.granularity; }
  void* reserve_address_range(std::size_t bytes) override { return address(bytes); }
  void release_address_range(void*, std::size_t) noexcept override {}
  void map_memory(void*, std::size_t bytes) override {
    take(bytes, "cuMemMap");
    ++counters_.maps;
  }
  void unmap_memory(void*, std::size_t bytes) noexcept override {
    ++counters_.unmaps;
    counters_.physical_bytes -= bytes;
  }

  void set_now(std::uint64_t tick) {
    now_ = tick;
    settle();
  }
  [[nodiscard]] bool executed(const ModelStream& stream, std::uint64_t tick) const noexcept {
    return tick + model_.lag <= now_ || tick <= stream.synced_until;
  }
  DeviceCounters counters_;

 private:
  void* address(std::size_t bytes) {
    // Addresses are only names: never reused, never dereferenced.
    const std::uintptr_t base = next_;
    next_ += (bytes + (std::size_t{2} << 20) - 1) / (std::size_t{2} << 20) * (std::size_t{2} << 20);
    return reinterpret_cast<void*>(base);
  }
  void take(std::size_t bytes, const char* call) {
    if (bytes > model_.capacity_bytes - std::min(model_.capacity_bytes, counters_.physical_bytes)) {
      ++counters_.out_of_memory;
      throw OutOfMemoryError(std::string("out of memory: ") + call + " on the model device", bytes);
    }
    counters_.physical_bytes += bytes;
    counters_.peak_physical_bytes = std::max(counters_.peak_physical_bytes, counters_.physical_bytes);
  }
  void settle() noexcept {
    auto drain = [&](ModelStream& s) {
      while (!s.pending.empty() && executed(s, s.pending.front().first)) {
        counters_.physical_bytes -= s.pending.front().second;
        s.pending_bytes -= s.pending.front().second;
        s.pending.pop_front();
      }
    };
    drain(default_stream_);
    for (auto& s : streams_) drain(*s);
  }

  DeviceModel model_;
  std::uint64_t now_ = 0;
  std::uintptr_t next_ = std::uintptr_t{1} << 40;
  ModelStream default_stream_;
  std::vector<std::unique_ptr<ModelStream>> streams_;
  std::vector<ModelStream*> free_streams_;
  std::vector<std::unique_ptr<ModelEvent>> events_;
  std::vector<ModelEvent*> free_events_;
};

ModelDevice::ModelDevice(DeviceModel model)
    : impl_(std::make_shared<Impl>(model)), device_(impl_) {}

ModelDevice::~ModelDevice() = default;

StreamView ModelDevice::stream(std::uint32_t index) {
  while (streams_.size() <= index) streams_.emplace_back(device_);
  return streams_[index];
}

void ModelDevice::set_now(std::uint64_t tick) noexcept { impl_->set_now(tick); }

DeviceCounters ModelDevice::counters() const noexcept { return impl_->counters_; }

std::vector<std::string> policy_names() {
  return {"v2",    "v2-segments", "v2-completed",       "v1",
          "async", "pytorch",     "pytorch-expandable", "rmm"};
}

std::shared_ptr<DeviceMemoryResource> make_policy(const std::string& policy,
                                                  const Device& device) {
  auto async = std::make_shared<AsyncResource>(device, AsyncOptions{.release_threshold = {}});
  PoolOptions o;
  if (policy == "v2") return std::make_shared<PoolResource>(async, o);
  if (policy == "v2-segments") {
    o.expandable_segments = false;
    return std::make_shared<PoolResource>(async, o);
  }
  if (policy == "v2-completed") {
    o.cross_stream = CrossStreamReuse::completed;
    return std::make_shared<PoolResource>(async, o);
  }
  if (policy == "v1") return std::make_shared<V1PoolResource>(async);
  if (policy == "async") return async;
  if (policy == "pytorch") return std::make_shared<PyTorchModel>(async, false);
  if (policy == "pytorch-expandable") return std::make_shared<PyTorchModel>(async, true);
  if (policy == "rmm") return std::make_shared<RmmPoolModel>(async);
  throw std::invalid_argument("policy: unknown policy '" + policy + "'");
}

ReplayResult replay(const traces::Trace& trace, const std::string& policy,
                    const DeviceModel& model) {
  ReplayResult result;
  result.trace = trace.name;
  result.policy = policy;
  result.lag = model.lag;
  result.peak_live_bytes = trace.peak_live_bytes();
  ModelDevice device(model);
  std::vector<StreamView> streams;
  for (std::uint32_t s = 0; s < trace.streams; ++s) streams.push_back(device.stream(s));
  std::vector<void*> ptrs(trace.allocations, nullptr);
  std::chrono::nanoseconds host{0};
  DeviceCounters during;
  {
    std::shared_ptr<DeviceMemoryResource> resource = make_policy(policy, device.device());
    std::uint64_t tick = 0;
    for (const traces::TraceOp& op : trace.ops) {
      device.set_now(++tick);
      const StreamView stream = streams[op.stream];
      const auto start = std::chrono::steady_clock::now();
      if (op.kind == traces::TraceOp::Kind::allocate) {
        try {
          ptrs[op.id] = resource->allocate(op.bytes, stream);
        } catch (const OutOfMemoryError&) {
          ++result.failed_allocations;
        }
      } else if (ptrs[op.id] != nullptr) {
        if (op.after_stream == traces::no_stream) {
          resource->deallocate(ptrs[op.id], op.bytes, stream);
        } else {
          std::vector<Event> after;
          after.emplace_back(device.device());
          streams[op.after_stream].record(after.back());
          resource->deallocate_after(ptrs[op.id], op.bytes, stream, std::move(after));
        }
        ptrs[op.id] = nullptr;
      }
      host += std::chrono::steady_clock::now() - start;
    }
    result.operations = tick;
    device.set_now(tick + model.lag + 1);
    // What the trace cost, before the resource's destruction gives everything back.
    during = device.counters();
  }
  DeviceCounters c = device.counters();
  c.synchronizations = during.synchronizations;
  c.allocations = during.allocations;
  c.frees = during.frees;
  c.maps = during.maps;
  c.unmaps = during.unmaps;
  result.peak_reserved_bytes = c.peak_physical_bytes;
  result.upstream_calls = c.allocations + c.frees + c.maps + c.unmaps;
  result.synchronizations = c.synchronizations;
  result.stream_waits = c.stream_waits;
  result.events_recorded = c.events_recorded;
  result.ns_per_operation =
      result.operations == 0
          ? 0.0
          : static_cast<double>(host.count()) / static_cast<double>(result.operations);
  return result;
}

}  // namespace gpulife::replay
