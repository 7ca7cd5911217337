// SPDX-License-Identifier: BSD-3-Clause
#include "gapx/spherical_harmonics.hpp"

#include "gapx/errors.hpp"

#include <cmath>
#include <string>

namespace gapx {

SphericalHarmonics::SphericalHarmonics(int l_max) : l_max_(l_max) {
    if (l_max < 0) {
        throw InvalidArgument("l_max must be non-negative, got " + std::to_string(l_max));
    }
    const Real pi = 3.14159265358979323846;
    norm_.assign((l_max + 1) * (l_max + 1), 0.0);
    for (int l = 0; l <= l_max; ++l) {
        for (int m = 0; m <= l; ++m) {
            // (l-m)!/(l+m)! as a product, to avoid overflowing factorials.
            Real ratio = 1.0;
            for (int k = l - m + 1; k <= l + m; ++k) {
                ratio /= k;
            }
            Real value = std::sqrt((2 * l + 1) / (4 * pi) * ratio);
            if (m > 0) {
                value *= std::sqrt(2.0);
            }
            norm_[l * (l_max + 1) + m] = value;
        }
    }
}

void SphericalHarmonics::compute(const Real u[3], Real *values, Real *gradients,
                                 Real *scratch) const {
    compute_impl<true>(u, values, gradients, scratch);
}

void SphericalHarmonics::compute(const Real u[3], Real *values, Real *scratch) const {
    compute_impl<false>(u, values, nullptr, scratch);
}

template <bool Gradients>
void SphericalHarmonics::compute_impl(const Real u[3], Real *values, Real *gradients,
                                      Real *scratch) const {
    const int n_l = l_max_ + 1;
    const int stride = l_max_ + 2;
    const Real x = u[0];
    const Real y = u[1];
    const Real z = u[2];
    const Real r2 = x * x + y * y + z * z;
    // Q[l][m] (l, m = 0..l_max, zero for m > l), the z- and r^2-dependent factor of the solid
    // harmonics: Q_m^m = (2m-1)!!, Q_{m+1}^m = (2m+1) z Q_m^m,
    // (l - m) Q_l^m = (2l-1) z Q_{l-1}^m - (l+m-1) r^2 Q_{l-2}^m.
    Real *q = scratch;
    Real *c = scratch + stride * stride; // Re (x + iy)^m
    Real *s = c + stride;                // Im (x + iy)^m
    for (int i = 0; i < stride * stride; ++i) {
        q[i] = 0.0;
    }
    c[0] = 1.0;
    s[0] = 0.0;
    for (int m = 1; m <= n_l; ++m) {
        c[m] = x * c[m - 1] - y * s[m - 1];
        s[m] = x * s[m - 1] + y * c[m - 1];
    }
    Real diagonal = 1.0;
    for (int m = 0; m <= l_max_; ++m) {
        if (m > 0) {
            diagonal *= 2 * m - 1;
        }
        q[m * stride + m] = diagonal;
        if (m + 1 <= l_max_) {
            q[(m + 1) * stride + m] = (2 * m + 1) * z * diagonal;
        }
        for (int l = m + 2; l <= l_max_; ++l) {
            q[l * stride + m] = ((2 * l - 1) * z * q[(l - 1) * stride + m] -
                                 (l + m - 1) * r2 * q[(l - 2) * stride + m]) /
                                (l - m);
        }
    }
    const int n_lm = n_l * n_l;
    for (int l = 0; l <= l_max_; ++l) {
        const int l0 = l * l + l;
        const Real *norm = norm_.data() + l * n_l;
        const Real *ql = q + l * stride;
        values[l0] = norm[0] * ql[0];
        for (int m = 1; m <= l; ++m) {
            values[l0 + m] = norm[m] * ql[m] * c[m];
            values[l0 - m] = norm[m] * ql[m] * s[m];
        }
        if constexpr (Gradients) {
            Real *gx = gradients;
            Real *gy = gradients + n_lm;
            Real *gz = gradients + 2 * n_lm;
            // Q_{l-1}^{m} and Q_{l-1}^{m+1} (zero when l = 0 or m + 1 > l - 1).
            const Real *qd = l > 0 ? q + (l - 1) * stride : nullptr;
            for (int m = 0; m <= l; ++m) {
                const Real q_lower = l > 0 ? qd[m] : 0.0;     // Q_{l-1}^m
                const Real q_upper = l > 0 ? qd[m + 1] : 0.0; // Q_{l-1}^{m+1}
                const Real dq_dx = -x * q_upper;
                const Real dq_dy = -y * q_upper;
                const Real dq_dz = (l + m) * q_lower;
                const Real cm1 = m > 0 ? c[m - 1] : 0.0;
                const Real sm1 = m > 0 ? s[m - 1] : 0.0;
                // d(c_m)/dx = m c_{m-1}, d(c_m)/dy = -m s_{m-1};
                // d(s_m)/dx = m s_{m-1}, d(s_m)/dy = m c_{m-1}.
                gx[l0 + m] = norm[m] * (dq_dx * c[m] + ql[m] * m * cm1);
                gy[l0 + m] = norm[m] * (dq_dy * c[m] - ql[m] * m * sm1);
                gz[l0 + m] = norm[m] * dq_dz * c[m];
                if (m > 0) {
                    gx[l0 - m] = norm[m] * (dq_dx * s[m] + ql[m] * m * sm1);
                    gy[l0 - m] = norm[m] * (dq_dy * s[m] + ql[m] * m * cm1);
                    gz[l0 - m] = norm[m] * dq_dz * s[m];
                }
            }
        }
    }
}

} // namespace gapx
