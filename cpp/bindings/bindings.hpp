// SPDX-License-Identifier: BSD-3-Clause
#pragma once

#include <pybind11/pybind11.h>

namespace gapx::bindings {

void bind_neighbors(pybind11::module_ &m);
void bind_soap(pybind11::module_ &m);

} // namespace gapx::bindings
