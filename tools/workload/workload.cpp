// SPDX-License-Identifier: Apache-2.0
#include "workload.hpp"

#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <gpulife/cache/host_buffer.hpp>
#include <gpulife/context.hpp>
#include <gpulife/error_handler.hpp>
#include <gpulife/errors.hpp>
#include <gpulife/kernels/checksum.hpp>
#include <gpulife/kernels/fill.hpp>
#include <gpulife/memory/async_resource.hpp>
#include <gpulife/memory/memory_pressure.hpp>
#include <gpulife/memory/pool_resource.hpp>
#include <gpulife/tensor/weak_tensor.hpp>

#include "tensor/tensor_arena.hpp"

namespace gpulife::workload {

std::uint64_t ByteChoices::below(std::uint64_t bound) {
  if (bound <= 1) return 0;
  std::uint64_t value = 0;
  // as many bytes as the bound needs, little-endian
  for (std::uint64_t range = bound - 1; range != 0; range >>= 8) {
    const std::uint64_t byte = next_ < bytes_.size() ? bytes_[next_] : 0;
    if (next_ <= bytes_.size()) ++next_;
    value = (value << 8) | byte;
  }
  return value % bound;
}

namespace {

/// The exception a factory or finalizer throws on purpose.
class DeliberateError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Sizes (bytes, multiples of 8 so that every dtype fits) and dtypes the operations use. Sizes
// from 4 KiB on go through the pinned staging ring (configured below); odd size classes make
// the pool round up.
constexpr std::size_t kSizes[] = {8, 64, 256, 1000, 1024, 2056, 4096, 6000, 10000, 24576};
constexpr DType kDTypes[] = {DType::f32, DType::u8, DType::i32, DType::f16, DType::i64};
constexpr std::size_t kPatterns = 3;  // distinct contents per size: cache keys repeat
constexpr std::size_t kNames = 12;    // name keys "u<n>" and "g<n>"
constexpr std::size_t kStagingMin = 4096;

std::uint64_t mix(std::uint64_t x) {
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ULL;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

std::vector<std::byte> pattern(std::uint64_t seed, std::size_t bytes) {
  std::vector<std::byte> out(bytes);
  for (std::size_t i = 0; i < bytes; i += 8) {
    const std::uint64_t word = mix(seed * 0x9E3779B97F4A7C15ULL + i);
    std::memcpy(out.data() + i, &word, std::min<std::size_t>(8, bytes - i));
  }
  return out;
}

struct Layout {
  Shape shape;
  DType dtype = DType::u8;
  std::size_t bytes = 0;
};

Layout layout_for(std::size_t bytes, DType dtype, bool two_d) {
  const auto numel = static_cast<std::int64_t>(bytes / size_of(dtype));
  Layout layout;
  layout.dtype = dtype;
  layout.bytes = bytes;
  layout.shape = two_d && numel % 2 == 0 ? Shape{2, numel / 2} : Shape{numel};
  return layout;
}

Layout pick_layout(Choices& choices) {
  const std::size_t bytes = kSizes[choices.below(std::size(kSizes))];
  DType dtype = kDTypes[choices.below(std::size(kDTypes))];
  return layout_for(bytes, dtype, choices.chance(40));
}

bool injected(const char* what) { return std::strstr(what, "fault injected") != nullptr; }

/// A finalizer or an expiry callback the workload registered.
struct Probe {
  enum class Expect : std::uint8_t { once, never, either };
  std::atomic<int> runs{0};
  bool throws = false;
  bool atexit = true;
  Expect expect = Expect::once;  // model mutex
  Finalizer handle;              // finalizers: to detach
};

/// Device memory: a root tensor the workload made, or a cache entry's root.
struct Root {
  std::uint64_t id = 0;
  std::uint64_t seq = 0;
  std::size_t bytes = 0;
  const void* data = nullptr;
  WeakTensor watch;
  std::vector<std::byte> content;
  bool known = false;   // content holds what the device holds
  bool shared = false;  // another actor may hold it: no more writes
  std::vector<std::shared_ptr<Probe>> finalizers;
  // cache entries
  bool cached = false;
  std::optional<CacheKey> key;
  Retention retention = Retention::weak;
  bool attached = false;  // still in the cache's map (not erased or cleared)
};

/// One tensor (a root, a view, or a tensor the cache handed out).
struct TensorModel {
  std::uint64_t id = 0;
  std::shared_ptr<Root> root;
  std::shared_ptr<TensorModel> parent;  // the tensor a view holds, when it has a model
  std::size_t offset = 0;
  std::size_t bytes = 0;
  bool contiguous = true;
  int holders = 0;
  WeakTensor watch;
  std::vector<std::shared_ptr<Probe>> expiry;
};

struct Held {
  DeviceTensor tensor;
  std::shared_ptr<TensorModel> model;
};

/// Shared by the copies of one weak reference: the expiry callback is cancelled when the last
/// copy goes.
struct ExpiryToken {
  std::shared_ptr<Probe> probe;
};

struct WeakHeld {
  WeakTensor weak;
  std::shared_ptr<TensorModel> model;
  std::shared_ptr<ExpiryToken> token;
};

struct Actor {
  std::vector<Held> held;
  std::vector<WeakHeld> weaks;
};

/// What `record` learns about a tensor's root if the root is new to the model.
struct RootInit {
  const std::vector<std::byte>* content = nullptr;
  std::optional<CacheKey> key;
  std::optional<Retention> retention;
};

/// Which exceptions an operation may end with besides injected faults.
struct Allowed {
  bool invalid = false;
  bool expired = false;
  bool deliberate = false;
  bool organic_oom = true;
};

enum class Op : std::uint8_t {
  empty,
  upload,
  cache_upload,
  cache_buffer,
  cache_name,
  get_or_create,
  find,
  copy,
  drop,
  share,
  take,
  view,
  slice,
  finalizer,
  detach,
  weak,
  lock,
  weak_get,
  drop_weak,
  fill,
  write,
  read,
  checksum,
  cross_stream,
  synchronize,
  big,
  bad_input,
};

struct Weighted {
  Op op;
  unsigned weight;
};

constexpr Weighted kOps[] = {
    {Op::empty, 6},       {Op::upload, 8},        {Op::cache_upload, 10}, {Op::cache_buffer, 4},
    {Op::cache_name, 5},  {Op::get_or_create, 4}, {Op::find, 3},          {Op::copy, 5},
    {Op::drop, 14},       {Op::share, 3},         {Op::take, 3},          {Op::view, 3},
    {Op::slice, 4},       {Op::finalizer, 6},     {Op::detach, 2},        {Op::weak, 5},
    {Op::lock, 4},        {Op::weak_get, 2},      {Op::drop_weak, 4},     {Op::fill, 4},
    {Op::write, 3},       {Op::read, 4},          {Op::checksum, 3},      {Op::cross_stream, 4},
    {Op::synchronize, 1}, {Op::big, 1},           {Op::bad_input, 2},
};

const char* op_name(Op op) {
  static constexpr const char* names[] = {
      "empty",       "upload",    "cache_upload", "cache_buffer", "cache_name", "get_or_create",
      "find",        "copy",      "drop",         "share",        "take",       "view",
      "slice",       "finalizer", "detach",       "weak",         "lock",       "weak_get",
      "drop_weak",   "fill",      "write",        "read",         "checksum",   "cross_stream",
      "synchronize", "big",       "bad_input"};
  return names[static_cast<int>(op)];
}

// GPULIFE_WORKLOAD_TRACE=1 prints every operation and every exception it caught to stderr.
const bool trace = [] {
  const char* value = std::getenv("GPULIFE_WORKLOAD_TRACE");
  return value != nullptr && *value == '1';
}();

Op pick_op(Choices& choices) {
  unsigned total = 0;
  for (const Weighted& w : kOps) total += w.weight;
  auto roll = static_cast<unsigned>(choices.below(total));
  for (const Weighted& w : kOps) {
    if (roll < w.weight) return w.op;
    roll -= w.weight;
  }
  return Op::drop;
}

}  // namespace

// ---- state -------------------------------------------------------------------------------------

struct Workload::State {
  /// The pressure listener: holds tensors it gives up when an allocation fails.
  class Ballast final : public MemoryPressureListener {
   public:
    explicit Ballast(State& state) : state_(state) {}
    void on_memory_pressure(std::size_t, const Device&) noexcept override {
      std::vector<Held> gone;
      {
        std::scoped_lock lock(mutex);
        gone.swap(tensors);
      }
      state_.forget(gone);
      notified.fetch_add(1, std::memory_order_relaxed);
      // `gone` drops here, on the allocating thread, with no lock held
    }
    std::mutex mutex;
    std::vector<Held> tensors;
    std::atomic<std::uint64_t> notified{0};

