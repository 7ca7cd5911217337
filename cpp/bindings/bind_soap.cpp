// SPDX-License-Identifier: BSD-3-Clause
#include "bindings.hpp"

#include "gapx/errors.hpp"
#include "gapx/soap.hpp"

#include <pybind11/eigen.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <array>
#include <string>
#include <vector>

namespace py = pybind11;

namespace gapx::bindings {
namespace {

/// Evaluates a per-distance radial function for every d: (n_d, n_max * (l_max + 1)) twice.
template <typename F>
py::tuple radial_table(const PowerSpectrum &self, const std::vector<Real> &distances, F &&f) {
    const auto *spline = dynamic_cast<const RadialSpline *>(&self.expansion().radial());
    if (spline == nullptr) {
        throw InvalidArgument("this SOAP does not use the splined GTO radial basis");
    }
    const RadialSpline &radial = *spline;
    const int n_nl = radial.n_max() * radial.n_l();
    RowMatrix values(distances.size(), n_nl);
    RowMatrix derivatives(distances.size(), n_nl);
    {
        py::gil_scoped_release release;
        for (size_t k = 0; k < distances.size(); ++k) {
            if (!(distances[k] >= 0.0 && distances[k] <= radial.settings().cutoff)) {
                throw InvalidArgument("distances must lie in [0, cutoff]");
            }
            f(radial, distances[k], values.row(k).data(), derivatives.row(k).data());
        }
    }
    return py::make_tuple(std::move(values), std::move(derivatives));
}

} // namespace

void bind_soap(py::module_ &m) {
    py::class_<PowerSpectrum>(m, "PowerSpectrum",
                              "Normalised SOAP power spectrum (see gapx.SOAP for the maths).")
        .def(py::init([](Real cutoff, int n_max, int l_max, Real atom_sigma,
                         Real transition_width, Real central_weight, std::vector<int> species,
                         const std::string &radial_basis) {
                 SoapOptions options;
                 options.cutoff = cutoff;
                 options.n_max = n_max;
                 options.l_max = l_max;
                 options.atom_sigma = atom_sigma;
                 options.transition_width = transition_width;
                 options.central_weight = central_weight;
                 options.species = std::move(species);
                 if (radial_basis == "quip") {
                     options.radial_basis = RadialBasisKind::quip;
                 } else if (radial_basis != "gto") {
                     throw InvalidArgument("radial_basis must be 'gto' or 'quip', got '" +
                                           radial_basis + "'");
                 }
                 py::gil_scoped_release release;
                 return PowerSpectrum(options);
             }),
             py::kw_only(), py::arg("cutoff"), py::arg("n_max"), py::arg("l_max"),
             py::arg("atom_sigma"), py::arg("transition_width"), py::arg("central_weight"),
             py::arg("species"), py::arg("radial_basis") = "gto",
             "Builds the radial tables (cached per (cutoff, n_max, l_max, atom_sigma)). "
             "species: strictly increasing atomic numbers for radial_basis 'gto', distinct "
             "atomic numbers in QUIP's species_Z order for 'quip' (equispaced Gaussians).")
        .def_property_readonly("n_features", &PowerSpectrum::n_features)
        .def(
            "compute",
            [](const PowerSpectrum &self, const Eigen::Ref<const Positions> &positions,
               const Cell &cell, const std::array<bool, 3> &pbc, const std::vector<int> &numbers,
               int n_threads, const NeighborList *neighbors, Index max_bytes) {
                py::gil_scoped_release release;
                return self.compute(positions, cell, to_pbc(pbc), numbers, n_threads, neighbors,
                                    max_bytes);
            },
            py::arg("positions"), py::arg("cell"), py::arg("pbc"), py::arg("numbers"),
            py::kw_only(), py::arg("n_threads") = 0, py::arg("neighbors") = nullptr,
            py::arg("max_bytes") = 0,
            "Normalised descriptors (n_atoms, n_features) float64 (OpenMP, GIL released). "
            "neighbors: this structure's NeighborList for the SOAP cutoff, or None to build one. "
            "max_bytes: memory budget of the call, 0 for half of the physical memory.")
        .def(
            "compute_gradients",
            [](const PowerSpectrum &self, const Eigen::Ref<const Positions> &positions,
               const Cell &cell, const std::array<bool, 3> &pbc, const std::vector<int> &numbers,
               int n_threads, const NeighborList *neighbors, Index max_bytes) {
                SoapGradients out;
                {
                    py::gil_scoped_release release;
                    out = self.compute_gradients(positions, cell, to_pbc(pbc), numbers, n_threads,
                                                 neighbors, max_bytes);
                }
                return py::make_tuple(std::move(out.values), std::move(out.pairs),
                                      std::move(out.gradients), std::move(out.strain));
            },
            py::arg("positions"), py::arg("cell"), py::arg("pbc"), py::arg("numbers"),
            py::kw_only(), py::arg("n_threads") = 0, py::arg("neighbors") = nullptr,
            py::arg("max_bytes") = 0,
            R"doc(Values and gradients: (values (n_atoms, F), pairs (n_grad, 2) int64,
gradients (n_grad, 3 F) = dx_i/dr_j as [pair][xyz][feature], strain (n_atoms, 9 F) = dx_i/deps_ab
as [atom][a][b][feature]). max_bytes: memory budget of the call, 0 for half of the physical
memory.)doc")
        .def(
            "backpropagate",
            [](const PowerSpectrum &self, const Eigen::Ref<const Positions> &positions,
               const Cell &cell, const std::array<bool, 3> &pbc, const std::vector<int> &numbers,
               const Eigen::Ref<const RowMatrix> &dE_dX, int n_threads,
               const NeighborList *neighbors, Index max_bytes) {
                Positions dE_dr;
                Cell dE_dstrain;
                {
                    py::gil_scoped_release release;
                    self.backpropagate(positions, cell, to_pbc(pbc), numbers, dE_dX, dE_dr,
                                       dE_dstrain, n_threads, neighbors, max_bytes);
                }
                return py::make_tuple(std::move(dE_dr), std::move(dE_dstrain));
            },
            py::arg("positions"), py::arg("cell"), py::arg("pbc"), py::arg("numbers"),
            py::arg("dE_dX"), py::kw_only(), py::arg("n_threads") = 0,
            py::arg("neighbors") = nullptr, py::arg("max_bytes") = 0,
            "Contracts dE/dX (n_atoms, F) with the descriptor gradients: (dE_dr (n_atoms, 3), "
            "dE_dstrain (3, 3)). max_bytes: memory budget of the call, 0 for half of the physical "
            "memory.")
        .def(
            "radial_spline",
            [](const PowerSpectrum &self, const std::vector<Real> &distances) {
                return radial_table(self, distances,
                                    [](const RadialSpline &r, Real d, Real *v, Real *dv) {
                                        r.evaluate(d, v, dv);
                                    });
            },
            py::arg("distances"),
            "Spline-interpolated I_nl(d) (2l+1)^{-1/4} and d/dd: two (n_d, n_max*(l_max+1)).")
        .def(
            "radial_values",
            [](const PowerSpectrum &self, const std::vector<Real> &distances) {
                const RadialBasis &radial = self.expansion().radial();
                const int n_nl = radial.n_max() * radial.n_l();
                RowMatrix values(distances.size(), n_nl);
                RowMatrix derivatives(distances.size(), n_nl);
                for (size_t k = 0; k < distances.size(); ++k) {
                    if (!(distances[k] >= 0.0 && distances[k] <= self.options().cutoff)) {
                        throw InvalidArgument("distances must lie in [0, cutoff]");
                    }
                    radial.evaluate(distances[k], values.row(k).data(), derivatives.row(k).data());
                }
                return py::make_tuple(std::move(values), std::move(derivatives));
            },
            py::arg("distances"),
            "I_nl(d) (2l+1)^{-1/4} and d/dd of whichever radial basis this SOAP uses: two "
            "(n_d, n_max*(l_max+1)).")
        .def(
            "radial_exact",
            [](const PowerSpectrum &self, const std::vector<Real> &distances) {
                return radial_table(self, distances,
                                    [](const RadialSpline &r, Real d, Real *v, Real *dv) {
                                        r.exact(d, v, dv);
                                    });
            },
            py::arg("distances"),
            "Quadrature I_nl(d) and d/dd (no (2l+1)^{-1/4}): two (n_d, n_max*(l_max+1)).")
        .def(
            "radial_orthonormalisation",
            [](const PowerSpectrum &self) {
                const auto *spline =
                    dynamic_cast<const RadialSpline *>(&self.expansion().radial());
                if (spline == nullptr) {
                    throw InvalidArgument("this SOAP does not use the GTO radial basis");
                }
                return spline->orthonormalisation();
            },
            "S^{-1/2} (n_max, n_max): row n holds the GTO coefficients of R_n.");

