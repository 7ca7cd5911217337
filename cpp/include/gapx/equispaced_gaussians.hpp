// SPDX-License-Identifier: BSD-3-Clause
#pragma once

#include "gapx/radial_basis.hpp"
#include "gapx/types.hpp"

#include <memory>
#include <vector>

namespace gapx {

/// QUIP's default SOAP radial basis ("equispaced Gaussians"), tabulated from its exact form.
///
/// Grid: r_a = a r_h / n_max, a = 0 .. n_max-1, with r_h = r_c + σ sqrt(2 · 10 · ln 10) (where
/// a Gaussian density at the cutoff has fallen to 1e-10). The radial density of a neighbour at
/// distance d in channel l, \f$ g_{al}(d) = 4\pi e^{-\alpha(d^2 + r_a^2)} i_l(2\alpha d r_a) \f$
/// with \f$ \alpha = 1/(2\sigma^2) \f$, is sampled on the grid, read as the coefficients of an
/// expansion in the Gaussians \f$ \phi_a(r) = e^{-\alpha(r - r_a)^2} \f$ by solving the
/// collocation system \f$ G_{ab} = \phi_b(r_a) \f$, and projected on the basis orthonormalised
/// by the Cholesky factor of their overlap \f$ S_{ab} = \int_0^\infty r^2 \phi_a \phi_b\,dr =
/// L L^T \f$: \f$ I_{nl}(d) = \sum_a W_{na} g_{al}(d) \f$ with \f$ W = L^T G^{-1} \f$, the same
/// matrix for every l. This reproduces quippy's `soap` descriptor to rounding (found by
/// comparing numbers with quippy; derived from the mathematics, not from QUIP's code).
///
/// The exact I_nl(d) (n_max scaled Bessel evaluations and an n_max x n_max product, ~2 µs) is
/// tabulated once per settings and interpolated (HermiteTable) on a grid eight times finer than
/// the GTO basis's (σ/1024), divided by the envelope \f$ E(d) = \sum_a e^{-\alpha(d - r_a)^2}
/// \f$, evaluated exactly per pair: I / E is O(1) wherever I is not (with few grid points I
/// spans many orders of magnitude over [0, r_c], and a spline's error, relative to the largest
/// value, would then be large relative to the small ones). The interpolation error, ~h^4, is
/// below 1e-14, so descriptors equal quippy's to ~1e-14 (σ 0.5; at most 2e-13 over σ 0.3-0.8,
/// r_c 3-6 Å, n_max 1-12) at about a spline's cost per pair.
class EquispacedGaussians final : public RadialBasis {
  public:
    /// Largest n_max accepted (the per-pair buffers live on the stack).
    static constexpr int max_n_max = 64;
    /// Largest l_max accepted, as for the GTO basis.
    static constexpr int max_l_max = 30;
    /// Largest table accepted, in bytes (as RadialSpline::max_table_bytes).
    static constexpr Real max_table_bytes = RadialSpline::max_table_bytes;
    /// Interpolation intervals over [0, r_c]: max(16, ceil(1024 r_c / σ)), as a Real.
    static Real intervals(const RadialSettings &settings);

    /// Throws InvalidArgument on bad settings (r_c, σ positive and finite, 1 <= n_max <=
    /// max_n_max, 0 <= l_max <= max_l_max) or when S or G is numerically singular (Gaussians
    /// much wider than the grid spacing).
    explicit EquispacedGaussians(const RadialSettings &settings);
    /// The settings checks alone, O(1), allocating nothing.
    static void check_settings(const RadialSettings &settings);

    void evaluate(Real d, Real *values, Real *derivatives) const override;
    /// The same without interpolation (slow; tabulation and tests).
    void exact(Real d, Real *values, Real *derivatives) const;
    int n_max() const override { return settings_.n_max; }
    int n_l() const override { return settings_.l_max + 1; }

    /// The grid radii r_a (n_max) and W = L^T G^{-1} (n_max x n_max).
    const std::vector<Real> &radii() const { return radii_; }
    const RowMatrix &transform() const { return transform_; }

    /// Returns a shared basis for these settings, building it once per process (thread-safe).
    static std::shared_ptr<const EquispacedGaussians> cached(const RadialSettings &settings);

  private:
    /// E(d) and dE/dd (see the class comment).
    void envelope(Real d, Real &value, Real &derivative) const;

    RadialSettings settings_;
    std::vector<Real> radii_;
    std::vector<Real> l_scales_;    // (2l+1)^{-1/4}
    std::vector<Real> inverse_odd_; // 1/(2l+1)
    RowMatrix transform_;
    HermiteTable table_;
};

} // namespace gapx
