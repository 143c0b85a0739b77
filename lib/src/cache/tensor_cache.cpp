// SPDX-License-Identifier: Apache-2.0
#include <gpulife/cache/tensor_cache.hpp>

#include <algorithm>
#include <bit>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <iterator>
#include <list>
#include <mutex>
#include <stdexcept>
#include <unordered_map>
#include <utility>
#include <vector>

#include <gpulife/cache/digest_workers.hpp>
#include <gpulife/runtime/detail/enqueue_site.hpp>
#include <gpulife/runtime/event.hpp>
#include <gpulife/tensor/weak_tensor.hpp>

#include "detail/format.hpp"
#include "detail/function_ref.hpp"
#include "tensor/tensor_arena.hpp"

namespace gpulife {

std::string_view to_string(Retention retention) noexcept {
  switch (retention) {
    case Retention::weak: return "weak";
    case Retention::warm: return "warm";
    case Retention::pinned: return "pinned";
  }
  return "?";
}

// ---- keys --------------------------------------------------------------------------------------

CacheKey CacheKey::content(const Digest128& digest, DType dtype, const Shape& shape) {
  CacheKey key;
  key.digest_ = digest;
  key.kind_ = Kind::content;
  key.dtype_ = dtype;
  key.shape_ = shape;
  key.seal();
  return key;
}

CacheKey CacheKey::name(std::string_view name) {
  if (name.empty()) throw std::invalid_argument("name: empty cache key name");
  CacheKey key;
  key.digest_ = gpulife::digest(name.data(), name.size());
  key.kind_ = Kind::name;
  key.label_ = name;
  key.seal();
  return key;
}

void CacheKey::seal() noexcept {
  // The digest is uniformly spread already; fold in what else distinguishes keys.
  std::uint64_t h = digest_.low ^ (digest_.high * 0x9E3779B97F4A7C15ULL);
  h ^= (static_cast<std::uint64_t>(dtype_) << 56) ^ (static_cast<std::uint64_t>(kind_) << 48);
  for (std::int64_t extent : shape_.dims()) {
    h = (h ^ static_cast<std::uint64_t>(extent)) * 0x100000001B3ULL;
  }
  hash_ = static_cast<std::size_t>(h ^ (h >> 29));
}

std::string CacheKey::to_string() const {
  if (kind_ == Kind::name) return "name '" + label_ + "'";
  return "content " + digest_.to_hex().substr(0, 12) + "…/" +
         std::string(gpulife::to_string(dtype_)) + shape_.to_string();
}

namespace {

bool stronger(Retention a, Retention b) noexcept {
  return static_cast<int>(a) > static_cast<int>(b);
}

/// The tensor that owns a view's memory (the view itself if it owns it).
DeviceTensor owner_of(const DeviceTensor& tensor) {
  detail::TensorImpl& owner = detail::memory_owner(*detail::TensorAccess::impl(tensor));
  detail::retain_strong(&owner);
  return detail::TensorAccess::adopt(&owner);
}

}  // namespace

struct TensorCache::State : std::enable_shared_from_this<TensorCache::State> {
  /// The first request for a key queues the upload; others with the same key wait for it.
  struct Loading {
    std::mutex mutex;
    std::condition_variable cv;
    bool done = false;
    std::exception_ptr error;

    void finish(std::exception_ptr e) {
      {
        std::scoped_lock lock(mutex);
        done = true;
        error = std::move(e);
      }
      cv.notify_all();
    }
    void wait() {
      std::unique_lock lock(mutex);
      cv.wait(lock, [&] { return done; });
      if (error) std::rethrow_exception(error);
    }
  };

  enum class Tier : std::uint8_t { none, warm_idle, evicting };

