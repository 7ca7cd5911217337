// SPDX-License-Identifier: BSD-3-Clause
#include "gapx/memory.hpp"

#include "gapx/errors.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>

#if defined(_WIN32)
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>
#elif defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

namespace gapx {
namespace {

Index os_physical_memory() {
#if defined(_WIN32)
    MEMORYSTATUSEX status;
    status.dwLength = sizeof(status);
    if (GlobalMemoryStatusEx(&status)) {
        return static_cast<Index>(std::min<unsigned long long>(
            status.ullTotalPhys, static_cast<unsigned long long>(std::numeric_limits<Index>::max())));
    }
    return 0;
#elif defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
    const long pages = sysconf(_SC_PHYS_PAGES);
    const long page_size = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || page_size <= 0) {
        return 0;
    }
    return static_cast<Index>(pages) * static_cast<Index>(page_size);
#else
    return 0;
#endif
}

/// The cgroup memory limit in bytes, 0 when there is none (or it cannot be read). An unlimited
/// cgroup reads "max" (v2) or a huge number (v1), both of which end up as "no limit" here.
Index cgroup_memory_limit() {
#if defined(__linux__)
    for (const char *path :
         {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}) {
        std::ifstream file(path);
        long long limit = 0;
        if (file >> limit && limit > 0) {
            return static_cast<Index>(limit);
        }
    }
#endif
    return 0;
}

} // namespace

Index physical_memory_bytes() {
    static const Index bytes = [] {
        const Index physical = os_physical_memory();
        const Index cgroup = cgroup_memory_limit();
        if (physical > 0 && cgroup > 0) {
            return std::min(physical, cgroup);
        }
        return std::max(physical, cgroup);
    }();
    return bytes;
}

Index default_memory_budget() {
    const Index physical = physical_memory_bytes();
    return physical > 0 ? physical / 2 : Index{8} << 30;
}

Index resolve_memory_budget(Index max_bytes) {
    if (max_bytes < 0) {
        throw InvalidArgument("max_bytes must be positive, or 0 for half of the physical memory; "
                              "got " +
                              std::to_string(max_bytes));
    }
    return max_bytes > 0 ? max_bytes : default_memory_budget();
}

namespace detail {

std::string format_bytes(Real bytes) {
    if (!std::isfinite(bytes)) {
        return "unboundedly many bytes";
    }
    static const char *const units[] = {"bytes", "kB", "MB", "GB", "TB", "PB", "EB"};
    int unit = 0;
    while (bytes >= 1000.0 && unit < 6) {
        bytes /= 1000.0;
        ++unit;
    }
    char text[64];
    std::snprintf(text, sizeof(text), unit == 0 ? "%.0f %s" : "%.3g %s", bytes, units[unit]);
    return text;
}

std::string format_count(Real count) {
    if (!std::isfinite(count)) {
        return "unboundedly many";
    }
    char text[64];
    if (std::abs(count) < 1e7) {
        std::snprintf(text, sizeof(text), "%.0f", count);
    } else {
        std::snprintf(text, sizeof(text), "%.2g", count);
    }
    return text;
}

std::string format_real(Real value) {
    char text[64];
    std::snprintf(text, sizeof(text), "%.6g", value);
    return text;
}

} // namespace detail

} // namespace gapx
