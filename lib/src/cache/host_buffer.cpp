// SPDX-License-Identifier: Apache-2.0
#include <gpulife/cache/host_buffer.hpp>

#include <atomic>
#include <cstring>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>

#include <gpulife/cache/digest_workers.hpp>
#include <gpulife/runtime/pinned_host_cache.hpp>

#include "detail/format.hpp"

namespace gpulife {
namespace {

// Cache-line aligned, so that hashing and copying start on a line boundary.
constexpr std::align_val_t pageable_alignment{64};

void check_bytes(std::span<const std::byte> bytes) {
  if (bytes.data() == nullptr && !bytes.empty()) {
    throw std::invalid_argument("bytes: null data with size " + std::to_string(bytes.size()));
  }
}

Digest128 hash(std::span<const std::byte> bytes, const DigestWorkers* workers) {
  return workers != nullptr ? workers->digest(bytes) : gpulife::digest(bytes);
}

}  // namespace

struct HostBuffer::State {
  State(const std::byte* bytes_data, std::size_t bytes_size, HostMemory bytes_memory,
        std::shared_ptr<const void> bytes_owner) noexcept
      : data(bytes_data), size(bytes_size), memory(bytes_memory), owner(std::move(bytes_owner)) {}

  const std::byte* data;
  std::size_t size;
  HostMemory memory;
  std::shared_ptr<const void> owner;

  std::once_flag once;
  Digest128 digest;  // written once inside `once`, read only after it
  // release/acquire: lets later callers skip call_once's synchronisation and still see `digest`.
  std::atomic<bool> has_digest{false};
  std::atomic<std::uint64_t> hash_count{0};
};

HostBuffer::HostBuffer(const std::byte* data, std::size_t size, HostMemory memory,
                       std::shared_ptr<const void> owner)
    : state_(std::make_shared<State>(data, size, memory, std::move(owner))) {}

HostBuffer::Storage HostBuffer::allocate(std::size_t size, const Device* device) {
  if (device != nullptr && !device->valid()) throw std::invalid_argument("device: empty Device");
  if (size == 0) return {};
  Storage storage;
  if (device == nullptr) {
    void* ptr = ::operator new(size, pageable_alignment);
    // If the control block cannot be allocated, shared_ptr frees `ptr` through the deleter.
    storage.owner = std::shared_ptr<void>(
        ptr, [](void* p) noexcept { ::operator delete(p, pageable_alignment); });
    storage.data = static_cast<std::byte*>(ptr);
  } else {
    // From the device's cache: no cudaMallocHost/cudaFreeHost pair (both synchronise) per
    // buffer. Giving the block back calls no CUDA function, so the last handle may drop anywhere.
    void* ptr = device->pinned_host_cache().allocate(size);
    storage.owner = std::shared_ptr<void>(ptr, [owner = *device](void* p) noexcept {
      owner.pinned_host_cache().deallocate(p);
    });
    storage.data = static_cast<std::byte*>(ptr);
  }
  return storage;
}

HostBuffer HostBuffer::copy(std::span<const std::byte> bytes) {
  check_bytes(bytes);
  return create(bytes.size(), [&](std::span<std::byte> out) {
    if (!out.empty()) std::memcpy(out.data(), bytes.data(), out.size());
  });
}

HostBuffer HostBuffer::copy_pinned(const Device& device, std::span<const std::byte> bytes) {
  check_bytes(bytes);
  return create_pinned(device, bytes.size(), [&](std::span<std::byte> out) {
    if (!out.empty()) std::memcpy(out.data(), bytes.data(), out.size());
  });
}

HostBuffer HostBuffer::adopt(std::span<const std::byte> bytes, std::shared_ptr<const void> owner,
                             HostMemory memory) {
  check_bytes(bytes);
  if (!owner) throw std::invalid_argument("owner: empty; use HostBuffer::view to borrow bytes");
  return HostBuffer{bytes.data(), bytes.size(), memory, std::move(owner)};
}

HostBuffer HostBuffer::view(std::span<const std::byte> bytes, HostMemory memory) {
  check_bytes(bytes);
  return HostBuffer{bytes.data(), bytes.size(), memory, nullptr};
}

const std::byte* HostBuffer::data() const noexcept { return state_ ? state_->data : nullptr; }

std::size_t HostBuffer::size() const noexcept { return state_ ? state_->size : 0; }

HostMemory HostBuffer::memory() const noexcept {
  return state_ ? state_->memory : HostMemory::pageable;
}

Digest128 HostBuffer::digest() const { return digest_with(nullptr); }

Digest128 HostBuffer::digest(const DigestWorkers& workers) const { return digest_with(&workers); }

bool HostBuffer::has_digest() const noexcept {
  return state_ && state_->has_digest.load(std::memory_order_acquire);
}

Digest128 HostBuffer::digest_with(const DigestWorkers* workers) const {
  if (!state_) return gpulife::digest(std::span<const std::byte>{});
  State& state = *state_;
  if (state.has_digest.load(std::memory_order_acquire)) return state.digest;
  // A hash that throws (bad_alloc) leaves the flag unset, so the next call tries again.
  std::call_once(state.once, [&] {
    state.digest = hash(bytes(), workers);
    state.hash_count.fetch_add(1, std::memory_order_relaxed);
    state.has_digest.store(true, std::memory_order_release);
  });
  return state.digest;
}

void HostBuffer::verify() const { verify_with(nullptr); }

void HostBuffer::verify(const DigestWorkers& workers) const { verify_with(&workers); }

void HostBuffer::verify_with(const DigestWorkers* workers) const {
  if (!state_) return;
  State& state = *state_;
  if (!state.has_digest.load(std::memory_order_acquire)) {
    // Nothing to compare with yet: this call takes the digest that later checks compare with.
    (void)digest_with(workers);
    return;
  }
  const Digest128 now = hash(bytes(), workers);
  state.hash_count.fetch_add(1, std::memory_order_relaxed);
  if (now != state.digest) {
    throw ModifiedBufferError(
        "HostBuffer of " + detail::format_bytes(state.size) + " at " +
        detail::format_pointer(state.data) +
        ": the bytes changed after their digest was taken "
        "(digest " +
        state.digest.to_hex() + ", now " + now.to_hex() +
        "); a HostBuffer's bytes must not be written from its first digest on");
  }
}

std::uint64_t HostBuffer::hash_count() const noexcept {
  return state_ ? state_->hash_count.load(std::memory_order_relaxed) : 0;
}

}  // namespace gpulife