  struct Entry {
    explicit Entry(CacheKey k) : key(std::move(k)) {}
    const CacheKey key;
    // guarded by the shard's mutex
    std::shared_ptr<Loading> loading;  // set while the first upload is being queued
    WeakTensor view;                   // the tensor users hold; its expiry callback is ours
    std::uint64_t view_id = 0;
    DeviceTensor root;                 // held while warm or pinned
    Event ready;                       // recorded after the upload
    detail::StreamImpl* home = nullptr;
    Retention retention = Retention::weak;
    std::size_t bytes = 0;
    DType dtype = DType::byte;
    Shape shape{};
    std::string tag;
    // guarded by lru_mutex
    Tier tier = Tier::none;
    std::list<std::shared_ptr<Entry>>::iterator lru_position{};
  };

  struct Shard {
    mutable std::mutex mutex;
    std::unordered_map<CacheKey, std::shared_ptr<Entry>> entries;
    std::uint64_t hits = 0;
    std::uint64_t misses = 0;
    std::uint64_t bytes_uploaded = 0;
    std::uint64_t bytes_deduplicated = 0;
    std::uint64_t verification_failures = 0;
    std::size_t live_bytes = 0;  // of the ready entries in `entries`
  };

  using EntryMap = std::unordered_map<CacheKey, std::shared_ptr<Entry>>;

  /// Takes an entry out of its shard's map. Shard lock held; the caller drops the entry after
  /// unlocking.
  static std::shared_ptr<Entry> remove_locked(Shard& shard, EntryMap::iterator it) {
    std::shared_ptr<Entry> entry = std::move(it->second);
    shard.entries.erase(it);
    if (!entry->loading) shard.live_bytes -= entry->bytes;
    return entry;
  }

  State(detail::TensorArena& arena_in, const DigestWorkers* workers_in,
        TensorCacheOptions options_in)
      : arena(arena_in), workers(workers_in), options(options_in) {
    const std::size_t count = std::bit_ceil(std::max<std::size_t>(options.shards, 1));
    shards.reserve(count);
    for (std::size_t i = 0; i < count; ++i) shards.push_back(std::make_unique<Shard>());
  }

  Shard& shard_for(const CacheKey& key) {
    // High bits: the shard's map picks buckets with the low ones.
    return *shards[(key.hash() >> 40) & (shards.size() - 1)];
  }

  StreamView resolve(StreamView stream) const {
    const Device& device = arena.device();
    if (!stream.valid()) return device.default_stream();
    if (&stream.device() != &device.impl()) {
      throw std::invalid_argument("stream: belongs to " + stream.device().name() +
                                  ", the cache to " + device.name());
    }
    return stream;
  }

  void notify(LifetimeEvent event, std::uint64_t id, std::size_t bytes, std::string_view tag,
              std::uint64_t memory_id = 0) const noexcept {
    if (detail::TensorObserver* observer = arena.observer()) {
      observer->on_event(event, id, bytes, tag, memory_id);
    }
  }

  /// The id of the tensor that owns `view`'s memory: the upload a hit reuses.
  static std::uint64_t memory_id(const DeviceTensor& view) noexcept {
    return detail::memory_owner(*detail::TensorAccess::impl(view)).id;
  }

  // ---- the tiers ----

  /// The entry's users are gone but the warm tier keeps it. Shard lock held.
  void enter_warm_tier(const std::shared_ptr<Entry>& entry) {
    std::scoped_lock lock(lru_mutex);
    entry->lru_position = lru.insert(lru.end(), entry);
    entry->tier = Tier::warm_idle;
    warm_bytes += entry->bytes;
    ++warm_entries;
  }

  /// The entry has users again, or is leaving the cache. Shard lock held.
  void leave_warm_tier(Entry& entry) {
    std::scoped_lock lock(lru_mutex);
    if (entry.tier == Tier::warm_idle) {
      lru.erase(entry.lru_position);
      warm_bytes -= entry.bytes;
      --warm_entries;
    }
    entry.tier = Tier::none;  // an evicting entry taken again is rescued
  }

