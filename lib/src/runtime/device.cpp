// SPDX-License-Identifier: Apache-2.0
#include <gpulife/runtime/device.hpp>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include <gpulife/errors.hpp>
#include <gpulife/runtime/detail/enqueue_site.hpp>

#include "runtime/backends.hpp"

namespace gpulife {

// ---- EnqueueSite -------------------------------------------------------------------------------

namespace detail {
namespace {
thread_local const SourceLocation* outer_site = nullptr;
}  // namespace

EnqueueSite::EnqueueSite(const SourceLocation& where) noexcept : outermost_(outer_site == nullptr) {
  if (outermost_) outer_site = &where;
}

EnqueueSite::~EnqueueSite() {
  if (outermost_) outer_site = nullptr;
}

const SourceLocation* EnqueueSite::current() noexcept { return outer_site; }
}  // namespace detail

namespace {

detail::StreamImpl& checked(detail::StreamImpl* impl) {
  if (impl == nullptr) throw std::invalid_argument("stream: empty StreamView");
  return *impl;
}

void check_event_for(detail::StreamImpl& stream, const Event& event, bool other_device_ok) {
  if (!event.valid()) throw std::invalid_argument("event: empty Event");
  if (other_device_ok ? event.device_impl()->kind() != stream.device().kind()
                      : event.device_impl() != &stream.device()) {
    throw std::invalid_argument("event: belongs to " + event.device_impl()->name() +
                                ", the stream to " + stream.device().name());
  }
}

/// Applies GPULIFE_SIM_SEED=<seed> or <policy>:<seed> to `options`.
void apply_sim_seed(SimOptions& options) {
  const char* value = std::getenv("GPULIFE_SIM_SEED");
  if (value == nullptr || *value == '\0') return;
  const std::string text = value;
  std::string digits = text;
  SimPolicy policy = options.policy;
  if (const auto colon = text.find(':'); colon != std::string::npos) {
    const std::string name = text.substr(0, colon);
    if (name == "mixed") {
      policy = SimPolicy::mixed;
    } else if (name == "uniform") {
      policy = SimPolicy::uniform;
    } else if (name == "pct") {
      policy = SimPolicy::pct;
    } else {
      throw std::invalid_argument("GPULIFE_SIM_SEED: unknown policy '" + name +
                                  "' (expected mixed, uniform or pct)");
    }
    digits = text.substr(colon + 1);
  }
  char* end = nullptr;
  errno = 0;
  const unsigned long long seed = std::strtoull(digits.c_str(), &end, 10);
  if (digits.empty() || std::isdigit(static_cast<unsigned char>(digits.front())) == 0 ||
      end == nullptr || *end != '\0' || errno == ERANGE) {
    throw std::invalid_argument(
        "GPULIFE_SIM_SEED: expected <seed> or <policy>:<seed> with a "
        "decimal seed, got '" +
        text + "'");
  }
  options.schedule = SimSchedule::seeded;
  options.seed = seed;
  options.policy = policy;
}

}  // namespace

// ---- StreamView --------------------------------------------------------------------------------

std::uint64_t StreamView::id() const noexcept { return impl_ != nullptr ? impl_->id() : 0; }

BackendKind StreamView::backend() const { return checked(impl_).device().kind(); }

detail::DeviceImpl& StreamView::device() const { return checked(impl_).device(); }

void* StreamView::native_handle() const { return checked(impl_).native_handle(); }

void StreamView::copy(void* dst, const void* src, std::size_t bytes, CopyKind kind,
                      SourceLocation where) const {
  const detail::EnqueueSite site(where);
  auto& stream = checked(impl_);
  if (bytes == 0) return;
  if (dst == nullptr) throw std::invalid_argument("dst: null pointer for a copy of " +
                                                  std::to_string(bytes) + " bytes");
  if (src == nullptr) throw std::invalid_argument("src: null pointer for a copy of " +
                                                  std::to_string(bytes) + " bytes");
  stream.copy(dst, src, bytes, kind);
}

void StreamView::memset(void* dst, int value, std::size_t bytes, SourceLocation where) const {
  const detail::EnqueueSite site(where);
  auto& stream = checked(impl_);
  if (bytes == 0) return;
  if (dst == nullptr) throw std::invalid_argument("dst: null pointer for a memset");
  stream.memset(dst, value, bytes);
}

void StreamView::host_callback(std::function<void()> fn, SourceLocation where) const {
  const detail::EnqueueSite site(where);
  auto& stream = checked(impl_);
  if (!fn) throw std::invalid_argument("fn: empty function");
  stream.host_callback(std::move(fn));
}

void StreamView::record(const Event& event, SourceLocation where) const {
  const detail::EnqueueSite site(where);
  auto& stream = checked(impl_);
  check_event_for(stream, event, false);
  stream.record(*event.impl());
}

void StreamView::wait(const Event& event, SourceLocation where) const {
  const detail::EnqueueSite site(where);
  auto& stream = checked(impl_);
  check_event_for(stream, event, true);
  stream.wait(*event.impl());
}

void StreamView::synchronize() const { checked(impl_).synchronize(); }

bool StreamView::query() const { return checked(impl_).query(); }

// ---- Stream ------------------------------------------------------------------------------------

Stream::Stream(const Device& device)
    : device_(device.shared_impl()), impl_(&device.impl().acquire_stream()) {}

Stream::Stream(Stream&& other) noexcept
    : device_(std::move(other.device_)), impl_(std::exchange(other.impl_, nullptr)) {}

Stream& Stream::operator=(Stream&& other) noexcept {
  if (this != &other) {
    if (impl_ != nullptr) device_->release_stream(*impl_);
    device_ = std::move(other.device_);
    impl_ = std::exchange(other.impl_, nullptr);
  }
  return *this;
}

Stream::~Stream() {
  if (impl_ != nullptr) device_->release_stream(*impl_);
}

// ---- Event -------------------------------------------------------------------------------------

Event::Event(const Device& device)
    : device_(device.shared_impl()), impl_(&device.impl().acquire_event()) {}

Event::Event(Event&& other) noexcept
    : device_(std::move(other.device_)), impl_(std::exchange(other.impl_, nullptr)) {}

Event& Event::operator=(Event&& other) noexcept {
  if (this != &other) {
    if (impl_ != nullptr) device_->release_event(*impl_);
    device_ = std::move(other.device_);
    impl_ = std::exchange(other.impl_, nullptr);
  }
  return *this;
}

Event::~Event() {
  if (impl_ != nullptr) device_->release_event(*impl_);
}

bool Event::query() const {
  if (impl_ == nullptr) throw std::invalid_argument("event: empty Event");
  return impl_->query();
}

void Event::synchronize() const {
  if (impl_ == nullptr) throw std::invalid_argument("event: empty Event");
  impl_->synchronize();
}

// ---- Device ------------------------------------------------------------------------------------

detail::DeviceImpl& Device::impl() const {
  if (!impl_) throw std::invalid_argument("device: empty Device");
  return *impl_;
}

Device Device::sim(SimOptions options) {
  if (options.capacity_bytes == 0) throw std::invalid_argument("capacity_bytes: must be > 0");
  if (!(options.faults.probability >= 0.0 && options.faults.probability <= 1.0)) {
    throw std::invalid_argument(
        "faults.probability: " + std::to_string(options.faults.probability) + " is outside [0, 1]");
  }
  apply_sim_seed(options);
  if (!options.delay) {
    if (const char* seed = std::getenv("GPULIFE_SIM_DELAY"); seed != nullptr && *seed != '\0') {
      options.delay = true;
      options.delay_seed = std::strtoull(seed, nullptr, 10);
    }
  }
  // Race detection on or off for a program one does not rebuild (a cost measurement, say).
  if (const char* races = std::getenv("GPULIFE_SIM_RACES"); races != nullptr && *races != '\0') {
    options.races = std::string_view(races) != "0";
  }
  // Device memory the host cannot touch, for a whole test run (a program one does not rebuild).
  if (const char* guard = std::getenv("GPULIFE_SIM_GUARD_DEVICE");
      guard != nullptr && *guard != '\0') {
    options.guard_device_memory = std::string_view(guard) != "0";
  }
  return Device{detail::make_sim_device(std::move(options))};
}

CudaProbe Device::probe_cuda() noexcept {
#if defined(GPULIFE_HAS_CUDA)
  return detail::probe_cuda_runtime();
#else
  CudaProbe probe;
  probe.reason = "gpulife was built without the CUDA backend";
  return probe;
#endif
}

Device Device::cuda(int ordinal) {
#if defined(GPULIFE_HAS_CUDA)
  return Device{detail::make_cuda_device(ordinal)};
#else
  (void)ordinal;
  detail::throw_cuda_error(35, "cudaErrorInsufficientDriver", "Device::cuda",
                           "opening a CUDA device: gpulife was built without the CUDA backend");
#endif
}

Device Device::select() {
  const char* forced = std::getenv("GPULIFE_DEVICE");
  const std::string choice = forced != nullptr ? forced : "";
  if (choice == "sim") return sim();
  if (choice == "cuda") {
    const CudaProbe probe = probe_cuda();
    if (!probe.available) {
      detail::throw_cuda_error(100, "cudaErrorNoDevice", "Device::select",
                               "GPULIFE_DEVICE=cuda but no CUDA device answers: " + probe.reason);
    }
    return cuda(0);
  }
  if (!choice.empty()) {
    throw std::invalid_argument("GPULIFE_DEVICE: expected 'cuda' or 'sim', got '" + choice + "'");
  }
  const CudaProbe probe = probe_cuda();
  if (probe.available) return cuda(0);
  std::fprintf(stderr, "gpulife: no CUDA device (%s); using the simulated device\n",
               probe.reason.c_str());
  return sim();
}

}  // namespace gpulife

namespace gpulife::detail {

// ---- virtual memory management: none unless a backend says otherwise -------------------------

void* DeviceImpl::reserve_address_range(std::size_t bytes) {
  (void)bytes;
  throw std::logic_error(name() + " has no virtual memory management");
}

void DeviceImpl::release_address_range(void* base, std::size_t bytes) noexcept {
  (void)base, (void)bytes;
}

void DeviceImpl::map_memory(void* ptr, std::size_t bytes) {
  (void)ptr, (void)bytes;
  throw std::logic_error(name() + " has no virtual memory management");
}

void DeviceImpl::unmap_memory(void* ptr, std::size_t bytes) noexcept { (void)ptr, (void)bytes; }

}  // namespace gpulife::detail
