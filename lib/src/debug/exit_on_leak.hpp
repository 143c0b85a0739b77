// SPDX-License-Identifier: Apache-2.0
#pragma once

// DebugOptions::exit_on_leak: a context destroyed with leaks makes the process exit with a
// chosen status. A destructor cannot change the status that `exit` or a return from `main` will
// use, and exiting at once from a destructor that runs in the middle of the program would cut
// it short. So the leak is recorded, and a handler registered with `atexit` and
// `at_quick_exit` (when the first such context is made) ends the process with `_Exit(code)`
// once the normal exit has begun, after flushing stdio. A context destroyed after that handler
// ran (during static destruction, or by a handler registered before it) exits at once instead.

namespace gpulife::detail {

/// Registers the exit handler (once per process). Called when a context with exit_on_leak is
/// made, so that contexts that are static objects are destroyed before it runs or find it ran.
void arm_exit_on_leak();

/// Records that a context leaked: the process exits with `code` when it exits (the first code
/// recorded wins), or now if the exit is already under way.
void exit_on_leak(int code) noexcept;

}  // namespace gpulife::detail