  /// Drops one entry the warm tier chose; its memory goes back to the pool.
  void evict(const std::shared_ptr<Entry>& victim) {
    DeviceTensor root;
    std::shared_ptr<Entry> doomed;
    {
      Shard& shard = shard_for(victim->key);
      std::scoped_lock shard_lock(shard.mutex);
      {
        std::scoped_lock lock(lru_mutex);
        if (victim->tier != Tier::evicting) return;  // a hit took it back meanwhile
        victim->tier = Tier::none;
        ++evictions;
      }
      if (auto it = shard.entries.find(victim->key);
          it != shard.entries.end() && it->second == victim) {
        doomed = remove_locked(shard, it);
      }
      root = std::move(victim->root);
    }
    notify(LifetimeEvent::cache_eviction, root ? root.id() : 0, victim->bytes, victim->tag);
    // `root` drops here, outside every lock: the memory goes back in stream order
  }

  /// Evicts least recently used warm entries while the tier is over `budget`.
  std::size_t evict_down_to(std::size_t budget) {
    std::size_t released = 0;
    for (;;) {
      std::shared_ptr<Entry> victim;
      {
        std::scoped_lock lock(lru_mutex);
        if (warm_bytes <= budget || lru.empty()) return released;
        victim = std::move(lru.front());
        lru.pop_front();
        victim->tier = Tier::evicting;
        warm_bytes -= victim->bytes;
        --warm_entries;
      }
      released += victim->bytes;
      evict(victim);
    }
  }

  // ---- user-facing tensors ----

  /// The last user of an entry's tensor dropped it (runs in that release, no gpulife lock held).
  void on_view_expired(const CacheKey& key, const std::weak_ptr<Entry>& weak_entry,
                       std::uint64_t view_id) {
    std::shared_ptr<Entry> doomed;
    bool warmed = false;
    {
      Shard& shard = shard_for(key);
      std::scoped_lock lock(shard.mutex);
      auto it = shard.entries.find(key);
      // Only the entry this tensor belongs to: a newer entry under the same key is not ours
      // to remove (the race Python's _remove_dead_weakref guards against).
      if (it == shard.entries.end() || it->second != weak_entry.lock() ||
          it->second->view_id != view_id) {
        return;
      }
      switch (it->second->retention) {
        case Retention::weak:
          doomed = remove_locked(shard, it);
          break;
        case Retention::warm:
          enter_warm_tier(it->second);
          warmed = true;
          break;
        case Retention::pinned:
          break;
      }
    }
    if (warmed) evict_down_to(options.warm_budget_bytes);
    // `doomed` dies here, outside the lock
  }

  /// A new user-facing tensor over `owner`'s memory, registered as the entry's. Shard lock held
  /// (or the entry not yet published).
  DeviceTensor make_view(const std::shared_ptr<Entry>& entry, const DeviceTensor& owner,
                         const SourceLocation& where) {
    detail::TensorImpl* impl = detail::TensorAccess::impl(owner);
    detail::TensorImpl* made =
        arena.create_view(detail::memory_owner(*impl), impl->data, impl->bytes, impl->shape,
                          impl->strides, where);
    // Views users make of it hold it, so that the entry lives as long as any of them.
    made->anchor = true;
    DeviceTensor view = detail::TensorAccess::adopt(made);
    std::weak_ptr<State> weak_state = weak_from_this();
    std::weak_ptr<Entry> weak_entry = entry;
    const std::uint64_t view_id = view.id();
    entry->view = WeakTensor(
        view,
        [weak_state, key = entry->key, weak_entry, view_id](const TensorInfo&) {
          if (auto state = weak_state.lock()) state->on_view_expired(key, weak_entry, view_id);
        },
        detail::InternalCallback{});
    entry->view_id = view_id;
    return view;
  }

  /// The entry's tensor for a new user, or empty if the entry is dying. Shard lock held.
  DeviceTensor take_locked(const std::shared_ptr<Entry>& entry, const SourceLocation& where) {
    if (DeviceTensor view = entry->view.lock()) return view;
    if (!entry->root) return {};
    DeviceTensor view = make_view(entry, entry->root, where);
    leave_warm_tier(*entry);
    return view;
  }

