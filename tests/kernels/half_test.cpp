// SPDX-License-Identifier: Apache-2.0
// f16 <-> f32 conversions: known values, every bit pattern, and rounding at the boundaries.

#include <cmath>
#include <cstdint>
#include <limits>

#include <gtest/gtest.h>

#include <gpulife/kernels/half.hpp>

namespace gpulife::kernels {
namespace {

TEST(HalfTest, KnownValues) {
  EXPECT_EQ(half_to_float(0x0000), 0.0F);
  EXPECT_TRUE(std::signbit(half_to_float(0x8000)));
  EXPECT_EQ(half_to_float(0x3C00), 1.0F);
  EXPECT_EQ(half_to_float(0xC000), -2.0F);
  EXPECT_EQ(half_to_float(0x3555), 0.333251953125F);
  EXPECT_EQ(half_to_float(0x7BFF), 65504.0F);
  EXPECT_EQ(half_to_float(0x0400), std::ldexp(1.0F, -14));  // smallest normal
  EXPECT_EQ(half_to_float(0x0001), std::ldexp(1.0F, -24));  // smallest subnormal
  EXPECT_EQ(half_to_float(0x83FF), -std::ldexp(1023.0F, -24));
  EXPECT_EQ(half_to_float(0x7C00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(half_to_float(0xFC00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(half_to_float(0x7E00)));
  EXPECT_TRUE(std::isnan(half_to_float(0x7C01)));  // signalling NaN stays a NaN
}

TEST(HalfTest, EveryPatternRoundTrips) {
  for (std::uint32_t bits = 0; bits <= 0xFFFF; ++bits) {
    const auto half = static_cast<std::uint16_t>(bits);
    const float value = half_to_float(half);
    if (std::isnan(value)) {
      EXPECT_EQ(float_to_half(value), (half & 0x8000U) | 0x7E00U) << std::hex << bits;
    } else {
      ASSERT_EQ(float_to_half(value), half) << std::hex << bits;
    }
  }
}

TEST(HalfTest, RoundsToNearestEven) {
  // 1 + 2^-11 lies halfway between 1 and 1 + 2^-10: ties go to the even mantissa (1)
  EXPECT_EQ(float_to_half(1.0F + std::ldexp(1.0F, -11)), 0x3C00);
  // 1 + 3 * 2^-11 lies halfway between 1 + 2^-10 (odd) and 1 + 2^-9 (even)
  EXPECT_EQ(float_to_half(1.0F + 3.0F * std::ldexp(1.0F, -11)), 0x3C02);
  // just above the tie rounds up
  EXPECT_EQ(float_to_half(std::nextafter(1.0F + std::ldexp(1.0F, -11), 2.0F)), 0x3C01);
  // subnormal ties: 1.5 and 2.5 units of 2^-24
  EXPECT_EQ(float_to_half(1.5F * std::ldexp(1.0F, -24)), 0x0002);
  EXPECT_EQ(float_to_half(2.5F * std::ldexp(1.0F, -24)), 0x0002);
  // 2^-25 is the tie between 0 and the smallest subnormal: zero is even
  EXPECT_EQ(float_to_half(std::ldexp(1.0F, -25)), 0x0000);
  EXPECT_EQ(float_to_half(std::nextafter(std::ldexp(1.0F, -25), 1.0F)), 0x0001);
  EXPECT_EQ(float_to_half(-std::ldexp(1.0F, -30)), 0x8000);
  // the largest subnormal rounds up into the smallest normal
  EXPECT_EQ(float_to_half(std::ldexp(1023.75F, -24)), 0x0400);
}

TEST(HalfTest, OverflowsToInfinity) {
  EXPECT_EQ(float_to_half(65504.0F), 0x7BFF);
  EXPECT_EQ(float_to_half(65519.0F), 0x7BFF);
  EXPECT_EQ(float_to_half(65520.0F), 0x7C00);  // the tie with 2^16 goes to infinity
  EXPECT_EQ(float_to_half(1e10F), 0x7C00);
  EXPECT_EQ(float_to_half(-1e10F), 0xFC00);
  EXPECT_EQ(float_to_half(std::numeric_limits<float>::infinity()), 0x7C00);
  EXPECT_EQ(float_to_half(std::numeric_limits<float>::quiet_NaN()), 0x7E00);
}

}  // namespace
}  // namespace gpulife::kernels
