// SPDX-License-Identifier: BSD-3-Clause
// The prediction engine's hot loop: the dot-product kernel of descriptor rows against sparse
// points, its local energies and their gradients, in one pass over the points.
#pragma once

#include "gapx/aligned_vector.hpp"
#include "gapx/types.hpp"

#include <string>

namespace gapx::detail {

/// x^p as gapx.kernels.DotProduct._power: small integer powers by multiplication (exact for
/// negative x), std::pow otherwise.
Real kernel_power(Real x, Real p);

/// Doubles per row of dot_kernel_energies' arrays: n_features rounded up to a multiple of 8
/// (one cache line, one AVX-512 vector).
Index padded_stride(Index n_features);

/// Most rows dot_kernel_energies takes in one call: its rows and their gradients (2 x 32 rows of
/// 2 100 features, 1 MB) stay in L2 with a chunk of points while the points stream past.
constexpr Index dot_kernel_max_rows = 32;
/// Points per chunk of the packed layout (a slice of packed points starts at a multiple).
constexpr Index dot_kernel_chunk = 16;

/// Sparse points (n_points x n_features, row-major) as dot_kernel_energies reads them: in chunks
/// of dot_kernel_chunk points, chunk c at c * dot_kernel_chunk * stride, each chunk in feature
/// blocks of 512 (the chunk's points' slices of a block contiguous, point after point), zero
/// beyond n_features. A chunk's dots then read memory in one sequential stream.
AlignedVector<Real> pack_points(const Real *rows, Index n_points, Index n_features);

/// Instruction sets of dot_kernel_energies: "avx512", "avx2" (with FMA) and "generic", the
/// first the CPU has (chosen at run time, so the same CPU always takes the same path and results
/// are reproducible; the paths differ in the order of additions only).
std::string dot_kernel_isa();

/// For rows x_r (n <= dot_kernel_max_rows; row-major, `stride` = padded_stride(F) doubles per
/// row, zero beyond the F features), sparse points p_m as pack_points packs them (or the points
/// from a multiple of dot_kernel_chunk on: packed + m0 * stride), weights a_m, and
/// c_rm = x_r . p_m: adds sum_m a_m c_rm^zeta to energies[r] and writes gradients[r]
/// (n x stride) = sum_m a_m zeta c_rm^(zeta-1) p_m. Each point is loaded from memory once per
/// call and used for both sums while it is in cache (the points of a small molecule's model are
/// tens of MB: streaming them twice is what a call would cost). `isa` forces one of
/// dot_kernel_isa()'s paths (tests compare them); empty: the CPU's best. Throws InvalidArgument
/// for an unknown or unsupported `isa`.
void dot_kernel_energies(const Real *x, Index n, const Real *points, Index n_points,
                         Index stride, const Real *weights, Real zeta, Real *energies,
                         Real *gradients, const std::string &isa = "");

} // namespace gapx::detail