  /// Makes `stream` ready to use an entry's tensor.
  static void make_ready(const Entry& entry, const DeviceTensor& view, StreamView stream) {
    if (stream.impl() == entry.home) return;
    if (stream.capture_info().status != CaptureStatus::none) {
      // A capturing stream cannot wait on an event recorded outside its capture (CUDA:
      // cudaErrorStreamCaptureIsolation). The upload is waited for once, on the host; the graph
      // then needs no edge, and record_stream makes it keep the tensor for its replays.
      entry.ready.synchronize();
      view.record_stream(stream);
      return;
    }
    // The upload may not have executed yet: wait for it on the device, and let the release of
    // the memory wait for this stream's work.
    stream.wait(entry.ready);
    view.record_stream(stream);
  }

  // ---- the lookup ----

  struct Request {
    const CacheKey& key;
    StreamView stream;
    Retention retention;
    detail::FunctionRef<DeviceTensor()> load;  // queues the upload (or calls the factory)
    bool counts_upload = false;          // the load copies bytes host to device
    const Shape* shape = nullptr;        // of an upload: checked against a name key's entry
    DType dtype = DType::byte;
    SourceLocation where{};        // the caller's site, for leak reports
    // verify_hits: true if a hit's device bytes are the caller's; null: hits are not checked
    detail::FunctionRef<bool(const DeviceTensor&)>* verify = nullptr;
    bool retried = false;  // a verification failed once already
  };

  DeviceTensor acquire(const Request& request) {
    Shard& shard = shard_for(request.key);
    std::shared_ptr<Entry> entry;
    std::shared_ptr<Entry> dying;  // dropped after the lock is released
    DeviceTensor view;
    for (;;) {
      std::shared_ptr<Loading> in_flight;
      {
        std::scoped_lock lock(shard.mutex);
        auto it = shard.entries.find(request.key);
        if (it != shard.entries.end()) {
          if (it->second->loading) {
            in_flight = it->second->loading;
          } else if (check_layout_if_alive(*it->second, request);
                     (view = take_locked(it->second, request.where))) {
            entry = it->second;
            ++shard.hits;
            shard.bytes_deduplicated += entry->bytes;
            break;
          } else {
            // A weak entry whose tensor is dying: replace it. Its removal callback will find
            // the new entry and leave it alone.
            dying = remove_locked(shard, it);
          }
        }
        if (!in_flight) {
          entry = std::make_shared<Entry>(request.key);
          entry->loading = std::make_shared<Loading>();
          shard.entries.emplace(request.key, entry);
          break;
        }
      }
      in_flight->wait();  // rethrows the loader's failure; else look again
    }
    if (!view) return load(shard, entry, request);
    // A hit. The entry stays valid while we hold `view`; the rest needs no lock.
    make_ready(*entry, view, request.stream);
    if (request.verify != nullptr && !(*request.verify)(view)) {
      // The device copy is not the caller's bytes: the hit becomes a miss, and a fresh upload
      // replaces the entry (once; should that copy fail too, the caller gets it uncached).
      reject(shard, entry);
      view.reset();
      if (!request.retried) {
        Request again = request;
        again.retried = true;
        return acquire(again);
      }
      return request.load();
    }
    // Only a call that succeeds changes the entry's retention: one that failed above must not
    // leave it pinned or warm.
    if (request.retention != Retention::weak) upgrade(shard, entry, view, request.retention);
    notify(LifetimeEvent::cache_hit, view.id(), entry->bytes, entry->tag, memory_id(view));
    return view;
  }

  /// A hit whose verification failed: counted as a miss instead, and the entry leaves the cache
  /// (its users keep their tensor) so that the next upload of the key replaces it.
  void reject(Shard& shard, const std::shared_ptr<Entry>& entry) {
    std::shared_ptr<Entry> doomed;  // dropped after the lock is released
    {
      std::scoped_lock lock(shard.mutex);
      --shard.hits;
      shard.bytes_deduplicated -= entry->bytes;
      ++shard.verification_failures;
      if (auto it = shard.entries.find(entry->key);
          it != shard.entries.end() && it->second == entry) {
        doomed = remove_locked(shard, it);
        leave_warm_tier(*doomed);
      }
    }
    arena.report("tensor cache: the device copy of " + entry->key.to_string() +
                 " differs from the host bytes (a digest collision or memory corruption);"
                 " uploading it again in its place");
  }

