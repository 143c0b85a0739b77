// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `LifetimeEvent`: the kinds of event in a tensor's life that gpulife reports to an
/// observer (the debug layer's timeline records them).

#include <cstdint>
#include <string_view>

namespace gpulife {

/// @brief What happened to a tensor, or to the tensor cache on its behalf.
///
/// The tensor layer and the cache report these; the debug layer observes them (its timeline
/// records one event per report). Only what the program asked for is reported: the expiry
/// callbacks gpulife registers for its own bookkeeping (the tensor cache's and `WeakKeyMap`'s)
/// are not.
enum class LifetimeEvent : std::uint8_t {
  allocate,             ///< a tensor got memory
  free,                 ///< a tensor's memory went back (stream-ordered)
  upload,               ///< bytes were copied host to device for a tensor
  cache_hit,            ///< the tensor cache returned an existing tensor
  cache_miss,           ///< the tensor cache had to upload
  cache_eviction,       ///< the tensor cache dropped a retained entry
  finalizer_run,        ///< a finalizer (`DeviceTensor::on_release`) ran, at release or shutdown
  out_of_memory,        ///< an allocation failed after the memory-pressure chain
  expiry_callback_run,  ///< a `WeakTensor`'s expiry callback ran
  graph_capture,  ///< a capture scope made a graph (bytes: its pool's reserve; tag: the capture)
  graph_launch,   ///< a `Graph` was launched (tag: its capture)
};

/// @return the event's name in traces: "allocate", "free", "upload", "cache_hit", ...
[[nodiscard]] std::string_view to_string(LifetimeEvent event) noexcept;

}  // namespace gpulife
