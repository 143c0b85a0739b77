// SPDX-License-Identifier: Apache-2.0
#pragma once

// Every JSON document gpulife writes (leak reports, traces, out-of-memory snapshots) is made
// with nlohmann-json, so that it is valid whatever a string holds: a tag with invalid UTF-8 is
// written with U+FFFD in place of the bad bytes instead of making the whole file unreadable.
// Private: no public header includes nlohmann-json.

#include <string>

#include <nlohmann/json.hpp>

namespace gpulife::detail {

using Json = nlohmann::ordered_json;  // members in the order they were set: readable files

/// `value` as compact JSON text; invalid UTF-8 in strings becomes U+FFFD.
inline std::string dump_json(const Json& value, int indent = -1) {
  return value.dump(indent, ' ', false, Json::error_handler_t::replace);
}

}  // namespace gpulife::detail