  /// Raises the retention of `entry`, whose tensor `view` the caller holds, if it is still in
  /// the cache (an entry erased meanwhile stays erased).
  void upgrade(Shard& shard, const std::shared_ptr<Entry>& entry, const DeviceTensor& view,
               Retention retention) {
    std::scoped_lock lock(shard.mutex);
    auto it = shard.entries.find(entry->key);
    if (it == shard.entries.end() || it->second != entry) return;
    if (!stronger(retention, entry->retention)) return;
    if (!entry->root) entry->root = owner_of(view);
    entry->retention = retention;
    leave_warm_tier(*entry);
  }

  /// `check_layout` for an entry that is alive, before `take_locked` may make it a tensor: a
  /// refused call must leave an idle entry as it was (no new tensor, its place in the warm
  /// tier kept). A dying entry is replaced whatever its layout. Shard lock held.
  static void check_layout_if_alive(const Entry& entry, const Request& request) {
    // Content keys carry their layout: a hit need not load the weak count to check it.
    if (!request.key.is_name() || request.shape == nullptr) return;
    if (entry.root || !entry.view.expired()) check_layout(entry, request);
  }

  /// A name key's entry must hold what the caller uploads under the name. Shard lock held.
  static void check_layout(const Entry& entry, const Request& request) {
    if (!request.key.is_name() || request.shape == nullptr) return;
    if (entry.dtype != request.dtype || !(entry.shape == *request.shape)) {
      throw std::invalid_argument("key: " + request.key.to_string() + " names a tensor of " +
                                  std::string(to_string(entry.dtype)) + entry.shape.to_string() +
                                  ", not of " + std::string(to_string(request.dtype)) +
                                  request.shape->to_string());
    }
  }

  DeviceTensor load(Shard& shard, const std::shared_ptr<Entry>& entry, const Request& request) {
    const std::shared_ptr<Loading> loading = entry->loading;
    DeviceTensor loaded;
    Event ready;
    try {
      if (arena.capturing() && request.stream.capture_info().status != CaptureStatus::none) {
        throw std::logic_error(
            "TensorCache: a miss on capturing stream " + std::to_string(request.stream.id()) +
            " would capture the upload into the graph and repeat it at every replay; load the "
            "tensor before the capture (hits are fine during it)");
      }
      loaded = request.load();
      ready = Event(arena.device());
      loaded.stream().record(ready);
      // The requester's stream waits for the load before the entry is published, so that a
      // failure here fails the load and leaves no entry behind.
      if (request.stream.impl() != detail::TensorAccess::impl(loaded)->stream) {
        request.stream.wait(ready);
      }
    } catch (...) {
      {
        std::scoped_lock lock(shard.mutex);
        if (auto it = shard.entries.find(request.key);
            it != shard.entries.end() && it->second == entry) {
          (void)remove_locked(shard, it);  // a failed load leaves no entry
        }
      }
      loading->finish(std::current_exception());
      throw;
    }
    DeviceTensor view;
    {
      std::scoped_lock lock(shard.mutex);
      entry->ready = std::move(ready);
      entry->home = detail::TensorAccess::impl(loaded)->stream;
      entry->retention = request.retention;
      entry->bytes = loaded.bytes();
      entry->dtype = loaded.dtype();
      entry->shape = loaded.shape();
      entry->tag = loaded.tag();
      if (request.retention != Retention::weak) entry->root = loaded;
      view = make_view(entry, loaded, request.where);
      entry->loading.reset();
      if (auto it = shard.entries.find(request.key);
          it != shard.entries.end() && it->second == entry) {
        shard.live_bytes += entry->bytes;  // still in the map: a clear() did not take it
      }
      ++shard.misses;
      if (request.counts_upload) shard.bytes_uploaded += entry->bytes;
    }
    loading->finish(nullptr);
    if (request.stream.impl() != entry->home) view.record_stream(request.stream);
    notify(LifetimeEvent::cache_miss, view.id(), entry->bytes, entry->tag, memory_id(view));
    return view;
  }

