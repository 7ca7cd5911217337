// SPDX-License-Identifier: BSD-3-Clause
#pragma once

#include "gapx/types.hpp"

#include <vector>

namespace gapx {

/// A full neighbour list: every pair appears as i→j and j→i.
///
/// Pair k connects centre `first[k]` to neighbour `second[k]` in the periodic image
/// `shifts.row(k)` (integer multiples of the lattice vectors), with
/// `vectors.row(k) = r[second] - r[first] + shifts.row(k) * cell` (Å) and `distances[k]` its norm.
/// Pairs are grouped by centre in increasing order, which lets callers slice per centre.
/// `cutoff` (Å) is the radius the list was built for: every pair closer than it is listed.
struct NeighborList {
    Real cutoff = 0.0;
    std::vector<Index> first;
    std::vector<Index> second;
    Shifts shifts;
    Positions vectors;
    std::vector<Real> distances;

    Index n_pairs() const { return static_cast<Index>(first.size()); }
};

/// Builds the full neighbour list of all pairs closer than `cutoff` (strictly) with O(N) cell
/// lists, in parallel over centres.
///
/// `positions` (n_atoms x 3, Å) need not lie inside the cell. `cell` holds one lattice vector per
/// row; only the periodic rows are used, and they must be linearly independent. The cutoff may
/// exceed the cell, in which case several images (including an atom's own) are listed.
/// `n_threads` 0 uses OpenMP's default (see resolve_threads). Allocates the result, 60 bytes per
/// pair; `max_bytes` bounds it (0: default_memory_budget(), half of the physical memory): the
/// expected size is estimated in O(1) before anything is allocated or scanned, and the exact size
/// is checked again after the counting pass, before the output is allocated. Throws
/// InvalidArgument on bad input, including a negative `n_threads` or one above max_threads(), a
/// negative `max_bytes`, a neighbour list larger than the budget, a search that would examine
/// more than 4e10 bins and candidates, and shifts outside the int32 range (atoms ~1e9 cells from
/// the cell).
NeighborList build_neighbor_list(const Eigen::Ref<const Positions> &positions, const Cell &cell,
                                 Pbc pbc, Real cutoff, int n_threads = 0, Index max_bytes = 0);

} // namespace gapx
