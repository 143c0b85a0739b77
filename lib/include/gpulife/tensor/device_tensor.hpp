// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `DeviceTensor`: a reference-counted handle to device memory with a shape and dtype.

#include <cstddef>
#include <cstdint>
#include <gpulife/source_location.hpp>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <gpulife/runtime/stream_view.hpp>
#include <gpulife/tensor/detail/tensor_impl.hpp>
#include <gpulife/tensor/dtype.hpp>
#include <gpulife/tensor/finalizer.hpp>
#include <gpulife/tensor/shape.hpp>
#include <gpulife/tensor/tensor_info.hpp>

namespace gpulife {

class Device;
class WeakTensor;
namespace detail {
struct TensorAccess;
}

/// @brief A strong, reference-counted handle to a tensor in device memory.
///
/// Copying shares the tensor (an atomic increment); moving transfers the reference. When the
/// last strong handle drops, views included, the memory goes back to the context's memory
/// resource in stream order on the tensor's stream, after the work queued there; streams named
/// with `record_stream` are waited for too, through events and never by blocking the host.
/// Then the finalizers run, newest first, on the dropping thread.
///
/// Tensors are made by a `Context` (`empty`, `upload`, the cache). A default-constructed or
/// moved-from handle is empty: every accessor except `defined()`, `use_count()` and comparison
/// throws `std::invalid_argument`.
///
/// @par Thread safety
/// Handles may be copied and dropped from any thread. Distinct handles to one tensor may be
/// used concurrently; one handle object is not safe to assign while another thread reads it,
/// like `std::shared_ptr`.
class DeviceTensor {
 public:
  /// An empty handle.
  DeviceTensor() noexcept = default;
  /// Shares the tensor: one more strong reference.
  DeviceTensor(const DeviceTensor& other) noexcept : impl_(other.impl_) {
    if (impl_ != nullptr) detail::retain_strong(impl_);
  }
  /// Takes `other`'s reference; `other` becomes empty.
  DeviceTensor(DeviceTensor&& other) noexcept : impl_(std::exchange(other.impl_, nullptr)) {}
  /// Shares `other`'s tensor and drops this handle's previous reference.
  DeviceTensor& operator=(const DeviceTensor& other) noexcept {
    DeviceTensor(other).swap(*this);
    return *this;
  }
  /// Takes `other`'s reference and drops this handle's previous one.
  DeviceTensor& operator=(DeviceTensor&& other) noexcept {
    DeviceTensor(std::move(other)).swap(*this);
    return *this;
  }
  ~DeviceTensor() {
    if (impl_ != nullptr) detail::drop_strong(impl_);
  }
  /// Exchanges the tensors two handles refer to.
  void swap(DeviceTensor& other) noexcept { std::swap(impl_, other.impl_); }
  /// @brief Drops this handle's reference (the handle becomes empty).
  void reset() noexcept { DeviceTensor().swap(*this); }

  /// @return true unless empty
  [[nodiscard]] bool defined() const noexcept { return impl_ != nullptr; }
  /// @return `defined()`
  explicit operator bool() const noexcept { return defined(); }
  /// @return the number of strong handles to this tensor (0 when empty). Views hold their own
  /// count; each view also keeps one reference to the tensor it was made from.
  [[nodiscard]] long use_count() const noexcept {
    return impl_ != nullptr ? static_cast<long>(impl_->strong.load(std::memory_order_relaxed)) : 0;
  }

  /// @return the first element's device address
  [[nodiscard]] void* data() const { return checked().data; }
  /// @return the first element, typed
  /// @throws std::invalid_argument if `T` is not the storage type of `dtype()`
  template <TensorElement T>
  [[nodiscard]] T* data() const {
    check_dtype(dtype_of_v<T>);
    return static_cast<T*>(impl_->data);
  }
  /// @return bytes spanned by the elements
  [[nodiscard]] std::size_t bytes() const { return checked().bytes; }
  /// @return the number of elements (the product of the extents)
  [[nodiscard]] std::int64_t numel() const { return checked().shape.numel(); }
  /// @return the element type
  [[nodiscard]] DType dtype() const { return checked().dtype; }
  /// @return the extents
  [[nodiscard]] const Shape& shape() const { return checked().shape; }
  /// @return strides in elements
  [[nodiscard]] const Shape& strides() const { return checked().strides; }
  /// @return the number of dimensions
  [[nodiscard]] std::size_t rank() const { return checked().shape.rank(); }
  /// @return the stream the tensor lives on; its release is ordered there
  [[nodiscard]] StreamView stream() const { return StreamView{checked().stream}; }
  /// @return the device the memory is on
  [[nodiscard]] const Device& device() const;
  /// @return the process-unique id
  [[nodiscard]] std::uint64_t id() const { return checked().id; }
  /// @return the tag given at creation ("" if none)
  [[nodiscard]] const std::string& tag() const { return checked().tag; }
  /// @return true if the elements are dense and row-major
  [[nodiscard]] bool is_contiguous() const;
  /// @return true if this tensor shares the memory of another (made by `view` or `slice`)
  [[nodiscard]] bool is_view() const { return checked().base != nullptr; }
  /// @return a description that holds no reference (for logs and finalizers)
  [[nodiscard]] TensorInfo info() const;

