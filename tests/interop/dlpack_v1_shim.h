// SPDX-License-Identifier: Apache-2.0
#pragma once

// The DLPack 1.x declarations that gpulife's versioned overloads use, for a build machine whose
// dlpack.h is 0.6 (Debian's). Written from the DLPack 1.0 ABI: DLTensor is unchanged; the
// versioned struct puts version, manager context, deleter and flags before it. Where the
// installed header is 1.x already, it is used as is.

#include <stdint.h>

#include <dlpack/dlpack.h>

#if !defined(DLPACK_MAJOR_VERSION)
#define DLPACK_MAJOR_VERSION 1
#define DLPACK_MINOR_VERSION 0
#define DLPACK_FLAG_BITMASK_READ_ONLY (1UL << 0UL)
#define DLPACK_FLAG_BITMASK_IS_COPIED (1UL << 1UL)

extern "C" {
typedef struct {
  uint32_t major;
  uint32_t minor;
} DLPackVersion;

typedef struct DLManagedTensorVersioned {
  DLPackVersion version;
  void* manager_ctx;
  void (*deleter)(struct DLManagedTensorVersioned* self);
  uint64_t flags;
  DLTensor dl_tensor;
} DLManagedTensorVersioned;
}
#endif
