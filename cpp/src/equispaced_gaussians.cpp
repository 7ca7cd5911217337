// SPDX-License-Identifier: BSD-3-Clause
#include "gapx/equispaced_gaussians.hpp"

#include "gapx/errors.hpp"
#include "gapx/memory.hpp"

#include <Eigen/Cholesky>
#include <Eigen/LU>

#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

namespace gapx {
namespace {

constexpr Real pi = 3.14159265358979323846;

/// \f$ \int_0^\infty r^2 e^{-\alpha(r-a)^2} e^{-\alpha(r-b)^2} dr \f$ in closed form: the product
/// is \f$ e^{-\alpha(a-b)^2/2} e^{-\beta(r-m)^2} \f$ with m = (a+b)/2, β = 2α.
Real half_line_overlap(Real a, Real b, Real alpha) {
    const Real m = 0.5 * (a + b);
    const Real beta = 2.0 * alpha;
    const Real gaussian_moment = 0.5 * std::sqrt(pi / beta) * (1.0 + std::erf(std::sqrt(beta) * m));
    const Real integral = m * std::exp(-beta * m * m) / (2.0 * beta) +
                          (1.0 / (2.0 * beta) + m * m) * gaussian_moment;
    return std::exp(-0.5 * alpha * (a - b) * (a - b)) * integral;
}

} // namespace

void EquispacedGaussians::check_settings(const RadialSettings &settings) {
    if (!(settings.cutoff > 0.0) || !std::isfinite(settings.cutoff)) {
        throw InvalidArgument("cutoff must be positive, got " + std::to_string(settings.cutoff));
    }
    if (!(settings.atom_sigma > 0.0) || !std::isfinite(settings.atom_sigma)) {
        throw InvalidArgument("atom_sigma must be positive, got " +
                              std::to_string(settings.atom_sigma));
    }
    if (settings.n_max < 1 || settings.n_max > max_n_max) {
        throw InvalidArgument("n_max must be in [1, " + std::to_string(max_n_max) +
                              "] for the QUIP radial basis, got " +
                              std::to_string(settings.n_max));
    }
    if (settings.l_max < 0 || settings.l_max > max_l_max) {
        throw InvalidArgument("l_max must be in [0, " + std::to_string(max_l_max) + "], got " +
                              std::to_string(settings.l_max));
    }
    const Real bytes = intervals(settings) * 4.0 * settings.n_max * (settings.l_max + 1) * 8.0;
    if (!(bytes <= max_table_bytes)) {
        throw InvalidArgument(
            "the QUIP radial basis table for cutoff " + detail::format_real(settings.cutoff) +
            " Å, atom_sigma " + detail::format_real(settings.atom_sigma) + " Å, n_max " +
            std::to_string(settings.n_max) + " and l_max " + std::to_string(settings.l_max) +
            " would take " + detail::format_bytes(bytes) + " (limit " +
            detail::format_bytes(max_table_bytes) +
            "); use a smaller cutoff / atom_sigma ratio, n_max or l_max");
    }
}

EquispacedGaussians::EquispacedGaussians(const RadialSettings &settings) : settings_(settings) {
    check_settings(settings);
    const int n = settings.n_max;
    const Real sigma = settings.atom_sigma;
    const Real alpha = 0.5 / (sigma * sigma);
    const Real hard_cutoff = settings.cutoff + sigma * std::sqrt(2.0 * 10.0 * std::log(10.0));
    radii_.resize(n);
    for (int l = 0; l <= settings.l_max; ++l) {
        l_scales_.push_back(std::pow(2.0 * l + 1.0, -0.25));
        inverse_odd_.push_back(1.0 / (2.0 * l + 1.0));
    }
    for (int a = 0; a < n; ++a) {
        radii_[a] = hard_cutoff * a / n;
    }
    Eigen::MatrixXd overlap(n, n);
    Eigen::MatrixXd collocation(n, n);
    for (int a = 0; a < n; ++a) {
        for (int b = 0; b < n; ++b) {
            overlap(a, b) = half_line_overlap(radii_[a], radii_[b], alpha);
            const Real gap = radii_[a] - radii_[b];
            collocation(a, b) = std::exp(-alpha * gap * gap);
        }
    }
    const Eigen::LLT<Eigen::MatrixXd> cholesky(overlap);
    const Eigen::FullPivLU<Eigen::MatrixXd> lu(collocation);
    // 1e-14: below it the Gaussians (width σ) overlap so much that W is rounding noise.
    if (cholesky.info() != Eigen::Success || lu.rcond() < 1e-14) {
        throw InvalidArgument(
            "the QUIP radial basis is numerically singular for cutoff " +
            std::to_string(settings.cutoff) + ", n_max " + std::to_string(n) + " and atom_sigma " +
            std::to_string(sigma) + ": the grid spacing is too small for the Gaussian width; "
            "use a smaller n_max or atom_sigma");
    }
    const Eigen::MatrixXd upper = cholesky.matrixL().transpose();
    // W G = L^T  <=>  G^T W^T = L; G is symmetric.
    transform_ = lu.solve(upper.transpose()).transpose();
    const int n_nl = n * (settings.l_max + 1);
    table_ = HermiteTable(settings.cutoff, static_cast<int>(intervals(settings)), n_nl,
                          [this, n_nl](Real d, Real *values, Real *slopes) {
                              exact(d, values, slopes);
                              Real e = 0.0;
                              Real de = 0.0;
                              envelope(d, e, de);
                              for (int nl = 0; nl < n_nl; ++nl) { // g = I / E
                                  const Real g = e > 0.0 ? values[nl] / e : 0.0;
                                  slopes[nl] = e > 0.0 ? (slopes[nl] - g * de) / e : 0.0;
                                  values[nl] = g;
                              }
                          });
}

Real EquispacedGaussians::intervals(const RadialSettings &settings) {
    return std::max(16.0, std::ceil(1024.0 * settings.cutoff / settings.atom_sigma));
}

void EquispacedGaussians::envelope(Real d, Real &value, Real &derivative) const {
    const Real alpha = 0.5 / (settings_.atom_sigma * settings_.atom_sigma);
    value = 0.0;
    derivative = 0.0;
    for (const Real ra : radii_) {
        const Real gauss = std::exp(-alpha * (d - ra) * (d - ra));
        value += gauss;
        derivative -= 2.0 * alpha * (d - ra) * gauss;
    }
}

void EquispacedGaussians::evaluate(Real d, Real *out_values, Real *out_derivatives) const {
    // I = g E, I' = g' E + g E' from the tabulated g = I / E and the exact envelope E.
    table_.evaluate(d, out_values, out_derivatives);
    Real e = 0.0;
    Real de = 0.0;
    envelope(d, e, de);
    const int n_nl = settings_.n_max * (settings_.l_max + 1);
    for (int nl = 0; nl < n_nl; ++nl) {
        out_derivatives[nl] = out_derivatives[nl] * e + out_values[nl] * de;
        out_values[nl] *= e;
    }
}

void EquispacedGaussians::exact(Real d, Real *out_values, Real *out_derivatives) const {
    const int n = settings_.n_max;
    const int n_l = settings_.l_max + 1;
    const Real alpha = 0.5 / (settings_.atom_sigma * settings_.atom_sigma);
    std::array<Real, max_n_max *(max_l_max + 1)> samples;
    std::array<Real, max_n_max *(max_l_max + 1)> slopes;
    std::array<Real, max_l_max + 2> bessel;
    for (int a = 0; a < n; ++a) {
        const Real ra = radii_[a];
        // e^{-α(d² + r²)} i_l(2αdr) = e^{-α(d-r)²} (e^{-x} i_l(x)), x = 2αdr: no overflow.
        const Real gauss = 4.0 * pi * std::exp(-alpha * (d - ra) * (d - ra));
        const Real x = 2.0 * alpha * d * ra;
        detail::scaled_bessel_i(x, n_l, bessel.data());
        for (int l = 0; l < n_l; ++l) {
            const Real lower = l > 0 ? bessel[l - 1] : 0.0;
            // d/dx (e^{-x} i_l) = e^{-x} (l i_{l-1} + (l+1) i_{l+1}) / (2l+1) - e^{-x} i_l
            const Real dbessel = (l * lower + (l + 1) * bessel[l + 1]) * inverse_odd_[l] - bessel[l];
            samples[a * n_l + l] = gauss * bessel[l];
            slopes[a * n_l + l] =
                gauss * (-2.0 * alpha * (d - ra) * bessel[l] + 2.0 * alpha * ra * dbessel);
        }
    }
    // out[m][l] = scale_l sum_a W[m][a] g[a][l], with l innermost (contiguous, vectorised).
    for (int m = 0; m < n; ++m) {
        Real *values = out_values + m * n_l;
        Real *slopes_out = out_derivatives + m * n_l;
        for (int l = 0; l < n_l; ++l) {
            values[l] = 0.0;
            slopes_out[l] = 0.0;
        }
        for (int a = 0; a < n; ++a) {
            const Real w = transform_(m, a);
            const Real *sample = samples.data() + a * n_l;
            const Real *slope = slopes.data() + a * n_l;
            for (int l = 0; l < n_l; ++l) {
                values[l] += w * sample[l];
                slopes_out[l] += w * slope[l];
            }
        }
        for (int l = 0; l < n_l; ++l) {
            values[l] *= l_scales_[l];
            slopes_out[l] *= l_scales_[l];
        }
    }
}

std::shared_ptr<const EquispacedGaussians>
EquispacedGaussians::cached(const RadialSettings &settings) {
    static std::mutex mutex;
    static std::map<std::tuple<Real, int, int, Real>, std::shared_ptr<const EquispacedGaussians>>
        cache;
    const auto key =
        std::make_tuple(settings.cutoff, settings.n_max, settings.l_max, settings.atom_sigma);
    std::lock_guard<std::mutex> lock(mutex);
    auto found = cache.find(key);
    if (found != cache.end()) {
        return found->second;
    }
    if (cache.size() > 64) {
        cache.clear();
    }
    return cache.emplace(key, std::make_shared<const EquispacedGaussians>(settings)).first->second;
}

} // namespace gapx
