// SPDX-License-Identifier: BSD-3-Clause
#include "gapx/radial_basis.hpp"

#include "gapx/errors.hpp"

#include <Eigen/Eigenvalues>

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

namespace gapx {
namespace {

constexpr Real pi = 3.14159265358979323846;
// Below this argument the scaled Bessel functions come from their (all-positive) power series
// and a downward recurrence; above, from closed forms and the upward recurrence.
constexpr Real bessel_switch = 50.0;
// Gauss-Legendre points per panel; panels are at most one σ wide.
constexpr int n_gauss = 16;
// Grid spacing of the spline tables, in units of σ (cubic Hermite error ~ h^4 f''''/384).
constexpr Real spacing_per_sigma = 1.0 / 128.0;

void gauss_legendre(int n, std::vector<Real> &nodes, std::vector<Real> &weights) {
    nodes.resize(n);
    weights.resize(n);
    for (int i = 0; i < n; ++i) {
        Real x = std::cos(pi * (i + 0.75) / (n + 0.5));
        Real dp = 0.0;
        for (int iter = 0; iter < 100; ++iter) {
            Real p0 = 1.0;
            Real p1 = x;
            for (int k = 2; k <= n; ++k) {
                const Real p2 = ((2 * k - 1) * x * p1 - (k - 1) * p0) / k;
                p0 = p1;
                p1 = p2;
            }
            dp = n * (x * p1 - p0) / (x * x - 1.0);
            const Real step = p1 / dp;
            x -= step;
            if (std::abs(step) < 1e-16) {
                break;
            }
        }
        Real p0 = 1.0;
        Real p1 = x;
        for (int k = 2; k <= n; ++k) {
            const Real p2 = ((2 * k - 1) * x * p1 - (k - 1) * p0) / k;
            p0 = p1;
            p1 = p2;
        }
        dp = n * (x * p1 - p0) / (x * x - 1.0);
        nodes[i] = x;
        weights[i] = 2.0 / ((1.0 - x * x) * dp * dp);
    }
}

// e^{-x} i_l(x) by its power series i_l(x) = x^l/(2l+1)!! sum_k (x^2/2)^k / (k! (2l+3)...(2l+2k+1)),
// whose terms are all positive (no cancellation); valid for moderate x.
Real scaled_bessel_series(Real x, int l) {
    Real prefactor = std::exp(-x);
    for (int k = 1; k <= l; ++k) {
        prefactor *= x / (2 * k + 1);
    }
    const Real half_x2 = 0.5 * x * x;
    Real term = 1.0;
    Real sum = 1.0;
    for (int k = 0; k < 10000; ++k) {
        term *= half_x2 / ((k + 1) * (2.0 * l + 2 * k + 3));
        sum += term;
        if (term < 1e-18 * sum) {
            break;
        }
    }
    return prefactor * sum;
}

} // namespace

namespace detail {

void scaled_bessel_i(Real x, int l_top, Real *out) {
    if (x <= 0.0) {
        out[0] = 1.0;
        for (int l = 1; l <= l_top; ++l) {
            out[l] = 0.0;
        }
        return;
    }
    if (x < 1.0) {
        // Few terms each, and no underflow problem for the downward start values.
        for (int l = 0; l <= l_top; ++l) {
            out[l] = scaled_bessel_series(x, l);
        }
        return;
    }
    if (x < bessel_switch) {
        // Downward recurrence i_{l-1} = i_{l+1} + (2l+1)/x i_l is stable for i_l.
        out[l_top] = scaled_bessel_series(x, l_top);
        if (l_top == 0) {
            return;
        }
        out[l_top - 1] = scaled_bessel_series(x, l_top - 1);
        for (int l = l_top - 1; l >= 1; --l) {
            out[l - 1] = out[l + 1] + (2 * l + 1) / x * out[l];
        }
        return;
    }
    const Real e2 = std::exp(-2.0 * x);
    out[0] = (1.0 - e2) / (2.0 * x);
    if (l_top == 0) {
        return;
    }
    out[1] = (1.0 + e2) / (2.0 * x) - (1.0 - e2) / (2.0 * x * x);
    for (int l = 1; l < l_top; ++l) {
        out[l + 1] = out[l - 1] - (2 * l + 1) / x * out[l];
    }
}

} // namespace detail

RadialSpline::RadialSpline(const RadialSettings &settings) : settings_(settings) {
    const Real rc = settings.cutoff;
    const int n_max = settings.n_max;
    const int l_max = settings.l_max;
    const Real sigma = settings.atom_sigma;
    if (!(rc > 0.0) || !std::isfinite(rc)) {
        throw InvalidArgument("cutoff must be positive, got " + std::to_string(rc));
    }
    if (n_max < 1) {
        throw InvalidArgument("n_max must be at least 1, got " + std::to_string(n_max));
    }
    if (l_max < 0 || l_max > 30) {
        throw InvalidArgument("l_max must be in [0, 30], got " + std::to_string(l_max));
    }
    if (!(sigma > 0.0) || !std::isfinite(sigma)) {
        throw InvalidArgument("atom_sigma must be positive, got " + std::to_string(sigma));
    }

    widths_.resize(n_max);
    for (int k = 0; k < n_max; ++k) {
        widths_[k] = rc * std::max(std::sqrt(static_cast<Real>(k)), 1.0) / n_max;
    }
    // Overlap S_nk = 1/2 Γ((n+k+3)/2) α^{-(n+k+3)/2}, α = 1/(2 s_n^2) + 1/(2 s_k^2).
    Eigen::MatrixXd overlap(n_max, n_max);
    for (int n = 0; n < n_max; ++n) {
        for (int k = 0; k < n_max; ++k) {
            const Real alpha =
                0.5 / (widths_[n] * widths_[n]) + 0.5 / (widths_[k] * widths_[k]);
            const Real q = 0.5 * (n + k + 3);
            overlap(n, k) = 0.5 * std::exp(std::lgamma(q) - q * std::log(alpha));
        }
    }
    Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eigen(overlap);
    const Eigen::VectorXd inv_sqrt = eigen.eigenvalues().cwiseSqrt().cwiseInverse();
    transform_ = eigen.eigenvectors() * inv_sqrt.asDiagonal() * eigen.eigenvectors().transpose();

    gauss_legendre(n_gauss, nodes_, weights_);

    const int n_l = l_max + 1;
    const int n_nl = n_max * n_l;
    n_intervals_ = std::max(16, static_cast<int>(std::ceil(rc / (sigma * spacing_per_sigma))));
    spacing_ = rc / n_intervals_;
    std::vector<Real> values((n_intervals_ + 1) * n_nl);
    std::vector<Real> slopes((n_intervals_ + 1) * n_nl);
    for (int k = 0; k <= n_intervals_; ++k) {
        exact(k * spacing_, values.data() + k * n_nl, slopes.data() + k * n_nl);
    }
    std::vector<Real> scale(n_l);
    for (int l = 0; l < n_l; ++l) {
        scale[l] = std::pow(2.0 * l + 1.0, -0.25);
    }
    coefficients_.assign(static_cast<size_t>(n_intervals_) * 4 * n_nl, 0.0);
    for (int k = 0; k < n_intervals_; ++k) {
        Real *a = coefficients_.data() + static_cast<size_t>(k) * 4 * n_nl;
        for (int n = 0; n < n_max; ++n) {
            for (int l = 0; l < n_l; ++l) {
                const int nl = n * n_l + l;
                const Real y0 = values[k * n_nl + nl] * scale[l];
                const Real y1 = values[(k + 1) * n_nl + nl] * scale[l];
                const Real m0 = slopes[k * n_nl + nl] * scale[l] * spacing_;
                const Real m1 = slopes[(k + 1) * n_nl + nl] * scale[l] * spacing_;
                a[nl] = y0;
                a[n_nl + nl] = m0;
                a[2 * n_nl + nl] = 3.0 * (y1 - y0) - 2.0 * m0 - m1;
                a[3 * n_nl + nl] = 2.0 * (y0 - y1) + m0 + m1;
            }
        }
    }
}

void RadialSpline::evaluate(Real d, Real *out_values, Real *out_derivatives) const {
    const int n_nl = settings_.n_max * (settings_.l_max + 1);
    Real x = d / spacing_;
    int k = static_cast<int>(x);
    if (k >= n_intervals_) {
        k = n_intervals_ - 1;
    }
    if (k < 0) {
        k = 0;
    }
    const Real t = x - k;
    const Real inv_h = 1.0 / spacing_;
    const Real *a0 = coefficients_.data() + static_cast<size_t>(k) * 4 * n_nl;
    const Real *a1 = a0 + n_nl;
    const Real *a2 = a1 + n_nl;
    const Real *a3 = a2 + n_nl;
    for (int nl = 0; nl < n_nl; ++nl) {
        out_values[nl] = a0[nl] + t * (a1[nl] + t * (a2[nl] + t * a3[nl]));
        out_derivatives[nl] = (a1[nl] + t * (2.0 * a2[nl] + 3.0 * t * a3[nl])) * inv_h;
    }
}

void RadialSpline::exact(Real d, Real *out_values, Real *out_derivatives) const {
    const int n_max = settings_.n_max;
    const int l_max = settings_.l_max;
    const int n_l = l_max + 1;
    const Real sigma = settings_.atom_sigma;
    const Real b = 0.5 / (sigma * sigma);
    // The integrand r^{2+k} e^{-a_k r^2} e^{-b (r-d)^2} (e^{-x} i_l(x)) is log-concave-like with
    // curvature >= 2b, and its maximum lies within sigma*sqrt(3 + k + l) of d, so this range
    // leaves out less than e^{-40} of it.
    const Real lower = std::max(0.0, d - 9.0 * sigma);
    const Real upper = d + sigma * (9.0 + std::sqrt(3.0 + n_max + l_max));
    const int n_panels = std::max(1, static_cast<int>(std::ceil((upper - lower) / sigma)));
    const Real panel = (upper - lower) / n_panels;

    // J_kl and dJ_kl/dd in the unorthonormalised basis.
    std::vector<Real> integral(n_max * n_l, 0.0);
    std::vector<Real> derivative(n_max * n_l, 0.0);
    std::vector<Real> bessel(n_l + 1);
    std::vector<Real> phi(n_max);
    for (int p = 0; p < n_panels; ++p) {
        const Real a = lower + p * panel;
        for (int q = 0; q < n_gauss; ++q) {
            const Real r = a + 0.5 * panel * (nodes_[q] + 1.0);
            const Real w = 0.5 * panel * weights_[q];
            const Real x = 2.0 * b * r * d;
            detail::scaled_bessel_i(x, l_max + 1, bessel.data());
            const Real gauss = 4.0 * pi * w * r * r * std::exp(-b * (r - d) * (r - d));
            Real power = 1.0;
            for (int k = 0; k < n_max; ++k) {
                phi[k] = gauss * power * std::exp(-0.5 * r * r / (widths_[k] * widths_[k]));
                power *= r;
            }
            for (int l = 0; l < n_l; ++l) {
                const Real lower_l = l > 0 ? bessel[l - 1] : 0.0;
                const Real dbessel = -2.0 * b * d * bessel[l] +
                                     2.0 * b * r * (l * lower_l + (l + 1) * bessel[l + 1]) /
                                         (2 * l + 1);
                for (int k = 0; k < n_max; ++k) {
                    integral[k * n_l + l] += phi[k] * bessel[l];
                    derivative[k * n_l + l] += phi[k] * dbessel;
                }
            }
        }
    }
    for (int n = 0; n < n_max; ++n) {
        for (int l = 0; l < n_l; ++l) {
            Real value = 0.0;
            Real slope = 0.0;
            for (int k = 0; k < n_max; ++k) {
                value += transform_(n, k) * integral[k * n_l + l];
                slope += transform_(n, k) * derivative[k * n_l + l];
            }
            out_values[n * n_l + l] = value;
            out_derivatives[n * n_l + l] = slope;
        }
    }
}

std::shared_ptr<const RadialSpline> RadialSpline::cached(const RadialSettings &settings) {
    static std::mutex mutex;
    static std::map<std::tuple<Real, int, int, Real>, std::shared_ptr<const RadialSpline>> cache;
    const auto key =
        std::make_tuple(settings.cutoff, settings.n_max, settings.l_max, settings.atom_sigma);
    {
        std::lock_guard<std::mutex> lock(mutex);
        auto found = cache.find(key);
        if (found != cache.end()) {
            return found->second;
        }
    }
    auto table = std::make_shared<const RadialSpline>(settings);
    std::lock_guard<std::mutex> lock(mutex);
    if (cache.size() > 64) {
        cache.clear();
    }
    return cache.emplace(key, table).first->second;
}

} // namespace gapx
