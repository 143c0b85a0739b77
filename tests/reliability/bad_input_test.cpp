// SPDX-License-Identifier: Apache-2.0
// Every public entry point's invalid arguments, as a table: each row calls one entry point with
// one bad argument and must get the exception the API documents (std::invalid_argument, or
// ExpiredTensorError for a dead weak reference) whose message starts with the argument's name,
// and leave everything as it was: the context's, the cache's and the pool's statistics, the
// device's memory, no violation and no reported error.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <ostream>
#include <span>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <gpulife/cache/digest_workers.hpp>
#include <gpulife/cache/host_buffer.hpp>
#include <gpulife/context.hpp>
#include <gpulife/errors.hpp>
#include <gpulife/interop/dlpack.hpp>
#include <gpulife/kernels/checksum.hpp>
#include <gpulife/kernels/fill.hpp>
#include <gpulife/memory/async_resource.hpp>
#include <gpulife/memory/fault_adaptor.hpp>
#include <gpulife/memory/pinned_staging_pool.hpp>
#include <gpulife/memory/pool_resource.hpp>
#include <gpulife/tensor/weak_tensor.hpp>
#include <gpulife/weak/weak_key_map.hpp>
#include <gpulife/weak/weak_set.hpp>

#include "support/context_test.hpp"

