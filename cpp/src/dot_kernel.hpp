// SPDX-License-Identifier: BSD-3-Clause
// The prediction engine's hot loop: the dot-product kernel of descriptor rows against sparse
// points, its local energies and their gradients, in one pass over the points.
#pragma once

#include "gapx/types.hpp"

namespace gapx::detail {

/// x^p as gapx.kernels.DotProduct._power: small integer powers by multiplication (exact for
/// negative x), std::pow otherwise.
Real kernel_power(Real x, Real p);

/// For rows x_r (n x F, row-major) and sparse points p_m (M x F) with weights a_m, c_rm =
/// x_r . p_m: adds sum_m a_m c_rm^zeta to energies[r] and writes gradients[r] (n x F) = sum_m
/// a_m zeta c_rm^(zeta-1) p_m. Each point is loaded once per call and used for both sums while
/// it is in cache (the points of a small molecule's model are tens of MB: streaming them twice,
/// or packing them for a GEMM, is what a call costs). Uses AVX2 and FMA where the CPU has them
/// (chosen at run time; the same CPU always takes the same path, so results are reproducible).
void dot_kernel_energies(const Real *x, Index n, const Real *points, Index n_points,
                         Index n_features, const Real *weights, Real zeta, Real *energies,
                         Real *gradients);

} // namespace gapx::detail
