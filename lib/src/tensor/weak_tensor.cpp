// SPDX-License-Identifier: Apache-2.0
#include <gpulife/tensor/weak_tensor.hpp>

#include <stdexcept>
#include <string>

#include <gpulife/errors.hpp>

#include "tensor/tensor_arena.hpp"

namespace gpulife {

struct WeakTensor::ExpiryGuard {
  std::shared_ptr<detail::CallbackState> state;
  ExpiryGuard(const ExpiryGuard&) = delete;
  ExpiryGuard& operator=(const ExpiryGuard&) = delete;
  explicit ExpiryGuard(std::shared_ptr<detail::CallbackState> s) : state(std::move(s)) {}
  ~ExpiryGuard() { state->detach(); }
};

WeakTensor::WeakTensor(const DeviceTensor& tensor) noexcept
    : impl_(detail::TensorAccess::impl(tensor)) {
  if (impl_ != nullptr) detail::retain_weak(impl_);
}

WeakTensor::WeakTensor(const DeviceTensor& tensor, FinalizerFunction on_expire)
    : WeakTensor(tensor, std::move(on_expire), false) {}

WeakTensor::WeakTensor(const DeviceTensor& tensor, FinalizerFunction on_expire,
                       detail::InternalCallback)
    : WeakTensor(tensor, std::move(on_expire), true) {}

WeakTensor::WeakTensor(const DeviceTensor& tensor, FinalizerFunction on_expire, bool internal) {
  detail::TensorImpl* impl = detail::TensorAccess::impl(tensor);
  if (impl == nullptr) throw std::invalid_argument("tensor: empty DeviceTensor");
  if (!on_expire) throw std::invalid_argument("on_expire: empty function");
  expiry_ = std::make_shared<ExpiryGuard>(impl->arena->add_callback(
      *impl, detail::CallbackState::Kind::expiry, std::move(on_expire), internal));
  impl_ = impl;
  detail::retain_weak(impl_);
}

WeakTensor::WeakTensor(const WeakTensor& other) noexcept
    : impl_(other.impl_), expiry_(other.expiry_) {
  if (impl_ != nullptr) detail::retain_weak(impl_);
}

WeakTensor::WeakTensor(WeakTensor&& other) noexcept
    : impl_(std::exchange(other.impl_, nullptr)), expiry_(std::move(other.expiry_)) {}

WeakTensor& WeakTensor::operator=(const WeakTensor& other) noexcept {
  WeakTensor copy(other);
  std::swap(impl_, copy.impl_);
  std::swap(expiry_, copy.expiry_);
  return *this;
}

WeakTensor& WeakTensor::operator=(WeakTensor&& other) noexcept {
  WeakTensor moved(std::move(other));
  std::swap(impl_, moved.impl_);
  std::swap(expiry_, moved.expiry_);
  return *this;
}

WeakTensor::~WeakTensor() {
  expiry_.reset();  // cancel the callback before the block may go away
  if (impl_ != nullptr) detail::drop_weak(impl_);
}

DeviceTensor WeakTensor::lock() const noexcept {
  if (impl_ == nullptr) return {};
  std::uint32_t count = impl_->strong.load(std::memory_order_relaxed);
  // Only a live tensor may gain a reference: once the count is zero the release has begun.
  while (count != 0) {
    if (impl_->strong.compare_exchange_weak(count, count + 1, std::memory_order_acq_rel,
                                            std::memory_order_relaxed)) {
      return detail::TensorAccess::adopt(impl_);
    }
  }
  return {};
}

bool WeakTensor::expired() const noexcept {
  return impl_ == nullptr || impl_->strong.load(std::memory_order_acquire) == 0;
}

DeviceTensor WeakTensor::get() const {
  DeviceTensor tensor = lock();
  if (!tensor) {
    throw ExpiredTensorError(impl_ == nullptr
                                 ? std::string("WeakTensor::get: empty weak reference")
                                 : "WeakTensor::get: tensor #" + std::to_string(impl_->id) +
                                       " has been released");
  }
  return tensor;
}

std::uint64_t WeakTensor::id() const noexcept { return impl_ != nullptr ? impl_->id : 0; }

}  // namespace gpulife