namespace gpulife {
namespace {

/// A context with some of everything alive, and what the calls need.
struct World {
  Context& ctx;
  Device& device;
  Context& other_ctx;    // another device's
  Stream foreign;        // a stream of the other device
  DeviceTensor tensor;   // f32 [4, 8]
  DeviceTensor columns;  // a non-contiguous slice of it
  DeviceTensor cached;   // a cache entry under a name, u8 [256]
  WeakTensor dead;       // a weak reference to a tensor that died
  std::vector<std::byte> host = std::vector<std::byte>(128);
  std::vector<std::byte> buffer256 = std::vector<std::byte>(256);
};

using Call = std::function<void(World&)>;

enum class Expect : std::uint8_t { invalid_argument, expired };

struct BadInput {
  const char* entry_point;  // the public function called
  const char* argument;     // what is wrong; the message must start with "<argument>:"
  Call call;
  Expect expect = Expect::invalid_argument;
};

void PrintTo(const BadInput& row, std::ostream* out) {
  *out << row.entry_point << ", bad " << row.argument;
}

const std::vector<std::byte> kSixteen(16);

// clang-format off
std::vector<BadInput> table() {
  using B = std::span<const std::byte>;
  return {
    // ---- Context ----
    {"Context::empty", "stream", [](World& w) { (void)w.ctx.empty({4}, DType::f32, w.foreign); }},
    {"Context::empty", "shape", [](World& w) { (void)w.ctx.empty({std::int64_t{1} << 61, 2}, DType::f64); }},
    {"Context::upload", "host", [](World& w) { (void)w.ctx.upload(B(w.host), {4}, DType::f32); }},
    {"Context::upload", "host", [](World& w) { (void)w.ctx.upload(B(static_cast<const std::byte*>(nullptr), 16), {4}, DType::f32); }},
    {"Context::upload", "stream", [](World& w) { (void)w.ctx.upload(B(w.host), {32}, DType::f32, w.foreign); }},
    {"Context::wrap", "release", [](World& w) { (void)w.ctx.wrap(w.host.data(), {32}, {}, DType::f32, {}, {}); }},
    {"Context::wrap", "strides", [](World& w) { (void)w.ctx.wrap(w.host.data(), {4, 8}, {1}, DType::f32, {}, [](const TensorInfo&) {}); }},
    {"Context::wrap", "data", [](World& w) { (void)w.ctx.wrap(nullptr, {4}, {}, DType::f32, {}, [](const TensorInfo&) {}); }},
    {"Context::wrap", "stream", [](World& w) { (void)w.ctx.wrap(w.host.data(), {32}, {}, DType::f32, w.foreign, [](const TensorInfo&) {}); }},
    // ---- DeviceTensor ----
    {"DeviceTensor::data<T>", "T", [](World& w) { (void)w.tensor.data<std::int32_t>(); }},
    {"DeviceTensor::data", "tensor", [](World& w) { DeviceTensor copy = w.tensor; DeviceTensor moved = std::move(copy); (void)copy.data(); }},  // NOLINT(bugprone-use-after-move)
    {"DeviceTensor::bytes", "tensor", [](World&) { (void)DeviceTensor().bytes(); }},
    {"DeviceTensor::stream", "tensor", [](World&) { (void)DeviceTensor().stream(); }},
    {"DeviceTensor::view", "shape", [](World& w) { (void)w.tensor.view({31}); }},
    {"DeviceTensor::view", "tensor", [](World& w) { (void)w.columns.view({8}); }},
    {"DeviceTensor::slice", "dim", [](World& w) { (void)w.tensor.slice(2, 0, 1); }},
    {"DeviceTensor::slice", "start", [](World& w) { (void)w.tensor.slice(0, -1, 2); }},
    {"DeviceTensor::slice", "stop", [](World& w) { (void)w.tensor.slice(0, 3, 2); }},
    {"DeviceTensor::slice", "stop", [](World& w) { (void)w.tensor.slice(1, 0, 9); }},
    {"DeviceTensor::record_stream", "stream", [](World& w) { w.tensor.record_stream({}); }},
    {"DeviceTensor::record_stream", "stream", [](World& w) { w.tensor.record_stream(w.foreign); }},
    {"DeviceTensor::on_release", "fn", [](World& w) { (void)w.tensor.on_release({}); }},
    {"DeviceTensor::download", "host", [](World& w) { std::vector<std::byte> h(64); w.tensor.download(h); }},
    {"DeviceTensor::download", "stream", [](World& w) { std::vector<std::byte> h(128); w.tensor.download(h, w.foreign); }},
    {"DeviceTensor::download", "tensor", [](World& w) { std::vector<std::byte> h(w.columns.bytes()); w.columns.download(h); }},
    {"DeviceTensor::upload", "host", [](World& w) { w.tensor.upload(kSixteen); }},
    {"DeviceTensor::upload", "stream", [](World& w) { w.tensor.upload(w.host, w.foreign); }},
    {"DeviceTensor::upload", "tensor", [](World& w) { std::vector<std::byte> h(w.columns.bytes()); w.columns.upload(h); }},
    {"DeviceTensor::to_host<T>", "T", [](World& w) { (void)w.tensor.to_host<double>(); }},
    // ---- WeakTensor ----
    {"WeakTensor(tensor, on_expire)", "tensor", [](World&) { WeakTensor weak(DeviceTensor(), [](const TensorInfo&) {}); }},
    {"WeakTensor(tensor, on_expire)", "on_expire", [](World& w) { WeakTensor weak(w.tensor, {}); }},
    {"WeakTensor::get", "WeakTensor::get", [](World& w) { (void)w.dead.get(); }, Expect::expired},
    {"WeakTensor::get", "WeakTensor::get", [](World&) { (void)WeakTensor().get(); }, Expect::expired},
    // ---- TensorCache ----
    {"TensorCache::upload", "host", [](World& w) { (void)w.ctx.cache().upload(B(static_cast<const std::byte*>(nullptr), 16), {16}, DType::u8); }},
    {"TensorCache::upload", "host", [](World& w) { (void)w.ctx.cache().upload(B(w.host.data(), 0), {0}, DType::u8); }},
    {"TensorCache::upload", "shape", [](World& w) { (void)w.ctx.cache().upload(B(w.host), {128, 0}, DType::u8); }},
    {"TensorCache::upload", "host", [](World& w) { (void)w.ctx.cache().upload(B(w.host), {4}, DType::f32); }},
    {"TensorCache::upload", "stream", [](World& w) { (void)w.ctx.cache().upload(B(w.host), {32}, DType::f32, w.foreign); }},
    {"TensorCache::upload(key)", "key", [](World& w) { (void)w.ctx.cache().upload(CacheKey::content(digest(w.host), DType::u8, {128}), w.host, {32}, DType::f32); }},
    {"TensorCache::upload(key)", "key", [](World& w) { (void)w.ctx.cache().upload(CacheKey::name("fixture"), w.buffer256, {64}, DType::f32); }},
    {"TensorCache::upload(key)", "key", [](World& w) { (void)w.ctx.cache().upload(CacheKey::name("idle"), B(w.host.data(), 64), {16}, DType::f32); }},
    {"TensorCache::upload(HostBuffer)", "shape", [](World& w) { (void)w.ctx.cache().upload(HostBuffer::copy(w.host), {0}, DType::u8); }},
    {"CacheKey::name", "name", [](World&) { (void)CacheKey::name(""); }},
    {"TensorCache::get_or_create", "factory", [](World& w) { (void)w.ctx.cache().get_or_create(CacheKey::name("g"), {}); }},
    {"TensorCache::get_or_create", "factory", [](World& w) { (void)w.ctx.cache().get_or_create(CacheKey::name("g"), [] { return DeviceTensor(); }); }},
    {"TensorCache::get_or_create", "factory", [](World& w) { (void)w.ctx.cache().get_or_create(CacheKey::name("g"), [&w] { return w.other_ctx.empty({4}, DType::f32); }); }},
    {"TensorCache::get_or_create", "stream", [](World& w) { (void)w.ctx.cache().get_or_create(CacheKey::name("g"), [&w] { return w.ctx.empty({4}, DType::f32); }, w.foreign); }},
    {"TensorCache::find", "stream", [](World& w) { (void)w.ctx.cache().find(CacheKey::name("fixture"), w.foreign); }},
    // ---- memory resources ----
    {"DeviceMemoryResource::allocate", "stream", [](World& w) { (void)w.ctx.resource().allocate(256, w.foreign); }},
    {"PoolResource::PoolResource", "upstream", [](World&) { PoolResource pool(nullptr); }},
    {"FaultAdaptor::FaultAdaptor", "upstream", [](World&) { FaultAdaptor faults(nullptr); }},
    {"FaultAdaptor::FaultAdaptor", "options.probability", [](World& w) { FaultAdaptor faults(std::make_shared<AsyncResource>(w.device), {.probability = 2}); }},
    {"PinnedStagingPool::PinnedStagingPool", "buffers", [](World& w) { PinnedStagingPool staging(w.device, {.buffers = 0}); }},
    {"PinnedStagingPool::upload", "stream", [](World& w) { PinnedStagingPool staging(w.device); staging.upload(w.tensor.data(), w.host, {}); }},
    // ---- runtime ----
    {"StreamView::copy", "dst", [](World& w) { w.device.default_stream().copy(nullptr, w.host.data(), 4, CopyKind::host_to_device); }},
    {"StreamView::copy", "src", [](World& w) { w.device.default_stream().copy(w.tensor.data(), nullptr, 4, CopyKind::host_to_device); }},
    {"StreamView::memset", "dst", [](World& w) { w.device.default_stream().memset(nullptr, 0, 4); }},
    {"StreamView::host_callback", "fn", [](World& w) { w.device.default_stream().host_callback({}); }},
    {"StreamView::record", "event", [](World& w) { w.device.default_stream().record(Event()); }},
    {"StreamView::record", "event", [](World& w) { Event event(w.other_ctx.device()); w.device.default_stream().record(event); }},
    {"StreamView::wait", "event", [](World& w) { w.device.default_stream().wait(Event{}); }},
    {"StreamView::synchronize", "stream", [](World&) { StreamView().synchronize(); }},
    {"Event::query", "event", [](World&) { (void)Event().query(); }},
    {"StreamView::memset (moved-from Stream)", "stream", [](World& w) { Stream s(w.device); Stream t = std::move(s); s.view().memset(w.tensor.data(), 0, 4); }},  // NOLINT(bugprone-use-after-move)
    {"Event::synchronize (moved-from Event)", "event", [](World& w) { Event e(w.device); Event f = std::move(e); e.synchronize(); }},  // NOLINT(bugprone-use-after-move)
    {"Device::name", "device", [](World&) { (void)Device().name(); }},
    {"Device::sim", "capacity_bytes", [](World&) { (void)Device::sim({.capacity_bytes = 0}); }},
    {"Device::sim", "faults.probability", [](World&) { (void)Device::sim({.faults = {.probability = -1}}); }},
    {"Device::set_faults", "faults.probability", [](World& w) { w.device.set_faults({.probability = 1.5}); }},
    {"Shape::Shape", "shape", [](World&) { Shape shape{1, 2, 3, 4, 5, 6, 7, 8, 9}; }},
    {"Shape::Shape", "shape", [](World&) { Shape shape{4, -1}; }},
    // ---- host buffers, digests ----
    {"HostBuffer::copy", "bytes", [](World&) { (void)HostBuffer::copy(B(static_cast<const std::byte*>(nullptr), 4)); }},
    {"HostBuffer::copy_pinned", "device", [](World& w) { (void)HostBuffer::copy_pinned(Device(), w.host); }},
    {"digest", "data", [](World&) { (void)digest(nullptr, 4); }},
    {"DigestWorkers::DigestWorkers", "threads", [](World&) { DigestWorkers workers(0); }},
    // ---- weak containers ----
    {"WeakKeyMap::insert_or_assign", "key", [](World&) { WeakKeyMap<int> map; (void)map.insert_or_assign(DeviceTensor(), 1); }},
    {"WeakSet::add", "member", [](World&) { WeakSet<int> set; set.add(nullptr); }},
    // ---- kernels ----
    {"kernels::checksum", "data", [](World& w) { (void)kernels::checksum(w.device.default_stream(), nullptr, 8); }},
    {"kernels::checksum", "stream", [](World& w) { (void)kernels::checksum({}, w.tensor.data(), 8); }},
    {"kernels::fill", "data", [](World& w) { kernels::fill<float>(w.device.default_stream(), nullptr, 4, 1.0F); }},
    // ---- DLPack ----
    {"to_dlpack", "tensor", [](World&) { (void)to_dlpack(DeviceTensor()); }},
    {"to_dlpack", "consumer_stream", [](World& w) { (void)to_dlpack(w.tensor, w.foreign); }},
    {"from_dlpack", "managed", [](World& w) { (void)from_dlpack(w.ctx, static_cast<DLManagedTensor*>(nullptr)); }},
  };
}
// clang-format on

/// Everything a refused call must leave as it was.
struct Snapshot {
  ContextStatistics context;
  CacheStatistics cache;
  MemoryInfo memory;
  std::size_t violations = 0;

