// SPDX-License-Identifier: Apache-2.0
#include <gpulife/interop/dlpack.hpp>

#include <array>
#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

#include <gpulife/error_handler.hpp>
#include <gpulife/runtime/event.hpp>

namespace gpulife {
namespace {

/// What a lent tensor's `manager_ctx` points to: the strong reference and the arrays that the
/// DLTensor's shape and strides point into, in one allocation.
struct Export {
  DeviceTensor tensor;
  std::array<std::int64_t, Shape::max_rank> shape{};
  std::array<std::int64_t, Shape::max_rank> strides{};
  DLManagedTensor managed{};
  // A consumer's own stream (DLPackStream), not owned: the deleter orders the release after the
  // work the consumer queued on it.
  std::shared_ptr<detail::StreamImpl> consumer;
  bool per_thread = false;  // the consumer's stream is CUDA's per-thread default stream
  std::thread::id exporter;
};

/// Makes the tensor's stream wait for the work queued on the consumer's stream so far, so that
/// the release (ordered on the tensor's stream) waits for it. Never throws.
void order_release_after_consumer(Export& ex) noexcept {
  try {
    const Device& device = ex.tensor.device();
    if (ex.per_thread && std::this_thread::get_id() != ex.exporter) {
      // Another thread's per-thread default stream is out of reach: wait for everything.
      device.synchronize();
      return;
    }
    Event done(device);
    const StreamView consumer{ex.consumer.get()};
    consumer.record(done);
    ex.tensor.stream().wait(done);
  } catch (const std::exception& e) {
    report_error(std::string("DLPack deleter: ordering the release after the consumer's stream "
                             "failed, waiting for it on the host: ") + e.what());
    try {
      StreamView{ex.consumer.get()}.synchronize();
    } catch (...) {
      report_error("DLPack deleter: waiting for the consumer's stream failed");
    }
  }
}

// The consumer's deleter: drops the reference; the release itself is stream-ordered as usual.
void delete_export(DLManagedTensor* self) noexcept {
  auto* ex = static_cast<Export*>(self->manager_ctx);
  if (ex->consumer) order_release_after_consumer(*ex);
  delete ex;
}

std::string describe(DLDataType dtype) {
  return "{code " + std::to_string(dtype.code) + ", bits " + std::to_string(dtype.bits) +
         ", lanes " + std::to_string(dtype.lanes) + "}";
}

std::string describe(DLDevice device) {
  switch (device.device_type) {
    case kDLCPU:
      return "kDLCPU";
    case kDLCUDA:
      return "kDLCUDA:" + std::to_string(device.device_id);
    case kDLCUDAHost:
      return "kDLCUDAHost";
    case kDLCUDAManaged:
      return "kDLCUDAManaged";
    default:
      return "device type " + std::to_string(static_cast<int>(device.device_type));
  }
}

/// True if `dl` still describes exactly the tensor `ex` lent.
bool describes(const DLTensor& dl, const Export& ex) {
  const DeviceTensor& t = ex.tensor;
  if (dl.data != t.data() || dl.byte_offset != 0 || dl.ndim != static_cast<int>(t.rank())) {
    return false;
  }
  const DLDataType dtype = to_dlpack_dtype(t.dtype());
  if (dl.dtype.code != dtype.code || dl.dtype.bits != dtype.bits || dl.dtype.lanes != 1) {
    return false;
  }
  for (std::size_t i = 0; i < t.rank(); ++i) {
    if (dl.shape[i] != t.shape()[i] || dl.strides == nullptr || dl.strides[i] != t.strides()[i]) {
      return false;
    }
  }
  return true;
}

}  // namespace

DLDevice to_dlpack_device(const Device& device) {
  if (!device.valid()) throw std::invalid_argument("device: empty Device");
  DLDevice dl{};
  if (device.kind() == BackendKind::cuda) {
    dl.device_type = kDLCUDA;
    dl.device_id = device.ordinal();
  } else {
    // The simulated device's memory is host memory: a CPU consumer can read it directly.
    dl.device_type = kDLCPU;
    dl.device_id = 0;
  }
  return dl;
}

DLDataType to_dlpack_dtype(DType dtype) noexcept {
  DLDataType dl{};
  dl.lanes = 1;
  dl.bits = static_cast<std::uint8_t>(size_of(dtype) * 8);
  switch (dtype) {
    case DType::f32:
    case DType::f16:
    case DType::f64:
      dl.code = kDLFloat;
      break;
    case DType::bf16:
      dl.code = kDLBfloat;
      break;
    case DType::i8:
    case DType::i32:
    case DType::i64:
      dl.code = kDLInt;
      break;
    case DType::u8:
    case DType::byte:
      dl.code = kDLUInt;
      break;
  }
  return dl;
}

DType from_dlpack_dtype(DLDataType dtype) {
  if (dtype.lanes == 1) {
    switch (dtype.code) {
      case kDLFloat:
        if (dtype.bits == 16) return DType::f16;
        if (dtype.bits == 32) return DType::f32;
        if (dtype.bits == 64) return DType::f64;
        break;
      case kDLBfloat:
        if (dtype.bits == 16) return DType::bf16;
        break;
      case kDLInt:
        if (dtype.bits == 8) return DType::i8;
        if (dtype.bits == 32) return DType::i32;
        if (dtype.bits == 64) return DType::i64;
        break;
      case kDLUInt:
        if (dtype.bits == 8) return DType::u8;
        break;
      default:
        break;
    }
  }
  throw std::invalid_argument("dtype: DLPack type " + describe(dtype) +
                              " has no gpulife dtype (float16/32/64, bfloat16, int8/32/64, "
                              "uint8; one lane)");
}

namespace {

/// The managed tensor for `tensor`, without any stream ordering yet.
std::unique_ptr<Export> make_export(const DeviceTensor& tensor) {
  const Device& device = tensor.device();
  auto ex = std::make_unique<Export>();
  ex->tensor = tensor;
  const std::size_t rank = tensor.rank();
  for (std::size_t i = 0; i < rank; ++i) {
    ex->shape[i] = tensor.shape()[i];
    ex->strides[i] = tensor.strides()[i];
  }
  DLTensor& dl = ex->managed.dl_tensor;
  dl.data = tensor.data();
  dl.device = to_dlpack_device(device);
  dl.ndim = static_cast<int>(rank);
  dl.dtype = to_dlpack_dtype(tensor.dtype());
  dl.shape = ex->shape.data();
  dl.strides = ex->strides.data();
  dl.byte_offset = 0;
  ex->managed.manager_ctx = ex.get();
  ex->managed.deleter = &delete_export;
  return ex;
}

}  // namespace

DLManagedTensor* to_dlpack(const DeviceTensor& tensor, StreamView consumer_stream) {
  if (!tensor.defined()) throw std::invalid_argument("tensor: empty DeviceTensor");
  const Device& device = tensor.device();
  const StreamView home = tensor.stream();
  // kDLCPU (the sim) without a stream: a host reader. Otherwise a stream, the default one if
  // none is named (the array API's stream=None on CUDA).
  const bool host_reader = !consumer_stream.valid() && device.kind() == BackendKind::sim;
  const StreamView consumer = consumer_stream.valid() ? consumer_stream : device.default_stream();
  if (&consumer.device() != &device.impl()) {
    throw std::invalid_argument("consumer_stream: belongs to " + consumer.device().name() +
                                ", the tensor to " + device.name());
  }
  auto ex = make_export(tensor);
  if (host_reader) {
    home.synchronize();
  } else if (consumer != home) {
    // The consumer's later work must see what was queued here; its own work, queued before it
    // calls the deleter, must finish before the memory is reused.
    Event ready(device);
    home.record(ready);
    consumer.wait(ready);
    tensor.record_stream(consumer);
  }
  return &ex.release()->managed;
}

DLManagedTensor* to_dlpack(const DeviceTensor& tensor, DLPackStream consumer_stream) {
  if (!tensor.defined()) throw std::invalid_argument("tensor: empty DeviceTensor");
  const Device& device = tensor.device();
  const std::intptr_t value = consumer_stream.value;
  if (value == DLPackStream::no_sync) return &make_export(tensor).release()->managed;
  if (value == 0 || value < DLPackStream::no_sync) {
    throw std::invalid_argument("consumer_stream: " + std::to_string(value) +
                                " is not a stream (DLPack: 1 legacy default, 2 per-thread "
                                "default, -1 no synchronisation, else a stream handle; 0 is "
                                "disallowed)");
  }
  const bool sim = device.kind() == BackendKind::sim;
  if (sim && value == DLPackStream::per_thread_default) {
    throw std::invalid_argument("consumer_stream: 2 (per-thread default stream) on " +
                                device.name() + ", which has no per-thread default stream");
  }
  std::shared_ptr<detail::StreamImpl> consumer;
  if (sim && value == DLPackStream::legacy_default) {
    consumer = std::shared_ptr<detail::StreamImpl>(std::shared_ptr<void>(),
                                                   device.default_stream().impl());
  } else {
    // CUDA's handles for the legacy and per-thread default streams are 1 and 2 themselves.
    consumer = device.impl().native_stream(reinterpret_cast<void*>(value));
  }
  auto ex = make_export(tensor);
  ex->consumer = consumer;
  ex->per_thread = !sim && value == DLPackStream::per_thread_default;
  ex->exporter = std::this_thread::get_id();
  const StreamView home = tensor.stream();
  const StreamView theirs{consumer.get()};
  if (theirs.impl() != home.impl()) {
    // The consumer's later work must see what was queued here.
    Event ready(device);
    home.record(ready);
    theirs.wait(ready);
  }
  return &ex.release()->managed;
}

DeviceTensor from_dlpack(Context& ctx, DLManagedTensor* managed, StreamView producer_stream,
                         std::string_view tag) {
  if (managed == nullptr) throw std::invalid_argument("managed: null DLManagedTensor");
  const DLTensor& dl = managed->dl_tensor;
  const Device& device = ctx.device();

  if (managed->deleter == &delete_export) {
    // One of ours: hand back the tensor itself rather than a tensor over its memory.
    auto* ex = static_cast<Export*>(managed->manager_ctx);
    if (ex->tensor.device() == device && describes(dl, *ex)) {
      DeviceTensor tensor = ex->tensor;
      managed->deleter(managed);
      return tensor;
    }
  }

  const DLDevice expected = to_dlpack_device(device);
  if (dl.device.device_type != expected.device_type ||
      (expected.device_type == kDLCUDA && dl.device.device_id != expected.device_id)) {
    throw std::invalid_argument("managed: a " + describe(dl.device) +
                                " tensor, but the context's " + device.name() + " exchanges " +
                                describe(expected));
  }
  if (dl.ndim < 0 || static_cast<std::size_t>(dl.ndim) > Shape::max_rank) {
    throw std::invalid_argument("managed: " + std::to_string(dl.ndim) +
                                " dimensions; gpulife supports 0 to " +
                                std::to_string(Shape::max_rank));
  }
  const auto rank = static_cast<std::size_t>(dl.ndim);
  const DType dtype = from_dlpack_dtype(dl.dtype);
  if (rank > 0 && dl.shape == nullptr) throw std::invalid_argument("managed: null shape");

  std::array<std::int64_t, Shape::max_rank> extents{};
  std::array<std::int64_t, Shape::max_rank> steps{};
  bool empty = false;
  for (std::size_t i = 0; i < rank; ++i) {
    extents[i] = dl.shape[i];
    if (extents[i] < 0) {
      throw std::invalid_argument("managed: extent " + std::to_string(extents[i]) +
                                  " of dimension " + std::to_string(i) + " is negative");
    }
    empty = empty || extents[i] == 0;
    if (dl.strides != nullptr) {
      steps[i] = dl.strides[i];
      if (steps[i] < 0) {
        throw std::invalid_argument("managed: stride " + std::to_string(steps[i]) +
                                    " of dimension " + std::to_string(i) +
                                    " is negative; gpulife does not support negative strides "
                                    "(make the tensor contiguous first)");
      }
    }
  }
  const Shape shape(std::span<const std::int64_t>(extents.data(), rank));
  Shape strides;  // empty: contiguous
  if (dl.strides != nullptr) strides = Shape(std::span<const std::int64_t>(steps.data(), rank));

  std::size_t span_bytes = 0;
  if (!empty) {
    // The last element's offset must be addressable: reject what would overflow.
    const Shape layout = dl.strides != nullptr ? strides : shape.contiguous_strides();
    std::int64_t last = 0;
    for (std::size_t i = 0; i < rank; ++i) {
      std::int64_t step = 0;
      if (__builtin_mul_overflow(shape[i] - 1, layout[i], &step) ||
          __builtin_add_overflow(last, step, &last)) {
        throw std::invalid_argument("managed: shape " + shape.to_string() +
                                    " and its strides overflow a 64-bit offset");
      }
    }
    std::int64_t span = 0;
    if (__builtin_mul_overflow(last + 1, static_cast<std::int64_t>(size_of(dtype)), &span)) {
      throw std::invalid_argument("managed: shape " + shape.to_string() +
                                  " overflows a 64-bit size");
    }
    if (dl.data == nullptr) {
      throw std::invalid_argument("managed: null data for a non-empty tensor");
    }
    span_bytes = static_cast<std::size_t>(span);
  }
  void* data = dl.data == nullptr ? nullptr : static_cast<std::byte*>(dl.data) + dl.byte_offset;

  const StreamView home = producer_stream.valid() ? producer_stream : ctx.default_stream();
  // On the sim a CPU producer's memory becomes device memory while borrowed, so that queued
  // work on it is checked like work on the sim's own memory (nothing happens on CUDA).
  detail::DeviceImpl* const lender = &device.impl();
  const bool registered = lender->register_external(data, span_bytes);
  struct Registration {
    detail::DeviceImpl* device;
    const void* data;
    bool active;
    ~Registration() {
      if (active) device->unregister_external(data);
    }
  };
  Registration on_failure{lender, data, registered};
  FinalizerFunction release = [managed, home, lender, data, registered](const TensorInfo&) {
    // The deleter runs even if waiting fails: the producer must get its tensor back. Destroyed
    // in reverse order, the registration ends before the producer can reuse the memory.
    const auto give_back = [](DLManagedTensor* m) { DLPackDeleter{}(m); };
    const std::unique_ptr<DLManagedTensor, decltype(give_back)> owner(managed, give_back);
    const Registration borrowed{lender, data, registered};
    // The producer may reuse the memory as soon as the deleter returns, on a stream of its own:
    // the work gpulife queued on it must have executed. The release has already made `home`
    // wait for the streams named with record_stream.
    home.synchronize();
  };
  DeviceTensor tensor = ctx.wrap(data, shape, strides, dtype, home, std::move(release), tag);
  on_failure.active = false;  // the tensor's release ends it now
  return tensor;
}

}  // namespace gpulife
