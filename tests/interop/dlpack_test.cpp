// SPDX-License-Identifier: Apache-2.0
// DLPack interop: export keeps the memory alive exactly as long as the consumer holds it and
// orders the consumer's stream after the producer's work; import calls the producer's deleter
// exactly once, after gpulife's work on the memory, and never frees through gpulife's pool;
// a consumer that knows only dlpack.h reads the right bytes.

#include <gpulife/interop/dlpack.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <gpulife/context.hpp>
#include <gpulife/runtime/launch.hpp>

#include "interop/third_party_consumer.h"
#include "support/backend_test.hpp"
#include "support/cuda_test.hpp"
#include "support/expect_invalid_argument.hpp"

namespace gpulife {
namespace {

using testing::Gate;

using namespace std::chrono_literals;

std::vector<float> iota(std::size_t n, float start = 0.0F) {
  std::vector<float> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

/// What the third-party consumer reads from a managed tensor, in logical order.
std::vector<double> read_as_third_party(DLManagedTensor* managed, std::size_t capacity = 4096) {
  ThirdPartyArray array{};
  EXPECT_EQ(third_party_borrow(&array, managed), 0);
  std::vector<double> values(capacity);
  const long n = third_party_gather(&array, values.data(), values.size());
  EXPECT_GE(n, 0);
  values.resize(static_cast<std::size_t>(std::max(n, 0L)));
  array.borrowed = nullptr;  // the caller keeps the tensor
  return values;
}

/// A producer framework: its tensor lives in memory it allocated on the test's device, and its
/// deleter counts its calls and frees the memory (synchronously, or in stream order on the
/// producer's own stream, as PyTorch's caching allocator would reuse it).
class Producer {
 public:
  explicit Producer(const Device& device) : device_(device) {}

  /// Lends a tensor of `shape` (and `strides`, none: compact) whose memory starts `offset`
  /// bytes before its data and holds `values`.
  DLManagedTensor* lend(std::vector<std::int64_t> shape, const std::vector<float>& values,
                        std::vector<std::int64_t> strides = {}, std::uint64_t offset = 0,
                        DLDataType dtype = {kDLFloat, 32, 1}) {
    auto* lent = new Lent{};
    lent->owner = this;
    lent->shape = std::move(shape);
    lent->strides = std::move(strides);
    lent->bytes = offset + values.size() * sizeof(float);
    lent->memory = device_.impl().allocate(lent->bytes);
    Stream stream(device_);
    stream.view().memset(lent->memory, 0, lent->bytes);
    stream.view().copy(static_cast<std::byte*>(lent->memory) + offset, values.data(),
                       values.size() * sizeof(float), CopyKind::host_to_device);
    stream.synchronize();
    DLTensor& dl = lent->managed.dl_tensor;
    dl.data = lent->memory;
    dl.device = to_dlpack_device(device_);
    dl.ndim = static_cast<int>(lent->shape.size());
    dl.dtype = dtype;
    dl.shape = lent->shape.data();
    dl.strides = lent->strides.empty() ? nullptr : lent->strides.data();
    dl.byte_offset = offset;
    lent->managed.manager_ctx = lent;
    lent->managed.deleter = &Producer::deleter;
    return &lent->managed;
  }

  /// Frees in stream order on `stream` instead of synchronously.
  void free_on(StreamView stream) { free_on_ = stream; }
  [[nodiscard]] int deleted() const { return deleted_.load(); }
  [[nodiscard]] const Device& device() const { return device_; }

 private:
  struct Lent {
    DLManagedTensor managed{};
    Producer* owner = nullptr;
    std::vector<std::int64_t> shape;
    std::vector<std::int64_t> strides;
    void* memory = nullptr;
    std::size_t bytes = 0;
  };
  static void deleter(DLManagedTensor* self) {
    auto* lent = static_cast<Lent*>(self->manager_ctx);
    Producer& owner = *lent->owner;
    if (owner.free_on_.valid()) {
      owner.device_.impl().deallocate_async(lent->memory, lent->bytes, *owner.free_on_.impl());
    } else {
      owner.device_.impl().deallocate(lent->memory, lent->bytes);
    }
    delete lent;
    owner.deleted_.fetch_add(1);
  }

  Device device_;
  StreamView free_on_;
  std::atomic<int> deleted_{0};
};

// Every test runs on both backends unless it says why it cannot: the sim exchanges kDLCPU memory
// that the host reads in place, CUDA exchanges kDLCUDA memory whose bytes a test copies to the
// host first. Consumer work is a copy on the consumer's stream, which both backends order.
class DLPackTest : public testing::BackendContextTest {
 protected:
  /// @return the DLPack device type this backend exchanges
  [[nodiscard]] DLDeviceType device_type() const { return on_sim() ? kDLCPU : kDLCUDA; }

  /// What a consumer that knows only dlpack.h reads from `managed` (which stays the caller's).
  /// On CUDA the bytes it spans are copied to the host first, on the device's default stream:
  /// the stream `to_dlpack` orders after the producer when no stream is named.
  std::vector<double> read_as_third_party(DLManagedTensor* managed) {
    if (on_sim()) return gpulife::read_as_third_party(managed);
    const DLTensor& dl = managed->dl_tensor;
    std::int64_t last = 0;  // the element furthest from data, in elements
    std::int64_t compact = 1;
    for (int i = dl.ndim - 1; i >= 0; --i) {
      const std::int64_t stride = dl.strides != nullptr ? dl.strides[i] : compact;
      if (dl.shape[i] == 0) return {};
      last += (dl.shape[i] - 1) * stride;
      compact *= dl.shape[i];
    }
    const std::size_t bytes = static_cast<std::size_t>(dl.byte_offset) +
                              static_cast<std::size_t>(last + 1) * ((dl.dtype.bits + 7U) / 8U);
    std::vector<std::byte> host(bytes);
    const StreamView stream = device_.default_stream();
    stream.copy(host.data(), dl.data, bytes, CopyKind::device_to_host);
    stream.synchronize();
    DLManagedTensor staged{};
    staged.dl_tensor = dl;
    staged.dl_tensor.data = host.data();
    staged.dl_tensor.device = {kDLCPU, 0};
    return gpulife::read_as_third_party(&staged);
  }
};

// ---- types ---------------------------------------------------------------------------------

TEST_P(DLPackTest, EveryDTypeMapsToDLPackAndBack) {
  for (DType dtype : {DType::f32, DType::f16, DType::bf16, DType::f64, DType::i8, DType::u8,
                      DType::i32, DType::i64}) {
    const DLDataType dl = to_dlpack_dtype(dtype);
    EXPECT_EQ(dl.lanes, 1);
    EXPECT_EQ(dl.bits, size_of(dtype) * 8) << to_string(dtype);
    EXPECT_EQ(from_dlpack_dtype(dl), dtype) << to_string(dtype);
  }
  EXPECT_EQ(from_dlpack_dtype(to_dlpack_dtype(DType::byte)), DType::u8) << "raw bytes are uint8";
  const DLDataType f32 = to_dlpack_dtype(DType::f32);
  EXPECT_EQ(f32.code, kDLFloat);
  EXPECT_EQ(to_dlpack_dtype(DType::bf16).code, kDLBfloat);
  EXPECT_EQ(to_dlpack_dtype(DType::i64).code, kDLInt);
  EXPECT_EQ(to_dlpack_dtype(DType::u8).code, kDLUInt);
}

TEST_P(DLPackTest, UnsupportedTypesAreRejectedByName) {
  const DLDataType unsupported[] = {
      {kDLFloat, 32, 4},  // a vector type
      {kDLComplex, 64, 1}, {kDLInt, 16, 1},    {kDLUInt, 32, 1},
      {kDLFloat, 8, 1},    {kDLBfloat, 32, 1}, {kDLOpaqueHandle, 64, 1},
  };
  for (const DLDataType& dl : unsupported) {
    try {
      (void)from_dlpack_dtype(dl);
      ADD_FAILURE() << "accepted code " << int{dl.code} << " bits " << int{dl.bits};
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("code " + std::to_string(dl.code)), std::string::npos)
          << e.what();
    }
  }
}

TEST_P(DLPackTest, TheSimulatedDeviceIsACpuDeviceAndACudaDeviceACudaDevice) {
  const DLDevice dl = to_dlpack_device(device_);
  EXPECT_EQ(dl.device_type, device_type());
  EXPECT_EQ(dl.device_id, on_sim() ? 0 : device_.ordinal());
  EXPECT_THROW((void)to_dlpack_device(Device{}), std::invalid_argument);
}

// ---- export --------------------------------------------------------------------------------

TEST_P(DLPackTest, ExportDescribesTheTensor) {
  const auto host = iota(24);
  DeviceTensor t = ctx().upload(std::span<const float>(host), {2, 3, 4});
  DLManagedTensor* managed = to_dlpack(t);
  const DLTensor& dl = managed->dl_tensor;
  EXPECT_EQ(dl.data, t.data());
  EXPECT_EQ(dl.byte_offset, 0U);
  EXPECT_EQ(dl.device.device_type, device_type());
  EXPECT_EQ(dl.ndim, 3);
  EXPECT_EQ(dl.dtype.code, kDLFloat);
  EXPECT_EQ(dl.dtype.bits, 32);
  EXPECT_EQ(dl.dtype.lanes, 1);
  EXPECT_EQ(std::vector<std::int64_t>(dl.shape, dl.shape + 3),
            (std::vector<std::int64_t>{2, 3, 4}));
  ASSERT_NE(dl.strides, nullptr);
  EXPECT_EQ(std::vector<std::int64_t>(dl.strides, dl.strides + 3),
            (std::vector<std::int64_t>{12, 4, 1}));
  managed->deleter(managed);
}

TEST_P(DLPackTest, ARankZeroTensorHasNoDimensions) {
  const std::vector<std::int64_t> host{42};
  DeviceTensor scalar = ctx().upload(std::span<const std::int64_t>(host), Shape{});
  DLManagedTensor* managed = to_dlpack(scalar);
  EXPECT_EQ(managed->dl_tensor.ndim, 0);
  EXPECT_EQ(read_as_third_party(managed), (std::vector<double>{42.0}));
  managed->deleter(managed);
}

TEST_P(DLPackTest, AThirdPartyConsumerReadsTheRightBytes) {
  const auto host = iota(24, 1.0F);
  DeviceTensor t = ctx().upload(std::span<const float>(host), {4, 6});
  DLManagedTensor* managed = to_dlpack(t);
  const std::vector<double> all = read_as_third_party(managed);
  EXPECT_EQ(all, std::vector<double>(host.begin(), host.end()));
  managed->deleter(managed);

  // A column block is strided: the consumer must follow the strides to read it.
  DeviceTensor block = t.slice(1, 2, 4);
  DLManagedTensor* strided = to_dlpack(block);
  EXPECT_EQ(std::vector<std::int64_t>(strided->dl_tensor.strides, strided->dl_tensor.strides + 2),
            (std::vector<std::int64_t>{6, 1}));
  EXPECT_EQ(read_as_third_party(strided), (std::vector<double>{3, 4, 9, 10, 15, 16, 21, 22}));
  strided->deleter(strided);
}

TEST_P(DLPackTest, TheConsumerKeepsTheMemoryAliveUntilItCallsTheDeleter) {
  const auto host = iota(256, 0.5F);
  DeviceTensor t = ctx().upload(std::span<const float>(host), {256}, {}, "lent");
  int released = 0;
  Finalizer note = t.on_release([&](const TensorInfo&) { ++released; });
  DLManagedTensor* managed = to_dlpack(t);
  EXPECT_EQ(t.use_count(), 2) << "the managed tensor holds one strong reference";

  t.reset();  // gpulife's last handle: the consumer still holds the tensor
  ctx().device().synchronize();
  EXPECT_EQ(released, 0);
  EXPECT_TRUE(note.alive());
  EXPECT_EQ(ctx().statistics().live_tensors, 1U);
  EXPECT_EQ(read_as_third_party(managed), std::vector<double>(host.begin(), host.end()))
      << "not poisoned: still live";

  managed->deleter(managed);
  EXPECT_EQ(released, 1) << "the deleter dropped the last reference";
  EXPECT_EQ(ctx().statistics().live_tensors, 0U);
}

TEST_P(DLPackTest, ExportToTheHostWaitsForQueuedWork) {
  Stream stream(device_);
  Gate gate;
  gate.block(stream);
  const auto host = iota(1024, 3.0F);
  DeviceTensor t = ctx().upload(std::span<const float>(host), {1024}, stream);  // held at the gate
  std::thread opener([&] {
    std::this_thread::sleep_for(50ms);
    gate.open();
  });
  DLManagedTensor* managed = to_dlpack(t);  // a host reader: returns once the upload executed
  EXPECT_EQ(read_as_third_party(managed), std::vector<double>(host.begin(), host.end()));
  opener.join();
  managed->deleter(managed);
}

TEST_P(DLPackTest, TheConsumersStreamWaitsForTheProducersWorkWithoutBlockingTheHost) {
  Stream home(device_);
  Stream consumer(device_);
  Gate gate;
  gate.block(home);
  const auto host = iota(512, 1.0F);
  DeviceTensor t = ctx().upload(std::span<const float>(host), {512}, home);  // held at the gate
  DLManagedTensor* managed = to_dlpack(t, consumer);                         // does not block
  auto* seen = static_cast<float*>(device_.allocate_pinned(512 * sizeof(float)));
  consumer.view().copy(seen, t.data(), 512 * sizeof(float), CopyKind::device_to_host);
  std::this_thread::sleep_for(20ms);
  EXPECT_FALSE(consumer.view().query()) << "the consumer ran before the producer's upload";
  gate.open();
  consumer.synchronize();
  EXPECT_EQ(std::vector<float>(seen, seen + 512), host);
  managed->deleter(managed);
  device_.deallocate_pinned(seen);
}

TEST_P(DLPackTest, TheReleaseWaitsForTheConsumersStream) {
  Stream home(device_);
  Stream consumer(device_);
  auto* out = static_cast<float*>(device_.allocate_pinned(256 * sizeof(float)));
  Gate gate;
  {
    const auto host = iota(256, 1.0F);
    DeviceTensor t = ctx().upload(std::span<const float>(host), {256}, home);
    DLManagedTensor* managed = to_dlpack(t, consumer);
    gate.block(consumer);
    consumer.view().copy(out, t.data(), 256 * sizeof(float), CopyKind::device_to_host);
    managed->deleter(managed);  // the consumer is done queueing; its copy has not run yet
  }                             // and gpulife's last handle drops too
  home.synchronize();  // a release that ignored the consumer would have freed the block by now
  gate.open();
  consumer.synchronize();
  EXPECT_EQ(std::accumulate(out, out + 256, 0.0F), 256.0F * 257.0F / 2.0F);
  EXPECT_TRUE(take_violations().empty()) << "the consumer's copy ran on live memory";
  device_.deallocate_pinned(out);
}

// ---- a consumer's stream as DLPack's integer (`__dlpack__(stream=...)`) ----------------------

DLPackStream raw(const Stream& stream) {
  return DLPackStream{reinterpret_cast<std::intptr_t>(stream.view().native_handle())};
}

TEST_P(DLPackTest, ARawConsumerStreamWaitsForTheProducersWork) {
  Stream home(device_);
  Stream consumer(device_);
  Gate gate;
  gate.block(home);
  const auto host = iota(512, 1.0F);
  DeviceTensor t = ctx().upload(std::span<const float>(host), {512}, home);  // held at the gate
  DLManagedTensor* managed = to_dlpack(t, raw(consumer));                    // does not block
  auto* seen = static_cast<float*>(device_.allocate_pinned(512 * sizeof(float)));
  consumer.view().copy(seen, t.data(), 512 * sizeof(float), CopyKind::device_to_host);
  std::this_thread::sleep_for(20ms);
  EXPECT_FALSE(consumer.view().query()) << "the consumer ran before the producer's upload";
  gate.open();
  consumer.synchronize();
  EXPECT_EQ(std::vector<float>(seen, seen + 512), host);
  managed->deleter(managed);
  device_.deallocate_pinned(seen);
}

TEST_P(DLPackTest, TheReleaseWaitsForWorkQueuedOnARawConsumerStreamBeforeItsDeleter) {
  Stream home(device_);
  Stream consumer(device_);
  auto* out = static_cast<float*>(device_.allocate_pinned(256 * sizeof(float)));
  Gate gate;
  {
    const auto host = iota(256, 1.0F);
    DeviceTensor t = ctx().upload(std::span<const float>(host), {256}, home);
    DLManagedTensor* managed = to_dlpack(t, raw(consumer));
    gate.block(consumer);
    consumer.view().copy(out, t.data(), 256 * sizeof(float), CopyKind::device_to_host);
    managed->deleter(managed);  // the consumer let go; its copy has not run yet
  }                             // and gpulife's last handle drops too
  std::this_thread::sleep_for(20ms);
  EXPECT_FALSE(home.view().query()) << "the release did not wait for the consumer's copy";
  gate.open();
  consumer.synchronize();
  home.synchronize();
  EXPECT_EQ(std::accumulate(out, out + 256, 0.0F), 256.0F * 257.0F / 2.0F);
  EXPECT_TRUE(take_violations().empty()) << "the consumer's copy ran on live memory";
  device_.deallocate_pinned(out);
}

TEST_P(DLPackTest, RawStreamConventions) {
  const auto host = iota(16, 1.0F);
  Stream home(device_);
  DeviceTensor t = ctx().upload(std::span<const float>(host), {16}, home);
  // 1: the device's default stream; -1: no synchronisation asked for
  for (std::intptr_t value : {DLPackStream::legacy_default, DLPackStream::no_sync}) {
    DLManagedTensor* managed = to_dlpack(t, DLPackStream{value});
    EXPECT_EQ(managed->dl_tensor.data, t.data());
    managed->deleter(managed);
  }
  testing::expect_invalid_argument([&] { (void)to_dlpack(t, DLPackStream{0}); }, "consumer_stream");
  testing::expect_invalid_argument([&] { (void)to_dlpack(t, DLPackStream{-2}); },
                                   "consumer_stream");
  // The sim has no per-thread default stream, and knows only its own streams' handles; CUDA
  // asks the driver about a handle, which must be a stream (CudaDLPackTest covers CUDA's).
  if (on_sim()) {
    testing::expect_invalid_argument(
        [&] { (void)to_dlpack(t, DLPackStream{DLPackStream::per_thread_default}); },
        "consumer_stream");
    int not_a_stream = 0;
    testing::expect_invalid_argument(
        [&] { (void)to_dlpack(t, DLPackStream{reinterpret_cast<std::intptr_t>(&not_a_stream)}); },
        "stream");
    Device other = Device::sim();
    Stream foreign(other);
    testing::expect_invalid_argument([&] { (void)to_dlpack(t, raw(foreign)); }, "stream");
  }
  testing::expect_invalid_argument([&] { (void)to_dlpack(DeviceTensor{}, DLPackStream{1}); },
                                   "tensor");
  EXPECT_EQ(ctx().statistics().live_tensors, 1U) << "nothing was lent by the failed calls";
}

TEST_P(DLPackTest, ExportRejectsAnEmptyHandleAndAForeignStream) {
  EXPECT_THROW((void)to_dlpack(DeviceTensor{}), std::invalid_argument);
  Device other = Device::sim();
  Stream foreign(other);
  DeviceTensor t = ctx().empty({8}, DType::f32);
  EXPECT_THROW((void)to_dlpack(t, foreign), std::invalid_argument);
  EXPECT_EQ(t.use_count(), 1) << "a failed export holds no reference";
}

// ---- import --------------------------------------------------------------------------------

TEST_P(DLPackTest, ImportWrapsTheProducersMemoryAndCallsItsDeleterExactlyOnce) {
  Producer producer(device_);
  const auto values = iota(12, 1.0F);
  DLManagedTensor* managed = producer.lend({3, 4}, values);
  void* memory = managed->dl_tensor.data;
  const auto allocations = ctx().statistics().resource.allocations;

  DeviceTensor t = from_dlpack(ctx(), managed, {}, "borrowed");
  EXPECT_EQ(t.data(), memory) << "no copy";
  EXPECT_EQ(t.shape(), Shape({3, 4}));
  EXPECT_EQ(t.strides(), Shape({4, 1}));
  EXPECT_EQ(t.dtype(), DType::f32);
  EXPECT_EQ(t.tag(), "borrowed");
  EXPECT_EQ(t.to_host<float>(), values);
  EXPECT_EQ(ctx().statistics().resource.allocations, allocations) << "gpulife allocated nothing";

  DeviceTensor copy = t;
  DeviceTensor row = t.slice(0, 1, 2);
  t.reset();
  copy.reset();
  EXPECT_EQ(producer.deleted(), 0) << "a view keeps the borrowed memory";
  EXPECT_EQ(row.to_host<float>(), (std::vector<float>{5, 6, 7, 8}));
  row.reset();
  EXPECT_EQ(producer.deleted(), 1);
  EXPECT_EQ(ctx().statistics().live_tensors, 0U);
  EXPECT_EQ(ctx().statistics().resource.deallocations, 0U) << "never freed through the pool";
}

TEST_P(DLPackTest, ImportHonoursByteOffsetAndStrides) {
  Producer producer(device_);
  // A 3x2 transposed view of a row-major 2x3 matrix {1 2 3; 4 5 6}, 16 bytes into the buffer.
  DLManagedTensor* managed = producer.lend({3, 2}, {1, 2, 3, 4, 5, 6}, {1, 3}, 16);
  DeviceTensor t = from_dlpack(ctx(), managed);
  EXPECT_EQ(t.data(), static_cast<std::byte*>(managed->dl_tensor.data) + 16);
  EXPECT_EQ(t.strides(), Shape({1, 3}));
  EXPECT_FALSE(t.is_contiguous());
  // Read it back the way a third party would, through an export of the imported tensor.
  DLManagedTensor* again = to_dlpack(t);
  EXPECT_EQ(read_as_third_party(again), (std::vector<double>{1, 4, 2, 5, 3, 6}));
  again->deleter(again);
  t.reset();
  EXPECT_EQ(producer.deleted(), 1);
}

TEST_P(DLPackTest, ImportOfAnEmptyTensorNeedsNoData) {
  Producer producer(device_);
  DLManagedTensor* managed = producer.lend({0, 5}, {});
  ASSERT_EQ(managed->dl_tensor.data, nullptr);
  DeviceTensor t = from_dlpack(ctx(), managed);
  EXPECT_EQ(t.numel(), 0);
  EXPECT_EQ(t.bytes(), 0U);
  t.reset();
  EXPECT_EQ(producer.deleted(), 1);
}

TEST_P(DLPackTest, InvalidTensorsAreRejectedAndLeftWithTheCaller) {
  Producer producer(device_);
  struct Case {
    const char* name;
    void (*spoil)(DLTensor&);
    const char* message;
  };
  static std::int64_t negative_stride[] = {-1};
  static std::int64_t negative_extent[] = {-4};
  static std::int64_t huge[] = {std::int64_t{1} << 62};
  const Case cases[] = {
      {"the other backend's device",
       on_sim() ? +[](DLTensor& dl) { dl.device = {kDLCUDA, 0}; }
                : +[](DLTensor& dl) { dl.device = {kDLCPU, 0}; },
       on_sim() ? "kDLCUDA:0" : "kDLCPU"},
      {"pinned host",
       [](DLTensor& dl) {
         dl.device = {kDLCUDAHost, 0};
       },
       "kDLCUDAHost"},
      {"complex",
       [](DLTensor& dl) {
         dl.dtype = {kDLComplex, 64, 1};
       },
       "dtype"},
      {"negative stride", [](DLTensor& dl) { dl.strides = negative_stride; }, "negative strides"},
      {"negative extent", [](DLTensor& dl) { dl.shape = negative_extent; }, "negative"},
      {"too many dimensions", [](DLTensor& dl) { dl.ndim = 9; }, "9 dimensions"},
      {"negative rank", [](DLTensor& dl) { dl.ndim = -1; }, "-1 dimensions"},
      {"null shape", [](DLTensor& dl) { dl.shape = nullptr; }, "null shape"},
      {"null data", [](DLTensor& dl) { dl.data = nullptr; }, "null data"},
      {"overflow", [](DLTensor& dl) { dl.shape = huge; }, "overflow"},
  };
  for (const Case& c : cases) {
    UniqueDLManagedTensor managed(producer.lend({4}, {1, 2, 3, 4}));
    void* data = managed->dl_tensor.data;
    c.spoil(managed->dl_tensor);
    try {
      (void)from_dlpack(ctx(), managed.get());
      ADD_FAILURE() << c.name << ": accepted";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(c.message), std::string::npos)
          << c.name << ": " << e.what();
    }
    EXPECT_EQ(producer.deleted(), &c - cases) << c.name << ": the deleter ran on a failure";
    EXPECT_EQ(ctx().statistics().live_tensors, 0U) << c.name;
    managed->dl_tensor.data = data;  // the producer frees what it allocated
  }                                  // the caller gives each back
  EXPECT_EQ(producer.deleted(), static_cast<int>(std::size(cases)));
  EXPECT_THROW((void)from_dlpack(ctx(), static_cast<DLManagedTensor*>(nullptr)),
               std::invalid_argument);
}

TEST_P(DLPackTest, AProducerStreamOfAnotherDeviceIsRejectedWithoutTakingTheTensor) {
  Producer producer(device_);
  UniqueDLManagedTensor managed(producer.lend({4}, {1, 2, 3, 4}));
  Device other = Device::sim();
  Stream foreign(other);
  EXPECT_THROW((void)from_dlpack(ctx(), managed.get(), foreign), std::invalid_argument);
  EXPECT_EQ(producer.deleted(), 0);
  EXPECT_EQ(ctx().statistics().live_tensors, 0U);
  managed.reset();
  EXPECT_EQ(producer.deleted(), 1);
}

TEST_P(DLPackTest, TheDeleterWaitsForGpulifesWorkOnTheMemory) {
  // The producer reuses the memory in stream order on its own stream as soon as the deleter
  // returns: a deleter called before gpulife's queued copies ran would free it under them,
  // and the simulated device would see a copy touch freed memory.
  Producer producer(device_);
  Stream producer_stream(device_);
  producer.free_on(producer_stream);
  Stream home(device_);
  Stream reader(device_);
  DeviceTensor t = from_dlpack(ctx(), producer.lend({256}, iota(256)), home);
  Gate home_gate;
  Gate reader_gate;
  auto* out = static_cast<float*>(device_.allocate_pinned(2 * 256 * sizeof(float)));
  home_gate.block(home);
  home.view().copy(out, t.data(), 256 * sizeof(float), CopyKind::device_to_host);
  reader_gate.block(reader);
  reader.view().copy(out + 256, t.data(), 256 * sizeof(float), CopyKind::device_to_host);
  t.record_stream(reader);

  // A deleter that does not wait runs within moments; one that waits, never while gated.
  const auto deleted_soon = [&producer] {
    const auto deadline = std::chrono::steady_clock::now() + 200ms;
    while (producer.deleted() == 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(1ms);
    }
    return producer.deleted();
  };
  std::thread dropper([&] { t.reset(); });  // blocks until the copies have run
  EXPECT_EQ(deleted_soon(), 0) << "the deleter ran before gpulife's copies";
  producer_stream.synchronize();  // had it run, the memory would be freed now
  home_gate.open();
  EXPECT_EQ(deleted_soon(), 0) << "the deleter did not wait for the recorded stream";
  producer_stream.synchronize();
  reader_gate.open();
  dropper.join();
  EXPECT_EQ(producer.deleted(), 1);
  EXPECT_EQ(std::accumulate(out, out + 256, 0.0F), 255.0F * 256.0F / 2.0F);
  EXPECT_EQ(std::accumulate(out + 256, out + 512, 0.0F), 255.0F * 256.0F / 2.0F);
  EXPECT_TRUE(take_violations().empty());
  device_.deallocate_pinned(out);
}

TEST_P(DLPackTest, ABorrowedTensorOutlivesTheContextAndIsGivenBackAtItsRelease) {
  Producer producer(device_);
  DeviceTensor t = from_dlpack(ctx(), producer.lend({4}, {1, 2, 3, 4}));
  ctx_.reset();
  (void)take_errors();  // the shutdown report of the live tensor
  EXPECT_EQ(producer.deleted(), 0) << "the producer's memory is not given back while in use";
  EXPECT_EQ(t.to_host<float>(), (std::vector<float>{1, 2, 3, 4}));
  t.reset();
  EXPECT_EQ(producer.deleted(), 1);
}

/// A CPU framework (NumPy, PyTorch on the CPU): its tensors live in ordinary heap memory.
class CpuProducer {
 public:
  DLManagedTensor* lend(std::vector<float>& buffer) {
    auto* lent = new Lent{};
    lent->owner = this;
    lent->shape[0] = static_cast<std::int64_t>(buffer.size());
    DLTensor& dl = lent->managed.dl_tensor;
    dl.data = buffer.data();
    dl.device = {kDLCPU, 0};
    dl.ndim = 1;
    dl.dtype = {kDLFloat, 32, 1};
    dl.shape = lent->shape;
    lent->managed.manager_ctx = lent;
    lent->managed.deleter = [](DLManagedTensor* self) {
      auto* l = static_cast<Lent*>(self->manager_ctx);
      l->owner->deleted_.fetch_add(1);
      delete l;
    };
    return &lent->managed;
  }
  [[nodiscard]] int deleted() const { return deleted_.load(); }

