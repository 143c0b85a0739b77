// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <string>

namespace gpulife::tools {

/// Compares the step times of a GPU report (`measured_path`, gpulife_report's JSON) with the
/// predictions of a simulated-device report (`predicted_path`); prints a table.
/// @return 0 when every prediction is within `tolerance` (a fraction) and the strategies rank
/// the same way, 1 otherwise
/// @throws std::invalid_argument for an unreadable file or one that is not such a report
int compare_reports(const std::string& measured_path, const std::string& predicted_path,
                    double tolerance);

}  // namespace gpulife::tools
