// SPDX-License-Identifier: BSD-3-Clause
#include "gapx/radial_basis.hpp"

#include "gapx/errors.hpp"
#include "gapx/memory.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>

namespace gapx {
namespace {

constexpr Real pi = 3.14159265358979323846;
// Below this argument the scaled Bessel functions come from their (all-positive) power series
// and a downward recurrence; above, from closed forms and the upward recurrence. The upward
// recurrence is accurate to ~1e-15 (against mpmath) once x >= l_top^2 / 2 (and 6), so for small
// l_top it takes over earlier: the series costs tens of divisions per call.
constexpr Real bessel_switch = 50.0;
constexpr Real upward_from(int l_top) {
    const Real quadratic = 0.5 * l_top * l_top;
    return quadratic < 6.0 ? 6.0 : (quadratic > bessel_switch ? bessel_switch : quadratic);
}
// Gauss-Legendre points per panel; panels are at most one σ wide.
constexpr int n_gauss = 16;
// Grid spacing of the spline tables, in units of σ (cubic Hermite error ~ h^4 f''''/384).
constexpr Real spacing_per_sigma = 1.0 / 128.0;

void gauss_legendre(int n, std::vector<Real> &nodes, std::vector<Real> &weights) {
    nodes.resize(n);
    weights.resize(n);
    // Legendre P_n(x) and its derivative by the three-term recurrence.
    const auto legendre = [n](Real x) {
        Real p0 = 1.0;
        Real p1 = x;
        for (int k = 2; k <= n; ++k) {
            const Real p2 = ((2 * k - 1) * x * p1 - (k - 1) * p0) / k;
            p0 = p1;
            p1 = p2;
        }
        return std::pair<Real, Real>{p1, n * (x * p1 - p0) / (x * x - 1.0)};
    };
    for (int i = 0; i < n; ++i) {
        Real x = std::cos(pi * (i + 0.75) / (n + 0.5));
        for (int iter = 0; iter < 100; ++iter) {
            const auto [p, dp] = legendre(x);
            const Real step = p / dp;
            x -= step;
            if (std::abs(step) < 1e-16) {
                break;
            }
        }
        const Real dp = legendre(x).second;
        nodes[i] = x;
        weights[i] = 2.0 / ((1.0 - x * x) * dp * dp);
    }
}

// e^{-x} i_l(x) by its power series
// i_l(x) = x^l/(2l+1)!! sum_k (x^2/2)^k / (k! (2l+3)...(2l+2k+1)),
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
    if (x < upward_from(l_top)) {
        // Miller's algorithm: the downward recurrence i_{l-1} = i_{l+1} + (2l+1)/x i_l (stable
        // for i_l) from an arbitrary start far enough above l_top, normalised by the closed form
        // of i_0. Starting sqrt(40 x) + 10 orders higher leaves < 1e-15 relative error (checked
        // against mpmath for 1 <= x <= 50, l_top <= 31); the start value keeps every iterate
        // finite ((2L+1)!!/x^L < 1e80 here).
        const int start = l_top + static_cast<int>(std::ceil(std::sqrt(40.0 * x))) + 10;
        const Real inv_x = 1.0 / x;
        Real upper = 0.0;
        Real current = 1e-100;
        for (int l = start; l >= 1; --l) {
            const Real lower = upper + (2 * l + 1) * inv_x * current;
            upper = current;
            current = lower;
            if (l - 1 <= l_top) {
                out[l - 1] = current;
            }
            if (l <= l_top) {
                out[l] = upper;
            }
        }
        const Real scale = (1.0 - std::exp(-2.0 * x)) * 0.5 * inv_x / out[0];
        for (int l = 0; l <= l_top; ++l) {
            out[l] *= scale;
        }
        return;
    }
    const Real e2 = std::exp(-2.0 * x);
    const Real inv_x = 1.0 / x;
    out[0] = (1.0 - e2) * 0.5 * inv_x;
    if (l_top == 0) {
        return;
    }
    out[1] = (1.0 + e2) * 0.5 * inv_x - (1.0 - e2) * 0.5 * inv_x * inv_x;
    for (int l = 1; l < l_top; ++l) {
        out[l + 1] = out[l - 1] - (2 * l + 1) * inv_x * out[l];
    }
}

} // namespace detail

