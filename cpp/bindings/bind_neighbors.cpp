// SPDX-License-Identifier: BSD-3-Clause
#include "bindings.hpp"
#include "convert.hpp"

#include "gapx/neighbors.hpp"

#include <pybind11/eigen.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <array>

namespace py = pybind11;

namespace gapx::bindings {

void bind_neighbors(py::module_ &m) {
    m.def(
        "neighbor_list",
        [](const Eigen::Ref<const Positions> &positions, const Cell &cell,
           const std::array<bool, 3> &pbc, Real cutoff, int n_threads, Index max_bytes) {
            NeighborList nl;
            {
                py::gil_scoped_release release;
                nl = build_neighbor_list(positions, cell, Pbc{pbc[0], pbc[1], pbc[2]}, cutoff,
                                         n_threads, max_bytes);
            }
            return py::make_tuple(to_numpy(std::move(nl.first)), to_numpy(std::move(nl.second)),
                                  py::array(py::cast(std::move(nl.shifts))),
                                  to_numpy(std::move(nl.distances)),
                                  py::array(py::cast(std::move(nl.vectors))));
        },
        py::arg("positions"), py::arg("cell"), py::arg("pbc"), py::arg("cutoff"),
        py::arg("n_threads") = 0, py::kw_only(), py::arg("max_bytes") = 0,
        R"doc(Full neighbour list with cell lists (OpenMP over centres, GIL released).

positions (n_atoms, 3) float64 C-contiguous, cell (3, 3) one lattice vector per row, pbc three
bools, cutoff in Å (pairs with d < cutoff). n_threads: 1 .. max(256, 4 x processors), 0 for
OpenMP's default. max_bytes: memory budget of the result (60 bytes per pair), 0 for half of the
physical memory; a larger list raises ValueError before anything is allocated. Returns (i, j, S, d, D) as ase.neighborlist does:
int64 (n_pairs,), int64 (n_pairs,), int32 (n_pairs, 3), float64 (n_pairs,), float64 (n_pairs, 3).)doc");
}

} // namespace gapx::bindings
