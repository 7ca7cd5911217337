// SPDX-License-Identifier: BSD-3-Clause
#include "pair_gapx.h"

#include "gapx/engine_api.h"

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"

#include <cmath>
#include <cstring>

using namespace LAMMPS_NS;


PairGapx::PairGapx(LAMMPS *instance) : Pair(instance) {
    single_enable = 0;
    restartinfo = 0;
    one_coeff = 1;
    manybody_flag = 1;
    // The virial comes from the pair vectors (no f.r sum over ghosts): it holds for any cell.
    no_virial_fdotr_compute = 1;
    centroidstressflag = CENTROID_NOTAVAIL;
}

PairGapx::~PairGapx() {
    gapx_model_free(model_);
    if (allocated) {
        memory->destroy(setflag);
        memory->destroy(cutsq);
    }
}

void PairGapx::allocate() {
    allocated = 1;
    const int n = atom->ntypes + 1;
    memory->create(setflag, n, n, "pair:setflag");
    memory->create(cutsq, n, n, "pair:cutsq");
    for (int i = 0; i < n; ++i) {
        for (int j = 0; j < n; ++j) {
            setflag[i][j] = 0;
        }
    }
}

void PairGapx::settings(int narg, char **arg) {
    // pair_style gapx [threads N]: OpenMP threads of the engine (default: OMP_NUM_THREADS).
    if (narg == 2 && std::strcmp(arg[0], "threads") == 0) {
        n_threads_ = utils::inumeric(FLERR, arg[1], false, lmp);
        if (n_threads_ < 0) {
            error->all(FLERR, "pair_style gapx: threads must be >= 0 (0: OMP_NUM_THREADS)");
        }
    } else if (narg != 0) {
        error->all(FLERR, "pair_style gapx takes no arguments but 'threads N'");
    }
}

void PairGapx::coeff(int narg, char **arg) {
    // pair_coeff * * MODEL.gapx Si O ...: one element name per atom type.
    if (!allocated) {
        allocate();
    }
    const int ntypes = atom->ntypes;
    if (narg != 3 + ntypes || std::strcmp(arg[0], "*") != 0 || std::strcmp(arg[1], "*") != 0) {
        error->all(FLERR, "pair_coeff for gapx must be 'pair_coeff * * MODEL.gapx' followed by "
                          "one element name per atom type ({} types)",
                   ntypes);
    }
    gapx_model_free(model_);
    model_ = gapx_model_read(arg[2]);
    if (model_ == nullptr) {
        error->all(FLERR, "pair gapx: {}", gapx_last_error());
    }
    cutoff_ = gapx_model_cutoff(model_);
    type_numbers_.assign(ntypes + 1, 0);
    for (int t = 1; t <= ntypes; ++t) {
        const char *name = arg[2 + t];
        const int z = gapx_atomic_number(name);
        bool known = false;
        for (int k = 0; k < gapx_model_n_species(model_); ++k) {
            known = known || (z != 0 && gapx_model_species(model_, k) == z);
        }
        if (!known) {
            error->all(FLERR, "pair gapx: atom type {} is '{}', which is not a species of the "
                              "model {} (its species: {})",
                       t, name, arg[2], gapx_model_species_names(model_));
        }
        type_numbers_[t] = z;
    }
    for (int i = 1; i <= ntypes; ++i) {
        for (int j = i; j <= ntypes; ++j) {
            setflag[i][j] = 1;
        }
    }
}

void PairGapx::init_style() {
    if (force->newton_pair == 0) {
        error->all(FLERR, "pair_style gapx requires newton pair on (forces on ghost atoms are "
                          "returned to their owners by reverse communication)");
    }
    if (model_ == nullptr) {
        error->all(FLERR, "pair_style gapx: no model: use pair_coeff * * MODEL.gapx ELEMENTS");
    }
    if (gapx_model_has_baseline(model_) != 0) {
        check_baseline();
    }
    neighbor->add_request(this, NeighConst::REQ_FULL);
}

