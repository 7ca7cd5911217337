// SPDX-License-Identifier: BSD-3-Clause
#pragma once

#include "gapx/types.hpp"

#include <memory>
#include <vector>

namespace gapx {

/// Settings that fix the radial integrals I_nl(d); two RadialSpline objects built from equal
/// settings are identical, which lets them be cached and shared between threads.
struct RadialSettings {
    Real cutoff = 5.0;     ///< r_c, Å
    int n_max = 8;         ///< number of radial functions
    int l_max = 6;         ///< largest angular momentum
    Real atom_sigma = 0.5; ///< Gaussian width σ of each atom's density, Å

    bool operator==(const RadialSettings &other) const {
        return cutoff == other.cutoff && n_max == other.n_max && l_max == other.l_max &&
               atom_sigma == other.atom_sigma;
    }
};

/// The Löwdin-orthonormalised GTO radial basis and its Gaussian-density radial integrals.
///
/// Basis: \f$ \phi_n(r) = r^n e^{-r^2/(2 s_n^2)} \f$ with \f$ s_n = r_c \max(\sqrt n, 1)/n_{max}
/// \f$, orthonormalised on \f$[0,\infty)\f$ with weight \f$r^2\f$:
/// \f$ R_n = \sum_k (S^{-1/2})_{nk} \phi_k \f$ (complete as n_max grows, so the power spectrum
/// converges to the basis-independent SOAP). The radial integral of a Gaussian of width σ at
/// distance d is
/// \f$ I_{nl}(d) = 4\pi e^{-d^2/2\sigma^2} \int_0^\infty r^2 R_n(r) e^{-r^2/2\sigma^2}
///     i_l(r d/\sigma^2)\,dr \f$.
///
/// Why a spline: the exact integral needs a quadrature of a few hundred points, each with a
/// modified spherical Bessel recurrence, per pair and per (n, l) -- thousands of times the cost
/// of the rest of the per-pair work. It is therefore evaluated once per settings on a fine grid
/// over [0, r_c] (Gauss-Legendre quadrature, exponentially scaled Bessel functions so nothing
/// overflows) together with its exact d-derivative, and interpolated by cubic Hermite
/// polynomials: the interpolant and its derivative are continuous, its derivative is the exact
/// derivative of what is evaluated (so finite differences agree to rounding), and with the
/// chosen grid spacing (σ/128) the interpolation error is ~1e-11 of the largest value (~1e-8
/// for the derivative), far below the descriptor accuracy anyone needs.
class RadialSpline {
  public:
    /// Builds the tables (allocates; ~0.3 s for n_max 12, l_max 6, σ 0.5). Throws
    /// InvalidArgument on bad settings.
    explicit RadialSpline(const RadialSettings &settings);

    const RadialSettings &settings() const { return settings_; }
    int n_max() const { return settings_.n_max; }
    int n_l() const { return settings_.l_max + 1; }

    /// Interpolated \f$ I_{nl}(d) (2l+1)^{-1/4} \f$ and its d-derivative for 0 <= d <= r_c,
    /// written as [n][l] (n_max x (l_max+1), row-major) into `values` and `derivatives`. The
    /// factor (2l+1)^{-1/4} is the square root of the power spectrum's 1/sqrt(2l+1), folded into
    /// the density coefficients once. Does not allocate; thread-safe.
    void evaluate(Real d, Real *values, Real *derivatives) const;

    /// The same quantities without the (2l+1)^{-1/4} factor, computed by quadrature (slow; for
    /// tests and table construction). Does not allocate beyond small local buffers.
    void exact(Real d, Real *values, Real *derivatives) const;

    /// S^{-1/2}, the Löwdin orthonormalisation (n_max x n_max, row n = coefficients of R_n).
    const RowMatrix &orthonormalisation() const { return transform_; }

    /// Returns a shared table for these settings, building it once per process (thread-safe).
    static std::shared_ptr<const RadialSpline> cached(const RadialSettings &settings);

  private:
    RadialSettings settings_;
    RowMatrix transform_;      // S^{-1/2}
    std::vector<Real> widths_; // s_k
    Real spacing_ = 0.0;       // grid spacing h
    int n_intervals_ = 0;
    // Hermite coefficients in t = (d - d_k)/h: [interval][power 0..3][n * n_l + l]
    std::vector<Real> coefficients_;
    std::vector<Real> nodes_;   // Gauss-Legendre nodes on [-1, 1]
    std::vector<Real> weights_; // and weights
};

namespace detail {
/// Exponentially scaled modified spherical Bessel functions \f$ e^{-x} i_l(x) \f$ for
/// l = 0 .. l_top written to out[0 .. l_top], x >= 0 (series + downward recurrence for x < 50,
/// closed forms + upward recurrence above, where it is stable for l_top up to ~30).
void scaled_bessel_i(Real x, int l_top, Real *out);

/// S^{-1/2} of the GTO overlap matrix (n_max x n_max), computed in double-double arithmetic
/// (closed-form overlaps, Jacobi eigen-decomposition) because S is extremely ill-conditioned
/// (condition number ~1e16 at n_max = 12). Throws InvalidArgument when even that is not enough.
RowMatrix lowdin_orthonormalisation(Real cutoff, int n_max);
} // namespace detail

} // namespace gapx
