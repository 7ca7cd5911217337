// SPDX-License-Identifier: BSD-3-Clause
#pragma once

#include "gapx/types.hpp"

#include <functional>
#include <memory>
#include <vector>

namespace gapx {

/// Cubic Hermite interpolation of n_values functions of d on [0, range], from their exact
/// values and derivatives at n_intervals + 1 equispaced nodes: the interpolant and its
/// derivative are continuous, and the derivative returned is the exact derivative of the value
/// returned (so finite differences of interpolated energies agree with interpolated forces).
class HermiteTable {
  public:
    /// `exact(d, values, derivatives)` fills n_values each; it is called once per node.
    HermiteTable(Real range, int n_intervals, int n_values,
                 const std::function<void(Real, Real *, Real *)> &exact);
    HermiteTable() = default;
    /// Values and d-derivatives at d (clamped to the table), n_values each. Thread-safe.
    void evaluate(Real d, Real *values, Real *derivatives) const;

  private:
    Real spacing_ = 1.0;
    int n_intervals_ = 0;
    int n_values_ = 0;
    // coefficients in t = (d - d_k)/h: [interval][power 0..3][value]
    std::vector<Real> coefficients_;
};

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

/// A radial basis as the spherical expansion sees it: for a neighbour at distance d, the radial
/// integrals \f$ I_{nl}(d) (2l+1)^{-1/4} \f$ of its Gaussian density and their d-derivatives.
/// Implementations are immutable after construction, so one object serves every thread.
class RadialBasis {
  public:
    virtual ~RadialBasis() = default;
    /// \f$ I_{nl}(d) (2l+1)^{-1/4} \f$ and its d-derivative for 0 <= d <= r_c, written as
    /// [n][l] (n_max x (l_max+1), row-major). Does not allocate; thread-safe.
    virtual void evaluate(Real d, Real *values, Real *derivatives) const = 0;
    virtual int n_max() const = 0;
    virtual int n_l() const = 0;
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
class RadialSpline final : public RadialBasis {
  public:
    /// Builds the tables (allocates; ~0.1 s for n_max 12, l_max 6, σ 0.5, r_c 5). Throws
    /// InvalidArgument on bad settings (see check_settings), before allocating anything.
    explicit RadialSpline(const RadialSettings &settings);

    /// Largest n_max accepted. The GTO overlap matrix is too ill-conditioned to orthonormalise
    /// beyond n_max ≈ 28 at any cutoff (≈ 11 at r_c = 20 Å), and the double-double
    /// orthonormalisation costs O(n_max^3) time and O(n_max^2) memory before it can find out;
    /// 64 refuses absurd values at once (0.2 s at most) and leaves room above what works today.
    static constexpr int max_n_max = 64;
    /// Largest spline coefficient table accepted, in bytes: 4 doubles per interval and (n, l).
    /// 500 MB is 1.6e7 tabulated (interval, n, l) entries, 5-15 s of quadrature; the largest
    /// settings in use (r_c 20 Å, σ 0.3 Å, n_max 11, l_max 30: 93 MB, 1.4 s) fit 5 times over,
    /// while r_c 1e4 Å (4.6 GB, minutes of quadrature) is refused at once.
    static constexpr Real max_table_bytes = 5e8;

    /// Spline intervals over [0, r_c] for `settings`: \f$ \max(16, \lceil 128 r_c / σ \rceil)
    /// \f$, as a Real so that absurd ratios cannot overflow. Does not validate.
    static Real intervals(const RadialSettings &settings);
    /// Bytes of the spline coefficient table, \f$ 32\,n_{intervals}\,n_{max} (l_{max}+1) \f$.
    /// Does not validate.
    static Real table_bytes(const RadialSettings &settings);
    /// Checks the settings in O(1), allocating nothing: r_c and σ positive and finite,
    /// 1 <= n_max <= max_n_max, 0 <= l_max <= 30, table_bytes() <= max_table_bytes. Throws
    /// InvalidArgument naming what is too large, the memory it would take and the limit.
    static void check_settings(const RadialSettings &settings);

    const RadialSettings &settings() const { return settings_; }
    int n_max() const override { return settings_.n_max; }
    int n_l() const override { return settings_.l_max + 1; }

    /// Interpolated \f$ I_{nl}(d) (2l+1)^{-1/4} \f$ and its d-derivative for 0 <= d <= r_c,
    /// written as [n][l] (n_max x (l_max+1), row-major) into `values` and `derivatives`. The
    /// factor (2l+1)^{-1/4} is the square root of the power spectrum's 1/sqrt(2l+1), folded into
    /// the density coefficients once. Does not allocate; thread-safe.
    void evaluate(Real d, Real *values, Real *derivatives) const override;

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
    std::vector<Real> nodes_;   // Gauss-Legendre nodes on [-1, 1]
    std::vector<Real> weights_; // and weights
    HermiteTable table_;        // of I_nl (2l+1)^{-1/4}, [n * n_l + l]
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
