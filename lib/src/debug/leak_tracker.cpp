// SPDX-License-Identifier: Apache-2.0
#include "debug/leak_tracker.hpp"

#include <algorithm>
#include <memory>
#include <unordered_set>
#include <utility>

#include "debug/stack_trace.hpp"
#include "tensor/tensor_arena.hpp"

namespace gpulife::detail {
namespace {

/// Threads take shards round-robin, so that two threads making tensors at once use different
/// locks; a tensor dropped on another thread locks its own record's shard.
std::uint32_t this_thread_shard(std::size_t count) noexcept {
  static std::atomic<std::uint32_t> next{0};
  thread_local const std::uint32_t shard = next.fetch_add(1, std::memory_order_relaxed);
  return static_cast<std::uint32_t>(shard % count);
}

struct Collected {
  LiveTensor tensor;
  std::shared_ptr<const std::vector<const void*>> frames;
};

}  // namespace

std::string tensor_name(std::uint64_t id, const std::string& tag) {
  std::string text = "tensor #" + std::to_string(id);
  if (!tag.empty()) text += " '" + tag + "'";
  return text;
}

LeakTracker::LeakTracker(std::string device_name, bool stacks, std::size_t max_stack_frames)
    : device_name_(std::move(device_name)), stacks_(stacks), max_stack_frames_(max_stack_frames) {}

LeakTracker::~LeakTracker() {
  // Every tensor unregisters when it dies and keeps the arena (which owns this tracker) alive
  // until then, so the lists are empty here; a record left over would be a bug, not a leak of
  // the program's, and freeing it is all there is to do.
  for (Shard& shard : shards_) {
    while (shard.head != nullptr) delete std::exchange(shard.head, shard.head->next);
  }
}

void LeakTracker::track(TensorImpl& impl, const SourceLocation& where) noexcept {
  try {
    auto record = std::make_unique<TensorRecord>();
    record->impl = &impl;
    record->sequence = sequence_.fetch_add(1, std::memory_order_relaxed);
    record->created = std::chrono::system_clock::now();
    record->where = where;
    if (stacks_) {
      record->stack =
          std::make_shared<const std::vector<const void*>>(capture_stack(max_stack_frames_));
    }
    record->shard = this_thread_shard(shard_count);
    TensorRecord* raw = record.release();
    impl.record = raw;
    Shard& shard = shards_[raw->shard];
    std::scoped_lock lock(shard.mutex);
    raw->next = shard.head;
    if (shard.head != nullptr) shard.head->prev = raw;
    shard.head = raw;
  } catch (...) {
    untracked_.fetch_add(1, std::memory_order_relaxed);
  }
}

void LeakTracker::untrack(TensorImpl& impl) noexcept {
  TensorRecord* record = impl.record;
  if (record == nullptr) return;
  {
    Shard& shard = shards_[record->shard];
    std::scoped_lock lock(shard.mutex);
    (record->prev != nullptr ? record->prev->next : shard.head) = record->next;
    if (record->next != nullptr) record->next->prev = record->prev;
  }
  impl.record = nullptr;
  delete record;
}

LeakReport LeakTracker::report(LeakCheckpoint since, std::vector<PinnedEntry> pinned,
                               const PoolResource* pool) const {
  LeakReport report;
  report.tracking = true;
  report.device = device_name_;
  report.taken = std::chrono::system_clock::now();
  report.untracked = untracked_.load(std::memory_order_relaxed);
  std::unordered_set<std::uint64_t> pinned_ids;
  for (const PinnedEntry& entry : pinned) pinned_ids.insert(entry.tensor_id);
  report.pinned = std::move(pinned);

  std::vector<Collected> collected;
  std::unordered_set<const void*> owned;  // memory of every live root, for the pool's blocks
  for (const Shard& shard : shards_) {
    // A tensor stays registered until its release has taken the shard's lock, so while it is
    // held every listed control block is valid, and its callbacks have not been taken yet.
    std::scoped_lock lock(shard.mutex);
    for (const TensorRecord* record = shard.head; record != nullptr; record = record->next) {
      TensorImpl& impl = *record->impl;
      const std::uint32_t strong = impl.strong.load(std::memory_order_acquire);
      const bool kept = impl.kept_by_graph_pool.load(std::memory_order_acquire);
      if (strong == 0 && !kept) continue;  // dying: its release is waiting for this lock
      if (impl.base == nullptr && !impl.external && impl.data != nullptr) owned.insert(impl.data);
      if (record->sequence < since.sequence) continue;

      Collected item;
      LiveTensor& tensor = item.tensor;
      tensor.id = impl.id;
      tensor.bytes = impl.base == nullptr ? impl.alloc_bytes : impl.bytes;
      tensor.shape = impl.shape;
      tensor.dtype = impl.dtype;
      tensor.tag = impl.tag;
      tensor.device = device_name_;
      tensor.stream_id = impl.stream != nullptr ? impl.stream->id() : 0;
      tensor.created = record->created;
      tensor.site.file = record->where.file_name();
      tensor.site.line = record->where.line();
      tensor.site.column = record->where.column();
      tensor.site.function = record->where.function_name();
      tensor.view_of = impl.base != nullptr ? memory_owner(impl).id : 0;
      tensor.external = impl.external;
      tensor.handles = strong;
      {
        std::scoped_lock callbacks_lock(impl.lock);
        if (impl.callbacks != nullptr) {
          for (const auto& state : *impl.callbacks) {
            if (state->status.load(std::memory_order_acquire) == CallbackState::Status::pending) {
              tensor.callback_handles += state->tensor_handles;
            }
          }
        }
      }
      if (kept) {
        tensor.status = LiveTensorStatus::kept_by_graph_pool;
      } else if (pinned_ids.contains(tensor.id)) {
        tensor.status = LiveTensorStatus::pinned;
      } else if (tensor.callback_handles != 0 && tensor.callback_handles == strong) {
        tensor.status = LiveTensorStatus::kept_by_callback;
      }
      item.frames = record->stack;
      collected.push_back(std::move(item));
    }
  }

  // Symbolising reads debug information: done outside every lock.
  report.tensors.reserve(collected.size());
  for (Collected& item : collected) {
    if (item.frames && !item.frames->empty()) item.tensor.stack = symbolise_stack(*item.frames);
    report.tensors.push_back(std::move(item.tensor));
  }
  std::sort(report.tensors.begin(), report.tensors.end(),
            [](const LiveTensor& a, const LiveTensor& b) {
              return a.bytes != b.bytes ? a.bytes > b.bytes : a.id < b.id;
            });

  if (pool != nullptr) {
    report.blocks_known = true;
    for (const PoolResource::LiveBlock& block : pool->live_blocks()) {
      if (!owned.contains(block.ptr)) {
        report.unowned_blocks.push_back({block.ptr, block.bytes, block.stream_id});
      }
    }
    std::sort(report.unowned_blocks.begin(), report.unowned_blocks.end(),
              [](const UnownedBlock& a, const UnownedBlock& b) {
                return a.bytes != b.bytes ? a.bytes > b.bytes : a.ptr < b.ptr;
              });
  }
  return report;
}

std::string LeakTracker::owner_of(const void* ptr, std::size_t bytes) const {
  (void)bytes;  // the tensor that holds the first byte is the one that was misused
  const auto address = reinterpret_cast<std::uintptr_t>(ptr);
  for (const Shard& shard : shards_) {
    std::scoped_lock lock(shard.mutex);
    for (const TensorRecord* record = shard.head; record != nullptr; record = record->next) {
      const TensorImpl& impl = *record->impl;
      if (impl.base != nullptr || impl.data == nullptr) continue;
      const auto begin = reinterpret_cast<std::uintptr_t>(impl.data);
      if (address >= begin && address < begin + impl.alloc_bytes) {
        return tensor_name(impl.id, impl.tag);
      }
    }
  }
  return {};
}

}  // namespace gpulife::detail
