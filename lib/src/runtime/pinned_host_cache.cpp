// SPDX-License-Identifier: Apache-2.0
#include <gpulife/runtime/pinned_host_cache.hpp>

#include <algorithm>
#include <bit>
#include <exception>
#include <stdexcept>
#include <string>

#include <gpulife/error_handler.hpp>
#include <gpulife/errors.hpp>
#include <gpulife/runtime/detail/backend.hpp>

#include "detail/format.hpp"

namespace gpulife {
namespace detail {

DeviceImpl::DeviceImpl() : pinned_host_cache_(std::make_unique<PinnedHostCache>(*this)) {}

DeviceImpl::~DeviceImpl() = default;

void DeviceImpl::close_pinned_host_cache() noexcept { pinned_host_cache_->close(); }

}  // namespace detail

namespace {

constexpr std::size_t min_block = 4096;

/// Four classes per power of two (at most 25 % waste), at least a page.
std::size_t block_size(std::size_t bytes) noexcept {
  if (bytes <= min_block) return min_block;
  const auto p = static_cast<std::size_t>(std::bit_width(bytes - 1));
  const std::size_t step = std::size_t{1} << (p - 3);
  return (bytes + step - 1) / step * step;
}

}  // namespace

PinnedHostCache::PinnedHostCache(detail::DeviceImpl& device) noexcept : device_(device) {}

PinnedHostCache::~PinnedHostCache() = default;

void* PinnedHostCache::allocate(std::size_t bytes) {
  if (bytes == 0) return nullptr;
  const std::size_t size = block_size(bytes);
  for (int attempt = 0; attempt < 2; ++attempt) {
    {
      std::scoped_lock lock(mutex_);
      if (auto it = free_.find(size); it != free_.end() && !it->second.empty()) {
        Block* block = it->second.back();
        it->second.pop_back();
        block->in_use = true;
        stats_.bytes_cached -= size;
        stats_.bytes_in_use += size;
        ++stats_.allocations;
        ++stats_.reuses;
        return block->data;
      }
    }
    if (attempt == 0) sweep();  // returned blocks whose work has executed become reusable
  }
  auto block = std::make_unique<Block>();
  block->size = size;
  try {
    block->data = static_cast<std::byte*>(device_.allocate_pinned(size));
  } catch (const OutOfMemoryError&) {
    // Page-locked memory is a scarce resource of the host: give back what is cached, retry.
    release_cached();
    block->data = static_cast<std::byte*>(device_.allocate_pinned(size));
  }
  block->in_use = true;
  std::byte* data = block->data;
  std::scoped_lock lock(mutex_);
  try {
    blocks_.emplace(reinterpret_cast<std::uintptr_t>(data), std::move(block));
  } catch (...) {
    device_.deallocate_pinned(data);
    throw;
  }
  stats_.bytes_in_use += size;
  ++stats_.allocations;
  ++stats_.system_allocations;
  return data;
}

void PinnedHostCache::deallocate(void* ptr) noexcept {
  if (ptr == nullptr) return;
  Block* to_free = nullptr;
  {
    std::scoped_lock lock(mutex_);
    auto it = blocks_.find(reinterpret_cast<std::uintptr_t>(ptr));
    if (it == blocks_.end() || !it->second->in_use) {
      report_error("PinnedHostCache: deallocate of " + detail::format_pointer(ptr) + ": " +
                   (it == blocks_.end() ? "not a block of this cache"
                                        : "already returned (double free)"));
      return;
    }
    Block* block = it->second.get();
    block->in_use = false;
    stats_.bytes_in_use -= block->size;
    if (closed_) {
      // The device is closing: nothing is cached any more. Its recorded work was waited for
      // when the device synchronised.
      to_free = block;
      it->second.release();
      blocks_.erase(it);
    } else {
      stats_.bytes_cached += block->size;
      try {
        if (block->uses.empty()) {
          free_[block->size].push_back(block);
        } else {
          pending_.push_back(block);
        }
      } catch (...) {
        // No room in a list: the block is forgotten (kept allocated) rather than risk reuse.
        stats_.bytes_cached -= block->size;
      }
    }
  }
  if (to_free != nullptr) {
    std::unique_ptr<Block> owned(to_free);
    for (auto& [stream, event] : owned->uses) device_.release_event(*event);
    device_.deallocate_pinned(owned->data);
    std::scoped_lock lock(mutex_);
    ++stats_.system_frees;
  }
}

bool PinnedHostCache::record_use(const void* ptr, StreamView stream) {
  if (!stream.valid()) throw std::invalid_argument("stream: empty StreamView");
  if (&stream.device() != &device_) {
    throw std::invalid_argument("stream: belongs to " + stream.device().name() +
                                ", the pinned host cache to " + device_.name());
  }
  detail::EventImpl* event = nullptr;
  {
    std::scoped_lock lock(mutex_);
    const auto address = reinterpret_cast<std::uintptr_t>(ptr);
    auto it = blocks_.upper_bound(address);
    if (it == blocks_.begin()) return false;
    --it;
    Block& block = *it->second;
    if (!block.in_use || address >= it->first + block.size) return false;
    for (auto& [on, recorded] : block.uses) {
      if (on == stream.impl()) event = recorded;  // a later record on one stream covers both
    }
  }
  // Recorded outside the lock. The block cannot go while the caller, who holds it, records.
  const bool fresh = event == nullptr;
  if (fresh) event = &device_.acquire_event();
  try {
    stream.impl()->record(*event);
  } catch (...) {
    if (fresh) device_.release_event(*event);
    throw;
  }
  if (!fresh) return true;
  std::scoped_lock lock(mutex_);
  auto it = blocks_.upper_bound(reinterpret_cast<std::uintptr_t>(ptr));
  Block& block = *std::prev(it)->second;
  for (auto& [on, recorded] : block.uses) {
    if (on == stream.impl()) {
      // Another thread recorded on the same stream meanwhile; either event covers the work.
      device_.release_event(*event);
      return true;
    }
  }
  try {
    block.uses.emplace_back(stream.impl(), event);
  } catch (...) {
    device_.release_event(*event);
    throw;
  }
  return true;
}

bool PinnedHostCache::owns(const void* ptr) const {
  std::scoped_lock lock(mutex_);
  const auto address = reinterpret_cast<std::uintptr_t>(ptr);
  auto it = blocks_.upper_bound(address);
  if (it == blocks_.begin()) return false;
  --it;
  return it->second->in_use && address < it->first + it->second->size;
}

void PinnedHostCache::sweep() {
  std::vector<Block*> pending;
  {
    std::scoped_lock lock(mutex_);
    pending.swap(pending_);
  }
  if (pending.empty()) return;
  // Queried outside the lock; other threads sweep other blocks meanwhile, never these.
  std::vector<Block*> done;
  std::vector<Block*> waiting;
  for (Block* block : pending) {
    bool complete = true;
    try {
      for (auto& [stream, event] : block->uses) complete = complete && event->query();
    } catch (const std::exception& e) {
      report_error(std::string("PinnedHostCache: querying the work on a block failed; it is "
                               "kept, not reused: ") + e.what());
      continue;  // forgotten: never reused, freed at close
    }
    if (complete) {
      for (auto& [stream, event] : block->uses) device_.release_event(*event);
      block->uses.clear();
      done.push_back(block);
    } else {
      waiting.push_back(block);
    }
  }
  std::scoped_lock lock(mutex_);
  for (Block* block : done) free_[block->size].push_back(block);
  pending_.insert(pending_.end(), waiting.begin(), waiting.end());
}

void PinnedHostCache::free_blocks(std::vector<Block*>& blocks) noexcept {
  for (Block* block : blocks) {
    for (auto& [stream, event] : block->uses) device_.release_event(*event);
    device_.deallocate_pinned(block->data);
  }
}

std::size_t PinnedHostCache::release_cached() noexcept {
  try {
    sweep();
  } catch (...) {
    // only the bookkeeping's allocation can throw; what was free stays releasable
  }
  std::vector<std::unique_ptr<Block>> victims;
  std::size_t bytes = 0;
  {
    std::scoped_lock lock(mutex_);
    try {
      for (auto& [size, list] : free_) {
        for (Block* block : list) {
          auto node = blocks_.extract(reinterpret_cast<std::uintptr_t>(block->data));
          victims.push_back(std::move(node.mapped()));
          bytes += size;
        }
        list.clear();
      }
    } catch (...) {
      // out of memory for the list of victims: release what was collected
    }
    stats_.bytes_cached -= bytes;
    stats_.system_frees += victims.size();
  }
  for (auto& block : victims) device_.deallocate_pinned(block->data);
  return bytes;
}

PinnedHostCacheStatistics PinnedHostCache::statistics() const {
  std::scoped_lock lock(mutex_);
  return stats_;
}

void PinnedHostCache::close() noexcept {
  std::vector<Block*> cached;
  {
    std::scoped_lock lock(mutex_);
    closed_ = true;
    for (auto& [size, list] : free_) cached.insert(cached.end(), list.begin(), list.end());
    cached.insert(cached.end(), pending_.begin(), pending_.end());
    free_.clear();
    pending_.clear();
  }
  for (Block* block : cached) {
    for (auto& [stream, event] : block->uses) {
      try {
        event->synchronize();  // a copy may still read or write the block
      } catch (const std::exception& e) {
        report_error(std::string("PinnedHostCache: waiting for the work on a block failed: ") +
                     e.what());
      }
    }
  }
  free_blocks(cached);
  std::scoped_lock lock(mutex_);
  for (Block* block : cached) blocks_.erase(reinterpret_cast<std::uintptr_t>(block->data));
  stats_.system_frees += cached.size();
  stats_.bytes_cached = 0;
}

}  // namespace gpulife