  /// A keyed upload; `pinned_source`, when set, is the pinned buffer `host` lies in, which a miss
  /// keeps alive until its copy has executed.
  DeviceTensor upload(const CacheKey& key, std::span<const std::byte> host, const Shape& shape,
                      DType dtype, StreamView stream, const CacheUploadOptions& call,
                      const SourceLocation& where, const HostBuffer* pinned_source) {
    const detail::EnqueueSite site(where);  // the caller's line in reports of the upload
    if (!key.is_name() && (key.dtype() != dtype || !(key.shape() == shape))) {
      throw std::invalid_argument("key: " + key.to_string() +
                                  " is for another dtype or shape than " +
                                  std::string(to_string(dtype)) + shape.to_string());
    }
    const StreamView on = resolve(stream);
    const Retention retention = call.retention.value_or(options.retention);
    auto upload_root = [&] {
      DeviceTensor root =
          detail::TensorAccess::adopt(arena.create(shape, dtype, *on.impl(), call.tag, where));
      root.upload(host, on);
      if (pinned_source != nullptr) keep_alive_until_executed(*pinned_source, on);
      notify(LifetimeEvent::upload, root.id(), host.size(), call.tag);
      return root;
    };
    // verify_hits: a hit's device bytes must be the caller's (names are the caller's word).
    auto matches = [&](const DeviceTensor& hit) {
      std::vector<std::byte> device_bytes(hit.bytes());
      hit.download(device_bytes, on);  // pageable destination: complete on return
      return std::memcmp(device_bytes.data(), host.data(), host.size()) == 0;
    };
    detail::FunctionRef<bool(const DeviceTensor&)> verify(matches);
    Request request{key, on, retention, upload_root, true, &shape, dtype, where};
    if (options.verify_hits && !key.is_name()) request.verify = &verify;
    try {
      return acquire(request);
    } catch (...) {
      // A load can fail after its copy was queued (recording its readiness, say): from pinned
      // memory that copy still reads the buffer, which the caller may free once we throw.
      if (pinned_source != nullptr) on.synchronize();
      throw;
    }
  }

  /// A copy from pinned memory reads it when it executes: keeps `buffer` alive until the work
  /// queued on `stream` so far has run.
  ///
  /// Not with a host function holding the buffer: its last reference could die there, and its
  /// owner's destructor calls CUDA (cudaFreeHost, or the device's own teardown), which CUDA
  /// forbids inside a host function. Instead an event recorded behind the copy guards the
  /// handle, and later calls (and `clear`) drop the handles whose event has completed, on the
  /// caller's thread.
  void keep_alive_until_executed(const HostBuffer& buffer, StreamView stream) {
    release_executed(false);
    try {
      Event executed(arena.device());
      stream.record(executed);
      std::scoped_lock lock(kept_mutex);
      kept.push_back(KeptAlive{std::move(executed), buffer});
    } catch (...) {
      // Only the keep-alive could not be recorded. Without it the only safe order left is the
      // host's: once the stream has run, the copy has read the buffer.
      stream.synchronize();
    }
  }

  /// Drops the kept buffers whose copies have executed (all of them, waiting for the copies,
  /// when `wait`), here, outside every lock. Never throws.
  void release_executed(bool wait) noexcept {
    std::deque<KeptAlive> all;
    {
      std::scoped_lock lock(kept_mutex);
      if (kept.empty()) return;
      all.swap(kept);
    }
    std::deque<KeptAlive> pending;
    for (KeptAlive& item : all) {
      try {
        if (wait) {
          item.executed.synchronize();
        } else if (!item.executed.query()) {
          pending.push_back(std::move(item));
        }
      } catch (const std::exception& e) {
        arena.report(std::string("tensor cache: waiting for a pinned upload failed; its buffer "
                                 "is kept: ") + e.what());
        try {
          pending.push_back(std::move(item));
        } catch (...) {
          // nowhere to keep it: dropped, as the device failed anyway
        }
      }
    }
    all.clear();  // the executed ones go here, on the caller's thread
    if (pending.empty()) return;
    try {
      std::scoped_lock lock(kept_mutex);
      kept.insert(kept.begin(), std::make_move_iterator(pending.begin()),
                  std::make_move_iterator(pending.end()));
    } catch (...) {
      for (KeptAlive& item : pending) {
        try {
          item.executed.synchronize();
        } catch (...) {
          // the device failed: nothing left to protect the buffer from
        }
      }
    }
  }

