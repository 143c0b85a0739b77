// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief Everything in gpulife's public API, except DLPack interop
/// (`gpulife/interop/dlpack.hpp`) and the kernels (`gpulife/kernels/`).

#include <gpulife/context.hpp>
#include <gpulife/debug/debug_options.hpp>
#include <gpulife/debug/leak_report.hpp>
#include <gpulife/debug/timeline.hpp>
#include <gpulife/debug/timeline_view.hpp>
#include <gpulife/error_handler.hpp>
#include <gpulife/errors.hpp>
#include <gpulife/memory/async_resource.hpp>
#include <gpulife/memory/device_memory_resource.hpp>
#include <gpulife/memory/direct_resource.hpp>
#include <gpulife/memory/fault_adaptor.hpp>
#include <gpulife/memory/holdback_adaptor.hpp>
#include <gpulife/memory/memory_pressure.hpp>
#include <gpulife/memory/pool_resource.hpp>
#include <gpulife/runtime/device.hpp>
#include <gpulife/runtime/device_profile.hpp>
#include <gpulife/runtime/event.hpp>
#include <gpulife/runtime/graph.hpp>
#include <gpulife/runtime/launch.hpp>
#include <gpulife/runtime/stream.hpp>
#include <gpulife/runtime/stream_view.hpp>
#include <gpulife/source_location.hpp>
#include <gpulife/tensor/device_tensor.hpp>
#include <gpulife/tensor/dtype.hpp>
#include <gpulife/tensor/finalizer.hpp>
#include <gpulife/tensor/graph_capture.hpp>
#include <gpulife/tensor/graph_pool.hpp>
#include <gpulife/tensor/lifetime_event.hpp>
#include <gpulife/tensor/shape.hpp>
#include <gpulife/tensor/tensor_info.hpp>
#include <gpulife/tensor/weak_tensor.hpp>
#include <gpulife/version.hpp>
#include <gpulife/weak/weak_key_map.hpp>
#include <gpulife/weak/weak_set.hpp>
