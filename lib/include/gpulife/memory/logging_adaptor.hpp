// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `LoggingAdaptor`: a resource adaptor that writes every allocation and free to a CSV
/// log, which `gpulife_replay` replays against pool configurations.

#include <cstdint>
#include <iosfwd>
#include <memory>
#include <mutex>
#include <string>

#include <gpulife/memory/device_memory_resource.hpp>

namespace gpulife {

/// @brief Options of a `LoggingAdaptor`.
struct LoggingOptions {
  /// Flush the log after every line (slower; nothing is lost if the program crashes).
  bool auto_flush = false;
};

/// @brief Wraps an upstream resource and logs each call to it as one CSV line (RMM's
/// `logging_resource_adaptor`): `thread,time,action,pointer,size,stream,after`.
///
/// `thread` is a small number per thread in order of first use, `time` nanoseconds since the
/// adaptor was made, `action` one of `allocate`, `allocate_failure`, `free`; `pointer` in hex,
/// `size` the bytes asked for, `stream` the stream's id, and `after` non-empty (`record_stream`)
/// for a free that must also wait for other streams' work (`deallocate_after`). The first line
/// is the header. Put it where the program's requests are (above the pool) to log what the
/// program asks for:
///
/// ```cpp
/// auto pool = std::make_shared<gpulife::PoolResource>(
///     std::make_shared<gpulife::AsyncResource>(device));
/// auto logged = std::make_shared<gpulife::LoggingAdaptor>(pool, "allocations.csv");
/// gpulife::Context ctx({.device = device, .resource = logged});
/// ```
///
/// then `gpulife_replay --log=allocations.csv --policy=all`.
///
/// @par Thread safety
/// All members are thread-safe; lines from several threads never interleave.
class LoggingAdaptor final : public DeviceMemoryResource {
 public:
  /// @param upstream the resource to log (shared: the adaptor keeps it alive)
  /// @param filename the log file, created or truncated
  /// @param options  flushing
  /// @throws std::invalid_argument if `upstream` is null or the file cannot be opened (named)
  LoggingAdaptor(std::shared_ptr<DeviceMemoryResource> upstream, const std::string& filename,
                 LoggingOptions options = {});
  /// @param upstream the resource to log
  /// @param out      where the lines go; must outlive the adaptor
  /// @param options  flushing
  /// @throws std::invalid_argument if `upstream` is null
  LoggingAdaptor(std::shared_ptr<DeviceMemoryResource> upstream, std::ostream& out,
                 LoggingOptions options = {});
  ~LoggingAdaptor() override;

  /// @return the CSV header line, without its newline
  [[nodiscard]] static std::string header();
  /// @brief Writes what is buffered to the log.
  void flush();
  /// @return the upstream resource
  [[nodiscard]] const std::shared_ptr<DeviceMemoryResource>& upstream() const noexcept {
    return upstream_;
  }

 private:
  void* do_allocate(std::size_t bytes, StreamView stream) override;
  void do_deallocate(void* ptr, std::size_t bytes, StreamView stream) noexcept override;
  void do_deallocate_after(void* ptr, std::size_t bytes, StreamView stream,
                           std::vector<Event> after) noexcept override;
  bool do_is_equal(const DeviceMemoryResource& other) const noexcept override;
  std::string do_name() const override;
  ResourceStatistics do_statistics() const override;
  std::size_t do_release_cached() noexcept override;
  std::size_t do_mapping_granularity() const noexcept override;
  void* do_reserve_range(std::size_t bytes) override;
  void do_release_range(void* base, std::size_t bytes) noexcept override;
  void do_map(void* ptr, std::size_t bytes) override;
  void do_unmap(void* ptr, std::size_t bytes) noexcept override;

  void log(const char* action, const void* ptr, std::size_t bytes, StreamView stream,
           bool after) noexcept;

  std::shared_ptr<DeviceMemoryResource> upstream_;
  std::unique_ptr<std::ostream> file_;  // when the adaptor opened the log itself
  std::ostream* out_;
  LoggingOptions options_;
  std::int64_t start_ns_;
  std::mutex mutex_;
};

}  // namespace gpulife
