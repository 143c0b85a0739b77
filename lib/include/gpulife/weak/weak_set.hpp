// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `WeakSet<T>`: a set of weakly held listeners (Python's `weakref.WeakSet`).

#include <algorithm>
#include <cstddef>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <vector>

namespace gpulife {

/// @brief Holds `std::shared_ptr`-managed objects weakly: the set never keeps a member alive,
/// and members that died are skipped and pruned.
///
/// Typical use: subscribers to an event (gpulife's memory-pressure listeners) that unsubscribe
/// simply by being destroyed.
///
/// @par Thread safety
/// All members are thread-safe. `notify` calls `fn` without holding the set's lock, so a
/// listener may add or remove members, or be destroyed, while being notified.
template <class T>
class WeakSet {
 public:
  /// @brief Adds `member` (no effect if already present).
  /// @throws std::invalid_argument if `member` is null
  void add(const std::shared_ptr<T>& member) {
    if (!member) throw std::invalid_argument("member: null pointer");
    std::scoped_lock lock(mutex_);
    prune_locked();
    for (const auto& held : members_) {
      if (!held.owner_before(member) && !member.owner_before(held)) return;
    }
    members_.push_back(member);
  }

  /// @brief Removes `member`.
  /// @return true if it was present
  bool remove(const std::shared_ptr<T>& member) {
    std::scoped_lock lock(mutex_);
    const auto before = members_.size();
    std::erase_if(members_, [&](const std::weak_ptr<T>& held) {
      return !held.owner_before(member) && !member.owner_before(held);
    });
    return members_.size() != before;
  }

  /// @brief Calls `fn(T&)` for every live member, in the order they were added.
  /// @return the number of members notified
  template <class Fn>
  std::size_t notify(Fn&& fn) {
    std::vector<std::shared_ptr<T>> live;
    {
      std::scoped_lock lock(mutex_);
      prune_locked();
      live.reserve(members_.size());
      for (const auto& held : members_) {
        if (auto member = held.lock()) live.push_back(std::move(member));
      }
    }
    for (const auto& member : live) fn(*member);
    return live.size();
  }

  /// @return the number of live members
  [[nodiscard]] std::size_t size() const {
    std::scoped_lock lock(mutex_);
    return static_cast<std::size_t>(std::count_if(
        members_.begin(), members_.end(), [](const auto& held) { return !held.expired(); }));
  }

 private:
  void prune_locked() {
    std::erase_if(members_, [](const std::weak_ptr<T>& held) { return held.expired(); });
  }

  mutable std::mutex mutex_;
  std::vector<std::weak_ptr<T>> members_;
};

}  // namespace gpulife
