// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `TensorCache`: a content-addressed weak cache that uploads identical host data once.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include <gpulife/cache/digest.hpp>
#include <gpulife/cache/host_buffer.hpp>
#include <gpulife/runtime/stream_view.hpp>
#include <gpulife/source_location.hpp>
#include <gpulife/tensor/device_tensor.hpp>
#include <gpulife/tensor/dtype.hpp>
#include <gpulife/tensor/shape.hpp>

namespace gpulife {

class DigestWorkers;
namespace detail {
class TensorArena;
}

/// @brief How long the cache keeps an entry once no one uses it.
enum class Retention : std::uint8_t {
  weak,    ///< only while some handle uses it (`WeakValueDictionary`); the default
  warm,    ///< also afterwards, most recently used first, within the warm byte budget
           ///< (`functools.lru_cache(maxsize)`)
  pinned,  ///< until `erase`, `clear` or context shutdown
};

/// @return "weak", "warm" or "pinned"
[[nodiscard]] std::string_view to_string(Retention retention) noexcept;

/// @brief The identity of a cache entry.
///
/// A content key is the digest of the bytes together with dtype and shape (the device is the
/// cache's): identical bytes uploaded as the same shape and dtype share one entry, however the
/// digest was obtained (hashed now, remembered by a `HostBuffer`, or computed earlier and passed
/// in). A name key is a caller-chosen name: the caller answers for one name meaning one content;
/// it never equals a content key.
class CacheKey {
 public:
  /// @brief The key of content with digest `digest`, as `dtype` elements of shape `shape`.
  [[nodiscard]] static CacheKey content(const Digest128& digest, DType dtype, const Shape& shape);
  /// @brief The key named `name`.
  /// @throws std::invalid_argument if `name` is empty
  [[nodiscard]] static CacheKey name(std::string_view name);

  /// @return true for a name key
  [[nodiscard]] bool is_name() const noexcept { return kind_ == Kind::name; }
  /// @return the content digest, or the digest of the name
  [[nodiscard]] const Digest128& digest() const noexcept { return digest_; }
  /// @return the dtype of a content key (`DType::byte` for a name key)
  [[nodiscard]] DType dtype() const noexcept { return dtype_; }
  /// @return the shape of a content key (rank 0 for a name key)
  [[nodiscard]] const Shape& shape() const noexcept { return shape_; }
  /// @return e.g. "name 'embedding'" or "content 3f2a…/f32[1024, 64]"
  [[nodiscard]] std::string to_string() const;
  /// @return a hash of the identity, computed once when the key is made
  [[nodiscard]] std::size_t hash() const noexcept { return hash_; }

  /// Keys are equal when they name the same entry.
  friend bool operator==(const CacheKey& a, const CacheKey& b) noexcept {
    // the hash first: a lookup mostly compares keys that differ
    return a.hash_ == b.hash_ && a.digest_ == b.digest_ && a.kind_ == b.kind_ &&
           a.dtype_ == b.dtype_ && a.shape_ == b.shape_;
  }

 private:
  enum class Kind : std::uint8_t { content, name };
  CacheKey() = default;
  void seal() noexcept;  // computes hash_

