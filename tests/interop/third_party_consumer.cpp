// SPDX-License-Identifier: Apache-2.0
// Deliberately C-style and built without gpulife's include paths (see tests/CMakeLists.txt).
#include "third_party_consumer.h"

#include <cstdint>
#include <cstring>

namespace {

bool read_element(const DLTensor& t, const unsigned char* at, double* value) {
  const DLDataType d = t.dtype;
  if (d.lanes != 1) return false;
  if (d.code == kDLFloat && d.bits == 32) {
    float v;
    std::memcpy(&v, at, sizeof v);
    *value = static_cast<double>(v);
  } else if (d.code == kDLFloat && d.bits == 64) {
    std::memcpy(value, at, sizeof *value);
  } else if (d.code == kDLInt && d.bits == 32) {
    std::int32_t v;
    std::memcpy(&v, at, sizeof v);
    *value = static_cast<double>(v);
  } else if (d.code == kDLInt && d.bits == 64) {
    std::int64_t v;
    std::memcpy(&v, at, sizeof v);
    *value = static_cast<double>(v);
  } else if (d.code == kDLUInt && d.bits == 8) {
    *value = static_cast<double>(*at);
  } else {
    return false;
  }
  return true;
}

}  // namespace

extern "C" int third_party_borrow(ThirdPartyArray* array, DLManagedTensor* managed) {
  if (managed == nullptr || managed->dl_tensor.device.device_type != kDLCPU) return -1;
  array->borrowed = managed;
  return 0;
}

extern "C" long third_party_gather(const ThirdPartyArray* array, double* out, size_t capacity) {
  const DLTensor& t = array->borrowed->dl_tensor;
  std::int64_t count = 1;
  for (int i = 0; i < t.ndim; ++i) count *= t.shape[i];
  if (count < 0 || static_cast<std::uint64_t>(count) > capacity) return -1;
  const std::int64_t item = (t.dtype.bits * t.dtype.lanes + 7) / 8;
  std::int64_t index[32] = {0};
  if (t.ndim > 32) return -1;
  const auto* base = static_cast<const unsigned char*>(t.data) + t.byte_offset;
  for (std::int64_t n = 0; n < count; ++n) {
    // offset of the current multi-index, in elements
    std::int64_t offset = 0;
    std::int64_t compact = 1;
    for (int i = t.ndim - 1; i >= 0; --i) {
      offset += index[i] * (t.strides != nullptr ? t.strides[i] : compact);
      compact *= t.shape[i];
    }
    if (!read_element(t, base + offset * item, &out[n])) return -1;
    for (int i = t.ndim - 1; i >= 0; --i) {  // next multi-index, last dimension fastest
      if (++index[i] < t.shape[i]) break;
      index[i] = 0;
    }
  }
  return static_cast<long>(count);
}

extern "C" void third_party_destroy(ThirdPartyArray* array) {
  if (array->borrowed != nullptr && array->borrowed->deleter != nullptr) {
    array->borrowed->deleter(array->borrowed);
  }
  array->borrowed = nullptr;
}
