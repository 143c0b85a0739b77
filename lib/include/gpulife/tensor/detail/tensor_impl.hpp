// SPDX-License-Identifier: Apache-2.0
#pragma once

// The control block behind DeviceTensor and WeakTensor. Public only so that copying a handle
// is an inlined atomic increment; nothing outside gpulife touches it.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <gpulife/tensor/dtype.hpp>
#include <gpulife/tensor/shape.hpp>

namespace gpulife::detail {

class TensorArena;
class StreamImpl;
struct CallbackState;
struct TensorRecord;

/// A test-and-test-and-set lock for the few words of per-tensor state that change after
/// creation (callbacks, recorded streams); held for a handful of instructions.
class SpinLock {
 public:
  void lock() noexcept {
    while (flag_.test_and_set(std::memory_order_acquire)) flag_.wait(true, std::memory_order_relaxed);
  }
  void unlock() noexcept {
    flag_.clear(std::memory_order_release);
    flag_.notify_one();
  }

 private:
  std::atomic_flag flag_;
};

/// One tensor: a root owns device memory, a view holds a strong reference to its root.
///
/// `strong` counts DeviceTensor handles; when it reaches zero the tensor dies (memory released
/// stream-ordered, callbacks run). `weak` counts WeakTensor handles plus one for all strong ones
/// together; when it reaches zero the block goes back to the arena's slab. A weak handle can
/// only turn strong by incrementing a non-zero `strong`, so a lock racing with the last drop
/// gets either a live tensor or nothing.
struct TensorImpl {
  std::atomic<std::uint32_t> strong{1};
  std::atomic<std::uint32_t> weak{1};
  DType dtype = DType::byte;
  bool external = false;         // memory owned by someone else (e.g. a DLPack producer)
  bool anchor = false;           // views made from this view hold it, not only the memory's owner
  bool graph_block = false;      // roots: memory from a GraphPool (tensor/graph_pool.hpp)
  // released in a capture, kept by a GraphPool: the leak tracker still lists it
  std::atomic<bool> kept_by_graph_pool{false};
  TensorArena* arena = nullptr;  // where the block and the memory come from
  TensorImpl* base = nullptr;    // views: the root that owns the memory, or an anchor view
  void* data = nullptr;          // first element
  std::size_t bytes = 0;         // bytes spanned by this tensor's elements
  std::size_t alloc_bytes = 0;   // roots: size of the allocation
  StreamImpl* stream = nullptr;  // home stream: the release is ordered on it
  std::uint64_t id = 0;
  Shape shape{};
  Shape strides{};  // in elements
  std::string tag;
  SpinLock lock;  // guards `callbacks` and `recorded`
  std::vector<std::shared_ptr<CallbackState>>* callbacks = nullptr;  // lazily allocated
  std::vector<StreamImpl*>* recorded = nullptr;                       // lazily allocated
  TensorRecord* record = nullptr;  // leak mode only
};

/// The root that owns the memory of `impl` (itself for a root).
inline TensorImpl& memory_owner(TensorImpl& impl) noexcept {
  TensorImpl* owner = &impl;
  while (owner->base != nullptr) owner = owner->base;
  return *owner;
}

/// What a new view of `impl` holds on to: the nearest anchor at or above `impl` (a tensor the
/// cache hands out, whose life is what keeps a weak entry alive), else the memory's owner. A
/// view's base is always its memory's owner or an anchor (views are only made over those), so
/// that is `impl` itself or its base: a view of a view of a cache tensor holds the cache tensor.
inline TensorImpl& view_parent(TensorImpl& impl) noexcept {
  return impl.anchor || impl.base == nullptr ? impl : *impl.base;
}

/// The tensor died: release its memory and run its callbacks. Out of line: the cold path.
void release_strong(TensorImpl* impl) noexcept;
/// Drops one weak reference; the last returns the block to the slab.
void release_weak(TensorImpl* impl) noexcept;

inline void retain_strong(TensorImpl* impl) noexcept {
  // Relaxed: a new reference is made from an existing one, which already orders the block.
  impl->strong.fetch_add(1, std::memory_order_relaxed);
}
inline void drop_strong(TensorImpl* impl) noexcept {
  // acq_rel: the releasing thread must see every write made through other handles.
  if (impl->strong.fetch_sub(1, std::memory_order_acq_rel) == 1) release_strong(impl);
}
inline void retain_weak(TensorImpl* impl) noexcept {
  impl->weak.fetch_add(1, std::memory_order_relaxed);
}
inline void drop_weak(TensorImpl* impl) noexcept {
  if (impl->weak.fetch_sub(1, std::memory_order_acq_rel) == 1) release_weak(impl);
}

}  // namespace gpulife::detail
