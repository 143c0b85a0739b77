// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `WeakKeyMap<V>`: per-tensor values that die with their tensor (Python's
/// `weakref.WeakKeyDictionary`).

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <unordered_map>
#include <utility>

#include <gpulife/tensor/device_tensor.hpp>
#include <gpulife/tensor/weak_tensor.hpp>

namespace gpulife {

/// @brief Maps tensors, by identity, to values; an entry disappears when its tensor dies.
///
/// The map holds its keys weakly: it never keeps a tensor alive. Each entry registers an expiry
/// callback on its tensor that erases it; erasing an entry by hand cancels that callback, so
/// neither dead entries nor dead callbacks accumulate. A view is a tensor of its own: it has its
/// own entry, which dies with the view. Values are destroyed outside the map's lock.
///
/// @par Thread safety
/// All members are thread-safe. A lookup that races with the key's death finds the entry or
/// not, never a value of a dead key after the death's callbacks have run.
template <class V>
class WeakKeyMap {
 public:
  WeakKeyMap() = default;
  WeakKeyMap(const WeakKeyMap&) = delete;
  WeakKeyMap& operator=(const WeakKeyMap&) = delete;
  ~WeakKeyMap() { clear(); }

  /// @brief Sets the value for `key`.
  /// @return true if a new entry was made, false if an existing value was replaced
  /// @throws std::invalid_argument if `key` is empty
  bool insert_or_assign(const DeviceTensor& key, V value) {
    if (!key) throw std::invalid_argument("key: empty DeviceTensor");
    const std::uint64_t id = key.id();
    std::optional<V> replaced;  // destroyed after the lock is released
    {
      std::scoped_lock lock(shared_->mutex);
      if (auto it = shared_->entries.find(id); it != shared_->entries.end()) {
        replaced.emplace(std::exchange(it->second.value, std::move(value)));
        return false;
      }
    }
    // The callback holds the map weakly: a map destroyed first is simply not there to erase from.
    std::weak_ptr<Shared> weak_shared = shared_;
    WeakTensor watch(
        key,
        [weak_shared, id](const TensorInfo&) {
          if (auto shared = weak_shared.lock()) shared->erase(id);
        },
        detail::InternalCallback{});
    std::optional<Entry> displaced;  // an entry another thread made meanwhile; ours wins
    std::scoped_lock lock(shared_->mutex);
    if (auto it = shared_->entries.find(id); it != shared_->entries.end()) {
      displaced.emplace(std::move(it->second));
      it->second = Entry{std::move(value), std::move(watch)};
      return false;
    }
    shared_->entries.emplace(id, Entry{std::move(value), std::move(watch)});
    return true;
  }

  /// @return a copy of the value for `key`, or nothing
  [[nodiscard]] std::optional<V> get(const DeviceTensor& key) const {
    if (!key) return std::nullopt;
    std::scoped_lock lock(shared_->mutex);
    auto it = shared_->entries.find(key.id());
    if (it == shared_->entries.end()) return std::nullopt;
    return it->second.value;
  }

  /// @return true if `key` has an entry
  [[nodiscard]] bool contains(const DeviceTensor& key) const {
    if (!key) return false;
    std::scoped_lock lock(shared_->mutex);
    return shared_->entries.contains(key.id());
  }

  /// @brief Removes the entry of `key` and cancels its expiry callback.
  /// @return true if there was one
  bool erase(const DeviceTensor& key) { return key && shared_->erase(key.id()); }

  /// @return the number of entries (all of live tensors)
  [[nodiscard]] std::size_t size() const {
    std::scoped_lock lock(shared_->mutex);
    return shared_->entries.size();
  }

  /// @brief Removes every entry.
  void clear() {
    std::unordered_map<std::uint64_t, Entry> gone;
    {
      std::scoped_lock lock(shared_->mutex);
      gone.swap(shared_->entries);
    }
  }

 private:
  struct Entry {
    V value;
    WeakTensor watch;  // its expiry callback erases the entry; destroying it cancels that
  };
  struct Shared {
    std::mutex mutex;
    std::unordered_map<std::uint64_t, Entry> entries;

    bool erase(std::uint64_t id) {
      std::optional<Entry> gone;
      {
        std::scoped_lock lock(mutex);
        auto it = entries.find(id);
        if (it == entries.end()) return false;
        gone.emplace(std::move(it->second));
        entries.erase(it);
      }
      return true;  // the value and the watch die here, outside the lock
    }
  };

  std::shared_ptr<Shared> shared_ = std::make_shared<Shared>();
};

}  // namespace gpulife
