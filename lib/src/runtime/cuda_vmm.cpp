// SPDX-License-Identifier: Apache-2.0
// The CUDA driver's virtual memory management through the runtime's driver entry points. See
// cuda_vmm.hpp. Not run in this repository's CI (no GPU): compiled and linked whenever the CUDA
// backend is.

#include "runtime/cuda_vmm.hpp"

#include <cuda.h>
#include <cuda_runtime_api.h>

#include <string>

#include <gpulife/error_handler.hpp>
#include <gpulife/errors.hpp>

#include "detail/format.hpp"

namespace gpulife::detail {
namespace {

struct DriverApi {
  decltype(&::cuGetErrorName) get_error_name = nullptr;
  decltype(&::cuDeviceGetAttribute) device_get_attribute = nullptr;
  decltype(&::cuMemGetAllocationGranularity) get_granularity = nullptr;
  decltype(&::cuMemAddressReserve) address_reserve = nullptr;
  decltype(&::cuMemAddressFree) address_free = nullptr;
  decltype(&::cuMemCreate) create = nullptr;
  decltype(&::cuMemRelease) release = nullptr;
  decltype(&::cuMemMap) map = nullptr;
  decltype(&::cuMemUnmap) unmap = nullptr;
  decltype(&::cuMemSetAccess) set_access = nullptr;
  bool complete = false;
};

template <class Fn>
bool entry(const char* symbol, Fn& fn) noexcept {
  void* ptr = nullptr;
  cudaDriverEntryPointQueryResult found{};
  const cudaError_t err =
      cudaGetDriverEntryPointByVersion(symbol, &ptr, 12000, cudaEnableDefault, &found);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  if (found != cudaDriverEntryPointSuccess || ptr == nullptr) return false;
  fn = reinterpret_cast<Fn>(ptr);
  return true;
}

const DriverApi& api() noexcept {
  static const DriverApi driver = [] {
    DriverApi d;
    d.complete = entry("cuGetErrorName", d.get_error_name) &&
                 entry("cuDeviceGetAttribute", d.device_get_attribute) &&
                 entry("cuMemGetAllocationGranularity", d.get_granularity) &&
                 entry("cuMemAddressReserve", d.address_reserve) &&
                 entry("cuMemAddressFree", d.address_free) && entry("cuMemCreate", d.create) &&
                 entry("cuMemRelease", d.release) && entry("cuMemMap", d.map) &&
                 entry("cuMemUnmap", d.unmap) && entry("cuMemSetAccess", d.set_access);
    return d;
  }();
  return driver;
}

CUmemAllocationProp chunk_properties(int ordinal) noexcept {
  CUmemAllocationProp prop{};
  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  prop.location.id = ordinal;
  return prop;
}

/// Throws for a failed driver call: OutOfMemoryError for CUDA_ERROR_OUT_OF_MEMORY, else CudaError.
void check(CUresult result, const char* call, const std::string& doing, std::size_t bytes,
           SourceLocation where = SourceLocation::current()) {
  if (result == CUDA_SUCCESS) return;
  const char* name = "CUDA_ERROR_UNKNOWN";
  if (api().get_error_name != nullptr) api().get_error_name(result, &name);
  if (result == CUDA_ERROR_OUT_OF_MEMORY) {
    throw OutOfMemoryError(std::string("out of memory: ") + call + " while " + doing, bytes);
  }
  throw_cuda_error(static_cast<int>(result), name, call, doing, where);
}

}  // namespace

CudaVmm::CudaVmm(int ordinal) noexcept : ordinal_(ordinal) {
  const DriverApi& d = api();
  if (!d.complete) return;
  int supported = 0;
  if (d.device_get_attribute(&supported,
                             CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED,
                             ordinal) != CUDA_SUCCESS ||
      supported == 0) {
    return;
  }
  const CUmemAllocationProp prop = chunk_properties(ordinal);
  std::size_t granularity = 0;
  if (d.get_granularity(&granularity, &prop, CU_MEM_ALLOC_GRANULARITY_RECOMMENDED) !=
      CUDA_SUCCESS) {
    return;
  }
  granularity_ = granularity;
}

void* CudaVmm::reserve(std::size_t bytes) {
  CUdeviceptr base = 0;
  check(api().address_reserve(&base, bytes, granularity_, 0, 0), "cuMemAddressReserve",
        "reserving " + format_bytes(bytes) + " of address space on cuda:" +
            std::to_string(ordinal_),
        bytes);
  return reinterpret_cast<void*>(base);
}

void CudaVmm::release(void* base, std::size_t bytes) noexcept {
  if (api().address_free(reinterpret_cast<CUdeviceptr>(base), bytes) != CUDA_SUCCESS) {
    report_error("cuMemAddressFree failed for a range of " + format_bytes(bytes));
  }
}

void CudaVmm::map(void* ptr, std::size_t bytes) {
  const DriverApi& d = api();
  const CUmemAllocationProp prop = chunk_properties(ordinal_);
  const auto start = reinterpret_cast<CUdeviceptr>(ptr);
  std::size_t done = 0;
  try {
    std::scoped_lock lock(mutex_);
    for (; done < bytes; done += granularity_) {
      CUmemGenericAllocationHandle handle = 0;
      const std::string doing = "mapping " + format_bytes(granularity_) + " at " +
                                format_pointer(reinterpret_cast<void*>(start + done)) +
                                " on cuda:" + std::to_string(ordinal_);
      check(d.create(&handle, granularity_, &prop, 0), "cuMemCreate", doing, bytes);
      const CUresult mapped = d.map(start + done, granularity_, 0, handle, 0);
      if (mapped != CUDA_SUCCESS) {
        (void)d.release(handle);
        check(mapped, "cuMemMap", doing, bytes);
      }
      handles_[start + done] = handle;
    }
    CUmemAccessDesc access{};
    access.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    access.location.id = ordinal_;
    access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    check(d.set_access(start, bytes, &access, 1), "cuMemSetAccess",
          "granting access to " + format_bytes(bytes) + " on cuda:" + std::to_string(ordinal_),
          bytes);
  } catch (...) {
    unmap(ptr, done);  // nothing stays mapped
    throw;
  }
}

void CudaVmm::unmap(void* ptr, std::size_t bytes) noexcept {
  const DriverApi& d = api();
  const auto start = reinterpret_cast<CUdeviceptr>(ptr);
  std::scoped_lock lock(mutex_);
  for (std::size_t off = 0; off < bytes; off += granularity_) {
    auto it = handles_.find(start + off);
    if (it == handles_.end()) continue;
    if (d.unmap(start + off, granularity_) != CUDA_SUCCESS ||
        d.release(it->second) != CUDA_SUCCESS) {
      report_error("cuMemUnmap/cuMemRelease failed for a chunk at " +
                   format_pointer(reinterpret_cast<void*>(start + off)));
    }
    handles_.erase(it);
  }
}

}  // namespace gpulife::detail
