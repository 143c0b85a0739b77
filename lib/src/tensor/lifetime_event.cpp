// SPDX-License-Identifier: Apache-2.0
#include <gpulife/tensor/lifetime_event.hpp>

namespace gpulife {

std::string_view to_string(LifetimeEvent event) noexcept {
  switch (event) {
    case LifetimeEvent::allocate:
      return "allocate";
    case LifetimeEvent::free:
      return "free";
    case LifetimeEvent::upload:
      return "upload";
    case LifetimeEvent::cache_hit:
      return "cache_hit";
    case LifetimeEvent::cache_miss:
      return "cache_miss";
    case LifetimeEvent::cache_eviction:
      return "cache_eviction";
    case LifetimeEvent::finalizer_run:
      return "finalizer_run";
    case LifetimeEvent::out_of_memory:
      return "out_of_memory";
    case LifetimeEvent::expiry_callback_run:
      return "expiry_callback_run";
    case LifetimeEvent::graph_capture:
      return "graph_capture";
    case LifetimeEvent::graph_launch:
      return "graph_launch";
  }
  return "unknown";
}

}  // namespace gpulife