   private:
    State& state_;
  };

  explicit State(Config c) : config(std::move(c)) {}

  Config config;
  ErrorHandler previous_handler;
  Device device;
  Device other_device;  // streams of another device, for bad input
  std::shared_ptr<AsyncResource> async;
  std::shared_ptr<FaultAdaptor> faults;
  std::shared_ptr<PoolResource> pool;
  std::optional<Context> ctx;
  std::vector<Stream> streams;
  Stream foreign_stream;
  std::shared_ptr<Ballast> ballast;
  std::vector<Actor> actors;

  // the model
  std::mutex model_mutex;
  std::unordered_map<std::uint64_t, std::shared_ptr<TensorModel>> tensors;
  std::unordered_map<std::uint64_t, std::shared_ptr<Root>> roots;
  std::vector<CacheKey> keys;  // keys uploaded so far, for find and erase
  std::uint64_t next_seq = 0;
  std::uint64_t deliberate_expected = 0;  // throwing finalizers that ran, of forgotten roots

  std::mutex exchange_mutex;
  std::vector<Held> exchange;

  // reports the library made instead of throwing
  std::mutex report_mutex;
  std::vector<std::string> unexpected_reports;
  std::atomic<std::uint64_t> contained_reports{0};
  std::atomic<std::uint64_t> deliberate_reports{0};
  std::atomic<bool> shutting_down{false};

  // counters
  std::atomic<std::uint64_t> operations{0};
  std::atomic<std::uint64_t> failed_operations{0};
  std::atomic<std::uint64_t> cuda_errors{0};
  std::atomic<std::uint64_t> out_of_memory{0};
  std::atomic<std::uint64_t> expired{0};
  std::atomic<std::uint64_t> invalid_arguments{0};
  // The program's callbacks that ran, as the model counts them (shared with the callbacks,
  // which may outlive a round): the context's statistics must say the same.
  std::shared_ptr<std::atomic<std::uint64_t>> finalizers_run =
      std::make_shared<std::atomic<std::uint64_t>>(0);
  std::shared_ptr<std::atomic<std::uint64_t>> expiry_callbacks_run =
      std::make_shared<std::atomic<std::uint64_t>>(0);
  std::uint64_t checks = 0;
  std::uint64_t device_faults_before = 0;
  ContextStatistics final_stats{};
  CacheStatistics final_cache{};
  bool faults_wanted = true;  // false from finish() on
  std::atomic<bool> clean{false};  // reset() proved the state clean, no operation ran since
  std::uint64_t final_pool_faults = 0;
  PoolStatistics final_pool;
  // What earlier pools' statistics counted before reset() returned the pool to a new one's state
  // (its statistics with it): the counters stay totals of the whole workload.
  std::uint64_t pool_segments_before = 0;
  std::uint64_t pool_splits_before = 0;
  std::uint64_t pool_merges_before = 0;

  // ---- helpers ----

  [[noreturn]] static void fail(const std::string& what) { throw InvariantViolation(what); }

  void on_report(std::string_view message) {
    if (message.find("fault injected") != std::string_view::npos) {
      contained_reports.fetch_add(1, std::memory_order_relaxed);
    } else if (message.find("deliberate") != std::string_view::npos) {
      deliberate_reports.fetch_add(1, std::memory_order_relaxed);
    } else if (shutting_down.load() && message.find("destroyed with") != std::string_view::npos) {
      // the context says which tensors outlive it: finish() keeps some on purpose
    } else {
      std::scoped_lock lock(report_mutex);
      unexpected_reports.emplace_back(message);
    }
  }

  StreamView stream(std::size_t index) const {
    return index == 0 ? device.default_stream() : streams[index - 1].view();
  }
  StreamView pick_stream(Choices& choices) const {
    return stream(choices.below(streams.size() + 1));
  }

  void set_faults(bool on) {
    device.set_faults_enabled(on);
    if (faults) faults->set_enabled(on);
  }

  /// Runs `fn`; an expected exception is counted, anything else is an invariant violation.
  /// @return true if `fn` returned
  template <class Fn>
  bool attempt(Allowed allowed, const char* what, Fn&& fn) {
    try {
      fn();
      return true;
    } catch (const InvariantViolation&) {
      throw;
    } catch (...) {
      classify(allowed, what, std::current_exception());
    }
    failed_operations.fetch_add(1, std::memory_order_relaxed);
    return false;
  }

  /// Counts an exception an operation ended with, or fails if it was not to be expected.
  void classify(Allowed allowed, const char* what, const std::exception_ptr& error) {
    const std::string op(what);
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      if (trace) std::fprintf(stderr, "  %s threw: %s\n", what, e.what());
    } catch (...) {
      fail(op + ": a non-standard exception");
    }
    try {
      std::rethrow_exception(error);
    } catch (const CudaError& e) {
      if (!injected(e.what())) fail(op + ": CudaError without a fault: " + e.what());
      cuda_errors.fetch_add(1, std::memory_order_relaxed);
    } catch (const OutOfMemoryError& e) {
      if (!injected(e.what()) && !allowed.organic_oom) {
        fail(op + ": unexpected OutOfMemoryError: " + e.what());
      }
      out_of_memory.fetch_add(1, std::memory_order_relaxed);
    } catch (const ExpiredTensorError& e) {
      if (!allowed.expired) fail(op + ": unexpected ExpiredTensorError: " + e.what());
      expired.fetch_add(1, std::memory_order_relaxed);
    } catch (const std::invalid_argument& e) {
      if (!allowed.invalid) fail(op + ": unexpected invalid_argument: " + e.what());
      invalid_arguments.fetch_add(1, std::memory_order_relaxed);
    } catch (const DeliberateError& e) {
      if (!allowed.deliberate) fail(op + ": unexpected " + e.what());
    } catch (const std::exception& e) {
      fail(op + ": an exception of no gpulife type: " + e.what());
    }
  }

  // ---- the model ----

  /// Takes `tensor` into `into` (an actor's, the exchange's or the ballast's list) and the model.
  void record(std::vector<Held>& into, DeviceTensor tensor, const RootInit& init = {}) {
    detail::TensorImpl* impl = detail::TensorAccess::impl(tensor);
    detail::TensorImpl& owner = detail::memory_owner(*impl);
    std::scoped_lock lock(model_mutex);
    auto& root = roots[owner.id];
    if (!root) {
      root = std::make_shared<Root>();
      root->id = owner.id;
      root->seq = next_seq++;
      root->bytes = owner.alloc_bytes;
      root->data = owner.data;
      detail::retain_strong(&owner);  // `tensor` keeps it alive: this is never the last one
      root->watch = WeakTensor(detail::TensorAccess::adopt(&owner));
      root->content.assign(root->bytes, std::byte{0});
      if (init.key) {
        root->cached = true;
        root->key = init.key;
        root->attached = true;
        if (std::find(keys.begin(), keys.end(), *init.key) == keys.end()) keys.push_back(*init.key);
      }
    }
    if (init.content != nullptr && !root->known) {
      if (init.content->size() != root->bytes) fail("record: content size differs from the root's");
      root->content = *init.content;
      root->known = true;
    }
    if (root->cached && init.retention &&
        static_cast<int>(*init.retention) > static_cast<int>(root->retention)) {
      root->retention = *init.retention;
    }
    auto& model = tensors[tensor.id()];
    if (!model) {
      model = std::make_shared<TensorModel>();
      model->id = tensor.id();
      model->root = root;
      if (impl->base != nullptr) {
        if (auto it = tensors.find(impl->base->id); it != tensors.end()) model->parent = it->second;
      }
      model->offset = owner.data != nullptr
                          ? static_cast<std::size_t>(static_cast<const std::byte*>(impl->data) -
                                                     static_cast<const std::byte*>(owner.data))
                          : 0;
      model->bytes = impl->bytes;
      model->contiguous = tensor.is_contiguous();
      model->watch = WeakTensor(tensor);
    }
    ++model->holders;
    if (trace) {
      std::fprintf(stderr, "  holds tensor #%llu (%zu B at %zu of root #%llu%s)\n",
                   static_cast<unsigned long long>(model->id), model->bytes, model->offset,
                   static_cast<unsigned long long>(root->id), root->known ? "" : ", unknown bytes");
    }
    into.push_back({std::move(tensor), model});
  }

  /// The model forgets the handles in `gone` (before the caller drops them).
  void forget(const std::vector<Held>& gone) {
    std::scoped_lock lock(model_mutex);
    for (const Held& held : gone) --held.model->holders;
  }

  Held take_out(std::vector<Held>& from, std::size_t index) {
    Held held = std::move(from[index]);
    from[index] = std::move(from.back());
    from.pop_back();
    return held;
  }