  /// A pinned source kept alive until its upload has executed.
  struct KeptAlive {
    Event executed;  // recorded behind the copy
    HostBuffer buffer;
  };
  std::mutex kept_mutex;
  std::deque<KeptAlive> kept;

  detail::TensorArena& arena;
  const DigestWorkers* workers;
  const TensorCacheOptions options;
  std::vector<std::unique_ptr<Shard>> shards;

  std::mutex lru_mutex;  // taken after a shard's mutex, never before
  std::list<std::shared_ptr<Entry>> lru;  // warm idle entries, least recently used first
  std::size_t warm_bytes = 0;
  std::size_t warm_entries = 0;
  std::uint64_t evictions = 0;
};

// ---- TensorCache -------------------------------------------------------------------------------

TensorCache::TensorCache(detail::TensorArena& arena, const DigestWorkers* workers,
                         TensorCacheOptions options)
    : state_(std::make_shared<State>(arena, workers, options)) {}

TensorCache::~TensorCache() { clear(); }

namespace {

void check_upload(std::span<const std::byte> host, const Shape& shape, DType dtype) {
  if (host.data() == nullptr) throw std::invalid_argument("host: null pointer");
  if (host.empty()) throw std::invalid_argument("host: empty span");
  if (shape.has_zero_extent()) {
    throw std::invalid_argument("shape: " + shape.to_string() + " has a zero extent");
  }
  const auto expected = static_cast<std::size_t>(shape.numel()) * size_of(dtype);
  if (host.size() != expected) {
    throw std::invalid_argument("host: " + std::to_string(host.size()) + " bytes, but shape " +
                                shape.to_string() + " of " + std::string(to_string(dtype)) +
                                " needs " + std::to_string(expected));
  }
}

}  // namespace

DeviceTensor TensorCache::upload(std::span<const std::byte> host, const Shape& shape, DType dtype,
                                 StreamView stream, CacheUploadOptions options,
                                 SourceLocation where) {
  check_upload(host, shape, dtype);
  const Digest128 digest =
      state_->workers != nullptr ? state_->workers->digest(host) : gpulife::digest(host);
  return upload(CacheKey::content(digest, dtype, shape), host, shape, dtype, stream, options,
                where);
}

DeviceTensor TensorCache::upload(const HostBuffer& host, const Shape& shape, DType dtype,
                                 StreamView stream, CacheUploadOptions options,
                                 SourceLocation where) {
  check_upload(host.bytes(), shape, dtype);
  const StreamView on = state_->resolve(stream);  // a bad stream fails before the hashing
  const Digest128 digest =
      state_->workers != nullptr ? host.digest(*state_->workers) : host.digest();
  return state_->upload(CacheKey::content(digest, dtype, shape), host.bytes(), shape, dtype,
                        on, options, where,
                        host.memory() == HostMemory::pinned ? &host : nullptr);
}

DeviceTensor TensorCache::upload(const CacheKey& key, std::span<const std::byte> host,
                                 const Shape& shape, DType dtype, StreamView stream,
                                 CacheUploadOptions options, SourceLocation where) {
  check_upload(host, shape, dtype);
  return state_->upload(key, host, shape, dtype, stream, options, where, nullptr);
}

DeviceTensor TensorCache::get_or_create(const CacheKey& key, const Factory& factory,
                                        StreamView stream, CacheUploadOptions options,
                                        SourceLocation where) {
  if (!factory) throw std::invalid_argument("factory: empty function");
  State& state = *state_;
  const StreamView on = state.resolve(stream);
  const Retention retention = options.retention.value_or(state.options.retention);
  return state.acquire({key, on, retention,
                        [&] {
                          DeviceTensor made = factory();
                          if (!made) throw std::invalid_argument("factory: returned an empty tensor");
                          if (detail::TensorAccess::impl(made)->arena != &state.arena) {
                            throw std::invalid_argument(
                                "factory: returned a tensor of another context");
                          }
                          return made;
                        },
                        false, nullptr, DType::byte, where});
}

DeviceTensor TensorCache::find(const CacheKey& key, StreamView stream,
                               SourceLocation where) {
  State& state = *state_;
  const StreamView on = state.resolve(stream);
  State::Shard& shard = state.shard_for(key);
  std::shared_ptr<State::Entry> entry;
  DeviceTensor view;
  {
    std::scoped_lock lock(shard.mutex);
    auto it = shard.entries.find(key);
    if (it == shard.entries.end() || it->second->loading) return {};
    view = state.take_locked(it->second, where);
    entry = it->second;
  }
  if (view) State::make_ready(*entry, view, on);
  return view;
}

bool TensorCache::erase(const CacheKey& key) {
  State& state = *state_;
  std::shared_ptr<State::Entry> doomed;
  {
    State::Shard& shard = state.shard_for(key);
    std::scoped_lock lock(shard.mutex);
    auto it = shard.entries.find(key);
    if (it == shard.entries.end() || it->second->loading) return false;
    doomed = State::remove_locked(shard, it);
    state.leave_warm_tier(*doomed);
  }
  return true;  // the entry, and the memory only it held, go here, outside the locks
}

std::size_t TensorCache::clear_warm() { return state_->evict_down_to(0); }

void TensorCache::clear() {
  State& state = *state_;
  state.release_executed(true);
  for (auto& shard : state.shards) {
    std::unordered_map<CacheKey, std::shared_ptr<State::Entry>> gone;
    {
      std::scoped_lock lock(shard->mutex);
      gone.swap(shard->entries);
      shard->live_bytes = 0;
      for (auto& [key, entry] : gone) state.leave_warm_tier(*entry);
    }
  }
}

CacheStatistics TensorCache::statistics() const {
  State& state = *state_;
  CacheStatistics stats;
  for (const auto& shard : state.shards) {
    std::scoped_lock lock(shard->mutex);
    stats.hits += shard->hits;
    stats.misses += shard->misses;
    stats.bytes_uploaded += shard->bytes_uploaded;
    stats.bytes_deduplicated += shard->bytes_deduplicated;
    stats.verification_failures += shard->verification_failures;
    for (const auto& [key, entry] : shard->entries) {
      if (entry->loading || (!entry->root && entry->view.expired())) continue;
      ++stats.live_entries;
      stats.live_bytes += entry->bytes;
      if (entry->retention == Retention::pinned) {
        ++stats.pinned_entries;
        stats.pinned_bytes += entry->bytes;
      }
    }
  }
  std::scoped_lock lock(state.lru_mutex);
  stats.warm_entries = state.warm_entries;
  stats.warm_bytes = state.warm_bytes;
  stats.evictions = state.evictions;
  return stats;
}

std::size_t TensorCache::cached_bytes() const {
  std::size_t bytes = 0;
  for (const auto& shard : state_->shards) {
    std::scoped_lock lock(shard->mutex);
    bytes += shard->live_bytes;
  }
  return bytes;
}

std::vector<PinnedCacheEntry> TensorCache::pinned_entries() const {
  std::vector<PinnedCacheEntry> pinned;
  for (const auto& shard : state_->shards) {
    std::scoped_lock lock(shard->mutex);
    for (const auto& [key, entry] : shard->entries) {
      if (entry->loading || entry->retention != Retention::pinned || !entry->root) continue;
      pinned.push_back({key.to_string(), entry->root.id(), entry->bytes, entry->tag});
    }
  }
  return pinned;
}

}  // namespace gpulife
