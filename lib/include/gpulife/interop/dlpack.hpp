// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief DLPack interop: lend a `DeviceTensor` to another framework (PyTorch, CuPy, JAX, ...)
/// and borrow theirs, without copying.
///
/// Works with DLPack 0.6 and later: the unversioned `DLManagedTensor` is the stable exchange
/// struct, compiled into gpulife. When the including translation unit sees a DLPack 1.x header
/// (`DLPACK_MAJOR_VERSION` defined), the `DLManagedTensorVersioned` overloads at the end of this
/// header are available too; they are inline adaptors over the unversioned functions, so a
/// gpulife built against DLPack 0.6 serves consumers built against 1.x.
///
/// Device mapping: the CUDA backend exchanges `kDLCUDA` with the device's ordinal; the simulated
/// device exchanges `kDLCPU`, because its device memory is host memory that any CPU consumer can
/// read.

#include <cstdint>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>

#include <dlpack/dlpack.h>

#include <gpulife/context.hpp>
#include <gpulife/runtime/device.hpp>
#include <gpulife/runtime/stream_view.hpp>
#include <gpulife/tensor/device_tensor.hpp>
#include <gpulife/tensor/dtype.hpp>

namespace gpulife {

/// @brief The DLPack device of a gpulife device: `{kDLCUDA, ordinal}` on the CUDA backend,
/// `{kDLCPU, 0}` on the simulated device.
/// @throws std::invalid_argument if `device` is empty
[[nodiscard]] DLDevice to_dlpack_device(const Device& device);

/// @brief The DLPack data type of a dtype (lanes 1). `DType::byte` is exported as `uint8`.
[[nodiscard]] DLDataType to_dlpack_dtype(DType dtype) noexcept;

/// @brief The dtype of a DLPack data type.
///
/// Accepted: float16/32/64, bfloat16, int8/32/64 and uint8, with one lane.
/// @throws std::invalid_argument naming the type for anything else (vector lanes, complex,
///         bool, int16, ...)
[[nodiscard]] DType from_dlpack_dtype(DLDataType dtype);

/// @brief Lends `tensor` to a DLPack consumer (`__dlpack__` on the producer side).
///
/// The returned `DLManagedTensor` holds a strong reference to the tensor: the memory stays
/// alive, whatever happens to gpulife's own handles, until the consumer calls its `deleter`
/// (exactly once; the deleter frees the struct too). The release then follows gpulife's usual
/// stream order. Shape and strides are always given (strides in elements); `byte_offset` is 0
/// and `data` is the first element, as PyTorch and CuPy export.
///
/// Stream order, as in the array API's `__dlpack__(stream=...)`: the consumer's stream is made
/// to wait, on the device, for the work queued on the tensor's stream so far (an event), and is
/// recorded on the tensor (`record_stream`), so that the release also waits for the consumer's
/// work queued before it calls the deleter. On the simulated device (`kDLCPU`) with no consumer
/// stream, the consumer is a CPU framework reading host memory on the host: the call waits on
/// the host until the work queued on the tensor's stream has executed.
///
/// @param tensor          the tensor to lend; views are exported with their own shape and
///                        strides
/// @param consumer_stream the stream the consumer will use the memory on. Empty: on CUDA the
///                        device's default stream (the array API's `stream=None`); on the sim
///                        the host, as above.
/// @return a new managed tensor, owned by the caller until its deleter is called
/// @throws std::invalid_argument if `tensor` is empty or `consumer_stream` belongs to another
///         device
/// @throws std::bad_alloc if the managed tensor cannot be allocated
/// @throws CudaError if recording or waiting on the event fails
/// @par Thread safety
/// Safe to call concurrently on handles of the same tensor. The deleter may be called from any
/// thread.
[[nodiscard]] DLManagedTensor* to_dlpack(const DeviceTensor& tensor,
                                         StreamView consumer_stream = {});

/// @brief A consumer's stream as DLPack's `__dlpack__(stream=...)` passes it: an integer.
///
/// For CUDA (`kDLCUDA`), following the array API: `legacy_default` (1) is the legacy default
/// stream, `per_thread_default` (2) the per-thread default stream, any other positive value a
/// `cudaStream_t` of the tensor's device cast to an integer, and `no_sync` (-1) asks for no
/// synchronisation at all. 0 is refused (DLPack disallows it: ambiguous). On the simulated
/// device (`kDLCPU`, which the array API gives no streams) the values are gpulife's own:
/// `legacy_default` is the device's default stream and any other positive value the native
/// handle of one of its streams (`StreamView::native_handle()`).
struct DLPackStream {
  /// @param stream_value the integer the consumer passed
  constexpr explicit DLPackStream(std::intptr_t stream_value) noexcept : value(stream_value) {}
  std::intptr_t value;  ///< the integer the consumer passed