  std::size_t hash_ = 0;
  Digest128 digest_{};
  Kind kind_ = Kind::content;
  DType dtype_ = DType::byte;
  Shape shape_{};
  std::string label_;  // the name, for reports; not part of the identity
};

/// @brief Options of a `TensorCache` (part of `ContextOptions`).
struct TensorCacheOptions {
  /// Retention of entries whose call does not choose one.
  Retention retention = Retention::weak;
  /// Bytes the warm tier may keep alive after their last user dropped; least recently used
  /// entries are evicted first beyond it.
  std::size_t warm_budget_bytes = std::size_t{1} << 30;
  /// On every content hit, copy the device bytes back and compare them with the host bytes; a
  /// mismatch is reported and treated as a miss. For users who fear digest collisions; it costs
  /// a device-to-host copy per hit.
  bool verify_hits = false;
  /// Number of independently locked shards (rounded up to a power of two).
  std::size_t shards = 32;
};

/// @brief Per-call options of a cache upload.
struct CacheUploadOptions {
  /// Retention of a new entry (empty: the cache's). On a hit a stronger retention upgrades the
  /// entry; a weaker one never downgrades it.
  std::optional<Retention> retention{};
  /// Tag of a new entry's tensor, for reports.
  std::string_view tag{};
};

/// @brief Counters of a `TensorCache`.
struct CacheStatistics {
  std::uint64_t hits = 0;    ///< lookups that found a live or retained entry
  std::uint64_t misses = 0;  ///< lookups that uploaded (or called the factory)
  std::uint64_t bytes_uploaded = 0;      ///< host-to-device bytes the cache copied
  std::uint64_t bytes_deduplicated = 0;  ///< bytes of the uploads that hits avoided
  std::size_t live_entries = 0;          ///< entries whose memory is alive
  std::size_t live_bytes = 0;            ///< bytes of those entries
  std::size_t warm_entries = 0;  ///< entries kept only by the warm tier
  std::size_t warm_bytes = 0;      ///< bytes of those entries
  std::size_t pinned_entries = 0;  ///< entries with pinned retention
  std::size_t pinned_bytes = 0;    ///< bytes of those entries
  std::uint64_t evictions = 0;             ///< warm entries dropped for the budget or pressure
  std::uint64_t verification_failures = 0;  ///< hits whose device bytes differed (verify_hits)
};

/// @brief A pinned entry, for shutdown reports.
struct PinnedCacheEntry {
  std::string key;  ///< `CacheKey::to_string()`
  std::uint64_t tensor_id = 0;  ///< id of the tensor the entry keeps
  std::size_t bytes = 0;        ///< its size
  std::string tag;              ///< its tag
};

/// @brief Content-addressed weak cache of device tensors: identical host data is uploaded once
/// and shared while anyone uses it.
///
/// A hit returns the existing tensor (the same tensor to every user while one is alive) and
/// uploads nothing; a miss allocates from the context's pool, uploads asynchronously and records
/// the entry. By default an entry lives exactly as long as some handle uses it (`Retention`).
///
/// **Stream order.** An upload is asynchronous. A hit on another stream than the one the entry
/// was uploaded on makes that stream wait, on the device, for the upload (no host blocking), and
/// records the stream on the tensor so that its release waits for that stream's work too. A hit
/// on the upload's own stream needs neither.
///
/// **Single flight.** Threads asking for the same key at once share one upload: one allocation,
/// one copy; the others wait, on the host, only for the first to have queued it.
///
/// Tensors the cache returns are shared by everyone who uploads the same content: treat them as
/// read-only (a kernel that writes into one changes what every holder, and every later hit,
/// sees; `verify_hits` would catch it).
///
/// They are views of the memory the cache manages (`is_view()` is true):
/// that lets an entry outlive its users in the warm and pinned tiers. `tag()`, `data()`, the
/// shape and the dtype are those of the upload.
///
/// @par Thread safety
/// All members are thread-safe. Keys are spread over independently locked shards, so lookups of
/// different keys do not serialise on one lock. A lookup racing with the last drop of an entry's
/// tensor gets either that tensor or a fresh upload, never released memory; the removal of a
/// dying entry never removes a newer entry stored under the same key.
class TensorCache {
 public:
  /// What `get_or_create` calls on a miss; returns the tensor to share.
  using Factory = std::function<DeviceTensor()>;

  /// Made by `Context`; `workers` may be null (hash on the calling thread).
  TensorCache(detail::TensorArena& arena, const DigestWorkers* workers, TensorCacheOptions options);
  ~TensorCache();
  TensorCache(const TensorCache&) = delete;
  TensorCache& operator=(const TensorCache&) = delete;

