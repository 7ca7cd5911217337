// SPDX-License-Identifier: BSD-3-Clause
// pair_style gapx: a gapx model (.gapx file) as a LAMMPS many-body pair style. See README.md
// (this folder is built against LAMMPS, which is GPL: read its licence note).
#ifndef GAPX_PAIR_GAPX_H
#define GAPX_PAIR_GAPX_H

#include "pair.h"

#include <cstdint>
#include <vector>

struct gapx_model;

namespace LAMMPS_NS {

class PairGapx : public Pair {
  public:
    explicit PairGapx(class LAMMPS *instance);
    ~PairGapx() override;
    void compute(int eflag, int vflag) override;
    void settings(int narg, char **arg) override;
    void coeff(int narg, char **arg) override;
    void init_style() override;
    double init_one(int i, int j) override;

  private:
    gapx_model *model_ = nullptr;
    double cutoff_ = 0.0;
    int n_threads_ = 0;
    std::vector<int> type_numbers_; // atomic number of each LAMMPS type (1-based)
    // Per-step buffers, reused across steps.
    std::vector<int> numbers_;
    std::vector<std::int64_t> first_, second_;
    std::vector<double> vectors_, energies_, dE_dr_, atom_virial_;
    void allocate();
    void check_baseline();
};

} // namespace LAMMPS_NS

#endif
