// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief The offline view of a timeline: one self-contained HTML page (no network access when
/// opened) that shows memory over time stacked by tensor or by tag, and on hover a tensor's
/// site and stack, like PyTorch's memory_viz.

#include <filesystem>
#include <string>
#include <string_view>

#include <gpulife/debug/timeline.hpp>

namespace gpulife {

/// @brief Options of the offline view.
struct TimelineViewOptions {
  std::string title{};  ///< the page's title; empty: "gpulife memory: <device>"
};

/// @brief The offline view of a Chrome trace that gpulife wrote (`Timeline::to_chrome_trace`,
/// a `GPULIFE_TIMELINE` file, an out-of-memory snapshot's `timeline.json`).
///
/// The page embeds the trace and its own script and style: it loads nothing, so it opens on a
/// machine without network access, from a file or an e-mail attachment. It shows a chart of the
/// memory the context's tensors hold over time (by time or by event), stacked by tensor or by
/// tag, with the pool's cached bytes on top; hovering a band shows the tensor's id, tag, size,
/// dtype and shape, stream, allocation site and stack, and the cache hits that reused it; a
/// table lists the largest tensors. Memory held by tensors made before the trace's oldest
/// event is drawn as one band.
/// @param chrome_trace the trace, JSON text
/// @param options      the page's title
/// @return the HTML text
/// @throws std::invalid_argument if `chrome_trace` is not JSON or has no "traceEvents" array
[[nodiscard]] std::string timeline_view_html(std::string_view chrome_trace,
                                             const TimelineViewOptions& options = {});

/// @brief Writes the offline view of `timeline` to `path`.
/// @throws std::runtime_error if the file cannot be written
void write_timeline_view(const Timeline& timeline, const std::filesystem::path& path,
                         const TimelineViewOptions& options = {});

}  // namespace gpulife
