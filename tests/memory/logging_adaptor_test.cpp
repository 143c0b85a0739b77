// SPDX-License-Identifier: Apache-2.0
// LoggingAdaptor: one CSV line per call, in the format gpulife_replay reads; everything else is
// the upstream's.

#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <gpulife/errors.hpp>
#include <gpulife/memory/async_resource.hpp>
#include <gpulife/memory/fault_adaptor.hpp>
#include <gpulife/memory/logging_adaptor.hpp>
#include <gpulife/memory/pool_resource.hpp>

#include "support/backend_test.hpp"

namespace gpulife {
namespace {

std::vector<std::vector<std::string>> lines_of(const std::string& text) {
  std::vector<std::vector<std::string>> out;
  std::stringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> fields;
    std::stringstream ss(line);
    std::string f;
    while (std::getline(ss, f, ',')) fields.push_back(f);
    if (!line.empty() && line.back() == ',') fields.emplace_back();
    out.push_back(fields);
  }
  return out;
}

class LoggingAdaptorTest : public testing::BackendTest {};

TEST_P(LoggingAdaptorTest, LogsEveryCallAsOneCsvLine) {
  std::ostringstream log;
  auto pool = std::make_shared<PoolResource>(std::make_shared<AsyncResource>(device_));
  LoggingAdaptor logged(pool, log);
  Stream s(device_);
  Stream reader(device_);
  void* a = logged.allocate(1000, s);
  void* b = logged.allocate(5000, s);
  logged.deallocate(a, 1000, s);
  std::vector<Event> after;
  after.emplace_back(device_);
  reader.view().record(after.back());
  logged.deallocate_after(b, 5000, s, std::move(after));
  logged.flush();
  const auto lines = lines_of(log.str());
  ASSERT_EQ(lines.size(), 5U) << log.str();
  EXPECT_EQ(log.str().substr(0, log.str().find('\n')), LoggingAdaptor::header());
  EXPECT_EQ(lines[1][2], "allocate");
  EXPECT_EQ(lines[1][4], "1000");
  EXPECT_EQ(lines[1][5], std::to_string(s.id()));
  EXPECT_EQ(lines[3][2], "free");
  EXPECT_EQ(lines[3][3], lines[1][3]) << "the same pointer";
  EXPECT_EQ(lines[3][6], "");
  EXPECT_EQ(lines[4][6], "record_stream");
  EXPECT_EQ(logged.statistics().allocations, pool->statistics().allocations);
  EXPECT_EQ(logged.name(), "logging(" + pool->name() + ")");
}

TEST_P(LoggingAdaptorTest, LogsFailuresAndRethrows) {
  std::ostringstream log;
  auto faults = std::make_shared<FaultAdaptor>(std::make_shared<AsyncResource>(device_),
                                               FaultOptions{.every_nth = 1});
  LoggingAdaptor logged(faults, log);
  EXPECT_THROW((void)logged.allocate(4096), OutOfMemoryError);
  const auto lines = lines_of(log.str());
  ASSERT_EQ(lines.size(), 2U);
  EXPECT_EQ(lines[1][2], "allocate_failure");
  EXPECT_EQ(lines[1][4], "4096");
}

TEST_P(LoggingAdaptorTest, RejectsBadArguments) {
  EXPECT_THROW(LoggingAdaptor(nullptr, std::cerr), std::invalid_argument);
  try {
    LoggingAdaptor bad(std::make_shared<AsyncResource>(device_), "/nonexistent/dir/log.csv");
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(std::string(e.what()).rfind("filename:", 0), 0U) << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, LoggingAdaptorTest, testing::backends(), testing::backend_name);

}  // namespace
}  // namespace gpulife