  static Snapshot of(Context& ctx, const Device& device) {
    device.synchronize();
    return {ctx.statistics(), ctx.cache().statistics(), device.memory_info(),
            device.violation_count()};
  }
  friend bool operator==(const Snapshot& a, const Snapshot& b) {
    const auto& x = a.context;
    const auto& y = b.context;
    const auto& r = x.resource;
    const auto& s = y.resource;
    const auto& c = a.cache;
    const auto& d = b.cache;
    return x.live_tensors == y.live_tensors && x.live_bytes == y.live_bytes &&
           x.tensors_created == y.tensors_created && x.finalizers_run == y.finalizers_run &&
           x.finalizer_errors == y.finalizer_errors && r.bytes_in_use == s.bytes_in_use &&
           r.bytes_cached == s.bytes_cached && r.allocations == s.allocations &&
           r.deallocations == s.deallocations && r.failed_allocations == s.failed_allocations &&
           r.upstream_allocations == s.upstream_allocations && c.hits == d.hits &&
           c.misses == d.misses && c.bytes_uploaded == d.bytes_uploaded &&
           c.live_entries == d.live_entries && c.live_bytes == d.live_bytes &&
           c.warm_entries == d.warm_entries && c.pinned_entries == d.pinned_entries &&
           c.evictions == d.evictions && a.memory.free_bytes == b.memory.free_bytes &&
           a.violations == b.violations;
  }
};

std::ostream& operator<<(std::ostream& out, const Snapshot& s) {
  return out << "{tensors " << s.context.live_tensors << " (" << s.context.live_bytes
             << " B), created " << s.context.tensors_created << ", pool in use "
             << s.context.resource.bytes_in_use << " cached " << s.context.resource.bytes_cached
             << " allocations " << s.context.resource.allocations << ", cache entries "
             << s.cache.live_entries << " hits " << s.cache.hits << " misses " << s.cache.misses
             << " warm " << s.cache.warm_entries << ", device free " << s.memory.free_bytes
             << ", violations " << s.violations << "}";
}

class BadInputTest : public testing::ContextTest, public ::testing::WithParamInterface<BadInput> {
 protected:
  // Seeded mode: a run is a pure function of the program, so a snapshot taken before and after
  // a refused call compares states that no worker thread is still changing.
  BadInputTest()
      : ContextTest({.schedule = SimSchedule::seeded}, {.cache = {.retention = Retention::warm}}),
        other_device_(Device::sim({.schedule = SimSchedule::seeded})),
        other_ctx_(ContextOptions{.device = other_device_}) {}
  void TearDown() override {
    world_.reset();
    ContextTest::TearDown();
  }

