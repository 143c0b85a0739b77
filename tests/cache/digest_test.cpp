// SPDX-License-Identifier: Apache-2.0
// Tests gpulife/cache/digest.hpp and gpulife/cache/digest_workers.hpp.

#include <gpulife/cache/digest.hpp>
#include <gpulife/cache/digest_workers.hpp>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include <gtest/gtest.h>
#include <xxhash.h>

namespace gpulife {
namespace {

constexpr std::size_t chunk = digest_chunk_bytes;
// The smallest buffer that DigestWorkers hashes on several threads.
constexpr std::size_t parallel = DigestWorkers::parallel_min_bytes;
static_assert(parallel % chunk == 0);

/// Deterministic, non-repeating bytes (a 64-bit LCG), so that moving a chunk boundary or
/// swapping two chunks changes what is hashed.
std::vector<std::byte> pattern(std::size_t size, std::uint64_t seed = 1) {
  std::vector<std::byte> bytes(size);
  std::uint64_t state = seed;
  for (auto& byte : bytes) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    byte = static_cast<std::byte>(state >> 56);
  }
  return bytes;
}

Digest128 xxh3(const void* data, std::size_t size, std::uint64_t seed = 0) {
  const XXH128_hash_t hash = XXH3_128bits_withSeed(data, size, seed);
  return {hash.high64, hash.low64};
}

/// The tree form written out from its definition in digest.hpp, independently of the library's
/// code: canonical chunk digests, then the length as 8 little-endian bytes, hashed with the seed.
Digest128 reference_digest(const std::vector<std::byte>& bytes) {
  if (bytes.size() <= chunk) return xxh3(bytes.data(), bytes.size());
  std::vector<unsigned char> list;
  for (std::size_t begin = 0; begin < bytes.size(); begin += chunk) {
    const std::size_t length = std::min(chunk, bytes.size() - begin);
    XXH128_canonical_t canonical;
    XXH128_canonicalFromHash(&canonical, XXH3_128bits(bytes.data() + begin, length));
    list.insert(list.end(), std::begin(canonical.digest), std::end(canonical.digest));
  }
  auto length = static_cast<std::uint64_t>(bytes.size());
  for (int i = 0; i < 8; ++i, length >>= 8) list.push_back(static_cast<unsigned char>(length));
  return xxh3(list.data(), list.size(), digest_tree_seed);
}

// ---- Digest128 ---------------------------------------------------------------------------------

TEST(Digest128Test, HexRoundTripsHighWordFirst) {
  const Digest128 value{0x0123456789abcdefULL, 0xfedcba9876543210ULL};
  EXPECT_EQ(value.to_hex(), "0123456789abcdeffedcba9876543210");
  EXPECT_EQ(Digest128::from_hex(value.to_hex()), value);
  EXPECT_EQ(Digest128::from_hex("0123456789ABCDEFFEDCBA9876543210"), value);
  EXPECT_EQ(Digest128{}.to_hex(), std::string(32, '0'));
}

TEST(Digest128Test, FromHexRejectsBadText) {
  for (const char* text :
       {"", "0123", "0123456789abcdeffedcba98765432100", "0123456789abcdeffedcba987654321g",
        "0x23456789abcdeffedcba9876543210"}) {
    try {
      (void)Digest128::from_hex(text);
      ADD_FAILURE() << "accepted '" << text << "'";
    } catch (const std::invalid_argument& error) {
      EXPECT_NE(std::string(error.what()).find("hex"), std::string::npos) << error.what();
    }
  }
}

TEST(Digest128Test, OrdersAsA128BitNumber) {
  EXPECT_LT((Digest128{1, 0}), (Digest128{1, 1}));
  EXPECT_LT((Digest128{0, ~0ULL}), (Digest128{1, 0}));
  EXPECT_EQ((Digest128{2, 3}), (Digest128{2, 3}));
  EXPECT_NE((Digest128{2, 3}), (Digest128{3, 2}));
}

TEST(Digest128Test, WorksAsAnUnorderedKey) {
  std::unordered_set<Digest128> set;
  set.insert(digest(pattern(10, 1)));
  set.insert(digest(pattern(10, 2)));
  set.insert(digest(pattern(10, 1)));
  EXPECT_EQ(set.size(), 2u);
  EXPECT_EQ(std::hash<Digest128>{}(Digest128{7, 42}), 42u);
}

// ---- digest(): definition --------------------------------------------------------------------

TEST(DigestTest, KnownAnswerForSmallBuffers) {
  // XXH3-128 of "" and of "abc" as xxhsum -H2 prints them: a small buffer's digest is plain
  // XXH3-128, the same on every machine.
  EXPECT_EQ(digest(nullptr, 0).to_hex(), "99aa06d3014798d86001c324468d497f");
  EXPECT_EQ(digest("abc", 3).to_hex(), "06b05ab6733a618578af5f94892f3950");
  const auto bytes = pattern(4096);
  EXPECT_EQ(digest(bytes), xxh3(bytes.data(), bytes.size()));
}

TEST(DigestTest, TreeFormMatchesTheReferenceAtBoundarySizes) {
  for (std::size_t size :
       {std::size_t{0}, std::size_t{1}, std::size_t{240}, std::size_t{241}, chunk - 1, chunk,
        chunk + 1, 2 * chunk, 2 * chunk + 1, 7 * chunk + 12345}) {
    SCOPED_TRACE(size);
    const auto bytes = pattern(size);
    EXPECT_EQ(digest(bytes), reference_digest(bytes));
  }
}

TEST(DigestTest, OneChunkIsPlainXxh3AndLargerIsTheTreeForm) {
  const auto exact = pattern(chunk);
  EXPECT_EQ(digest(exact), xxh3(exact.data(), exact.size()));
  const auto larger = pattern(chunk + 1);
  EXPECT_NE(digest(larger), xxh3(larger.data(), larger.size()));
}

TEST(DigestTest, TreeFormIsDomainSeparatedFromTheOneChunkForm) {
  // A small buffer that holds exactly the tree form's root list does not get the tree's digest.
  const auto bytes = pattern(3 * chunk + 5);
  std::vector<unsigned char> list;
  for (std::size_t begin = 0; begin < bytes.size(); begin += chunk) {
    XXH128_canonical_t canonical;
    XXH128_canonicalFromHash(
        &canonical, XXH3_128bits(bytes.data() + begin, std::min(chunk, bytes.size() - begin)));
    list.insert(list.end(), std::begin(canonical.digest), std::end(canonical.digest));
  }
  auto length = static_cast<std::uint64_t>(bytes.size());
  for (int i = 0; i < 8; ++i, length >>= 8) list.push_back(static_cast<unsigned char>(length));
  EXPECT_NE(digest(list.data(), list.size()), digest(bytes));
}

TEST(DigestTest, OneByteChangeAnywhereChangesTheDigest) {
  // Whole chunks and a partial one, large enough for the workers to share.
  const std::size_t size = parallel + 3 * chunk + 777;
  const std::size_t last_chunk = size - 777;
  const auto original = pattern(size);
  const Digest128 expected = digest(original);
  DigestWorkers workers(3);
  for (std::size_t at : {std::size_t{0}, chunk / 2, chunk - 1, chunk, 2 * chunk + 3, size / 2,
                         last_chunk - 1, last_chunk, size - 1}) {
    SCOPED_TRACE(at);
    auto changed = original;
    changed[at] ^= std::byte{0x01};
    EXPECT_NE(digest(changed), expected);
    EXPECT_NE(workers.digest(changed), expected);
  }
}

TEST(DigestTest, LengthIsPartOfTheDigest) {
  const auto bytes = pattern(2 * chunk + 1);
  std::vector<std::byte> shorter(bytes.begin(), bytes.end() - 1);
  EXPECT_NE(digest(bytes), digest(shorter));
  const std::vector<std::byte> zeros_a(chunk + 10), zeros_b(chunk + 11);
  EXPECT_NE(digest(zeros_a), digest(zeros_b));
}

TEST(DigestTest, SwappingTwoChunksChangesTheDigest) {
  auto bytes = pattern(2 * chunk);
  const Digest128 before = digest(bytes);
  std::swap_ranges(bytes.begin(), bytes.begin() + chunk, bytes.begin() + chunk);
  EXPECT_NE(digest(bytes), before);
}

TEST(DigestTest, NullDataWithSizeIsRejectedNamingTheArgument) {
  try {
    (void)digest(nullptr, 5);
    FAIL() << "no exception";
  } catch (const std::invalid_argument& error) {
    EXPECT_EQ(std::string(error.what()).rfind("data:", 0), 0u) << error.what();
  }
  DigestWorkers workers(2);
  EXPECT_THROW((void)workers.digest(nullptr, 5), std::invalid_argument);
  EXPECT_EQ(workers.digest(nullptr, 0), digest(nullptr, 0));
}

// ---- DigestWorkers -----------------------------------------------------------------------------

TEST(DigestWorkersTest, RejectsZeroThreads) {
  try {
    DigestWorkers workers(0);
    FAIL() << "no exception";
  } catch (const std::invalid_argument& error) {
    EXPECT_EQ(std::string(error.what()).rfind("threads:", 0), 0u) << error.what();
  }
}

TEST(DigestWorkersTest, ThreadCountIncludesTheCaller) {
  EXPECT_EQ(DigestWorkers(1).thread_count(), 1u);
  EXPECT_EQ(DigestWorkers(3).thread_count(), 3u);
  EXPECT_GE(DigestWorkers::default_thread_count(), 1u);
  EXPECT_EQ(DigestWorkers().thread_count(), DigestWorkers::default_thread_count());
}

TEST(DigestWorkersTest, IdenticalAcrossThreadCountsAndRuns) {
  const std::vector<std::size_t> sizes = {0,
                                          1,
                                          chunk - 1,
                                          chunk,
                                          chunk + 1,
                                          2 * chunk + 1,
                                          parallel - 1,
                                          parallel,
                                          parallel + 1,
                                          parallel + chunk + 1,
                                          3 * parallel + 4321};
  std::vector<std::vector<std::byte>> buffers;
  std::vector<Digest128> expected;
  for (std::size_t size : sizes) {
    buffers.push_back(pattern(size, size));
    expected.push_back(reference_digest(buffers.back()));
  }
  for (std::size_t threads : {1u, 2u, 3u, 8u}) {
    DigestWorkers workers(threads);
    for (int run = 0; run < 3; ++run) {
      for (std::size_t i = 0; i < sizes.size(); ++i) {
        SCOPED_TRACE("threads " + std::to_string(threads) + ", size " + std::to_string(sizes[i]));
        EXPECT_EQ(workers.digest(buffers[i]), expected[i]);
      }
    }
  }
}

TEST(DigestWorkersTest, ConcurrentDigestsFromManyThreads) {
  // More callers than workers, buffers of different lengths: jobs queue up, callers hash their
  // own chunks when the workers are busy, and each gets its own buffer's digest.
  constexpr int callers = 6;
  constexpr int rounds = 4;
  std::vector<std::vector<std::byte>> buffers;
  std::vector<Digest128> expected;
  for (int i = 0; i < callers; ++i) {
    buffers.push_back(pattern(parallel + static_cast<std::size_t>(i) * (chunk + 99),
                              static_cast<std::uint64_t>(i) + 100));
    expected.push_back(digest(buffers.back()));
  }
  DigestWorkers workers(3);
  std::vector<int> mismatches(callers, 0);
  std::vector<std::thread> threads;
  threads.reserve(callers);
  for (int i = 0; i < callers; ++i) {
    threads.emplace_back([&, i] {
      const auto index = static_cast<std::size_t>(i);
      for (int round = 0; round < rounds; ++round) {
        // Alternate a buffer of one's own with one another caller digests at the same time.
        const std::size_t which = round % 2 == 0 ? index : (index + 1) % callers;
        if (workers.digest(buffers[which]) != expected[which]) ++mismatches[index];
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (int i = 0; i < callers; ++i) EXPECT_EQ(mismatches[static_cast<std::size_t>(i)], 0) << i;
}

TEST(DigestWorkersTest, DestroysCleanlyWhenIdleOrUnused) {
  for (int i = 0; i < 20; ++i) {
    DigestWorkers workers(4);
    if (i % 2 == 0) (void)workers.digest(pattern(parallel + chunk));
  }
}

}  // namespace
}  // namespace gpulife
