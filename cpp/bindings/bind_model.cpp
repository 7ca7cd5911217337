// SPDX-License-Identifier: BSD-3-Clause
#include "bindings.hpp"

#include "dot_kernel.hpp"
#include "gapx/errors.hpp"
#include "gapx/model.hpp"

#include <pybind11/eigen.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

namespace py = pybind11;

namespace gapx::bindings {
namespace {

ModelFileContents contents_from(const std::string &header, const py::dict &arrays) {
    ModelFileContents contents;
    contents.header = Json::parse(header);
    for (const auto &[key, value] : arrays) {
        const auto array =
            py::array_t<Real, py::array::c_style | py::array::forcecast>::ensure(value);
        if (!array) {
            throw InvalidArgument("array '" + key.cast<std::string>() + "' is not numeric");
        }
        ModelArray out;
        for (py::ssize_t d = 0; d < array.ndim(); ++d) {
            out.shape.push_back(static_cast<Index>(array.shape(d)));
        }
        out.data.assign(array.data(), array.data() + array.size());
        contents.arrays.emplace(key.cast<std::string>(), std::move(out));
    }
    return contents;
}

py::tuple to_python(ModelOutput &out, bool per_atom_virial) {
    if (per_atom_virial) {
        return py::make_tuple(out.energy, std::move(out.energies), std::move(out.dE_dr),
                              out.dE_dstrain, std::move(out.atom_virial));
    }
    return py::make_tuple(out.energy, std::move(out.energies), std::move(out.dE_dr),
                          out.dE_dstrain);
}

/// The engine's dot kernel on NumPy rows (padded and packed here), for tests of each
/// instruction-set path.
py::tuple dot_kernel(const RowMatrix &x, const RowMatrix &points, const Eigen::VectorXd &weights,
                     Real zeta, const std::string &isa) {
    const Index n_feat = x.cols();
    if (points.cols() != n_feat || weights.size() != points.rows()) {
        throw InvalidArgument("x, points and weights do not match");
    }
    const Index stride = detail::padded_stride(n_feat);
    auto padded = [&](const RowMatrix &a) {
        AlignedVector<Real> out(static_cast<size_t>(a.rows() * stride), 0.0);
        for (Index r = 0; r < a.rows(); ++r) {
            std::copy_n(a.row(r).data(), n_feat, out.data() + r * stride);
        }
        return out;
    };
    const AlignedVector<Real> xs = padded(x);
    const AlignedVector<Real> ps = detail::pack_points(points.data(), points.rows(), n_feat);
    Eigen::VectorXd energies = Eigen::VectorXd::Zero(x.rows());
    RowMatrix gradients(x.rows(), n_feat);
    AlignedVector<Real> g(static_cast<size_t>(detail::dot_kernel_max_rows * stride));
    for (Index r0 = 0; r0 < x.rows(); r0 += detail::dot_kernel_max_rows) {
        const Index n = std::min(detail::dot_kernel_max_rows, x.rows() - r0);
        detail::dot_kernel_energies(xs.data() + r0 * stride, n, ps.data(), points.rows(), stride,
                                    weights.data(), zeta, energies.data() + r0, g.data(), isa);
        for (Index r = 0; r < n; ++r) {
            std::copy_n(g.data() + r * stride, n_feat, gradients.row(r0 + r).data());
        }
    }
    return py::make_tuple(energies, gradients);
}

} // namespace

void bind_model(py::module_ &m) {
    m.attr("MODEL_FORMAT_VERSION") = model_format_version;
    m.attr("DOT_KERNEL_ISA") = detail::dot_kernel_isa();
    m.def("_dot_kernel", &dot_kernel, py::arg("x"), py::arg("points"), py::arg("weights"),
          py::arg("zeta"), py::arg("isa") = "",
          "(energies sum_m w_m (x_r . p_m)^zeta, their gradients along x_r) by the engine's "
          "kernel, path `isa` ('avx512', 'avx2', 'generic'; '' the CPU's best).");
    m.attr("OVERLAP_DISTANCE") = overlap_distance;
    py::class_<Model>(m, "Model",
                      "The C++ prediction engine: a fitted model's terms, e0, sparse points and "
                      "weights (gapx.engine builds it from a GAP).")
        .def(py::init([](const std::string &header, const py::dict &arrays) {
                 ModelFileContents contents = contents_from(header, arrays);
                 py::gil_scoped_release release;
                 return Model(contents, "model");
             }),
             py::arg("header"), py::arg("arrays"),
             "From a model-file header (JSON text, as gapx.serialization.model_header) and its "
             "arrays ({name: float64 array}, as model_arrays; R may be left out).")
        .def_static(
            "read",
            [](const std::string &path) {
                py::gil_scoped_release release;
                return Model::read(path);
            },
            py::arg("path"),
            "Reads and validates a .gapx model file in C++ (FileNotFoundError, ValueError).")
        .def_property_readonly("species", &Model::species, "Atomic numbers, increasing.")
        .def_property_readonly("n_terms", &Model::n_terms)
        .def_property_readonly("max_cutoff", &Model::max_cutoff)
        .def_property_readonly(
            "cutoffs",
            [](const Model &self) {
                std::vector<Real> out;
                for (Index t = 0; t < self.n_terms(); ++t) {
                    out.push_back(self.cutoff(t));
                }
                return out;
            },
            "Cutoff of each term (Å).")
        .def_property_readonly(
            "has_baseline", [](const Model &self) { return !self.baseline().is_null(); },
            "Whether the model has a baseline (which the engine does not compute).")
        .def(
            "compute",
            [](const Model &self, const std::vector<int> &numbers,
               const std::vector<const NeighborList *> &neighbors, Index n_centers,
               bool per_atom_virial, int n_threads) {
                ModelOutput out;
                {
                    py::gil_scoped_release release;
                    self.compute(n_centers < 0 ? static_cast<Index>(numbers.size()) : n_centers,
                                 numbers, neighbors, per_atom_virial, n_threads, out);
                }
                return to_python(out, per_atom_virial);
            },
            py::arg("numbers"), py::arg("neighbors"), py::kw_only(), py::arg("n_centers") = -1,
            py::arg("per_atom_virial") = false, py::arg("n_threads") = 0,
            R"doc(Energy and derivatives of centres [0, n_centers) (-1: all atoms).

numbers: atomic numbers of all atoms; neighbors: one NeighborList per term, for its cutoff.
Returns (energy, energies (n_centers,), dE_dr (n_atoms, 3), dE_dstrain (3, 3)[, atom_virial
(n_atoms, 6) as LAMMPS's Voigt order]). GIL released, OpenMP over centres.)doc")
        .def(
            "compute_from_list",
            [](const Model &self, const std::vector<int> &numbers, const NeighborList &neighbors,
               Index n_centers, bool per_atom_virial, int n_threads) {
                ModelOutput out;
                {
                    py::gil_scoped_release release;
                    self.compute_from_list(
                        n_centers < 0 ? static_cast<Index>(numbers.size()) : n_centers, numbers,
                        neighbors, per_atom_virial, n_threads, out);
                }
                return to_python(out, per_atom_virial);
            },
            py::arg("numbers"), py::arg("neighbors"), py::kw_only(), py::arg("n_centers") = -1,
            py::arg("per_atom_virial") = false, py::arg("n_threads") = 0,
            "As compute, from one list with cutoff >= max_cutoff cut per term (as LAMMPS "
            "does).");
}

} // namespace gapx::bindings
