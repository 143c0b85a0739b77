// SPDX-License-Identifier: Apache-2.0
#include <gpulife/tensor/device_tensor.hpp>

#include <algorithm>
#include <stdexcept>
#include <string>

#include <gpulife/runtime/detail/enqueue_site.hpp>

#include "tensor/tensor_arena.hpp"

namespace gpulife {
namespace {

detail::TensorImpl& root_of(const detail::TensorImpl& impl) {
  return detail::memory_owner(const_cast<detail::TensorImpl&>(impl));
}

detail::TensorImpl& parent_of(const detail::TensorImpl& impl) {
  return detail::view_parent(const_cast<detail::TensorImpl&>(impl));
}

std::string name_of(const detail::TensorImpl& impl) {
  std::string text = "tensor #" + std::to_string(impl.id);
  if (!impl.tag.empty()) text += " '" + impl.tag + "'";
  return text;
}

/// Bytes from the first to one past the last element of a strided layout.
std::size_t span_bytes(const Shape& shape, const Shape& strides, DType dtype) {
  if (shape.numel() == 0) return 0;
  std::int64_t last = 0;
  for (std::size_t i = 0; i < shape.rank(); ++i) last += (shape[i] - 1) * strides[i];
  return static_cast<std::size_t>(last + 1) * size_of(dtype);
}

}  // namespace

void DeviceTensor::throw_empty() {
  throw std::invalid_argument("tensor: empty DeviceTensor (default-constructed or moved-from)");
}

void DeviceTensor::throw_dtype(DType wanted) const {
  throw std::invalid_argument("T: " + name_of(*impl_) + " holds " +
                              std::string(to_string(impl_->dtype)) + ", not " +
                              std::string(to_string(wanted)));
}

const Device& DeviceTensor::device() const { return checked().arena->device(); }

bool DeviceTensor::is_contiguous() const {
  const detail::TensorImpl& impl = checked();
  const Shape expected = impl.shape.contiguous_strides();
  for (std::size_t i = 0; i < impl.shape.rank(); ++i) {
    if (impl.shape[i] > 1 && impl.strides[i] != expected[i]) return false;
  }
  return true;
}

TensorInfo DeviceTensor::info() const {
  return detail::TensorArena::info_of(checked());
}

DeviceTensor DeviceTensor::view(const Shape& new_shape, SourceLocation where) const {
  const detail::TensorImpl& impl = checked();
  if (!is_contiguous()) {
    throw std::invalid_argument("tensor: " + name_of(impl) + " is not contiguous; view needs it");
  }
  if (new_shape.numel() != impl.shape.numel()) {
    throw std::invalid_argument("shape: " + new_shape.to_string() + " has " +
                                std::to_string(new_shape.numel()) + " elements, " +
                                name_of(impl) + " " + impl.shape.to_string() + " has " +
                                std::to_string(impl.shape.numel()));
  }
  detail::TensorImpl& parent = parent_of(impl);
  return DeviceTensor(parent.arena->create_view(parent, impl.data, impl.bytes, new_shape,
                                                new_shape.contiguous_strides(), where));
}

DeviceTensor DeviceTensor::slice(std::size_t dim, std::int64_t start, std::int64_t stop,
                                 SourceLocation where) const {
  const detail::TensorImpl& impl = checked();
  if (dim >= impl.shape.rank()) {
    throw std::invalid_argument("dim: " + std::to_string(dim) + " is not below the rank " +
                                std::to_string(impl.shape.rank()) + " of " + name_of(impl));
  }
  if (start < 0 || stop < start || stop > impl.shape[dim]) {
    throw std::invalid_argument(std::string(start < 0 ? "start" : "stop") + ": [" +
                                std::to_string(start) + ", " + std::to_string(stop) +
                                ") is not a range within [0, " + std::to_string(impl.shape[dim]) +
                                ") of dimension " + std::to_string(dim) + " of " + name_of(impl));
  }
  Shape shape = impl.shape;
  shape.set(dim, stop - start);
  const auto offset = static_cast<std::size_t>(start * impl.strides[dim]) * size_of(impl.dtype);
  void* data = impl.data != nullptr ? static_cast<std::byte*>(impl.data) + offset : nullptr;
  detail::TensorImpl& parent = parent_of(impl);
  return DeviceTensor(parent.arena->create_view(
      parent, data, span_bytes(shape, impl.strides, impl.dtype), shape, impl.strides, where));
}

void DeviceTensor::record_stream(StreamView stream) const {
  const detail::TensorImpl& impl = checked();
  if (!stream.valid()) throw std::invalid_argument("stream: empty StreamView");
  detail::TensorImpl& root = root_of(impl);
  if (&stream.device() != &root.arena->device().impl()) {
    throw std::invalid_argument("stream: belongs to " + stream.device().name() + ", " +
                                name_of(impl) + " to " + root.arena->device().name());
  }
  if (stream.impl() == root.stream) return;
  {
    std::scoped_lock lock(root.lock);
    if (root.recorded == nullptr) root.recorded = new std::vector<detail::StreamImpl*>();
    if (std::find(root.recorded->begin(), root.recorded->end(), stream.impl()) ==
        root.recorded->end()) {
      root.recorded->push_back(stream.impl());
    }
  }
  // During a capture of `stream`, the graph reads the tensor at every replay: it keeps it.
  if (root.arena->capturing()) root.arena->record_stream_hook(root, *stream.impl());
}

Finalizer DeviceTensor::on_release(FinalizerFunction fn) const {
  const detail::TensorImpl& impl = checked();
  if (!fn) throw std::invalid_argument("fn: empty function");
  detail::TensorImpl& root = root_of(impl);
  return Finalizer(
      root.arena->add_callback(root, detail::CallbackState::Kind::finalizer, std::move(fn)));
}

void DeviceTensor::download(std::span<std::byte> host, StreamView stream,
                            SourceLocation where) const {
  const detail::EnqueueSite site(where);
  const detail::TensorImpl& impl = checked();
  if (host.size() != impl.bytes) {
    throw std::invalid_argument("host: " + std::to_string(host.size()) + " bytes, " +
                                name_of(impl) + " holds " + std::to_string(impl.bytes));
  }
  if (!is_contiguous()) {
    throw std::invalid_argument("tensor: " + name_of(impl) +
                                " is not contiguous; download needs it");
  }
  const StreamView on = stream.valid() ? stream : StreamView{impl.stream};
  if (&on.device() != &impl.arena->device().impl()) {
    throw std::invalid_argument("stream: belongs to " + on.device().name() + ", " +
                                name_of(impl) + " to " + impl.arena->device().name());
  }
  on.copy(host.data(), impl.data, impl.bytes, CopyKind::device_to_host);
}

void DeviceTensor::upload(std::span<const std::byte> host, StreamView stream,
                          SourceLocation where) const {
  const detail::EnqueueSite site(where);
  const detail::TensorImpl& impl = checked();
  if (host.size() != impl.bytes) {
    throw std::invalid_argument("host: " + std::to_string(host.size()) + " bytes, " +
                                name_of(impl) + " holds " + std::to_string(impl.bytes));
  }
  if (!is_contiguous()) {
    throw std::invalid_argument("tensor: " + name_of(impl) + " is not contiguous; upload needs it");
  }
  const StreamView on = stream.valid() ? stream : StreamView{impl.stream};
  if (host.empty()) return;
  if (&on.device() != &impl.arena->device().impl()) {
    throw std::invalid_argument("stream: belongs to " + on.device().name() + ", " +
                                name_of(impl) + " to " + impl.arena->device().name());
  }
  impl.arena->copy_to_device(impl.data, host, on);
}

}  // namespace gpulife
