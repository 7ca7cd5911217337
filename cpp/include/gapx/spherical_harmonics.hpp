// SPDX-License-Identifier: BSD-3-Clause
#pragma once

#include "gapx/types.hpp"

#include <vector>

namespace gapx {

/// Real orthonormal spherical harmonics Y_lm up to l_max, and their Cartesian gradients.
///
/// Index lm = l^2 + l + m (m = -l..l), (l_max+1)^2 entries. Convention (no Condon-Shortley
/// phase): \f$ Y_{l0} = N_{l0} P_l^0 \f$, \f$ Y_{lm} = \sqrt2 N_{lm} P_l^m \cos m\varphi \f$ and
/// \f$ Y_{l,-m} = \sqrt2 N_{lm} P_l^m \sin m\varphi \f$ for m > 0, with
/// \f$ N_{lm} = \sqrt{(2l+1)/(4\pi)\,(l-m)!/(l+m)!} \f$. The power spectrum does not depend on
/// this choice. They are evaluated as solid harmonics \f$ Z_{lm}(\mathbf r) = r^l Y_{lm} \f$,
/// polynomials built by recursion in (x, y, z), whose gradients follow from
/// \f$ \partial_z Q_l^m = (l+m) Q_{l-1}^m \f$ and \f$ \partial_x Q_l^m = -x Q_{l-1}^{m+1} \f$ for
/// the z-dependent factor and \f$ \partial (x + iy)^m = m (x + iy)^{m-1} (1, i) \f$ for the other.
class SphericalHarmonics {
  public:
    /// Precomputes the normalisation constants (allocates).
    explicit SphericalHarmonics(int l_max);

    int l_max() const { return l_max_; }
    int size() const { return (l_max_ + 1) * (l_max_ + 1); }

    /// Y_lm(u) for a unit vector u into `values` (size()), and the gradient of the solid
    /// harmonic \f$ \nabla Z_{lm} \f$ at u into `gradients` laid out [3][size()]. The gradient of
    /// \f$ Y_{lm}(\mathbf D/|\mathbf D|) \f$ with respect to D is then
    /// \f$ (\nabla Z_{lm}(u) - l\,Y_{lm}(u)\,u) / |\mathbf D| \f$. `scratch` must hold
    /// scratch_size() values. Does not allocate; thread-safe.
    void compute(const Real u[3], Real *values, Real *gradients, Real *scratch) const;

    /// Values only.
    void compute(const Real u[3], Real *values, Real *scratch) const;

    int scratch_size() const { return (l_max_ + 2) * (l_max_ + 2) + 2 * (l_max_ + 2); }

  private:
    template <bool Gradients>
    void compute_impl(const Real u[3], Real *values, Real *gradients, Real *scratch) const;

    int l_max_;
    std::vector<Real> norm_; // [l][m], m = 0..l: N_lm (times sqrt 2 for m > 0)
};

} // namespace gapx