 private:
  struct Lent {
    DLManagedTensor managed{};
    CpuProducer* owner = nullptr;
    std::int64_t shape[1] = {0};
  };
  std::atomic<int> deleted_{0};
};

TEST_P(DLPackTest, ACpuFrameworksMemoryIsDeviceMemoryOfTheSimWhileBorrowed) {
  if (!on_sim()) {
    GTEST_SKIP() << "sim only: host memory as device memory, host code as a kernel, violations "
                    "(CudaDLPackTest checks that CUDA rejects kDLCPU)";
  }
  std::vector<float> buffer(256, 1.0F);
  CpuProducer producer;
  Stream stream(device_);
  DeviceTensor t = from_dlpack(ctx(), producer.lend(buffer), stream);
  DeviceTensor again = from_dlpack(ctx(), producer.lend(buffer), stream);  // lent twice
  float* data = t.data<float>();
  for_each_index(
      stream, 128, [data](std::size_t i) { data[i] = 2.0F; }, {{data, 128 * sizeof(float)}},
      "write");
  EXPECT_EQ(t.to_host<float>(stream)[0], 2.0F);
  EXPECT_EQ(buffer[127], 2.0F) << "the kernel wrote the producer's memory, no copy";
  t.reset();
  EXPECT_EQ(producer.deleted(), 1);
  EXPECT_EQ(again.to_host<float>(stream)[255], 1.0F) << "still borrowed by the second tensor";
  again.reset();
  EXPECT_EQ(producer.deleted(), 2);
  EXPECT_TRUE(take_violations().empty());
  EXPECT_EQ(buffer[255], 1.0F) << "given back unpoisoned";

  // Given back: work queued on it now is a use of memory the device does not own.
  stream.view().memset(buffer.data(), 0, 16);
  const auto violations = take_violations();
  ASSERT_EQ(violations.size(), 1U);
  EXPECT_EQ(violations[0].kind, SimViolation::Kind::unallocated);
}

// ---- round trips ---------------------------------------------------------------------------

TEST_P(DLPackTest, ExportThenImportGivesBackTheSameTensor) {
  const auto host = iota(16);
  DeviceTensor t = ctx().upload(std::span<const float>(host), {4, 4});
  int released = 0;
  (void)t.on_release([&](const TensorInfo&) { ++released; });
  DeviceTensor back = from_dlpack(ctx(), to_dlpack(t));
  EXPECT_EQ(back, t) << "one tensor, one set of finalizers";
  EXPECT_EQ(t.use_count(), 2) << "the managed tensor was consumed";
  t.reset();
  back.reset();
  EXPECT_EQ(released, 1);
  EXPECT_EQ(ctx().statistics().live_tensors, 0U);
}

TEST_P(DLPackTest, AnExportedTensorImportedIntoAnotherDeviceIsNotTakenForOurs) {
  if (!on_sim()) GTEST_SKIP() << "sim only: two devices that both exchange kDLCPU memory";
  Device other = Device::sim();
  Context other_ctx({.device = other});
  const auto host = iota(8);
  DeviceTensor t = other_ctx.upload(std::span<const float>(host), {8});
  int released = 0;
  (void)t.on_release([&](const TensorInfo&) { ++released; });
  // Both sims exchange kDLCPU host memory, so this context borrows the other's tensor.
  DeviceTensor borrowed = from_dlpack(ctx(), to_dlpack(t));
  EXPECT_NE(borrowed, t);
  EXPECT_EQ(borrowed.data(), t.data());
  t.reset();
  EXPECT_EQ(released, 0) << "the borrower holds it";
  borrowed.reset();
  EXPECT_EQ(released, 1);
}

TEST_P(DLPackTest, ImportThenExportKeepsTheProducersMemoryUntilEveryoneIsDone) {
  Producer producer(device_);
  DeviceTensor t = from_dlpack(ctx(), producer.lend({2, 2}, {1, 2, 3, 4}));
  DLManagedTensor* onward = to_dlpack(t);  // lent on to a third framework
  EXPECT_EQ(from_dlpack(ctx(), to_dlpack(t)), t) << "a round trip of a borrowed tensor";
  t.reset();
  EXPECT_EQ(producer.deleted(), 0);
  EXPECT_EQ(read_as_third_party(onward), (std::vector<double>{1, 2, 3, 4}));
  onward->deleter(onward);
  EXPECT_EQ(producer.deleted(), 1) << "given back once, when the last holder let go";
}

INSTANTIATE_TEST_SUITE_P(Backends, DLPackTest, testing::backends(), testing::backend_name);

// ---- on a CUDA device (skipped without one; required by the gpu preset) ---------------------

class CudaDLPackTest : public testing::CudaTest {
 protected:
  void SetUp() override {
    CudaTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    ctx_.emplace(ContextOptions{.device = device_});
  }
  void TearDown() override {
    ctx_.reset();
    CudaTest::TearDown();
  }

