// SPDX-License-Identifier: BSD-3-Clause
#include "bindings.hpp"

#include "gapx/neighbors.hpp"

#include <pybind11/eigen.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <array>

namespace py = pybind11;

namespace gapx::bindings {

namespace {

/// A NumPy view of `rows` x `cols` elements of `data` owned by the Python object `owner`, so
/// the arrays stay valid as long as anyone holds them and nothing is copied.
template <typename T>
py::array_t<T> view(const T *data, Index rows, Index cols, const py::handle &owner) {
    const auto item = static_cast<py::ssize_t>(sizeof(T));
    if (cols == 1) {
        return py::array_t<T>({static_cast<py::ssize_t>(rows)}, {item}, data, owner);
    }
    return py::array_t<T>({static_cast<py::ssize_t>(rows), static_cast<py::ssize_t>(cols)},
                          {item * static_cast<py::ssize_t>(cols), item}, data, owner);
}

} // namespace

void bind_neighbors(py::module_ &m) {
    py::class_<NeighborList>(m, "NeighborList",
                             "A full neighbour list of one structure (opaque; see arrays()).")
        .def_readonly("cutoff", &NeighborList::cutoff, "Cutoff (Å) the list was built for.")
        .def_property_readonly("n_pairs", &NeighborList::n_pairs)
        .def(
            "arrays",
            [](const py::object &self) {
                const auto &nl = self.cast<const NeighborList &>();
                const Index n = nl.n_pairs();
                // Views into this object's buffers: read-only, so callers cannot corrupt a list
                // that other terms share.
                py::array arrays[] = {view(nl.first.data(), n, 1, self),
                                      view(nl.second.data(), n, 1, self),
                                      view(nl.shifts.data(), n, 3, self),
                                      view(nl.distances.data(), n, 1, self),
                                      view(nl.vectors.data(), n, 3, self)};
                for (auto &array : arrays) {
                    array.attr("setflags")(py::arg("write") = false);
                }
                return py::make_tuple(arrays[0], arrays[1], arrays[2], arrays[3], arrays[4]);
            },
            R"doc((i, j, S, d, D) as ase.neighborlist does: int64 (n_pairs,), int64 (n_pairs,),
int32 (n_pairs, 3), float64 (n_pairs,), float64 (n_pairs, 3); read-only views (no copy).)doc");

    m.def(
        "build_neighbor_list",
        [](const Eigen::Ref<const Positions> &positions, const Cell &cell,
           const std::array<bool, 3> &pbc, Real cutoff, int n_threads, Index max_bytes) {
            py::gil_scoped_release release;
            return build_neighbor_list(positions, cell, to_pbc(pbc), cutoff, n_threads, max_bytes);
        },
        py::arg("positions"), py::arg("cell"), py::arg("pbc"), py::arg("cutoff"),
        py::arg("n_threads") = 0, py::kw_only(), py::arg("max_bytes") = 0,
        R"doc(Full neighbour list with cell lists (OpenMP over centres, GIL released).

positions (n_atoms, 3) float64 C-contiguous, cell (3, 3) one lattice vector per row, pbc three
bools, cutoff in Å (pairs with d < cutoff). n_threads: 1 .. max(256, 4 x processors), 0 for
OpenMP's default. max_bytes: memory budget of the result (60 bytes per pair), 0 for half of the
physical memory; a larger list raises ValueError before anything is allocated. Returns a
NeighborList.)doc");
}

} // namespace gapx::bindings
