// SPDX-License-Identifier: BSD-3-Clause
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <vector>

namespace gapx::bindings {

/// Moves a std::vector into a 1-D NumPy array without copying the data; the capsule owns the
/// vector (the one place where a raw new is needed, because Python frees it).
template <typename T> pybind11::array_t<T> to_numpy(std::vector<T> &&values) {
    auto *owner = new std::vector<T>(std::move(values));
    pybind11::capsule free_when_done(owner,
                                     [](void *p) { delete static_cast<std::vector<T> *>(p); });
    return pybind11::array_t<T>({static_cast<pybind11::ssize_t>(owner->size())}, owner->data(),
                                free_when_done);
}

} // namespace gapx::bindings
