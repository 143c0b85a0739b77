// SPDX-License-Identifier: Apache-2.0
// The pool's segment map: segments tiled by address-ordered blocks, split on allocation and
// merged with free neighbours on release. Every function here runs with the block mutex held.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>

#include "memory/pool/pool_state.hpp"

namespace gpulife {

using detail::pool::Block;
using detail::pool::home_mixed;
using detail::pool::PoolKind;
using detail::pool::Segment;

namespace {
std::size_t kind_index(PoolKind kind) noexcept { return static_cast<std::size_t>(kind); }
}  // namespace

void PoolResource::State::note_reserved(PoolKind kind, std::ptrdiff_t delta) noexcept {
  KindCounters& k = kinds[kind_index(kind)];
  k.reserved = static_cast<std::size_t>(static_cast<std::ptrdiff_t>(k.reserved) + delta);
  k.peak_reserved = std::max(k.peak_reserved, k.reserved);
  peak_reserved = std::max(peak_reserved, kinds[0].reserved + kinds[1].reserved);
}

Block* PoolResource::State::add_segment(std::uintptr_t base, std::size_t bytes, PoolKind kind,
                                         StreamIndex stream, bool expandable_range) {
  auto segment = std::make_unique<Segment>();
  segment->base = base;
  segment->size = bytes;
  segment->kind = kind;
  segment->expandable = expandable_range;
  segment->stream = stream;
  segment->used_at = tick;
  Block* block = blocks.make();
  try {
    segments.push_back(nullptr);  // room first: nothing below throws once this succeeded
    by_address.emplace(base, segment.get());
  } catch (...) {
    if (!segments.empty() && segments.back() == nullptr) segments.pop_back();
    blocks.recycle(block);
    throw;
  }
  block->addr = base;
  block->size = bytes;
  block->segment = segment.get();
  block->mapped = !expandable_range;
  segment->first = block;
  ++kinds[kind_index(kind)].segments;
  if (!expandable_range) note_reserved(kind, static_cast<std::ptrdiff_t>(bytes));
  segments.back() = std::move(segment);
  return block;
}

void PoolResource::State::remove_segment(Segment* segment) noexcept {
  Block* block = segment->first;
  for (Block* b = block; b != nullptr;) {
    Block* next = b->next;
    if (b->indexed) unindex(b);
    blocks.recycle(b);
    b = next;
  }
  --kinds[kind_index(segment->kind)].segments;
  if (!segment->expandable) note_reserved(segment->kind, -static_cast<std::ptrdiff_t>(segment->size));
  by_address.erase(segment->base);
  auto it = std::find_if(segments.begin(), segments.end(),
                         [segment](const auto& s) { return s.get() == segment; });
  if (it != segments.end()) {
    std::swap(*it, segments.back());
    segments.pop_back();
  }
}

bool PoolResource::State::should_split(const Block* block, std::size_t size) const noexcept {
  const std::size_t remaining = block->size - size;
  if (block->segment->kind == PoolKind::small || block->segment->expandable) {
    return remaining >= 512;
  }
  // A large block's rest below the small limit could serve no large request on its own.
  return block->size < options.max_split_size && remaining > options.small_size;
}

bool PoolResource::State::acceptable(const Block* block, std::size_t size) const noexcept {
  if (size < options.max_split_size) return block->size < options.max_split_size;
  return block->size - size <= options.oversize_slack;
}

Block* PoolResource::State::split(Block* block, std::size_t size, Block* spare) noexcept {
  Block* tail = spare;
  tail->addr = block->addr + size;
  tail->size = block->size - size;
  tail->segment = block->segment;
  tail->mapped = block->mapped;
  tail->fences = block->fences;  // the rest may still be in use by the same work
  tail->freed_at = block->freed_at;
  tail->prev = block;
  tail->next = block->next;
  if (block->next != nullptr) block->next->prev = tail;
  block->next = tail;
  block->size = size;
  ++counters.splits;
  return tail;
}

void PoolResource::State::merge(Block* block) noexcept {
  const bool own_stream = options.cross_stream == CrossStreamReuse::own_stream;
  auto mergeable = [&](const Block* n) {
    if (n == nullptr || n->allocated || n->binned || n->after != nullptr ||
        n->mapped != block->mapped) {
      return false;
    }
    if (!own_stream) return true;
    // One stream's blocks only, as PyTorch keeps them apart.
    return n->fences.size() == 1 && block->fences.size() == 1 &&
           n->fences.front().stream == block->fences.front().stream;
  };
  if (Block* prev = block->prev; mergeable(prev)) {
    if (prev->indexed) unindex(prev);
    for (const auto& f : prev->fences) detail::pool::add_fence(block->fences, f);
    block->addr = prev->addr;
    block->size += prev->size;
    block->freed_at = std::max(block->freed_at, prev->freed_at);
    block->prev = prev->prev;
    if (prev->prev != nullptr) prev->prev->next = block;
    if (block->segment->first == prev) block->segment->first = block;
    blocks.recycle(prev);
    ++counters.merges;
  }
  if (Block* next = block->next; mergeable(next)) {
    if (next->indexed) unindex(next);
    for (const auto& f : next->fences) detail::pool::add_fence(block->fences, f);
    block->size += next->size;
    block->freed_at = std::max(block->freed_at, next->freed_at);
    block->next = next->next;
    if (next->next != nullptr) next->next->prev = block;
    blocks.recycle(next);
    ++counters.merges;
  }
}

void PoolResource::State::index(Block* block) noexcept {
  if (!block->mapped) return;  // unmapped parts of expandable ranges are found by their range
  if (block->after != nullptr) {
    block->home = home_mixed;
  } else if (options.cross_stream == CrossStreamReuse::own_stream) {
    // Never pruned: a block stays with the stream that last used it.
    if (block->fences.empty()) {
      block->home = block->segment->stream;
    } else {
      block->home = block->fences.size() == 1 ? block->fences.front().stream : home_mixed;
    }
  } else {
    block->home = streams.home_of(block->fences);
  }
  free[kind_index(block->segment->kind)].insert(block);
  if (block->segment->expandable && block->after == nullptr) {
    const std::uintptr_t lo = (block->addr + granularity - 1) / granularity * granularity;
    if (lo + granularity <= block->end()) unmappable.push(block);
  }
}

void PoolResource::State::unindex(Block* block) noexcept {
  free[kind_index(block->segment->kind)].erase(block);
  unmappable.erase(block);
}

void PoolResource::State::drain_quick() noexcept {
  for (const auto& state : streams.all()) {
    state->quick.drain([this](Block* block) {
      merge(block);
      index(block);
    });
  }
}

std::size_t PoolResource::State::inactive_split(PoolKind kind) const noexcept {
  std::size_t bytes = 0;
  for (const auto& segment : segments) {
    if (segment->kind != kind || segment->live_blocks == 0) continue;
    for (const Block* b = segment->first; b != nullptr; b = b->next) {
      if (!b->allocated && b->mapped) bytes += b->size;
    }
  }
  return bytes;
}

std::size_t PoolResource::State::largest_free(PoolKind kind) noexcept {
  auto& index = free[kind_index(kind)];
  std::size_t largest = 0;
  auto consider = [&](StreamIndex home) {
    if (index.blocks_in(home) == 0) return;
    if (const Block* b = index.largest(home)) largest = std::max(largest, b->size);
  };
  consider(detail::pool::home_any);
  consider(home_mixed);
  for (const auto& state : streams.all()) consider(state->index);
  return largest;
}

}  // namespace gpulife