  void drop(std::vector<Held>& from, std::size_t index) {
    Held held = take_out(from, index);
    {
      std::scoped_lock lock(model_mutex);
      --held.model->holders;
    }
    held.tensor.reset();  // may be the last: memory back, finalizers run here
  }

  /// True if `actor` holds `model` or a view that holds it: then it is certainly alive.
  static bool holds(const Actor& actor, const TensorModel* model) {
    for (const Held& held : actor.held) {
      for (const TensorModel* m = held.model.get(); m != nullptr; m = m->parent.get()) {
        if (m == model) return true;
      }
    }
    return false;
  }

  /// A root only this actor can see and the cache does not share: the workload may write it.
  bool writable(const Held& held) {
    std::scoped_lock lock(model_mutex);
    return !held.model->root->cached && !held.model->root->shared && held.model->contiguous &&
           held.model->bytes > 0;
  }

  std::shared_ptr<Probe> add_finalizer(const DeviceTensor& tensor, Choices& choices,
                                       const std::shared_ptr<Root>& root) {
    auto probe = std::make_shared<Probe>();
    probe->throws = choices.chance(10);
    probe->atexit = !choices.chance(20);
    probe->handle = tensor.on_release([probe, counted = finalizers_run](const TensorInfo& info) {
      probe->runs.fetch_add(1, std::memory_order_acq_rel);
      counted->fetch_add(1, std::memory_order_acq_rel);
      if (info.bytes == 0 && info.data != nullptr) throw std::logic_error("info: no bytes");
      if (probe->throws) throw DeliberateError("deliberate finalizer exception");
    });
    probe->handle.set_atexit(probe->atexit);
    std::scoped_lock lock(model_mutex);
    root->finalizers.push_back(probe);
    return probe;
  }

  // ---- operations ----

