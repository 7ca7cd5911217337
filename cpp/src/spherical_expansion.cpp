// SPDX-License-Identifier: BSD-3-Clause
#include "gapx/cutoff.hpp"
#include "gapx/equispaced_gaussians.hpp"
#include "gapx/errors.hpp"
#include "gapx/soap.hpp"

#include <algorithm>
#include <cmath>
#include <string>

namespace gapx {
namespace {

RadialSettings radial_settings(const SoapOptions &options) {
    RadialSettings settings;
    settings.cutoff = options.cutoff;
    settings.n_max = options.n_max;
    settings.l_max = options.l_max;
    settings.atom_sigma = options.atom_sigma;
    return settings;
}

std::shared_ptr<const RadialBasis> radial_basis(const SoapOptions &options) {
    if (options.radial_basis == RadialBasisKind::quip) {
        return EquispacedGaussians::cached(radial_settings(options));
    }
    return RadialSpline::cached(radial_settings(options));
}

} // namespace

SphericalExpansion::SphericalExpansion(const SoapOptions &options)
    : options_(options), radial_(radial_basis(options)),
      harmonics_(options.l_max) {
    // The centre's own Gaussian sits at d = 0, where only l = 0 survives:
    // w_c I_n0(0) Y_00 with Y_00 = 1/sqrt(4 pi); the (2l+1)^{-1/4} factor is 1 at l = 0.
    const int n_max = options.n_max;
    std::vector<Real> values(n_max * n_l());
    std::vector<Real> slopes(n_max * n_l());
    radial_->evaluate(0.0, values.data(), slopes.data());
    central_.resize(n_max);
    const Real y00 = 0.5 / std::sqrt(3.14159265358979323846);
    for (int n = 0; n < n_max; ++n) {
        central_[n] = options.central_weight * values[n * n_l()] * y00;
    }
}

template <bool Gradients>
void SphericalExpansion::compute(Index center, int center_species, const NeighborList &neighbors,
                                 Index begin, Index end, const int *species_of_atom,
                                 Workspace &ws) const {
    const int n_max = options_.n_max;
    const int n_l = this->n_l();
    const int n_lm = this->n_lm();
    const int n_nl = n_max * n_l;
    const int n_local = static_cast<int>(end - begin);
    const Real cutoff = options_.cutoff;
    const Real width = options_.transition_width;

    ws.coefficients.assign(static_cast<size_t>(n_channels()) * n_lm, 0.0);
    if (ws.radial.size() < static_cast<size_t>(n_local) * n_nl) {
        const size_t grow = static_cast<size_t>(n_local) * 3 / 2 + 8;
        ws.radial.resize(grow * n_nl);
        ws.dradial.resize(grow * n_nl);
        ws.harmonics.resize(grow * n_lm);
        ws.units.resize(grow * 3);
        ws.species.resize(grow);
        if (Gradients) {
            ws.dharmonics.resize(grow * 3 * n_lm);
        }
    }
    if (Gradients && ws.dharmonics.size() < ws.harmonics.size() * 3) {
        ws.dharmonics.resize(ws.harmonics.size() * 3);
    }
    const size_t scratch_size = harmonics_.scratch_size() + 3 * n_lm;
    if (ws.scratch.size() < scratch_size) {
        ws.scratch.resize(scratch_size);
    }
    Real *gradient_z = ws.scratch.data() + harmonics_.scratch_size();

    for (int k = 0; k < n_local; ++k) {
        const Index pair = begin + k;
        const Index j = neighbors.second[pair];
        const Real d = neighbors.distances[pair];
        if (!(d > 1e-10)) {
            throw InvalidArgument("atoms " + std::to_string(center) + " and " +
                                  std::to_string(j) + " overlap (distance " + std::to_string(d) +
                                  " Å): the SOAP density direction is undefined");
        }
        const int s = species_of_atom[j];
        ws.species[k] = s;
        Real *u = ws.units.data() + 3 * k;
        const Real inv_d = 1.0 / d;
        for (int a = 0; a < 3; ++a) {
            u[a] = neighbors.vectors(pair, a) * inv_d;
        }
        Real fc = 0.0;
        Real dfc = 0.0;
        cosine_cutoff(d, cutoff, width, fc, dfc);
        Real *radial = ws.radial.data() + static_cast<size_t>(k) * n_nl;
        Real *dradial = ws.dradial.data() + static_cast<size_t>(k) * n_nl;
        radial_->evaluate(d, radial, dradial);
        for (int nl = 0; nl < n_nl; ++nl) {
            dradial[nl] = fc * dradial[nl] + dfc * radial[nl];
            radial[nl] *= fc;
        }
        Real *harmonics = ws.harmonics.data() + static_cast<size_t>(k) * n_lm;
        if constexpr (Gradients) {
            Real *dharmonics = ws.dharmonics.data() + static_cast<size_t>(k) * 3 * n_lm;
            harmonics_.compute(u, harmonics, gradient_z, ws.scratch.data());
            // dY(D/d)/dD = (grad Z(u) - l Y(u) u) / d
            for (int l = 0; l < n_l; ++l) {
                for (int lm = l * l; lm < (l + 1) * (l + 1); ++lm) {
                    for (int a = 0; a < 3; ++a) {
                        dharmonics[a * n_lm + lm] =
                            (gradient_z[a * n_lm + lm] - l * harmonics[lm] * u[a]) * inv_d;
                    }
                }
            }
        } else {
            harmonics_.compute(u, harmonics, ws.scratch.data());
        }
        // c[s n][lm] += R_nl Y_lm
        Real *c = ws.coefficients.data() + static_cast<size_t>(s) * n_max * n_lm;
        for (int n = 0; n < n_max; ++n) {
            Real *cn = c + n * n_lm;
            const Real *rn = radial + n * n_l;
            for (int l = 0; l < n_l; ++l) {
                const Real r = rn[l];
                for (int lm = l * l; lm < (l + 1) * (l + 1); ++lm) {
                    cn[lm] += r * harmonics[lm];
                }
            }
        }
    }
    if (options_.central_weight != 0.0) {
        Real *c = ws.coefficients.data() + static_cast<size_t>(center_species) * n_max * n_lm;
        for (int n = 0; n < n_max; ++n) {
            c[n * n_lm] += central_[n];
        }
    }
}

template void SphericalExpansion::compute<true>(Index, int, const NeighborList &, Index, Index,
                                                const int *, Workspace &) const;
template void SphericalExpansion::compute<false>(Index, int, const NeighborList &, Index, Index,
                                                 const int *, Workspace &) const;

} // namespace gapx
