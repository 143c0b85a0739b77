// SPDX-License-Identifier: Apache-2.0
#include "runtime/cuda_nvtx.hpp"

#include <iterator>

#include <nvtx3/nvToolsExtMem.h>

namespace gpulife::detail {
namespace {

nvtxDomainHandle_t gpulife_domain() noexcept {
  // One domain for the process; null when no tool is attached (NVTX's injection found none).
  static const nvtxDomainHandle_t domain = nvtxDomainCreateA("gpulife");
  return domain;
}

nvtxDomainHandle_t as_domain(void* domain) noexcept {
  return static_cast<nvtxDomainHandle_t>(domain);
}

}  // namespace

void NvtxMemory::enable() noexcept { domain_ = gpulife_domain(); }

void NvtxMemory::register_segment(const void* ptr, std::size_t bytes) noexcept {
  if (domain_ == nullptr || ptr == nullptr || bytes == 0) return;
  nvtxMemVirtualRangeDesc_t range{};
  range.ptr = ptr;
  range.size = bytes;
  nvtxMemHeapDesc_t desc{};
  desc.extCompatID = NVTX_EXT_COMPATID_MEM;
  desc.structSize = sizeof desc;
  desc.usage = NVTX_MEM_HEAP_USAGE_TYPE_SUB_ALLOCATOR;
  desc.type = NVTX_MEM_TYPE_VIRTUAL_ADDRESS;
  desc.typeSpecificDescSize = sizeof range;
  desc.typeSpecificDesc = &range;
  nvtxMemHeapHandle_t heap = nvtxMemHeapRegister(as_domain(domain_), &desc);
  try {
    std::scoped_lock lock(mutex_);
    segments_[reinterpret_cast<std::uintptr_t>(ptr)] = Segment{bytes, heap};
  } catch (...) {
    // Without the bookkeeping the heap cannot carry regions: take it back.
    nvtxMemHeapUnregister(as_domain(domain_), heap);
  }
}

void NvtxMemory::unregister_segment(const void* ptr) noexcept {
  if (domain_ == nullptr) return;
  void* heap = nullptr;
  {
    std::scoped_lock lock(mutex_);
    auto it = segments_.find(reinterpret_cast<std::uintptr_t>(ptr));
    if (it == segments_.end()) return;
    heap = it->second.heap;
    segments_.erase(it);
  }
  // Unregistering the heap ends its regions as well.
  nvtxMemHeapUnregister(as_domain(domain_), static_cast<nvtxMemHeapHandle_t>(heap));
}

void NvtxMemory::register_block(const void* ptr, std::size_t bytes) noexcept {
  if (domain_ == nullptr || ptr == nullptr || bytes == 0) return;
  void* heap = nullptr;
  {
    std::scoped_lock lock(mutex_);
    const auto address = reinterpret_cast<std::uintptr_t>(ptr);
    auto it = segments_.upper_bound(address);
    if (it == segments_.begin()) return;
    --it;
    if (address + bytes > it->first + it->second.bytes) return;  // not in a registered segment
    heap = it->second.heap;
  }
  nvtxMemVirtualRangeDesc_t region{};
  region.ptr = ptr;
  region.size = bytes;
  nvtxMemRegionsRegisterBatch_t batch{};
  batch.extCompatID = NVTX_EXT_COMPATID_MEM;
  batch.structSize = sizeof batch;
  batch.regionType = NVTX_MEM_TYPE_VIRTUAL_ADDRESS;
  batch.heap = static_cast<nvtxMemHeapHandle_t>(heap);
  batch.regionCount = 1;
  batch.regionDescElementSize = sizeof region;
  batch.regionDescElements = &region;
  batch.regionHandleElementsOut = nullptr;  // virtual addresses: the pointer is the reference
  nvtxMemRegionsRegister(as_domain(domain_), &batch);
}

void NvtxMemory::unregister_block(const void* ptr) noexcept {
  if (domain_ == nullptr || ptr == nullptr) return;
  {
    std::scoped_lock lock(mutex_);
    const auto address = reinterpret_cast<std::uintptr_t>(ptr);
    auto it = segments_.upper_bound(address);
    if (it == segments_.begin() || address >= std::prev(it)->first + std::prev(it)->second.bytes)
      return;
  }
  nvtxMemRegionRef_t ref{};
  ref.pointer = ptr;
  nvtxMemRegionsUnregisterBatch_t batch{};
  batch.extCompatID = NVTX_EXT_COMPATID_MEM;
  batch.structSize = sizeof batch;
  batch.refType = NVTX_MEM_REGION_REF_TYPE_POINTER;
  batch.refCount = 1;
  batch.refElementSize = sizeof ref;
  batch.refElements = &ref;
  nvtxMemRegionsUnregister(as_domain(domain_), &batch);
}

}  // namespace gpulife::detail