  void operation(Actor& actor, Choices& choices);
  void exclusive(Choices& choices);
  void check();
  void verify_bytes(const Held& held, const char* when);
  void release_all();
  void drop_all();
  void finish();
  void build();
  void reset();
  void restart(std::uint64_t seed, const SimFaults& device_faults, const FaultOptions& pool_faults);
};

// ---- actor operations --------------------------------------------------------------------------

void Workload::State::operation(Actor& actor, Choices& choices) {
  operations.fetch_add(1, std::memory_order_relaxed);
  clean = false;
  Context& context = *ctx;
  auto& held = actor.held;
  const Op op = pick_op(choices);
  const bool full = held.size() >= config.max_held;
  if (trace) {
    std::fprintf(stderr, "actor %zu: %s (holds %zu)\n",
                 static_cast<std::size_t>(&actor - actors.data()), op_name(op), held.size());
  }
  auto pick_held = [&]() -> std::optional<std::size_t> {
    if (held.empty()) return std::nullopt;
    const auto i = static_cast<std::size_t>(choices.below(held.size()));
    if (trace) {
      std::fprintf(stderr, "  on tensor #%llu\n",
                   static_cast<unsigned long long>(held[i].model->id));
    }
    return i;
  };

  switch (full && op != Op::drop && op != Op::share ? Op::drop : op) {
    case Op::empty: {
      Layout layout = pick_layout(choices);
      if (choices.chance(5)) layout.shape = Shape{3, 0};  // no memory at all
      const StreamView on = pick_stream(choices);
      attempt({}, "empty", [&] {
        DeviceTensor t = context.empty(layout.shape, layout.dtype, on, "empty");
        record(held, std::move(t));
      });
      break;
    }
    case Op::upload: {
      const Layout layout = pick_layout(choices);
      const auto content = pattern(choices.below(1000) + 7, layout.bytes);
      const StreamView on = pick_stream(choices);
      attempt({}, "upload", [&] {
        DeviceTensor t = context.upload(content, layout.shape, layout.dtype, on, "upload");
        record(held, std::move(t), {.content = &content, .key = {}, .retention = {}});
      });
      break;
    }
    case Op::cache_upload:
    case Op::cache_buffer: {
      // Few keys, so that uploads hit: small sizes mostly, two dtypes, 1-D mostly.
      const std::size_t size =
          choices.chance(80) ? choices.below(6) : choices.below(std::size(kSizes));
      const auto content =
          pattern(1000 + size * kPatterns + choices.below(kPatterns), kSizes[size]);
      const Layout layout =
          layout_for(kSizes[size], choices.chance(50) ? DType::f32 : DType::u8, choices.chance(15));
      const auto retention = static_cast<Retention>(choices.below(3));
      const StreamView on = pick_stream(choices);
      const CacheKey key = CacheKey::content(digest(content), layout.dtype, layout.shape);
      const bool pinned_buffer = choices.chance(50);
      attempt({}, "cache upload", [&] {
        DeviceTensor t;
        if (op == Op::cache_upload) {
          t = context.cache().upload(std::span<const std::byte>(content), layout.shape,
                                     layout.dtype, on, {.retention = retention, .tag = "cached"});
        } else {
          // the buffer goes out of scope at once: a pinned copy still queued must keep it alive
          const HostBuffer buffer =
              pinned_buffer ? HostBuffer::copy_pinned(device, content) : HostBuffer::copy(content);
          t = context.cache().upload(buffer, layout.shape, layout.dtype, on,
                                     {.retention = retention, .tag = "buffer"});
        }
        record(held, std::move(t), {.content = &content, .key = key, .retention = retention});
      });
      break;
    }
    case Op::cache_name: {
      // a name means one content; its shape is 1-D or 2-D by the caller's whim, and a name
      // whose entry has the other shape is refused (invalid_argument, naming the key)
      const std::size_t n = choices.below(kNames);
      const std::size_t bytes = kSizes[n % std::size(kSizes)];
      const auto content = pattern(5000 + n, bytes);
      const Layout layout =
          layout_for(bytes, n % 2 == 0 ? DType::u8 : DType::f32, choices.chance(30));
      const auto retention = static_cast<Retention>(choices.below(3));
      const CacheKey key = CacheKey::name("u" + std::to_string(n));
      const StreamView on = pick_stream(choices);
      attempt({.invalid = true}, "cache name upload", [&] {
        DeviceTensor t = context.cache().upload(key, content, layout.shape, layout.dtype, on,
                                                {.retention = retention});
        record(held, std::move(t), {.content = &content, .key = key, .retention = retention});
      });
      break;
    }
    case Op::get_or_create: {
      const std::size_t n = choices.below(kNames);
      const std::size_t bytes = kSizes[(n * 7) % std::size(kSizes)];
      const auto value = static_cast<unsigned char>(n * 37 + 1);
      const std::vector<std::byte> content(bytes, std::byte{value});
      const auto retention = static_cast<Retention>(choices.below(3));
      const bool throws = choices.chance(10);
      const CacheKey key = CacheKey::name("g" + std::to_string(n));
      const StreamView on = pick_stream(choices);
      const StreamView made_on = choices.chance(30) ? pick_stream(choices) : on;
      attempt({.deliberate = true}, "get_or_create", [&] {
        DeviceTensor t = context.cache().get_or_create(
            key,
            [&] {
              if (throws) throw DeliberateError("deliberate factory exception");
              DeviceTensor made =
                  context.empty({static_cast<std::int64_t>(bytes)}, DType::u8, made_on, "made");
              made_on.memset(made.data(), value, bytes);
              return made;
            },
            on, {.retention = retention});
        record(held, std::move(t), {.content = &content, .key = key, .retention = retention});
      });
      break;
    }
    case Op::find: {
      std::optional<CacheKey> key;
      {
        std::scoped_lock lock(model_mutex);
        if (!keys.empty()) key = keys[choices.below(keys.size())];
      }
      if (!key) break;
      const StreamView on = pick_stream(choices);
      attempt({}, "find", [&] {
        DeviceTensor t = context.cache().find(*key, on);
        if (t) record(held, std::move(t), {.content = nullptr, .key = key, .retention = {}});
      });
      break;
    }
    case Op::copy: {
      if (auto i = pick_held()) {
        DeviceTensor copy = held[*i].tensor;
        std::scoped_lock lock(model_mutex);
        ++held[*i].model->holders;
        held.push_back({std::move(copy), held[*i].model});
      }
      break;
    }
    case Op::drop: {
      if (auto i = pick_held()) drop(held, *i);
      break;
    }
    case Op::share: {
      bool room = false;
      {
        std::scoped_lock lock(exchange_mutex);
        room = exchange.size() < config.max_held;
      }
      if (auto i = pick_held(); i && room) {
        Held out = take_out(held, *i);
        {
          std::scoped_lock lock(model_mutex);
          out.model->root->shared = true;
        }
        std::scoped_lock lock(exchange_mutex);
        exchange.push_back(std::move(out));
      }
      break;
    }
    case Op::take: {
      std::optional<Held> in;
      {
        std::scoped_lock lock(exchange_mutex);
        if (!exchange.empty()) in = take_out(exchange, choices.below(exchange.size()));
      }
      if (in) held.push_back(std::move(*in));
      break;
    }
    case Op::view: {
      if (auto i = pick_held()) {
        const DeviceTensor& t = held[*i].tensor;
        const bool contiguous = t.is_contiguous();
        attempt({.invalid = !contiguous}, "view", [&] {
          DeviceTensor v = t.view(Shape{t.numel()});
          if (!contiguous) fail("view: a non-contiguous tensor was viewed");
          record(held, std::move(v));
        });
      }
      break;
    }
    case Op::slice: {
      if (auto i = pick_held()) {
        const DeviceTensor& t = held[*i].tensor;
        if (t.rank() == 0) break;
        const std::size_t dim = t.rank() > 1 && choices.chance(30) ? 1 : 0;
        const std::int64_t extent = t.shape()[dim];
        std::int64_t start =
            static_cast<std::int64_t>(choices.below(static_cast<std::uint64_t>(extent) + 1));
        std::int64_t stop = start + static_cast<std::int64_t>(choices.below(
                                        static_cast<std::uint64_t>(extent - start) + 1));
        const bool bad = choices.chance(5);
        if (bad) stop = extent + 1;
        attempt({.invalid = bad}, "slice", [&] {
          DeviceTensor v = t.slice(dim, start, stop);
          if (bad) fail("slice: an out-of-bounds slice was accepted");
          record(held, std::move(v));
        });
      }
      break;
    }
    case Op::finalizer: {
      if (auto i = pick_held()) {
        std::shared_ptr<Root> root;
        {
          std::scoped_lock lock(model_mutex);
          root = held[*i].model->root;
        }
        add_finalizer(held[*i].tensor, choices, root);
      }
      break;
    }
    case Op::detach: {
      if (auto i = pick_held()) {
        std::shared_ptr<Probe> probe;
        {
          std::scoped_lock lock(model_mutex);
          auto& list = held[*i].model->root->finalizers;
          if (!list.empty()) probe = list[choices.below(list.size())];
        }
        if (!probe) break;
        std::scoped_lock lock(model_mutex);
        const bool pending = probe->handle.detach();
        if (probe->expect == Probe::Expect::once && !pending) {
          fail("detach: the finalizer of a tensor this actor holds was not pending");
        }
        if (pending) probe->expect = Probe::Expect::never;
      }
      break;
    }
    case Op::weak: {
      // Bounded like the handles an actor holds: a soak must not grow its weak references (and
      // the control blocks they keep) without end.
      if (actor.weaks.size() >= 4 * config.max_held) break;
      if (auto i = pick_held()) {
        WeakHeld weak;
        weak.model = held[*i].model;
        if (choices.chance(50)) {
          auto probe = std::make_shared<Probe>();
          weak.weak = WeakTensor(held[*i].tensor,
                                 [probe, counted = expiry_callbacks_run](const TensorInfo&) {
                                   probe->runs.fetch_add(1, std::memory_order_acq_rel);
                                   counted->fetch_add(1, std::memory_order_acq_rel);
                                 });
          weak.token = std::make_shared<ExpiryToken>(ExpiryToken{probe});
          std::scoped_lock lock(model_mutex);
          weak.model->expiry.push_back(probe);
        } else {
          weak.weak = WeakTensor(held[*i].tensor);
        }
        if (choices.chance(20)) actor.weaks.push_back(weak);  // a copy
        actor.weaks.push_back(std::move(weak));
      }
      break;
    }
    case Op::lock:
    case Op::weak_get: {
      if (actor.weaks.empty()) break;
      const WeakHeld& weak = actor.weaks[choices.below(actor.weaks.size())];
      const bool alive = holds(actor, weak.model.get());
      attempt({.expired = op == Op::weak_get && !alive}, "lock", [&] {
        DeviceTensor t = op == Op::lock ? weak.weak.lock() : weak.weak.get();
        if (alive && !t) fail("lock: a tensor this actor holds was expired");
        if (!t) return;
        if (t.id() != weak.model->id) fail("lock: another tensor than the one referred to");
        if (held.size() < config.max_held) record(held, std::move(t));
      });
      break;
    }
    case Op::drop_weak: {
      if (actor.weaks.empty()) break;
      const std::size_t i = choices.below(actor.weaks.size());
      WeakHeld weak = std::move(actor.weaks[i]);
      actor.weaks[i] = std::move(actor.weaks.back());
      actor.weaks.pop_back();
      if (weak.token && weak.token.use_count() == 1) {
        // the last copy: the callback is cancelled unless the tensor already died
        std::scoped_lock lock(model_mutex);
        weak.token->probe->expect =
            holds(actor, weak.model.get()) ? Probe::Expect::never : Probe::Expect::either;
      }
      break;
    }
    case Op::fill: {
      if (auto i = pick_held(); i && writable(held[*i])) {
        const DeviceTensor& t = held[*i].tensor;
        const bool as_float = t.dtype() == DType::f32 && choices.chance(50);
        const auto byte = static_cast<unsigned char>(choices.below(256));
        const float value = static_cast<float>(choices.below(1000)) * 0.25F;
        attempt({}, "fill", [&] {
          if (as_float) {
            kernels::fill(t.stream(), t.data<float>(), static_cast<std::size_t>(t.numel()), value);
          } else {
            t.stream().memset(t.data(), byte, t.bytes());
          }
          std::scoped_lock lock(model_mutex);
          const TensorModel& m = *held[*i].model;
          for (std::size_t k = 0; k < m.bytes; k += as_float ? sizeof(float) : 1) {
            if (as_float) {
              std::memcpy(m.root->content.data() + m.offset + k, &value, sizeof value);
            } else {
              m.root->content[m.offset + k] = std::byte{byte};
            }
          }
          if (m.offset == 0 && m.bytes == m.root->bytes) m.root->known = true;
        });
      }
      break;
    }
    case Op::write: {
      if (auto i = pick_held(); i && writable(held[*i])) {
        const DeviceTensor& t = held[*i].tensor;
        const auto content = pattern(choices.below(1000) + 90000, t.bytes());
        const bool done = attempt({}, "write", [&] {
          t.upload(content);
          std::scoped_lock lock(model_mutex);
          const TensorModel& m = *held[*i].model;
          std::copy(content.begin(), content.end(),
                    m.root->content.begin() + static_cast<std::ptrdiff_t>(m.offset));
          if (m.offset == 0 && m.bytes == m.root->bytes) m.root->known = true;
        });
        if (!done && t.bytes() >= kStagingMin) {
          // A staged write is several copies: one that failed part-way wrote some chunks. (A
          // direct write is one copy, which a fault stops before it has any effect.)
          std::scoped_lock lock(model_mutex);
          held[*i].model->root->known = false;
        }
      }
      break;
    }
    case Op::read:
    case Op::checksum: {
      if (auto i = pick_held()) {
        const Held& h = held[*i];
        const bool contiguous = h.model->contiguous;
        attempt({.invalid = op == Op::read && !contiguous}, "read", [&] {
          if (op == Op::checksum && !contiguous) return;
          std::vector<std::byte> host(h.tensor.bytes());
          std::uint64_t sum = 0;
          if (op == Op::read) {
            h.tensor.download(host);
            if (!contiguous) fail("download: a non-contiguous tensor was downloaded");
          } else {
            sum = kernels::checksum(h.tensor.stream(), h.tensor.data(), h.tensor.bytes());
          }
          std::scoped_lock lock(model_mutex);
          const TensorModel& m = *h.model;
          if (!m.root->known) return;
          const std::span<const std::byte> expected(m.root->content.data() + m.offset, m.bytes);
          const bool same = op == Op::read ? std::equal(host.begin(), host.end(), expected.begin(),
                                                        expected.end())
                                           : sum == kernels::checksum_host(expected);
          if (!same)
            fail("read: tensor #" + std::to_string(m.id) + " holds other bytes than it should");
        });
      }
      break;
    }
    case Op::cross_stream: {
      // another stream reads one tensor into another: record_stream on both keeps their
      // memory until that stream is done, whoever drops them first
      if (held.size() < 2) break;
      const std::size_t s = choices.below(held.size());
      const std::size_t d = choices.below(held.size());
      if (s == d || !held[s].model->contiguous || !writable(held[d])) break;
      const DeviceTensor& src = held[s].tensor;
      const DeviceTensor& dst = held[d].tensor;
      const std::size_t n = std::min(src.bytes(), dst.bytes());
      {
        // views of one tensor may overlap, and cudaMemcpyAsync does not support overlapping
        // ranges (the simulated device reports such a copy)
        const auto* a = static_cast<const std::byte*>(src.data());
        const auto* b = static_cast<const std::byte*>(dst.data());
        if (a < b + n && b < a + n) break;
      }
      const StreamView other = pick_stream(choices);
      if (trace) {
        std::fprintf(stderr, "  from tensor #%llu to tensor #%llu on stream %llu\n",
                     static_cast<unsigned long long>(held[s].model->id),
                     static_cast<unsigned long long>(held[d].model->id),
                     static_cast<unsigned long long>(other.id()));
      }
      const bool stall = choices.chance(50);
      const bool drop_source = choices.chance(40);
      attempt({}, "cross-stream copy", [&] {
        // a busy stream: the copy runs late, after the tensors' own streams moved on (the
        // seeded scheduler chooses that order itself: its host function need not sleep)
        if (stall) {
          const bool sleep = config.schedule == SimSchedule::threads;
          other.host_callback([sleep] {
            if (sleep) std::this_thread::sleep_for(std::chrono::microseconds(300));
          });
        }
        Event src_ready(device);
        Event dst_ready(device);
        src.stream().record(src_ready);
        dst.stream().record(dst_ready);
        other.wait(src_ready);
        other.wait(dst_ready);
        src.record_stream(other);
        dst.record_stream(other);
        other.copy(dst.data(), src.data(), n, CopyKind::device_to_device);
        {
          std::scoped_lock lock(model_mutex);
          const TensorModel& from = *held[s].model;
          const TensorModel& to = *held[d].model;
          if (from.root->known) {
            std::memmove(to.root->content.data() + to.offset,
                         from.root->content.data() + from.offset, n);
          } else {
            to.root->known = false;
          }
        }
        // Later work on both tensors' own streams (reads of dst, writes of either) waits for
        // the copy on the device; the host does not, so either tensor may be dropped while the
        // copy is still queued (record_stream's case).
        try {
          Event copied(device);
          other.record(copied);
          dst.stream().wait(copied);
          src.stream().wait(copied);
        } catch (...) {
          other.synchronize();  // the bytes are in place; the order is the host's
          throw;
        }
      });
      // Let go of the source while the copy may still be queued: if this was its last handle,
      // only record_stream keeps its memory from being reused under the copy.
      if (drop_source && s < held.size()) drop(held, s);
      break;
    }
    case Op::synchronize: {
      pick_stream(choices).synchronize();
      break;
    }
    case Op::big: {
      // most of the device: out of memory is possible (and typed), and the pressure chain runs
      const std::size_t bytes = (std::size_t{1} << 20) * (1 + choices.below(6));
      attempt({}, "big", [&] {
        DeviceTensor t = context.empty({static_cast<std::int64_t>(bytes)}, DType::u8,
                                       pick_stream(choices), "big");
        t.stream().memset(t.data(), 0, t.bytes());
      });
      break;
    }
    case Op::bad_input: {
      // invalid arguments in the middle of everything: refused, naming the argument
      const auto which = choices.below(5);
      const bool named = [&] {
        try {
          switch (which) {
            case 0:
              (void)context.empty({4}, DType::f32, foreign_stream, "bad");
              break;
            case 1: {
              const std::vector<std::byte> three(3);
              (void)context.upload(three, {4}, DType::f32);
              break;
            }
            case 2:
              (void)context.cache().upload(std::span<const std::byte>{}, {0}, DType::u8);
              break;
            case 3:
              if (held.empty()) return true;
              (void)held[0].tensor.slice(held[0].tensor.rank() + 1, 0, 1);
              break;
            default: {
              DeviceTensor moved = held.empty() ? DeviceTensor{} : held[0].tensor;
              DeviceTensor other = std::move(moved);
              (void)moved.bytes();  // NOLINT(bugprone-use-after-move): the point
              break;
            }
          }
        } catch (const std::invalid_argument& e) {
          invalid_arguments.fetch_add(1, std::memory_order_relaxed);
          return std::strchr(e.what(), ':') != nullptr;
        }
        return which == 3 && held.empty();
      }();
      if (!named) fail("bad input: accepted, or refused without naming the argument");
      break;
    }
  }
}

// ---- exclusive operations ----------------------------------------------------------------------

void Workload::State::exclusive(Choices& choices) {
  operations.fetch_add(1, std::memory_order_relaxed);
  clean = false;
  Context& context = *ctx;
  switch (choices.below(8)) {
    case 0: {  // erase one key: true exactly when an entry of that key is alive in the cache
      std::optional<CacheKey> key;
      bool expected = false;
      {
        std::scoped_lock lock(model_mutex);
        if (keys.empty()) break;
        key = keys[choices.below(keys.size())];
        for (const auto& [id, root] : roots) {
          if (root->cached && root->attached && root->key == key && !root->watch.expired()) {
            expected = true;
          }
        }
      }
      const bool erased = context.cache().erase(*key);
      if (erased != expected) {
        fail("erase(" + key->to_string() + ") returned " + (erased ? "true" : "false"));
      }
      std::scoped_lock lock(model_mutex);
      for (const auto& [id, root] : roots) {
        if (root->cached && root->key == key) root->attached = false;
      }
      break;
    }
    case 1: {
      context.cache().clear();
      std::scoped_lock lock(model_mutex);
      for (const auto& [id, root] : roots) root->attached = false;
      break;
    }
    case 2: {  // the warm tier gives back exactly what it keeps
      const std::size_t warm = context.cache().statistics().warm_bytes;
      const std::size_t released = context.cache().clear_warm();
      if (released != warm) {
        fail("clear_warm released " + std::to_string(released) + " B, the tier held " +
             std::to_string(warm));
      }
      if (context.cache().statistics().warm_entries != 0) fail("clear_warm left warm entries");
      break;
    }
    case 3:
      context.resource().release_cached();
      break;
    case 4: {  // other faults from now on
      constexpr double probabilities[] = {0.0, 0.005, 0.02, 0.1};
      SimFaults f = config.device_faults;
      f.seed = choices.below(1U << 30);
      f.probability = probabilities[choices.below(4)];
      f.every_nth = choices.chance(20) ? 2 + choices.below(20) : 0;
      device.set_faults(f);
      faults->set_options({.every_nth = choices.chance(20) ? 2 + choices.below(10) : 0,
                           .probability = probabilities[choices.below(4)],
                           .seed = choices.below(1U << 30)});
      break;
    }
    case 5: {  // ballast the pressure listener gives up when an allocation fails
      // Made without the ballast's lock: the allocation may itself call the listener.
      std::vector<Held> more;
      for (int i = 0; i < 3; ++i) {
        attempt({}, "ballast", [&] {
          record(more, context.empty({64 << 10}, DType::u8, pick_stream(choices), "ballast"));
        });
      }
      std::scoped_lock lock(ballast->mutex);
      for (Held& held : more) ballast->tensors.push_back(std::move(held));
      break;
    }
    case 6: {  // one actor lets go of everything
      Actor& actor = actors[choices.below(actors.size())];
      std::vector<Held> gone = std::move(actor.held);
      actor.held.clear();
      forget(gone);
      gone.clear();
      break;
    }
    default:
      device.synchronize();
      break;
  }
}

// ---- checks ------------------------------------------------------------------------------------

void Workload::State::verify_bytes(const Held& held, const char* when) {
  const TensorModel& m = *held.model;
  if (!m.root->known || !m.contiguous || m.bytes == 0) return;
  const std::uint64_t expected =
      kernels::checksum_host(std::span(m.root->content.data() + m.offset, m.bytes));
  const std::uint64_t actual =
      kernels::checksum(held.tensor.stream(), held.tensor.data(), held.tensor.bytes());
  if (actual != expected) {
    // Say where and what: poison (0xDB) means freed memory, other bytes another writer.
    std::vector<std::byte> back(m.bytes);
    held.tensor.download(back);
    std::size_t first = 0;
    std::size_t last = 0;
    std::size_t differ = 0;
    for (std::size_t i = 0; i < m.bytes; ++i) {
      if (back[i] != m.root->content[m.offset + i]) {
        if (differ++ == 0) first = i;
        last = i;
      }
    }
    std::ostringstream detail;
    detail << " (" << differ << " bytes differ in [" << first << ", " << last << "]: byte " << first
           << " is 0x" << std::hex << static_cast<unsigned>(back[first]) << ", expected 0x"
           << static_cast<unsigned>(m.root->content[m.offset + first]) << ")";
    fail(std::string(when) + ": tensor #" + std::to_string(m.id) + " (" + std::to_string(m.bytes) +
         " B at offset " + std::to_string(m.offset) + " of root #" + std::to_string(m.root->id) +
         ") does not hold the bytes it should" + detail.str());
  }
}

void Workload::State::check() {
  ++checks;
  set_faults(false);
  struct Reenable {
    State* state;
    ~Reenable() {
      if (state->faults_wanted) state->set_faults(true);
    }
  } reenable{this};
  device.synchronize();

  // nothing the device or the library saw went wrong
  if (const auto violations = device.take_violations(); !violations.empty()) {
    std::string all;
    for (std::size_t i = 1; i < violations.size() && i < 4; ++i) {
      all += "; then: " + violations[i].message();
    }
    fail("the simulated device saw " + std::to_string(violations.size()) +
         " violations, the first: " + violations.front().message() + all);
  }
  {
    std::scoped_lock lock(report_mutex);
    if (!unexpected_reports.empty()) {
      fail("the library reported " + std::to_string(unexpected_reports.size()) +
           " unexpected errors, the first: " + unexpected_reports.front());
    }
  }

  std::scoped_lock lock(model_mutex);
  // Which tensors the model says are alive: held ones, and the tensors their views hold.
  std::unordered_map<const TensorModel*, bool> alive;
  for (const auto& [id, model] : tensors) {
    if (model->holders < 0) fail("tensor #" + std::to_string(id) + " was dropped more than held");
    if (model->holders == 0) continue;
    for (const TensorModel* m = model.get(); m != nullptr && !alive[m]; m = m->parent.get()) {
      alive[m] = true;
    }
  }
  std::unordered_map<const Root*, bool> held_root;
  std::size_t alive_tensors = 0;
  for (const auto& [id, model] : tensors) {
    const bool expected = alive[model.get()];
    if (expected != !model->watch.expired()) {
      fail("tensor #" + std::to_string(id) + " is " + (expected ? "dead" : "alive") +
           " but the model says otherwise");
    }
    if (expected) {
      ++alive_tensors;
      held_root[model->root.get()] = true;
    }
  }

  // Roots: memory alive exactly when the model says so; warm entries may have been evicted.
  std::size_t live_bytes = 0;
  std::size_t cache_roots_alive = 0;
  std::size_t cache_entries = 0, cache_bytes = 0, warm_entries = 0, warm_bytes = 0;
  std::size_t pinned_entries = 0, pinned_bytes = 0;
  std::vector<std::pair<const void*, std::size_t>> expected_blocks;
  for (const auto& [id, root] : roots) {
    const bool actual = !root->watch.expired();
    const bool held = held_root[root.get()];
    const std::string name = "root #" + std::to_string(id) +
                             (root->cached ? " (cache entry " + root->key->to_string() + ", " +
                                                 std::string(to_string(root->retention)) +
                                                 (root->attached ? "" : ", detached") + ")"
                                           : "");
    bool expected = held;
    bool either = false;
    if (root->cached && root->attached && !held) {
      expected = root->retention == Retention::pinned;
      either = root->retention == Retention::warm;
    }
    if (!either && actual != expected) {
      fail(name + " is " + (actual ? "alive" : "dead") + " but the model says otherwise");
    }
    if (!actual) {
      root->attached = false;  // an evicted warm entry is gone from the cache
      continue;
    }
    live_bytes += root->bytes;
    if (root->bytes != 0) {
      expected_blocks.emplace_back(root->data, root->bytes);
    }
    if (root->cached) {
      ++cache_roots_alive;
      if (root->attached) {
        ++cache_entries;
        cache_bytes += root->bytes;
        if (either) {
          ++warm_entries;
          warm_bytes += root->bytes;
        }
        if (root->retention == Retention::pinned) {
          ++pinned_entries;
          pinned_bytes += root->bytes;
        }
      }
    }
  }

  // Finalizers and expiry callbacks: exactly once when their tensor died, never before.
  auto check_probe = [&](const Probe& probe, bool dead, const std::string& of) {
    const int runs = probe.runs.load(std::memory_order_acquire);
    const int want = !dead || probe.expect == Probe::Expect::never ? 0 : 1;
    if (runs > 1 || (probe.expect != Probe::Expect::either && runs != want) ||
        (probe.expect == Probe::Expect::either && !dead && runs != 0)) {
      fail("a callback of " + of + " ran " + std::to_string(runs) + " times; expected " +
           std::to_string(want) + (dead ? " (dead)" : " (alive)"));
    }
  };
  std::uint64_t deliberate_seen = deliberate_expected;
  for (const auto& [id, root] : roots) {
    const bool dead = root->watch.expired();
    for (const auto& probe : root->finalizers) {
      check_probe(*probe, dead, "root #" + std::to_string(id));
      if (probe->throws && probe->runs.load() == 1) ++deliberate_seen;
    }
  }
  for (const auto& [id, model] : tensors) {
    for (const auto& probe : model->expiry) {
      check_probe(*probe, model->watch.expired(), "tensor #" + std::to_string(id));
    }
  }
  if (deliberate_seen != deliberate_reports.load()) {
    fail(std::to_string(deliberate_seen) + " throwing finalizers ran but " +
         std::to_string(deliberate_reports.load()) + " were reported");
  }

  // Accounting: the context, the cache, the pool, the adaptor and the device agree.
  const ContextStatistics stats = ctx->statistics();
  const CacheStatistics cache = ctx->cache().statistics();
  auto expect_eq = [](std::size_t actual, std::size_t expected, const char* what) {
    if (actual != expected) {
      fail(std::string(what) + " is " + std::to_string(actual) + ", the model says " +
           std::to_string(expected));
    }
  };
  // The program's callbacks only: not the cache's and WeakKeyMap's own, throwers included.
  expect_eq(stats.finalizers_run, finalizers_run->load(), "the context's finalizers_run");
  expect_eq(stats.expiry_callbacks_run, expiry_callbacks_run->load(),
            "the context's expiry_callbacks_run");
  expect_eq(stats.live_tensors, alive_tensors + cache_roots_alive,
            "ContextStatistics::live_tensors");
  expect_eq(stats.live_bytes, live_bytes, "ContextStatistics::live_bytes");
  expect_eq(cache.live_entries, cache_entries, "CacheStatistics::live_entries");
  expect_eq(cache.live_bytes, cache_bytes, "CacheStatistics::live_bytes");
  expect_eq(cache.warm_entries, warm_entries, "CacheStatistics::warm_entries");
  expect_eq(cache.warm_bytes, warm_bytes, "CacheStatistics::warm_bytes");
  expect_eq(cache.pinned_entries, pinned_entries, "CacheStatistics::pinned_entries");
  expect_eq(cache.pinned_bytes, pinned_bytes, "CacheStatistics::pinned_bytes");
  if (warm_bytes > config.warm_budget_bytes) fail("the warm tier is over its budget");
  const ResourceStatistics pool_stats = pool->statistics();
  // The pool's own structure: blocks tile their segments (split and merge conserved the
  // bytes), free neighbours merged, index and counters agree with the blocks.
  if (const std::string broken = pool->validate(); !broken.empty()) fail("pool: " + broken);
  std::vector<std::pair<const void*, std::size_t>> blocks;
  // No two live blocks overlap.
  {
    auto live = pool->live_blocks();
    std::sort(live.begin(), live.end(),
              [](const auto& a, const auto& b) { return a.ptr < b.ptr; });
    for (std::size_t i = 1; i < live.size(); ++i) {
      if (static_cast<const char*>(live[i - 1].ptr) + live[i - 1].capacity >
          static_cast<const char*>(live[i].ptr)) {
        fail("two live pool blocks overlap");
      }
    }
  }
  std::size_t capacity_in_use = 0;
  for (const PoolResource::LiveBlock& block : pool->live_blocks()) {
    blocks.emplace_back(block.ptr, block.bytes);
    // A block is the request rounded up, or more when its rest was too small to split off.
    if (block.capacity < PoolResource::size_class(block.bytes)) {
      fail("a pool block of " + std::to_string(block.capacity) + " B serves a request of " +
           std::to_string(block.bytes) + " B");
    }
    capacity_in_use += block.capacity;
  }
  expect_eq(pool_stats.bytes_in_use, capacity_in_use, "pool bytes_in_use");
  std::sort(blocks.begin(), blocks.end());
  std::sort(expected_blocks.begin(), expected_blocks.end());
  if (blocks != expected_blocks) {
    fail("the pool's live blocks (" + std::to_string(blocks.size()) +
         ") are not the live tensors' memory (" + std::to_string(expected_blocks.size()) + ")");
  }
  const std::size_t upstream_in_use = faults->statistics().bytes_in_use;
  expect_eq(upstream_in_use, pool_stats.bytes_in_use + pool_stats.bytes_cached,
            "the pool's upstream bytes_in_use (pool in use + cached)");
  expect_eq(async->statistics().bytes_in_use, upstream_in_use, "AsyncResource bytes_in_use");
  const MemoryInfo memory = device.memory_info();
  expect_eq(memory.total_bytes - memory.free_bytes, upstream_in_use, "the device's used bytes");
  // What the pool holds is what the device counts: its mapped chunks (expandable segments) or
  // its segments are the simulated device's physical memory in use.
  expect_eq(pool->memory_stats().total.reserved_bytes, memory.total_bytes - memory.free_bytes,
            "the pool's reserved (mapped) bytes against the device's used bytes");

  // Contents: every tensor held holds the bytes it should.
  if (config.verify_contents) {
    std::unordered_map<const TensorModel*, bool> verified;
    auto verify_list = [&](const std::vector<Held>& list) {
      for (const Held& held : list) {
        if (!std::exchange(verified[held.model.get()], true)) verify_bytes(held, "check");
      }
    };
    for (const Actor& actor : actors) verify_list(actor.held);
    verify_list(exchange);
    std::scoped_lock ballast_lock(ballast->mutex);
    verify_list(ballast->tensors);
  }

  // The model forgets what died (after its callbacks were checked above).
  for (auto it = tensors.begin(); it != tensors.end();) {
    it = it->second->watch.expired() ? tensors.erase(it) : std::next(it);
  }
  for (auto it = roots.begin(); it != roots.end();) {
    if (!it->second->watch.expired()) {
      ++it;
      continue;
    }
    for (const auto& probe : it->second->finalizers) {
      if (probe->throws && probe->runs.load() == 1) ++deliberate_expected;
    }
    it = roots.erase(it);
  }
}

void Workload::State::release_all() {
  drop_all();
  check();
}

void Workload::State::drop_all() {
  // Everything the actors, the exchange and the ballast hold goes; the weak references after
  // (their expiry callbacks run as the tensors die, and are not cancelled first).
  for (Actor& actor : actors) {
    std::vector<Held> gone = std::move(actor.held);
    actor.held.clear();
    forget(gone);
  }
  {
    std::vector<Held> gone;
    {
      std::scoped_lock lock(exchange_mutex);
      gone.swap(exchange);
    }
    forget(gone);
  }
  {
    std::vector<Held> gone;
    {
      std::scoped_lock lock(ballast->mutex);
      gone.swap(ballast->tensors);
    }
    forget(gone);
  }
  for (Actor& actor : actors) actor.weaks.clear();
}

void Workload::State::finish() {
  faults_wanted = false;
  set_faults(false);
  release_all();

  // A few tensors outlive the context: their finalizers run at shutdown (once, unless atexit is
  // off), the cache's entries go, and their memory is released when they drop afterwards.
  RandomChoices choices(config.seed ^ 0xF1F1);
  std::vector<std::pair<DeviceTensor, std::vector<std::byte>>> survivors;
  std::vector<std::shared_ptr<Probe>> probes;
  for (std::size_t i = 0; i < 4; ++i) {
    const Layout layout = pick_layout(choices);
    auto content = pattern(424242 + i, layout.bytes);
    DeviceTensor t =
        i % 2 == 0
            ? ctx->upload(content, layout.shape, layout.dtype, stream(i % 3), "survivor")
            : ctx->cache().upload(std::span<const std::byte>(content), layout.shape, layout.dtype,
                                  stream(i % 3), {.retention = Retention::pinned});
    auto root = std::make_shared<Root>();
    probes.push_back(add_finalizer(t, choices, root));
    if (i == 1) {
      probes.back()->handle.set_atexit(false);
      probes.back()->atexit = false;
    }
    survivors.emplace_back(std::move(t), std::move(content));
  }
  // dies with the context: nobody holds it
  (void)ctx->cache().upload(std::span<const std::byte>(pattern(1, 4096)), {4096}, DType::u8, {},
                            {.retention = Retention::pinned});
  shutting_down = true;
  final_stats = ctx->statistics();
  final_cache = ctx->cache().statistics();
  ctx.reset();
  for (const auto& probe : probes) {
    const int runs = probe->runs.load();
    if (runs != (probe->atexit ? 1 : 0)) {
      fail("at shutdown a finalizer with atexit " + std::string(probe->atexit ? "on" : "off") +
           " ran " + std::to_string(runs) + " times");
    }
  }
  for (const auto& [tensor, content] : survivors) {
    std::vector<std::byte> back(tensor.bytes());
    tensor.download(back);
    if (back != content) fail("a tensor that outlived its context lost its bytes");
  }
  survivors.clear();  // the last handles: memory back, the rest of the finalizers run
  for (const auto& probe : probes) {
    if (probe->runs.load() != 1) fail("a finalizer of a survivor did not run exactly once");
    if (probe->throws) ++deliberate_expected;  // its exception was reported, not thrown
  }

  // Every byte goes back to the device once the resources go.
  {
    std::scoped_lock lock(model_mutex);
    // The cache's entries died with the context: their throwing finalizers were reported too.
    for (const auto& [id, root] : roots) {
      for (const auto& probe : root->finalizers) {
        if (probe->throws && probe->runs.load() == 1) ++deliberate_expected;
      }
    }
    if (deliberate_expected != deliberate_reports.load()) {
      fail(std::to_string(deliberate_expected) + " throwing finalizers ran by shutdown but " +
           std::to_string(deliberate_reports.load()) + " were reported");
    }
    tensors.clear();
    roots.clear();
  }
  final_pool_faults = faults->injected_failures();
  final_pool = pool->memory_stats();
  pool.reset();
  faults.reset();
  async.reset();
  device.synchronize();
  const MemoryInfo memory = device.memory_info();
  if (memory.free_bytes != memory.total_bytes) {
    fail(std::to_string(memory.total_bytes - memory.free_bytes) +
         " B of device memory are still allocated after everything was released");
  }
  if (const auto violations = device.take_violations(); !violations.empty()) {
    fail("the simulated device saw a violation at shutdown: " + violations.front().message());
  }
  std::scoped_lock lock(report_mutex);
  if (!unexpected_reports.empty()) {
    fail("the library reported an unexpected error at shutdown: " + unexpected_reports.front());
  }
}

/// The resource stack and the context over `device`.
void Workload::State::build() {
  // A new context counts its callbacks from zero: so do the model's counters (new ones, so that
  // a callback of the previous context that still runs counts where it belongs).
  finalizers_run = std::make_shared<std::atomic<std::uint64_t>>(0);
  expiry_callbacks_run = std::make_shared<std::atomic<std::uint64_t>>(0);
  async = std::make_shared<AsyncResource>(device);
  FaultOptions pool_options = config.pool_faults;
  pool_options.seed ^= config.seed;
  faults = std::make_shared<FaultAdaptor>(async, pool_options);
  // Small segments and a small cache, so that the workload's sizes (8 B .. 24 KiB) split and
  // merge blocks, share and give back segments, and reach the upstream's faults often.
  // Odd seeds run the pool with expandable segments (chunks mapped into per-stream ranges), even
  // seeds with segments from upstream.
  pool = std::make_shared<PoolResource>(faults, PoolOptions{.small_size = 4 << 10,
                                                            .small_segment = 8 << 10,
                                                            .medium_limit = 8 << 10,
                                                            .medium_segment = 16 << 10,
                                                            .large_rounding = 4 << 10,
                                                            .expandable_segments =
                                                                config.seed % 2 == 1,
                                                            .max_cached_bytes = 8 << 10});
  ContextOptions context_options;
  context_options.device = device;
  context_options.resource = pool;
  context_options.error_handler = [this](std::string_view m) { on_report(m); };
  context_options.cache.warm_budget_bytes = config.warm_budget_bytes;
  context_options.cache.shards = 4;
  context_options.digest_threads = 1;
  context_options.staging = {.buffer_bytes = 2048, .buffers = 2};
  context_options.staging_min_bytes = kStagingMin;
  if (config.context_options) config.context_options(context_options);
  ctx.emplace(std::move(context_options));
  ctx->pressure_listeners().add(ballast);
}

void Workload::State::reset() {
  if (!ctx) return;  // finished: everything went with the context
  // Clean, proven: nothing held, the cache empty, every block back upstream, no device memory
  // in use. What the next run sees then depends on its seed and choices alone.
  // No injected fault from here on (restart turns them back on): a failed unmap or free would
  // leave memory that the next run inherits.
  faults_wanted = false;
  set_faults(false);
  {
    drop_all();
    ctx->cache().clear();
    {
      std::scoped_lock lock(model_mutex);
      for (const auto& [id, root] : roots) root->attached = false;
    }
    check();
    {
      std::scoped_lock lock(model_mutex);
      if (!tensors.empty() || !roots.empty()) {
        fail("reset: " + std::to_string(tensors.size()) + " tensors and " +
             std::to_string(roots.size()) + " roots are still alive after release_all");
      }
      keys.clear();
    }
    // trim() alone must give every byte back (memory it cannot is a leak of the pool's)...
    pool->trim();
    device.synchronize();
    const MemoryInfo memory = device.memory_info();
    if (memory.free_bytes != memory.total_bytes) {
      fail("reset: " + std::to_string(memory.total_bytes - memory.free_bytes) +
           " B of device memory are still in use with nothing alive; the pool:\n" +
           pool->memory_summary());
    }
    // ...and then the pool forgets its history (streams' batches of frees, quick lists, clocks,
    // peaks), so that the next run behaves exactly as on a new workload.
    const PoolStatistics stats = pool->memory_stats();
    if (!pool->reset_if_unused()) fail("reset: the pool could not be reset with nothing alive");
    pool_segments_before += stats.upstream_allocations + stats.map_calls;
    pool_splits_before += stats.splits;
    pool_merges_before += stats.merges;
  }
  clean = true;
}

void Workload::State::restart(std::uint64_t seed, const SimFaults& device_faults,
                              const FaultOptions& pool_faults) {
  if (!clean) reset();  // a reset with no operation since has proven it already
  config.seed = seed;
  config.device_faults = device_faults;
  config.pool_faults = pool_faults;
  shutting_down = false;
  device.reseed(seed);
  other_device.reseed(seed);
  SimFaults f = device_faults;
  f.seed ^= seed;
  device.set_faults(f);
  if (!ctx) {
    build();
  } else {
    FaultOptions pool_options = pool_faults;
    pool_options.seed ^= seed;
    faults->set_options(pool_options);
  }
  faults_wanted = true;
  set_faults(true);
}

// ---- Workload ----------------------------------------------------------------------------------

Workload::Workload(Config config) : state_(std::make_unique<State>(std::move(config))) {
  State& s = *state_;
  if (s.config.actors == 0) throw std::invalid_argument("config.actors: must be > 0");
  s.previous_handler = set_default_error_handler(
      [state = state_.get()](std::string_view m) { state->on_report(m); });
  SimOptions options;
  options.capacity_bytes = s.config.capacity_bytes;
  options.faults = s.config.device_faults;
  options.faults.seed ^= s.config.seed;
  options.delay = s.config.sim_delay;
  options.delay_seed = s.config.seed;
  options.max_delay_us = 20;
  options.schedule = s.config.schedule;
  options.seed = s.config.seed;
  options.on_violation = [](const SimViolation&) {};  // recorded by the device; check() reads them
  options.vmm_granularity = 64 << 10;  // fine chunks: the 5 MiB device maps and unmaps often
  s.device = Device::sim(options);
  s.other_device = Device::sim({.schedule = s.config.schedule, .seed = s.config.seed});
  s.foreign_stream = Stream(s.other_device);
  s.ballast = std::make_shared<State::Ballast>(s);
  s.build();
  for (std::size_t i = 0; i < s.config.streams; ++i) s.streams.emplace_back(s.device);
  s.actors.resize(s.config.actors);
}

Workload::~Workload() {
  State& s = *state_;
  s.shutting_down = true;
  s.set_faults(false);
  for (Actor& actor : s.actors) {
    actor.weaks.clear();
    actor.held.clear();
  }
  s.exchange.clear();
  if (s.ballast) s.ballast->tensors.clear();
  s.ctx.reset();
  s.streams.clear();
  s.pool.reset();
  s.faults.reset();
  s.async.reset();
  s.tensors.clear();
  s.roots.clear();
  s.foreign_stream = Stream();
  s.device = Device();
  s.other_device = Device();
  set_default_error_handler(std::move(s.previous_handler));
}

void Workload::run(std::size_t actor, Choices& choices, std::size_t count) {
  State& s = *state_;
  if (actor >= s.actors.size()) throw std::invalid_argument("actor: no such actor");
  for (std::size_t i = 0; i < count && !choices.exhausted(); ++i)
    s.operation(s.actors[actor], choices);
}

void Workload::run_exclusive(Choices& choices, std::size_t count) {
  for (std::size_t i = 0; i < count && !choices.exhausted(); ++i) state_->exclusive(choices);
}

void Workload::round(std::size_t count) {
  State& s = *state_;
  const std::uint64_t round = s.checks + s.operations.load();
  std::vector<std::exception_ptr> errors(s.actors.size());
  {
    std::vector<std::jthread> threads;
    for (std::size_t a = 0; a < s.actors.size(); ++a) {
      threads.emplace_back([&, a] {
        // A timeline names each thread: these are the actors (new threads every round).
        const std::string name = "actor " + std::to_string(a);
        ::pthread_setname_np(::pthread_self(), name.c_str());
        try {
          RandomChoices choices(mix(s.config.seed * 1000003 + round * 31 + a));
          run(a, choices, count);
        } catch (...) {
          errors[a] = std::current_exception();
        }
      });
    }
  }
  for (const auto& error : errors) {
    if (error) std::rethrow_exception(error);
  }
  RandomChoices choices(mix(s.config.seed + round));
  if (choices.chance(50)) run_exclusive(choices, 1);
}

void Workload::drive(Choices& choices, std::size_t max_operations) {
  State& s = *state_;
  for (std::size_t i = 0; i < max_operations && !choices.exhausted(); ++i) {
    const auto kind = choices.below(16);
    if (kind == 0) {
      s.check();
    } else if (kind == 1) {
      run_exclusive(choices, 1);
    } else {
      run(0, choices, 1);
    }
  }
  s.check();
}

void Workload::check() { state_->check(); }

void Workload::release_all() { state_->release_all(); }

void Workload::finish() { state_->finish(); }

void Workload::reset() { state_->reset(); }

void Workload::restart(std::uint64_t seed, const SimFaults& device_faults,
                       const FaultOptions& pool_faults) {
  state_->restart(seed, device_faults, pool_faults);
}

const Device& Workload::device() const { return state_->device; }

Counters Workload::counters() const {
  State& s = *state_;
  Counters c;
  c.operations = s.operations.load();
  c.failed_operations = s.failed_operations.load();
  c.device_faults = s.device.injected_faults();
  c.pool_faults = s.faults ? s.faults->injected_failures() : s.final_pool_faults;
  c.cuda_errors = s.cuda_errors.load();
  c.out_of_memory = s.out_of_memory.load();
  c.expired = s.expired.load();
  c.invalid_arguments = s.invalid_arguments.load();
  c.contained_reports = s.contained_reports.load();
  const ContextStatistics stats = s.ctx ? s.ctx->statistics() : s.final_stats;
  const CacheStatistics cache = s.ctx ? s.ctx->cache().statistics() : s.final_cache;
  c.tensors_created = stats.tensors_created;
  c.finalizers_run = stats.finalizers_run;
  c.expiry_callbacks_run = stats.expiry_callbacks_run;
  c.live_tensors = stats.live_tensors;
  c.live_bytes = stats.live_bytes;
  c.cache_hits = cache.hits;
  c.cache_misses = cache.misses;
  c.cache_evictions = cache.evictions;
  c.checks = s.checks;
  c.pressure_events = s.ballast ? s.ballast->notified.load() : 0;
  const PoolStatistics pool = s.pool ? s.pool->memory_stats() : s.final_pool;
  c.pool_segments = s.pool_segments_before + pool.upstream_allocations + pool.map_calls;
  c.pool_splits = s.pool_splits_before + pool.splits;
  c.pool_merges = s.pool_merges_before + pool.merges;
  return c;
}

std::string Workload::summary() const {
  const Counters c = counters();
  std::ostringstream out;
  out << c.operations << " operations (" << c.failed_operations << " failed as expected), "
      << c.device_faults << " device faults and " << c.pool_faults
      << " allocation faults injected, " << c.cuda_errors << " CudaError, " << c.out_of_memory
      << " OutOfMemoryError, " << c.expired << " ExpiredTensorError, " << c.invalid_arguments
      << " invalid_argument caught, " << c.contained_reports << " contained reports, "
      << c.tensors_created << " tensors, " << c.finalizers_run << " finalizers, "
      << c.expiry_callbacks_run << " expiry callbacks, " << c.cache_hits << " cache hits, "
      << c.cache_misses << " misses, " << c.cache_evictions << " evictions, " << c.pressure_events
      << " pressure events, " << c.checks << " checks; the pool took " << c.pool_segments
      << " segments, split " << c.pool_splits << " and merged " << c.pool_merges << " blocks";
  return out.str();
}

Context& Workload::context() { return *state_->ctx; }

PoolResource& Workload::pool() { return *state_->pool; }

}  // namespace gpulife::workload
