// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `HostBuffer`: host bytes that the user promises not to change, whose digest is taken
/// once.

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <utility>

#include <gpulife/cache/digest.hpp>
#include <gpulife/errors.hpp>
#include <gpulife/runtime/device.hpp>

namespace gpulife {

class DigestWorkers;

/// @brief What kind of host memory a `HostBuffer` holds.
enum class HostMemory : unsigned char {
  pageable,  ///< ordinary memory; an upload from it is staged by the driver
  pinned,    ///< page-locked (`Device::allocate_pinned`, cudaHostRegister); uploads are truly async
};

/// @brief `HostBuffer::verify` found that the bytes changed after their digest was taken.
class ModifiedBufferError : public Error {
 public:
  using Error::Error;
};

/// @brief A shared handle to immutable host bytes that remembers their digest.
///
/// The first `digest()` hashes the bytes; every later call, on any copy of the handle, returns
/// the remembered digest without reading them. A content-addressed upload of the same buffer
/// therefore hashes once however often it is repeated.
///
/// **The promise.** Whoever creates a `HostBuffer` promises that its bytes are not written from
/// the first `digest()` on (from creation, for the buffers gpulife allocates) until the last
/// copy of the handle is gone and every upload queued from it has executed. Broken, the promise
/// makes a cache return another content's device copy under this buffer's key. `verify()`
/// re-hashes and throws if the bytes changed: call it in debug builds or tests.
///
/// The bytes are owned (`copy`, `create`, `adopt`: freed with the last handle) or borrowed
/// (`view`: the caller keeps them alive). Copies of a handle share bytes and digest; a
/// default-constructed handle holds no bytes.
///
/// @par Thread safety
/// Const members may be called from any number of threads at once, on one handle or on copies.
/// Concurrent first calls of `digest()` hash once; the others wait for that result. As with
/// `std::shared_ptr`, assigning to a handle object while another thread uses that same object
/// is a race; copies are independent objects.
class HostBuffer {
 public:
  /// An empty buffer: no bytes, the digest of zero bytes.
  HostBuffer() noexcept = default;

  /// @brief A pageable copy of `bytes`.
  /// @throws std::invalid_argument naming `bytes` if its data is null and its size is not zero
  /// @throws std::bad_alloc when the memory cannot be had
  [[nodiscard]] static HostBuffer copy(std::span<const std::byte> bytes);

  /// @brief A pinned copy of `bytes`, in memory from `device.allocate_pinned`; the device lives
  /// at least as long as the buffer.
  /// @throws std::invalid_argument naming `device` if it is empty, or `bytes` as `copy` does
  /// @throws OutOfMemoryError when the host cannot provide pinned memory
  [[nodiscard]] static HostBuffer copy_pinned(const Device& device,
                                              std::span<const std::byte> bytes);

  /// @brief A pageable buffer of `size` bytes that `writer(std::span<std::byte>)` fills (reading
  /// a file into it, for example) before it becomes immutable; saves the copy `copy` makes.
  /// @throws std::bad_alloc when the memory cannot be had; anything `writer` throws (the memory is
  /// freed)
  template <std::invocable<std::span<std::byte>> Writer>
  [[nodiscard]] static HostBuffer create(std::size_t size, Writer&& writer) {
    Storage storage = allocate(size, nullptr);
    std::forward<Writer>(writer)(std::span{storage.data, size});
    return HostBuffer{storage.data, size, HostMemory::pageable, std::move(storage.owner)};
  }

  /// @brief Like `create`, in pinned memory from `device.allocate_pinned`.
  /// @throws std::invalid_argument naming `device` if it is empty
  /// @throws OutOfMemoryError when the host cannot provide pinned memory; anything `writer`
  /// throws (the memory is freed)
  template <std::invocable<std::span<std::byte>> Writer>
  [[nodiscard]] static HostBuffer create_pinned(const Device& device, std::size_t size,
                                                Writer&& writer) {
    Storage storage = allocate(size, &device);
    std::forward<Writer>(writer)(std::span{storage.data, size});
    return HostBuffer{storage.data, size, HostMemory::pinned, std::move(storage.owner)};
  }

  /// @brief Adopts bytes whose lifetime `owner` holds: they stay valid while `owner` lives, and
  /// the last handle releases `owner` (for a mapped file, an object whose destructor unmaps it).
  /// @param bytes  the bytes
  /// @param owner  keeps the bytes alive
  /// @param memory what kind of memory the bytes are in
  /// @throws std::invalid_argument naming `bytes` if its data is null and its size is not zero,
  /// or `owner` if it is empty
  [[nodiscard]] static HostBuffer adopt(std::span<const std::byte> bytes,
                                        std::shared_ptr<const void> owner,
                                        HostMemory memory = HostMemory::pageable);

  /// @brief Borrows bytes that the caller keeps alive, unchanged, as long as the promise above
  /// says.
  /// @param bytes  the bytes
  /// @param memory what kind of memory the bytes are in
  /// @throws std::invalid_argument naming `bytes` if its data is null and its size is not zero
  [[nodiscard]] static HostBuffer view(std::span<const std::byte> bytes,
                                       HostMemory memory = HostMemory::pageable);

  /// @return the bytes
  [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return {data(), size()}; }
  /// @return the first byte (null for an empty buffer)
  [[nodiscard]] const std::byte* data() const noexcept;
  /// @return the size in bytes
  [[nodiscard]] std::size_t size() const noexcept;
  /// @return the kind of memory the bytes are in
  [[nodiscard]] HostMemory memory() const noexcept;

  /// @brief The digest of the bytes, hashed on the first call and remembered.
  ///
  /// Call it right after creating the buffer to hash eagerly, off the upload's critical path.
  /// @throws nothing but std::bad_alloc
  [[nodiscard]] Digest128 digest() const;
  /// @brief Like `digest()`; a first call hashes on `workers`.
  /// @throws nothing but std::bad_alloc
  [[nodiscard]] Digest128 digest(const DigestWorkers& workers) const;
  /// @return true once the digest is remembered (a `digest()` or `verify()` call has returned)
  [[nodiscard]] bool has_digest() const noexcept;

  /// @brief Debug check of the promise: re-hashes the bytes and compares with the remembered
  /// digest (when none is remembered yet, takes and remembers it).
  /// @throws ModifiedBufferError if the bytes changed since their digest was taken; the message
  /// names the buffer, both digests and the promise
  void verify() const;
  /// @brief Like `verify()`, hashing on `workers`.
  void verify(const DigestWorkers& workers) const;

  /// @return how many times gpulife has read all the bytes of this buffer (its copies included)
  /// to hash them: 1 after any number of `digest()` calls, plus one per `verify()`
  [[nodiscard]] std::uint64_t hash_count() const noexcept;

 private:
  struct State;
  struct Storage {
    std::byte* data = nullptr;
    std::shared_ptr<const void> owner;
  };

  HostBuffer(const std::byte* data, std::size_t size, HostMemory memory,
             std::shared_ptr<const void> owner);
  /// Pageable memory when `device` is null, else pinned memory from it.
  static Storage allocate(std::size_t size, const Device* device);
  Digest128 digest_with(const DigestWorkers* workers) const;
  void verify_with(const DigestWorkers* workers) const;

  std::shared_ptr<State> state_;
};

}  // namespace gpulife
