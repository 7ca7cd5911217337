// SPDX-License-Identifier: BSD-3-Clause
#pragma once

#include "gapx/types.hpp"

#include <string>

namespace gapx {

/// Memory of the machine in bytes as the operating system reports it (Linux and macOS:
/// sysconf; Windows: GlobalMemoryStatusEx), lowered to the process's cgroup memory limit where
/// one is set (Linux containers, v1 and v2). 0 when unknown. Read once per process.
Index physical_memory_bytes();

/// The byte budget used when a caller passes `max_bytes = 0`: half of physical_memory_bytes(),
/// so that a refused request leaves the rest of the machine usable; 8 GiB where the memory is
/// unknown.
Index default_memory_budget();

/// `max_bytes` when positive, default_memory_budget() when 0. Throws InvalidArgument when
/// negative.
Index resolve_memory_budget(Index max_bytes);

namespace detail {
/// A byte count for messages, e.g. "4.6 GB" (powers of 1000), exact below 1 kB.
std::string format_bytes(Real bytes);
/// A count for messages: exact below 10^7, otherwise in scientific notation ("3.5e+12").
std::string format_count(Real count);
/// A real number for messages, with up to 6 significant digits ("1000", "0.3", "1e-06").
std::string format_real(Real value);
} // namespace detail

} // namespace gapx
