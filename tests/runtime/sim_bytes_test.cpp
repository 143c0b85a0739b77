// SPDX-License-Identifier: Apache-2.0
// The sim's fills and scans of device memory: exact at every alignment and length (the ASan
// build takes a word-wise path with a head and a tail of single bytes).

#include <cstddef>
#include <vector>

#include <gtest/gtest.h>

#include "runtime/sim_bytes.hpp"

namespace gpulife::detail::sim {
namespace {

TEST(SimBytesTest, AFillSetsExactlyItsRangeAtEveryAlignmentAndLength) {
  std::vector<unsigned char> buffer(3 * 4096 + 64);
  for (std::size_t offset : {0U, 1U, 2U, 3U, 5U, 8U}) {
    for (std::size_t bytes : {0U, 1U, 3U, 4U, 7U, 64U, 4095U, 4096U, 4097U, 2U * 4096U + 13U}) {
      std::fill(buffer.begin(), buffer.end(), static_cast<unsigned char>(0x11));
      fill_device_bytes(buffer.data() + offset, 0xCF, bytes);
      for (std::size_t i = 0; i < buffer.size(); ++i) {
        const bool inside = i >= offset && i < offset + bytes;
        ASSERT_EQ(buffer[i], inside ? 0xCF : 0x11) << "offset " << offset << ", " << bytes
                                                   << " bytes, byte " << i;
      }
    }
  }
}

TEST(SimBytesTest, TheScanFindsTheFirstByteThatDiffersWhereverItIs) {
  std::vector<unsigned char> buffer(3 * 4096 + 64);
  for (std::size_t offset : {0U, 1U, 3U, 4U}) {
    for (std::size_t bytes : {1U, 5U, 64U, 4096U, 4099U, 2U * 4096U + 13U}) {
      std::fill(buffer.begin(), buffer.end(), static_cast<unsigned char>(0xBE));
      unsigned char* range = buffer.data() + offset;
      EXPECT_EQ(first_byte_not(range, 0xBE, bytes), bytes);
      for (std::size_t at : {std::size_t{0}, bytes / 2, bytes - 1}) {
        range[at] = 0xBF;
        if (at > 0) range[bytes - 1] = 0x00;  // a later difference does not hide the first
        EXPECT_EQ(first_byte_not(range, 0xBE, bytes), at) << offset << " " << bytes;
        std::fill(range, range + bytes, static_cast<unsigned char>(0xBE));
      }
      buffer[offset + bytes] = 0;  // past the range: not looked at
      EXPECT_EQ(first_byte_not(range, 0xBE, bytes), bytes);
    }
  }
  EXPECT_EQ(first_byte_not(buffer.data(), 0xBE, 0), 0U);
}

}  // namespace
}  // namespace gpulife::detail::sim
