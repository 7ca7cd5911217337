// SPDX-License-Identifier: BSD-3-Clause
#include "gapx/engine_api.h"

#include "gapx/elements.hpp"
#include "gapx/model.hpp"

#include <cmath>
#include <exception>
#include <string>

struct gapx_model {
    gapx::Model model;
    gapx::NeighborList list;
    gapx::ModelWorkspace workspace;
    gapx::ModelOutput output;
    std::vector<int> numbers;
    std::string species_names;
};

namespace {

thread_local std::string last_error;

/// Runs f, turning any exception into a failure code with its message kept.
template <typename F> int guarded(F &&f) {
    try {
        f();
        last_error.clear();
        return 0;
    } catch (const std::exception &error) {
        last_error = error.what();
    } catch (...) {
        last_error = "unknown error in the gapx engine";
    }
    return 1;
}

} // namespace

extern "C" {

gapx_model *gapx_model_read(const char *path) {
    gapx_model *out = nullptr;
    guarded([&] {
        out = new gapx_model{gapx::Model::read(path), {}, {}, {}, {}, {}};
        for (int z : out->model.species()) {
            out->species_names += (out->species_names.empty() ? "" : " ") + gapx::chemical_symbol(z);
        }
    });
    return out;
}

void gapx_model_free(gapx_model *model) { delete model; }

const char *gapx_last_error(void) { return last_error.c_str(); }

double gapx_model_cutoff(const gapx_model *model) { return model->model.max_cutoff(); }

int gapx_model_n_species(const gapx_model *model) {
    return static_cast<int>(model->model.species().size());
}

int gapx_model_species(const gapx_model *model, int k) {
    const auto &species = model->model.species();
    return k >= 0 && k < static_cast<int>(species.size()) ? species[static_cast<size_t>(k)] : 0;
}

const char *gapx_model_species_names(const gapx_model *model) {
    return model->species_names.c_str();
}

int gapx_atomic_number(const char *symbol) { return gapx::atomic_number(symbol); }

double gapx_overlap_distance(void) { return gapx::overlap_distance; }

int gapx_model_has_baseline(const gapx_model *model) {
    return model->model.baseline().is_null() ? 0 : 1;
}

int gapx_model_baseline_charge(const gapx_model *model, int z, double *charge) {
    const gapx::Json &baseline = model->model.baseline();
    const gapx::Json *charges = baseline.find("charges");
    if (charges == nullptr || !charges->is_object()) {
        return 0;
    }
    const gapx::Json *value = charges->find(gapx::chemical_symbol(z));
    if (value == nullptr || !value->is_number()) {
        return 0;
    }
    *charge = value->number("charge");
    return 1;
}

int gapx_format_version(void) { return gapx::model_format_version; }

int gapx_model_compute(gapx_model *model, int64_t n_centers, int64_t n_atoms, const int *numbers,
                       int64_t n_pairs, const int64_t *first, const int64_t *second,
                       const double *vectors, int n_threads, double *energies, double *dE_dr,
                       double *virial, double *atom_virial) {
    return guarded([&] {
        gapx::NeighborList &list = model->list;
        const double cutoff = model->model.max_cutoff();
        list.cutoff = cutoff;
        list.first.clear();
        list.second.clear();
        list.distances.clear();
        gapx::Index n_kept = 0;
        for (int64_t k = 0; k < n_pairs; ++k) {
            const double *d = vectors + 3 * k;
            n_kept += std::sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]) < cutoff ? 1 : 0;
        }
        list.vectors.resize(n_kept, 3);
        list.shifts.setZero(n_kept, 3);
        for (int64_t k = 0; k < n_pairs; ++k) {
            const double *d = vectors + 3 * k;
            const double r = std::sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
            if (r < cutoff) {
                const auto row = static_cast<gapx::Index>(list.first.size());
                list.vectors.row(row) << d[0], d[1], d[2];
                list.first.push_back(first[k]);
                list.second.push_back(second[k]);
                list.distances.push_back(r);
            }
        }
        model->numbers.assign(numbers, numbers + n_atoms);
        gapx::ModelOutput &out = model->output;
        model->model.compute_from_list(n_centers, model->numbers, list, atom_virial != nullptr,
                                       n_threads, model->workspace, out);
        for (int64_t i = 0; i < n_centers; ++i) {
            energies[i] = out.energies[i];
        }
        for (int64_t i = 0; i < n_atoms; ++i) {
            for (int a = 0; a < 3; ++a) {
                dE_dr[3 * i + a] = out.dE_dr(i, a);
            }
        }
        const gapx::Cell &s = out.dE_dstrain;
        const double w[6] = {-s(0, 0),
                             -s(1, 1),
                             -s(2, 2),
                             -0.5 * (s(0, 1) + s(1, 0)),
                             -0.5 * (s(0, 2) + s(2, 0)),
                             -0.5 * (s(1, 2) + s(2, 1))};
        for (int v = 0; v < 6; ++v) {
            virial[v] = w[v];
        }
        if (atom_virial != nullptr) {
            for (int64_t i = 0; i < n_atoms; ++i) {
                for (int v = 0; v < 6; ++v) {
                    atom_virial[6 * i + v] = out.atom_virial(i, v);
                }
            }
        }
    });
}

} // extern "C"
