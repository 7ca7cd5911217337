// SPDX-License-Identifier: BSD-3-Clause
#pragma once

#include "gapx/types.hpp"

#include <pybind11/pybind11.h>

#include <array>

namespace gapx::bindings {

/// Periodicity as the core takes it, from the three bools Python passes.
inline Pbc to_pbc(const std::array<bool, 3> &pbc) { return Pbc{pbc[0], pbc[1], pbc[2]}; }

void bind_neighbors(pybind11::module_ &m);
void bind_soap(pybind11::module_ &m);
void bind_model(pybind11::module_ &m);

} // namespace gapx::bindings