    m.def(
        "spherical_harmonics",
        [](int l_max, const Eigen::Ref<const Positions> &vectors) {
            const SphericalHarmonics harmonics(l_max);
            const int n_lm = harmonics.size();
            RowMatrix values(vectors.rows(), n_lm);
            RowMatrix gradients(vectors.rows(), 3 * n_lm);
            {
                py::gil_scoped_release release;
                std::vector<Real> scratch(harmonics.scratch_size());
                std::vector<Real> grad_z(3 * n_lm);
                for (Index k = 0; k < vectors.rows(); ++k) {
                    const Real d = vectors.row(k).norm();
                    if (!(d > 0.0)) {
                        throw InvalidArgument("vectors must be non-zero");
                    }
                    const Real u[3] = {vectors(k, 0) / d, vectors(k, 1) / d, vectors(k, 2) / d};
                    harmonics.compute(u, values.row(k).data(), grad_z.data(), scratch.data());
                    for (int l = 0; l <= l_max; ++l) {
                        for (int lm = l * l; lm < (l + 1) * (l + 1); ++lm) {
                            for (int a = 0; a < 3; ++a) {
                                gradients(k, a * n_lm + lm) =
                                    (grad_z[a * n_lm + lm] - l * values(k, lm) * u[a]) / d;
                            }
                        }
                    }
                }
            }
            return py::make_tuple(std::move(values), std::move(gradients));
        },
        py::arg("l_max"), py::arg("vectors"),
        R"doc(Real Y_lm(v/|v|) for vectors (n, 3): values (n, (l_max+1)^2) with lm = l^2 + l + m,
and their gradients with respect to v, (n, 3 (l_max+1)^2) as [xyz][lm].)doc");
}

} // namespace gapx::bindings
