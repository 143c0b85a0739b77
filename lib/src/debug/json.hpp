// SPDX-License-Identifier: Apache-2.0
#pragma once

// The little JSON the debug layer writes (reports, traces): strings need escaping, numbers are
// integers or fixed-point, and nothing is ever parsed back here.

#include <cstdio>
#include <string>
#include <string_view>

namespace gpulife::detail {

/// Appends `text` as a JSON string literal, quotes included.
inline void append_json_string(std::string& out, std::string_view text) {
  out += '"';
  for (const char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char escaped[8];
          std::snprintf(escaped, sizeof escaped, "\\u%04x", static_cast<unsigned>(c));
          out += escaped;
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

/// `"key":` with the key escaped.
inline void append_json_key(std::string& out, std::string_view key) {
  append_json_string(out, key);
  out += ':';
}

}  // namespace gpulife::detail
