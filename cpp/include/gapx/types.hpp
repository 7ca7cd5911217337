// SPDX-License-Identifier: BSD-3-Clause
#pragma once

#include <Eigen/Core>
#include <cstdint>

namespace gapx {

using Real = double;
using Index = std::int64_t;

/// Row-major so that NumPy (C order) arrays bind without a hidden copy.
using Positions = Eigen::Matrix<Real, Eigen::Dynamic, 3, Eigen::RowMajor>;
/// One lattice vector per row, in Å.
using Cell = Eigen::Matrix<Real, 3, 3, Eigen::RowMajor>;
using Vector3 = Eigen::Matrix<Real, 3, 1>;
using RowMatrix = Eigen::Matrix<Real, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Shifts = Eigen::Matrix<std::int32_t, Eigen::Dynamic, 3, Eigen::RowMajor>;

/// Periodicity along each lattice vector.
struct Pbc {
    bool x = false;
    bool y = false;
    bool z = false;
    bool operator[](int k) const { return k == 0 ? x : (k == 1 ? y : z); }
};

} // namespace gapx