  World& world() {
    using B = std::span<const std::byte>;
    if (!world_) {
      world_ = std::make_unique<World>(World{ctx(),
                                             device_,
                                             other_ctx_,
                                             Stream(other_device_),
                                             {},
                                             {},
                                             {},
                                             {},
                                             std::vector<std::byte>(128),
                                             std::vector<std::byte>(256)});
      World& w = *world_;
      w.tensor = ctx().upload(std::span<const std::byte>(w.host), {4, 8}, DType::f32);
      w.columns = w.tensor.slice(1, 2, 4);
      w.cached = ctx().cache().upload(CacheKey::name("fixture"), w.buffer256, {256}, DType::u8);
      // and warm entries no one holds
      (void)ctx().cache().upload(std::span<const std::byte>(kSixteen), {16}, DType::u8);
      (void)ctx().cache().upload(CacheKey::name("idle"), B(w.host.data(), 64), {64}, DType::u8);
      w.dead = WeakTensor(ctx().empty({4}, DType::f32));
    }
    return *world_;
  }

  Device other_device_;
  Context other_ctx_;
  std::unique_ptr<World> world_;
};

TEST_P(BadInputTest, IsRefusedNamingTheArgumentAndChangesNothing) {
  const BadInput& row = GetParam();
  World& w = world();
  const Snapshot before = Snapshot::of(ctx(), device_);
  std::string message;
  bool right_type = false;
  try {
    row.call(w);
  } catch (const std::invalid_argument& e) {
    message = e.what();
    right_type = row.expect == Expect::invalid_argument;
  } catch (const ExpiredTensorError& e) {
    message = e.what();
    right_type = row.expect == Expect::expired;
  } catch (const std::exception& e) {
    message = e.what();
  }
  ASSERT_FALSE(message.empty()) << row.entry_point << " accepted a bad " << row.argument;
  EXPECT_TRUE(right_type) << row.entry_point << " threw the wrong type: " << message;
  EXPECT_EQ(message.rfind(std::string(row.argument) + ":", 0), 0U)
      << row.entry_point << ": the message does not start with '" << row.argument
      << ":': " << message;
  const Snapshot after = Snapshot::of(ctx(), device_);
  EXPECT_EQ(after, before) << row.entry_point << " changed the state";
  EXPECT_TRUE(w.tensor.defined()) << "the fixture's tensor survived";
}

INSTANTIATE_TEST_SUITE_P(Table, BadInputTest, ::testing::ValuesIn(table()),
                         [](const ::testing::TestParamInfo<BadInput>& row) {
                           std::string name = std::to_string(row.index) + "_" +
                                              row.param.entry_point + "_" + row.param.argument;
                           for (char& c : name) {
                             if (std::isalnum(static_cast<unsigned char>(c)) == 0) c = '_';
                           }
                           return name;
                         });

}  // namespace
}  // namespace gpulife