namespace detail {
namespace {

// Double-double arithmetic (~32 significant digits), enough for the GTO overlap matrix whose
// condition number reaches 1e16 at n_max = 12 and 1e22 at n_max = 16: in plain double its
// smallest eigenvalues, and therefore S^{-1/2}, would be pure rounding noise.
struct DoubleDouble {
    double hi = 0.0;
    double lo = 0.0;
};
using DD = DoubleDouble;

DD quick_two_sum(double a, double b) {
    const double s = a + b;
    return {s, b - (s - a)};
}

DD two_sum(double a, double b) {
    const double s = a + b;
    const double bb = s - a;
    return {s, (a - (s - bb)) + (b - bb)};
}

DD operator+(DD a, DD b) {
    DD s = two_sum(a.hi, b.hi);
    const DD t = two_sum(a.lo, b.lo);
    s.lo += t.hi;
    s = quick_two_sum(s.hi, s.lo);
    s.lo += t.lo;
    return quick_two_sum(s.hi, s.lo);
}

DD operator-(DD a) { return {-a.hi, -a.lo}; }
DD operator-(DD a, DD b) { return a + (-b); }

DD operator*(DD a, DD b) {
    const double p = a.hi * b.hi;
    double e = std::fma(a.hi, b.hi, -p);
    e += a.hi * b.lo + a.lo * b.hi;
    return quick_two_sum(p, e);
}

DD operator/(DD a, DD b) {
    const double q1 = a.hi / b.hi;
    DD r = a - b * DD{q1, 0.0};
    const double q2 = r.hi / b.hi;
    r = r - b * DD{q2, 0.0};
    const double q3 = r.hi / b.hi;
    return quick_two_sum(q1, q2) + DD{q3, 0.0};
}

DD dd_sqrt(DD a) {
    if (a.hi <= 0.0) {
        return {};
    }
    const double x = std::sqrt(a.hi);
    const DD y{x, 0.0};
    const DD r = a - y * y; // one Newton step doubles the number of correct digits
    return y + DD{r.hi / (2.0 * x), 0.0};
}

DD dd_abs(DD a) { return a.hi < 0.0 ? -a : a; }

} // namespace

RowMatrix lowdin_orthonormalisation(Real cutoff, int n_max) {
    const int n = n_max;
    const DD pi{3.141592653589793116e+00, 1.224646799147353207e-16};
    const DD sqrt_pi = dd_sqrt(pi);
    const DD rc2 = DD{cutoff, 0.0} * DD{cutoff, 0.0};
    // S_nk = 1/2 Γ(q) α^{-q}, q = (n+k+3)/2, α = 1/(2 s_n^2) + 1/(2 s_k^2)
    //      = n_max^2 (m_n + m_k) / (2 r_c^2 m_n m_k),
    // with s_n^2 = r_c^2 m_n / n_max^2 and m = max(n, 1).
    std::vector<DD> a(n * n);
    for (int p = 0; p < n; ++p) {
        for (int k = 0; k < n; ++k) {
            const double mp = std::max(p, 1);
            const double mk = std::max(k, 1);
            const DD alpha = DD{static_cast<double>(n_max) * n_max * (mp + mk), 0.0} /
                             (DD{2.0 * mp * mk, 0.0} * rc2);
            const int twice_q = p + k + 3;
            DD gamma{1.0, 0.0};
            DD power{1.0, 0.0};
            const DD inverse_alpha = DD{1.0, 0.0} / alpha;
            if (twice_q % 2 == 0) { // Γ(q) = (q-1)!
                for (int f = 2; f < twice_q / 2; ++f) {
                    gamma = gamma * DD{static_cast<double>(f), 0.0};
                }
            } else { // Γ(j + 1/2) = (2j-1)!! / 2^j sqrt(pi)
                const int j = twice_q / 2;
                for (int f = 1; f <= 2 * j - 1; f += 2) {
                    gamma = gamma * DD{static_cast<double>(f), 0.0};
                }
                gamma = gamma * DD{std::ldexp(1.0, -j), 0.0} * sqrt_pi;
                power = DD{1.0, 0.0} / dd_sqrt(alpha);
            }
            for (int f = 0; f < twice_q / 2; ++f) {
                power = power * inverse_alpha;
            }
            a[p * n + k] = DD{0.5, 0.0} * gamma * power;
        }
    }
    const std::vector<DD> overlap = a;

    // Cyclic Jacobi rotations: A -> J^T A J until diagonal, V accumulates the eigenvectors.
    std::vector<DD> v(n * n);
    for (int p = 0; p < n; ++p) {
        v[p * n + p] = DD{1.0, 0.0};
    }
    for (int sweep = 0; sweep < 100; ++sweep) {
        DD off{};
        DD diagonal{};
        for (int p = 0; p < n; ++p) {
            diagonal = diagonal + a[p * n + p] * a[p * n + p];
            for (int q = p + 1; q < n; ++q) {
                off = off + a[p * n + q] * a[p * n + q];
            }
        }
        if (off.hi <= 1e-66 * diagonal.hi) {
            break;
        }
        for (int p = 0; p < n; ++p) {
            for (int q = p + 1; q < n; ++q) {
                const DD apq = a[p * n + q];
                const double scale = std::sqrt(std::abs(a[p * n + p].hi * a[q * n + q].hi));
                if (std::abs(apq.hi) <= 1e-40 * scale) {
                    a[p * n + q] = DD{};
                    a[q * n + p] = DD{};
                    continue;
                }
                const DD theta = (a[q * n + q] - a[p * n + p]) / (DD{2.0, 0.0} * apq);
                // t = sign(theta) / (|theta| + sqrt(theta^2 + 1)), ~1/(2 theta) for huge theta
                DD t = std::abs(theta.hi) > 1e30
                           ? DD{1.0, 0.0} / (DD{2.0, 0.0} * dd_abs(theta))
                           : DD{1.0, 0.0} /
                                 (dd_abs(theta) + dd_sqrt(theta * theta + DD{1.0, 0.0}));
                if (theta.hi < 0.0) {
                    t = -t;
                }
                const DD c = DD{1.0, 0.0} / dd_sqrt(t * t + DD{1.0, 0.0});
                const DD s = t * c;
                for (int k = 0; k < n; ++k) { // columns p, q
                    const DD akp = a[k * n + p];
                    const DD akq = a[k * n + q];
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for (int k = 0; k < n; ++k) { // rows p, q
                    const DD apk = a[p * n + k];
                    const DD aqk = a[q * n + k];
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                a[p * n + q] = DD{};
                a[q * n + p] = DD{};
                for (int k = 0; k < n; ++k) {
                    const DD vkp = v[k * n + p];
                    const DD vkq = v[k * n + q];
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    std::vector<DD> inv_sqrt(n);
    for (int q = 0; q < n; ++q) {
        if (!(a[q * n + q].hi > 0.0)) {
            throw InvalidArgument("the GTO overlap matrix is numerically singular for n_max = " +
                                  std::to_string(n_max) + "; use a smaller n_max");
        }
        inv_sqrt[q] = DD{1.0, 0.0} / dd_sqrt(a[q * n + q]);
    }
    std::vector<DD> w(n * n);
    for (int p = 0; p < n; ++p) {
        for (int k = 0; k < n; ++k) {
            DD sum{};
            for (int q = 0; q < n; ++q) {
                sum = sum + v[p * n + q] * v[k * n + q] * inv_sqrt[q];
            }
            w[p * n + k] = sum;
        }
    }
    // W S W must be the identity; refuse a basis whose orthonormalisation lost its accuracy.
    double worst = 0.0;
    for (int p = 0; p < n; ++p) {
        for (int k = 0; k < n; ++k) {
            DD sum{};
            for (int x = 0; x < n; ++x) {
                DD row{};
                for (int y = 0; y < n; ++y) {
                    row = row + overlap[x * n + y] * w[y * n + k];
                }
                sum = sum + w[p * n + x] * row;
            }
            worst = std::max(worst, std::abs(sum.hi + sum.lo - (p == k ? 1.0 : 0.0)));
        }
    }
    if (!(worst < 1e-12)) {
        throw InvalidArgument("n_max = " + std::to_string(n_max) +
                              " is too large: the GTO overlap matrix is too ill-conditioned to "
                              "orthonormalise accurately");
    }
    RowMatrix out(n, n);
    for (int p = 0; p < n; ++p) {
        for (int k = 0; k < n; ++k) {
            out(p, k) = w[p * n + k].hi + w[p * n + k].lo;
        }
    }
    return out;
}

} // namespace detail

Real RadialSpline::intervals(const RadialSettings &settings) {
    return std::max(16.0, std::ceil(settings.cutoff / (settings.atom_sigma * spacing_per_sigma)));
}

Real RadialSpline::table_bytes(const RadialSettings &settings) {
    return intervals(settings) * 4.0 * static_cast<Real>(settings.n_max) *
           static_cast<Real>(settings.l_max + 1) * static_cast<Real>(sizeof(Real));
}

void RadialSpline::check_settings(const RadialSettings &settings) {
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
    if (n_max > max_n_max) {
        // a, v, w and the overlap: four n_max x n_max double-double matrices.
        const Real bytes = 4.0 * 16.0 * static_cast<Real>(n_max) * static_cast<Real>(n_max);
        throw InvalidArgument(
            "n_max = " + std::to_string(n_max) + " is too large (at most " +
            std::to_string(max_n_max) +
            "): orthonormalising the radial basis would take " + detail::format_bytes(bytes) +
            " and O(n_max^3) time, and the Gaussian-type basis cannot be orthonormalised "
            "accurately beyond n_max ~ 28 at any cutoff");
    }
    const Real bytes = table_bytes(settings);
    if (!(bytes <= max_table_bytes)) {
        throw InvalidArgument(
            "the radial spline table for cutoff " + detail::format_real(rc) +
            " Å, atom_sigma " + detail::format_real(sigma) + " Å, n_max " +
            std::to_string(n_max) + " and l_max " + std::to_string(l_max) + " would have " +
            detail::format_count(intervals(settings)) + " intervals (cutoff / atom_sigma x 128) " +
            "for " + std::to_string(n_max * (l_max + 1)) + " radial functions and take " +
            detail::format_bytes(bytes) + " (limit " + detail::format_bytes(max_table_bytes) +
            "); use a smaller cutoff / atom_sigma ratio, n_max or l_max");
    }
}

RadialSpline::RadialSpline(const RadialSettings &settings) : settings_(settings) {
    check_settings(settings);
    const Real rc = settings.cutoff;
    const int n_max = settings.n_max;
    const int l_max = settings.l_max;

    widths_.resize(n_max);
    for (int k = 0; k < n_max; ++k) {
        widths_[k] = rc * std::max(std::sqrt(static_cast<Real>(k)), 1.0) / n_max;
    }
    transform_ = detail::lowdin_orthonormalisation(rc, n_max);

    gauss_legendre(n_gauss, nodes_, weights_);

    const int n_l = l_max + 1;
    std::vector<Real> scale(n_l);
    for (int l = 0; l < n_l; ++l) {
        scale[l] = std::pow(2.0 * l + 1.0, -0.25);
    }
    table_ = HermiteTable(rc, static_cast<int>(intervals(settings)), n_max * n_l,
                          [&](Real d, Real *values, Real *slopes) {
                              exact(d, values, slopes);
                              for (int nl = 0; nl < n_max * n_l; ++nl) {
                                  values[nl] *= scale[nl % n_l];
                                  slopes[nl] *= scale[nl % n_l];
                              }
                          });
}

void RadialSpline::evaluate(Real d, Real *out_values, Real *out_derivatives) const {
    table_.evaluate(d, out_values, out_derivatives);
}

HermiteTable::HermiteTable(Real range, int n_intervals, int n_values,
                           const std::function<void(Real, Real *, Real *)> &exact)
    : spacing_(range / n_intervals), n_intervals_(n_intervals), n_values_(n_values) {
    const int n = n_values;
    std::vector<Real> values(static_cast<size_t>(n_intervals + 1) * n);
    std::vector<Real> slopes(static_cast<size_t>(n_intervals + 1) * n);
    for (int k = 0; k <= n_intervals; ++k) {
        exact(k * spacing_, values.data() + static_cast<size_t>(k) * n,
              slopes.data() + static_cast<size_t>(k) * n);
    }
    coefficients_.assign(static_cast<size_t>(n_intervals) * 4 * n, 0.0);
    for (int k = 0; k < n_intervals; ++k) {
        Real *a = coefficients_.data() + static_cast<size_t>(k) * 4 * n;
        const Real *y = values.data() + static_cast<size_t>(k) * n;
        const Real *m = slopes.data() + static_cast<size_t>(k) * n;
        for (int v = 0; v < n; ++v) {
            const Real y0 = y[v];
            const Real y1 = y[n + v];
            const Real m0 = m[v] * spacing_;
            const Real m1 = m[n + v] * spacing_;
            a[v] = y0;
            a[n + v] = m0;
            a[2 * n + v] = 3.0 * (y1 - y0) - 2.0 * m0 - m1;
            a[3 * n + v] = 2.0 * (y0 - y1) + m0 + m1;
        }
    }
}

void HermiteTable::evaluate(Real d, Real *out_values, Real *out_derivatives) const {
    const int n = n_values_;
    const Real x = d / spacing_;
    int k = static_cast<int>(x);
    if (k >= n_intervals_) {
        k = n_intervals_ - 1;
    }
    if (k < 0) {
        k = 0;
    }
    const Real t = x - k;
    const Real inv_h = 1.0 / spacing_;
    const Real *a0 = coefficients_.data() + static_cast<size_t>(k) * 4 * n;
    const Real *a1 = a0 + n;
    const Real *a2 = a1 + n;
    const Real *a3 = a2 + n;
    for (int v = 0; v < n; ++v) {
        out_values[v] = a0[v] + t * (a1[v] + t * (a2[v] + t * a3[v]));
        out_derivatives[v] = (a1[v] + t * (2.0 * a2[v] + 3.0 * t * a3[v])) * inv_h;
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
