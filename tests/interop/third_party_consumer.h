// SPDX-License-Identifier: Apache-2.0
/* A third-party framework's DLPack consumer, written against dlpack.h alone (no gpulife): the
 * tests use it to show that what gpulife exports is readable by anyone who speaks DLPack. */
#ifndef GPULIFE_TESTS_THIRD_PARTY_CONSUMER_H
#define GPULIFE_TESTS_THIRD_PARTY_CONSUMER_H

#include <stddef.h>

#include <dlpack/dlpack.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A framework's array that borrows a DLPack tensor until it is destroyed. */
typedef struct ThirdPartyArray {
  DLManagedTensor* borrowed;
} ThirdPartyArray;

/* Takes ownership of `managed` if it is a host (kDLCPU) tensor; returns 0, or -1 and leaves
 * `managed` with the caller. */
int third_party_borrow(ThirdPartyArray* array, DLManagedTensor* managed);

/* Copies up to `capacity` elements, converted to double, in row-major logical order, following
 * shape, strides (NULL: compact) and byte_offset. Returns the element count, or -1 for a dtype
 * it does not know or too small a buffer. */
long third_party_gather(const ThirdPartyArray* array, double* out, size_t capacity);

/* Gives the tensor back to its producer (calls its deleter). */
void third_party_destroy(ThirdPartyArray* array);

#ifdef __cplusplus
}
#endif

#endif
