// SPDX-License-Identifier: BSD-3-Clause
#pragma once

#include "gapx/types.hpp"

#include <cmath>

namespace gapx {

/// QUIP's smooth cosine cutoff: 1 for r <= r_c - w, 0 for r >= r_c and
/// \f$ \tfrac12 (1 + \cos(\pi (r - r_c + w) / w)) \f$ in between, so the function and its first
/// derivative are continuous at both ends of the transition. Writes f_c(r) and df_c/dr.
inline void cosine_cutoff(Real r, Real cutoff, Real width, Real &value, Real &derivative) {
    const Real start = cutoff - width;
    if (r <= start) {
        value = 1.0;
        derivative = 0.0;
    } else if (r >= cutoff) {
        value = 0.0;
        derivative = 0.0;
    } else {
        const Real pi = 3.14159265358979323846;
        const Real phase = pi * (r - start) / width;
        value = 0.5 * (1.0 + std::cos(phase));
        derivative = -0.5 * pi / width * std::sin(phase);
    }
}

} // namespace gapx