void PairGapx::check_baseline() {
    // The model's GP learnt reference - Ewald: LAMMPS must add the Coulomb energy of the same
    // fixed charges (coul/long + kspace), or the energies are wrong by all of it.
    const char *how = "the model has an Ewald baseline, which pair_style gapx does not compute: "
                      "use pair_style hybrid/overlay gapx coul/long RC with kspace_style ewald "
                      "(or pppm) and the model's charges (gapx lammps-input MODEL ELEMENTS "
                      "prints the lines)";
    if (force->pair_match("coul/long", 0) == nullptr) {
        error->all(FLERR, "pair gapx: {}", how);
    }
    if (atom->q_flag == 0) {
        error->all(FLERR, "pair gapx: {}; the atoms have no charges (atom_style charge)", how);
    }
    for (int i = 0; i < atom->nlocal; ++i) {
        const int t = atom->type[i];
        double charge = 0.0;
        if (gapx_model_baseline_charge(model_, type_numbers_[t], &charge) != 0 &&
            std::fabs(atom->q[i] - charge) > 1e-12) {
            error->one(FLERR, "pair gapx: atom {} (type {}) has charge {}, but the model's "
                              "Ewald baseline gives its species {}: set type {} charge {}",
                       atom->tag[i], t, atom->q[i], charge, t, charge);
        }
    }
}

double PairGapx::init_one(int i, int j) {
    if (setflag[i][j] == 0) {
        error->all(FLERR, "pair gapx: pair coefficients are not set for types {} {}", i, j);
    }
    return cutoff_;
}

void PairGapx::compute(int eflag, int vflag) {
    ev_init(eflag, vflag);
    double **x = atom->x;
    double **f = atom->f;
    const int *type = atom->type;
    const int nlocal = atom->nlocal;
    const int nall = nlocal + atom->nghost;
    if (list->inum != nlocal) {
        error->all(FLERR, "pair_style gapx needs every local atom in its neighbour list");
    }
    numbers_.resize(nall);
    for (int k = 0; k < nall; ++k) {
        numbers_[k] = type_numbers_[type[k]];
    }
    // The engine wants pairs grouped by increasing centre: walk atoms 0..nlocal-1 in order.
    first_.clear();
    second_.clear();
    vectors_.clear();
    const double cut2 = cutoff_ * cutoff_;
    const double closest = gapx_overlap_distance();
    for (int i = 0; i < nlocal; ++i) {
        const int *neighbors = list->firstneigh[i];
        for (int jj = 0; jj < list->numneigh[i]; ++jj) {
            const int j = neighbors[jj] & NEIGHMASK;
            const double d[3] = {x[j][0] - x[i][0], x[j][1] - x[i][1], x[j][2] - x[i][2]};
            const double r2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2];
            if (r2 >= cut2) {
                continue;
            }
            if (r2 < closest * closest) {
                error->one(FLERR, "pair gapx: atoms {} and {} are {:.3g} Å apart, closer than "
                                  "the {} Å the model allows",
                           atom->tag[i], atom->tag[j], std::sqrt(r2), closest);
            }
            first_.push_back(i);
            second_.push_back(j);
            vectors_.insert(vectors_.end(), d, d + 3);
        }
    }
    energies_.resize(nlocal);
    dE_dr_.resize(3 * static_cast<size_t>(nall));
    if (vflag_atom) {
        atom_virial_.resize(6 * static_cast<size_t>(nall));
    }
    double virial_here[6];
    const int failed = gapx_model_compute(
        model_, nlocal, nall, numbers_.data(), static_cast<std::int64_t>(first_.size()),
        first_.data(), second_.data(), vectors_.data(), n_threads_, energies_.data(),
        dE_dr_.data(), virial_here, vflag_atom ? atom_virial_.data() : nullptr);
    if (failed != 0) {
        error->one(FLERR, "pair gapx: {}", gapx_last_error());
    }
    for (int k = 0; k < nall; ++k) {
        for (int a = 0; a < 3; ++a) {
            f[k][a] -= dE_dr_[3 * k + a];
        }
    }
    if (eflag_global) {
        for (int i = 0; i < nlocal; ++i) {
            eng_vdwl += energies_[i];
        }
    }
    if (eflag_atom) {
        for (int i = 0; i < nlocal; ++i) {
            eatom[i] += energies_[i];
        }
    }
    if (vflag_global) {
        for (int v = 0; v < 6; ++v) {
            virial[v] += virial_here[v];
        }
    }
    if (vflag_atom) {
        for (int k = 0; k < nall; ++k) {
            for (int v = 0; v < 6; ++v) {
                vatom[k][v] += atom_virial_[6 * k + v];
            }
        }
    }
}
