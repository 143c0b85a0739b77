// SPDX-License-Identifier: Apache-2.0
#include <gpulife/tensor/finalizer.hpp>

#include "tensor/tensor_arena.hpp"

namespace gpulife {

bool Finalizer::alive() const noexcept {
  return state_ &&
         state_->status.load(std::memory_order_acquire) == detail::CallbackState::Status::pending;
}

bool Finalizer::detach() noexcept { return state_ && state_->detach(); }

std::optional<TensorInfo> Finalizer::peek() const {
  if (!alive()) return std::nullopt;
  return state_->info;
}

bool Finalizer::atexit() const noexcept {
  return state_ && state_->atexit.load(std::memory_order_acquire);
}

void Finalizer::set_atexit(bool value) noexcept {
  if (state_) state_->atexit.store(value, std::memory_order_release);
}

}  // namespace gpulife