  std::optional<Context> ctx_;
};

TEST_F(CudaDLPackTest, ExchangesCudaTensorsWithTheDevicesOrdinal) {
  const DLDevice dl = to_dlpack_device(device_);
  EXPECT_EQ(dl.device_type, kDLCUDA);
  EXPECT_EQ(dl.device_id, device_.ordinal());
  const auto host = iota(1024);
  Stream stream(device_);
  DeviceTensor t = ctx_->upload(std::span<const float>(host), {32, 32}, stream);
  DLManagedTensor* managed = to_dlpack(t, stream);
  EXPECT_EQ(managed->dl_tensor.device.device_type, kDLCUDA);
  EXPECT_EQ(managed->dl_tensor.data, t.data());
  EXPECT_EQ(from_dlpack(*ctx_, managed, stream), t) << "a round trip gives the tensor back";
  EXPECT_EQ(t.to_host<float>(stream), host);
}

TEST_F(CudaDLPackTest, ARawCudaStreamOfTheConsumerWaitsAndOrdersTheRelease) {
  // The consumer's own stream, as PyTorch passes torch.cuda.current_stream().cuda_stream.
  Stream consumer_owned(device_);
  const auto native = reinterpret_cast<std::intptr_t>(consumer_owned.view().native_handle());
  Stream home(device_);
  const auto host = iota(1 << 16, 1.0F);
  DeviceTensor t = ctx_->upload(std::span<const float>(host), {1 << 16}, home);
  for (std::intptr_t value : {native, DLPackStream::legacy_default,
                              DLPackStream::per_thread_default, DLPackStream::no_sync}) {
    DLManagedTensor* managed = to_dlpack(t, DLPackStream{value});
    EXPECT_EQ(managed->dl_tensor.data, t.data());
    managed->deleter(managed);
  }
  testing::expect_invalid_argument([&] { (void)to_dlpack(t, DLPackStream{0}); }, "consumer_stream");
  EXPECT_EQ(t.to_host<float>(home), host);
}

TEST_F(CudaDLPackTest, BorrowsDeviceMemoryAndGivesItBackOnce) {
  Producer producer(device_);
  Stream stream(device_);
  const auto values = iota(256, 1.0F);
  DeviceTensor t = from_dlpack(*ctx_, producer.lend({256}, values), stream);
  EXPECT_EQ(t.to_host<float>(stream), values);
  DeviceTensor view = t.slice(0, 0, 16);
  t.reset();
  EXPECT_EQ(producer.deleted(), 0);
  view.reset();
  EXPECT_EQ(producer.deleted(), 1);

  UniqueDLManagedTensor host_tensor(producer.lend({4}, {1, 2, 3, 4}));
  host_tensor->dl_tensor.device = {kDLCPU, 0};
  EXPECT_THROW((void)from_dlpack(*ctx_, host_tensor.get()), std::invalid_argument);
  UniqueDLManagedTensor other_gpu(producer.lend({4}, {1, 2, 3, 4}));
  other_gpu->dl_tensor.device = {kDLCUDA, device_.ordinal() + 1};
  EXPECT_THROW((void)from_dlpack(*ctx_, other_gpu.get()), std::invalid_argument);
}

}  // namespace
}  // namespace gpulife