  /// @brief A tensor of another shape over the same contiguous elements.
  /// @param shape the new extents, with as many elements
  /// @param where the site leak reports name for the view; leave defaulted
  /// @throws std::invalid_argument if not contiguous or `shape.numel() != numel()`
  [[nodiscard]] DeviceTensor view(
      const Shape& shape, SourceLocation where = SourceLocation::current()) const;
  /// @brief The elements `[start, stop)` along dimension `dim`, sharing memory.
  /// @param dim   the dimension to slice
  /// @param start the first index kept
  /// @param stop  one past the last index kept
  /// @param where the site leak reports name for the view; leave defaulted
  /// @throws std::invalid_argument if `dim >= rank()` or the range is outside `[0, shape[dim]]`
  [[nodiscard]] DeviceTensor slice(
      std::size_t dim, std::int64_t start, std::int64_t stop,
      SourceLocation where = SourceLocation::current()) const;

  /// @brief Makes the release of the memory also wait for the work queued on `stream` by then
  /// (PyTorch's `record_stream`): use it when another stream reads or writes the tensor.
  /// Recording the tensor's own stream does nothing. While `stream` is captured in a
  /// `Context::capture` scope, a release in that capture becomes a graph edge from `stream`,
  /// and a tensor whose memory is not from a `GraphPool` is kept alive by the captured graph
  /// until it is destroyed (it reads the tensor at every replay).
  /// @throws std::invalid_argument if `stream` is empty or of another device
  void record_stream(StreamView stream) const;

  /// @brief Registers `fn` to run once when the memory is released, or at context shutdown
  /// (Python's `weakref.finalize`). On a view it is registered on the memory's owner.
  /// Finalizers of one tensor run newest first. `fn` runs with no gpulife lock held and may
  /// create or drop tensors; an exception from it is reported, not propagated.
  /// @return the finalizer's handle
  /// @throws std::invalid_argument if `fn` is empty
  Finalizer on_release(FinalizerFunction fn) const;

  /// @brief Copies the tensor's bytes to `host`, ordered on `stream` (default: the tensor's).
  ///
  /// As in CUDA, a copy to pageable memory has completed when this returns; a copy to pinned
  /// memory completes in stream order. Work on another stream is not waited for: record an
  /// event, or pass that stream.
  /// `where` is the call site the simulated device names in its reports; leave it defaulted.
  /// @throws std::invalid_argument if `host.size() != bytes()` or the tensor is not contiguous
  void download(std::span<std::byte> host, StreamView stream = {},
                SourceLocation where = SourceLocation::current()) const;
  /// @brief Synchronous download into a new vector.
  /// @throws std::invalid_argument if `T` is not the storage type of `dtype()`
  template <TensorElement T>
  [[nodiscard]] std::vector<T> to_host(StreamView stream = {},
                                       SourceLocation where = SourceLocation::current()) const {
    check_dtype(dtype_of_v<T>);
    std::vector<T> host(static_cast<std::size_t>(numel()));
    download(std::as_writable_bytes(std::span(host)), stream, where);
    (stream.valid() ? stream : this->stream()).synchronize();
    return host;
  }
  /// @brief Copies `host` into the tensor, ordered on `stream` (default: the tensor's).
  /// `where` is the call site the simulated device names in its reports; leave it defaulted.
  /// @throws std::invalid_argument if `host.size() != bytes()` or the tensor is not contiguous
  void upload(std::span<const std::byte> host, StreamView stream = {},
              SourceLocation where = SourceLocation::current()) const;

  /// @return true if both handles refer to the same tensor (a view is a tensor of its own)
  friend bool operator==(const DeviceTensor& a, const DeviceTensor& b) noexcept {
    return a.impl_ == b.impl_;
  }

 private:
  friend class WeakTensor;
  friend struct detail::TensorAccess;
  /// Adopts one strong reference.
  explicit DeviceTensor(detail::TensorImpl* impl) noexcept : impl_(impl) {}

  [[nodiscard]] const detail::TensorImpl& checked() const {
    if (impl_ == nullptr) throw_empty();
    return *impl_;
  }
  void check_dtype(DType wanted) const {
    if (checked().dtype != wanted) throw_dtype(wanted);
  }
  [[noreturn]] static void throw_empty();
  [[noreturn]] void throw_dtype(DType wanted) const;

  detail::TensorImpl* impl_ = nullptr;
};

}  // namespace gpulife