  /// @brief The tensor holding `host` as `dtype` elements of `shape`; uploaded on a miss.
  ///
  /// The key is the digest of `host` (hashed on the context's digest workers) with dtype and
  /// shape. From pageable memory the bytes are consumed before the call returns.
  /// @param host    the bytes
  /// @param shape   extents of the tensor
  /// @param dtype   element type
  /// @param stream  where the tensor will be used first (empty: the default stream)
  /// @param options retention and tag of a new entry
  /// @param where   the allocation site (leak reports); leave defaulted
  /// @throws std::invalid_argument if `host` is empty or null, its size is not
  ///         `shape.numel() * size_of(dtype)`, `shape` has a zero extent, or `stream` belongs to
  ///         another device; the cache is unchanged
  /// @throws OutOfMemoryError after the memory-pressure chain
  [[nodiscard]] DeviceTensor upload(std::span<const std::byte> host, const Shape& shape,
                                    DType dtype, StreamView stream = {},
                                    CacheUploadOptions options = {},
                                    SourceLocation where = SourceLocation::current());
  /// @brief Typed `upload`: the dtype is `T`'s.
  template <TensorElement T>
  [[nodiscard]] DeviceTensor upload(std::span<const T> host, const Shape& shape,
                                    StreamView stream = {}, CacheUploadOptions options = {},
                                    SourceLocation where = SourceLocation::current()) {
    return upload(std::as_bytes(host), shape, dtype_of_v<T>, stream, options, where);
  }
  /// @brief `upload` of an immutable buffer: its digest is taken once (`HostBuffer`), so
  /// repeated uploads of it hash nothing. From pinned memory the copy is truly asynchronous: the
  /// stream keeps the buffer alive until it has run (should that fail to queue, the call waits
  /// for the copy instead).
  /// @throws as `upload`
  [[nodiscard]] DeviceTensor upload(const HostBuffer& host, const Shape& shape, DType dtype,
                                    StreamView stream = {}, CacheUploadOptions options = {},
                                    SourceLocation where = SourceLocation::current());
  /// @brief `upload` under a caller-supplied key (`CacheKey::content` of a digest computed
  /// earlier, or `CacheKey::name`): nothing is hashed, the fastest path.
  /// @throws as `upload`, and std::invalid_argument if `key` is a content key of another dtype
  ///         or shape, or a name key whose entry holds another dtype or shape
  [[nodiscard]] DeviceTensor upload(const CacheKey& key, std::span<const std::byte> host,
                                    const Shape& shape, DType dtype, StreamView stream = {},
                                    CacheUploadOptions options = {},
                                    SourceLocation where = SourceLocation::current());

  /// @brief One live instance per key while it is used (the weak-singleton pattern): returns the
  /// entry's tensor, or calls `factory` once, shares what it returns and records an event on its
  /// stream for readiness. An exception from `factory` propagates and leaves no entry; threads
  /// that waited for it get the same exception.
  /// @throws std::invalid_argument if `factory` is empty or returns an empty or foreign tensor
  [[nodiscard]] DeviceTensor get_or_create(const CacheKey& key, const Factory& factory,
                                           StreamView stream = {},
                                           CacheUploadOptions options = {},
                                           SourceLocation where =
                                               SourceLocation::current());

  /// @return the entry's tensor if one is alive (or retained), else an empty handle; never
  /// uploads. On another stream than the upload's, the stream is made to wait as for a hit.
  [[nodiscard]] DeviceTensor find(const CacheKey& key, StreamView stream = {},
                                  SourceLocation where = SourceLocation::current());

  /// @brief Removes the entry of `key`, whatever its retention. Handles users hold stay valid.
  /// @return true if there was one
  bool erase(const CacheKey& key);
  /// @brief Drops every entry kept only by the warm tier.
  /// @return bytes released
  std::size_t clear_warm();
  /// @brief Removes every entry (what context shutdown does).
  void clear();

  /// @return a snapshot of the counters
  [[nodiscard]] CacheStatistics statistics() const;
  /// @return the bytes of the entries in the cache now (the timeline's tensor-cache counter)
  [[nodiscard]] std::size_t cached_bytes() const;
  /// @return the pinned entries (leak reports list them as pinned, not leaked)
  [[nodiscard]] std::vector<PinnedCacheEntry> pinned_entries() const;

 private:
  struct State;
  std::shared_ptr<State> state_;  // entries' expiry callbacks hold it weakly
};

}  // namespace gpulife

/// Hashes a `CacheKey` for unordered containers (the key's own, precomputed hash).
template <>
struct std::hash<gpulife::CacheKey> {
  [[nodiscard]] std::size_t operator()(const gpulife::CacheKey& key) const noexcept {
    return key.hash();
  }
};
