// SPDX-License-Identifier: BSD-3-Clause
#pragma once

#include <string>

namespace gapx {

/// Atomic number of a chemical symbol ("Si" -> 14), 0 when it names no element.
int atomic_number(const std::string &symbol);

/// Chemical symbol of an atomic number, or "Z=<n>" outside 1..118.
std::string chemical_symbol(int number);

} // namespace gapx