  static constexpr std::intptr_t no_sync = -1;            ///< no synchronisation asked for
  static constexpr std::intptr_t legacy_default = 1;      ///< CUDA's legacy default stream
  static constexpr std::intptr_t per_thread_default = 2;  ///< CUDA's per-thread default stream
};

/// @brief Lends `tensor` to a DLPack consumer that names its stream as an integer, as
/// `__dlpack__(stream=...)` does (PyTorch, CuPy and JAX pass a raw `cudaStream_t` there).
///
/// The consumer's stream waits, on the device, for the work queued on the tensor's stream so far
/// (an event; the host does not block). The stream belongs to the consumer, so gpulife keeps no
/// reference to it: instead, when the consumer calls the deleter, an event recorded on its
/// stream at that moment is made a dependency of the tensor's stream, so that the release
/// (ordered on the tensor's stream) waits for the consumer's work queued before it let go. The
/// consumer must call the deleter while its stream still exists; for the per-thread default
/// stream, on the thread that exported (from another thread the deleter waits for the whole
/// device instead). With `no_sync` neither happens: the consumer has promised to order its work
/// itself. Otherwise as the `StreamView` overload.
/// @param tensor          the tensor to lend
/// @param consumer_stream the consumer's stream, as the integer it passed
/// @return a new managed tensor, owned by the caller until its deleter is called
/// @throws std::invalid_argument naming `tensor` if it is empty, or `consumer_stream` for 0, for
///         a handle that is not a stream of the tensor's device, or for
///         `per_thread_default` on the simulated device
/// @throws std::bad_alloc if the managed tensor cannot be allocated
/// @throws CudaError if recording or waiting on the event fails
[[nodiscard]] DLManagedTensor* to_dlpack(const DeviceTensor& tensor, DLPackStream consumer_stream);

/// @brief Borrows a DLPack tensor from another framework as a `DeviceTensor`
/// (`from_dlpack` on the consumer side).
///
/// On success gpulife owns `managed`: the producer's `deleter` runs exactly once, when the last
/// handle to the tensor (views included) drops. It is never freed through gpulife's memory
/// resource and its finalizer is not run at context shutdown while the tensor is still alive.
/// Before the deleter runs, the release waits on the host until the work queued on
/// `producer_stream` and on the streams named with `record_stream` has executed: a producer may
/// reuse the memory as soon as its deleter returns, on a stream gpulife knows nothing about.
///
/// On the simulated device a CPU producer's memory counts as device memory while it is borrowed
/// (the device checks queued work on it as on its own memory, and never poisons it).
///
/// A tensor made by `to_dlpack` on the same device comes back as the original tensor (the
/// managed tensor is consumed and its deleter called at once), so a round trip shares one
/// tensor and its finalizers.
///
/// @param ctx             the context the tensor belongs to; its device must be the DLPack
///                        device (`kDLCUDA` with the same ordinal on CUDA, `kDLCPU` on the sim)
/// @param managed         the producer's tensor; `byte_offset` is honoured, null strides mean
///                        contiguous row-major
/// @param producer_stream the stream the tensor's memory is ordered on, where the producer's
///                        work was made visible (`__dlpack__(stream=...)`); empty: the context's
///                        default stream. It becomes the tensor's stream.
/// @param tag             the tensor's name in reports
/// @return a tensor over the producer's memory
/// @throws std::invalid_argument if `managed` is null, or its device, dtype, rank (at most
///         `Shape::max_rank`), shape or strides (negative strides are not supported) cannot be
///         represented; the message names the field. Nothing is taken then: the caller still
///         owns `managed` and must call its deleter.
/// @throws std::bad_alloc as `Context::wrap`, likewise leaving `managed` with the caller
/// @par Thread safety
/// As `Context::wrap`. The deleter is called on the thread that drops the last handle.
[[nodiscard]] DeviceTensor from_dlpack(Context& ctx, DLManagedTensor* managed,
                                       StreamView producer_stream = {},
                                       std::string_view tag = "dlpack");

/// @brief Calls a managed tensor's deleter; for `std::unique_ptr`.
struct DLPackDeleter {
  /// Calls `managed->deleter(managed)` if both are non-null.
  void operator()(DLManagedTensor* managed) const noexcept {
    if (managed != nullptr && managed->deleter != nullptr) managed->deleter(managed);
  }
};

/// @brief Owns a managed tensor until it is handed over: `from_dlpack(ctx, p.get())` and then
/// `p.release()` once it succeeded, so that a failure leaves nothing leaked.
using UniqueDLManagedTensor = std::unique_ptr<DLManagedTensor, DLPackDeleter>;

#if defined(DLPACK_MAJOR_VERSION)

namespace detail {

/// The versioned struct lends an unversioned one: `manager_ctx` is the unversioned tensor.
inline void delete_versioned_export(DLManagedTensorVersioned* self) {
  auto* inner = static_cast<DLManagedTensor*>(self->manager_ctx);
  delete self;
  DLPackDeleter{}(inner);
}

/// The unversioned adaptor of a borrowed versioned tensor: `manager_ctx` is the producer's.
inline void delete_versioned_import(DLManagedTensor* self) {
  auto* outer = static_cast<DLManagedTensorVersioned*>(self->manager_ctx);
  delete self;
  if (outer != nullptr && outer->deleter != nullptr) outer->deleter(outer);
}

}  // namespace detail

/// @brief `to_dlpack` for DLPack 1.x consumers: a `DLManagedTensorVersioned` of this header's
/// version, flags 0 (writable, not a copy). Semantics as the unversioned overload.
/// @throws what `to_dlpack` throws
[[nodiscard]] inline DLManagedTensorVersioned* to_dlpack_versioned(
    const DeviceTensor& tensor, StreamView consumer_stream = {}) {
  UniqueDLManagedTensor inner(to_dlpack(tensor, consumer_stream));
  auto* outer = new DLManagedTensorVersioned{};
  outer->version.major = DLPACK_MAJOR_VERSION;
  outer->version.minor = DLPACK_MINOR_VERSION;
  outer->flags = 0;
  outer->dl_tensor = inner->dl_tensor;  // its shape and strides arrays live in `inner`
  outer->manager_ctx = inner.release();
  outer->deleter = &detail::delete_versioned_export;
  return outer;
}

/// @brief `from_dlpack` for a DLPack 1.x producer's `DLManagedTensorVersioned`.
///
/// Semantics as the unversioned overload, and on failure the caller likewise keeps `managed`.
/// @throws std::invalid_argument also if the major version is not this header's (the layout
///         after `flags` is then unknown; the caller must call the deleter, as DLPack says) or
///         the tensor is marked read-only (gpulife hands out writable pointers)
[[nodiscard]] inline DeviceTensor from_dlpack(Context& ctx, DLManagedTensorVersioned* managed,
                                              StreamView producer_stream = {},
                                              std::string_view tag = "dlpack") {
  if (managed == nullptr) throw std::invalid_argument("managed: null DLManagedTensorVersioned");
  if (managed->version.major != DLPACK_MAJOR_VERSION) {
    throw std::invalid_argument("managed: DLPack major version " +
                                std::to_string(managed->version.major) + ", gpulife reads " +
                                std::to_string(DLPACK_MAJOR_VERSION));
  }
  if ((managed->flags & DLPACK_FLAG_BITMASK_READ_ONLY) != 0) {
    throw std::invalid_argument("managed: the tensor is read-only; gpulife tensors are writable");
  }
  auto adaptor = std::make_unique<DLManagedTensor>();
  adaptor->dl_tensor = managed->dl_tensor;
  adaptor->manager_ctx = managed;
  adaptor->deleter = &detail::delete_versioned_import;
  DeviceTensor tensor = from_dlpack(ctx, adaptor.get(), producer_stream, tag);
  (void)adaptor.release();  // owned by the tensor now
  return tensor;
}

#endif  // DLPACK_MAJOR_VERSION

}  // namespace gpulife
