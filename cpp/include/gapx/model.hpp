// SPDX-License-Identifier: BSD-3-Clause
#pragma once

#include "gapx/aligned_vector.hpp"
#include "gapx/model_file.hpp"
#include "gapx/neighbors.hpp"
#include "gapx/soap.hpp"
#include "gapx/types.hpp"

#include <memory>
#include <string>
#include <vector>

namespace gapx {

/// Atoms closer than this (Å) are refused as overlapping, as gapx.neighbors.OVERLAP_DISTANCE.
constexpr Real overlap_distance = 0.1;

/// Sparse points of one kind of one term, and their weights (a slice of the model's alpha).
struct SparseSet {
    int kind = 0;       ///< SOAP: the centre's atomic number; two-body: Z_low * 1000 + Z_high;
                        ///< three-body: Z_centre * 10^6 + Z_low * 1000 + Z_high
    RowMatrix points;   ///< (n_sparse, n_features)
    Eigen::VectorXd weights; ///< (n_sparse,): alpha of these points
    Real delta = 1.0;   ///< energy scale: local energies are delta^2 sum_m w_m k(x, x_m)
};

/// Per-call buffers of Model::compute, reused across calls (an MD code keeps one): the
/// std::vector buffers and the SOAP's per-thread scratch keep their capacity, so a step allocates
/// no per-centre or per-thread memory; the Eigen matrices sized by pairs or atoms reallocate when
/// those counts change (one allocation each, O(pairs)).
struct ModelWorkspace {
    std::vector<NeighborList> lists; ///< per term: its pairs cut from a longer list
    RowMatrix values;                ///< descriptor rows of a block of centres (SOAP)
    RowMatrix dE_dx;                 ///< dE/d those rows
    Positions pair_gradients;        ///< dE/dD per pair of one term's list
    Eigen::VectorXd pair_energies;   ///< local energy per pair (two-body) or centre (three-body)
    std::vector<Index> centre_starts; ///< where each centre's pairs begin in a list (three-body)
    /// SOAP's dot-kernel tasks: rows [row_begin, + n_rows) of `blocks` against points
    /// [m0, + n_points) of sparse set `set`, results at rows [out, + n_rows) of task_energies and
    /// task_gradients; `slices` tasks of consecutive point slices share each block of rows.
    struct DotTask {
        Index set, row_begin, n_rows, m0, n_points, out, slices;
    };
    std::vector<DotTask> dot_tasks;
    std::vector<Index> dot_rows;         ///< values row of each kernel row, grouped by set
    std::vector<Index> dot_row_tasks;    ///< first task of each kernel row's block
    AlignedVector<Real> blocks;          ///< the kernel rows, padded rows
    std::vector<Real> task_energies;     ///< per task row: local energy of its slice
    AlignedVector<Real> task_gradients;  ///< per task row: dE/dx of its slice, padded rows
    PowerSpectrum::Scratch soap;         ///< per-thread SOAP buffers
    PowerSpectrum::Centers centers;      ///< the SOAP term's index of its list
};

/// What Model::compute returns for n_centers centres among n_atoms atoms.
struct ModelOutput {
    Real energy = 0.0;          ///< sum of the centres' local energies (e0 included), eV
    Eigen::VectorXd energies;   ///< (n_centers,) local energies, eV
    Positions dE_dr;            ///< (n_atoms, 3) dE/dr, eV/Å (forces are -dE_dr)
    Cell dE_dstrain;            ///< (3, 3) sum over pairs of dE/dD_a D_b (stress = this / V)
    /// (n_atoms, 6) per-atom virial W = -sum dE/dD (x) D, half of each pair to each of its
    /// atoms, Voigt as LAMMPS (xx, yy, zz, xy, xz, yz), eV; only when asked for.
    RowMatrix atom_virial;
};

namespace detail {
class ModelTerm;
}

/// A fitted gapx model for prediction: terms (SOAP with the dot-product kernel, two-body with
/// the cutoff-weighted squared exponential, three-body with the cutoff-weighted ARD one), e0 per
/// species, sparse points and weights. Built
/// from a model file, or from the header and arrays gapx.serialization writes into one, and
/// validated as gapx.load validates the model (every term, sparse set and weight consistent and
/// finite). Immutable after construction: many threads may predict with one model at once.
class Model {
  public:
    /// From the contents of a model file (see read_model_file). Throws InvalidArgument naming
    /// `where` for anything inconsistent, NotImplemented for a term type the engine lacks.
    Model(const ModelFileContents &contents, const std::string &where);
    /// read_model_file(path), then the constructor above.
    static Model read(const std::string &path);
    ~Model();
    Model(Model &&) noexcept;
    Model &operator=(Model &&) noexcept;

    /// Atomic numbers of the model's species (those with an e0), increasing.
    const std::vector<int> &species() const { return species_; }
    /// e0 of atomic number z (InvalidArgument if it is not a model species).
    Real e0(int z) const;
    Index n_terms() const { return static_cast<Index>(terms_.size()); }
    /// Cutoff of term t (Å): pairs term t's list must hold.
    Real cutoff(Index t) const;
    /// Largest term cutoff (Å).
    Real max_cutoff() const;
    /// The header's baseline (e.g. Ewald) as its JSON, or null: the engine computes the GP and
    /// e0 only; callers add the baseline.
    const Json &baseline() const { return baseline_; }

    /// The general entry. Centres are atoms [0, n_centers) of `numbers` (atomic numbers of all
    /// n_atoms atoms: centres first, then any others the lists reach, e.g. LAMMPS ghosts);
    /// `lists[t]` is term t's full list of the centres' pairs closer than cutoff(t), grouped by
    /// increasing centre. Throws InvalidArgument for a species not in the model (or not in a
    /// term that needs it) and for atoms closer than overlap_distance. Forces on non-centre
    /// atoms are their share of the centres' energy (LAMMPS sums them onto their owners).
    /// `per_atom_virial` also fills out.atom_virial. `n_threads` as in PowerSpectrum::compute.
    /// The result does not depend on the number of threads.
    void compute(Index n_centers, const std::vector<int> &numbers,
                 const std::vector<const NeighborList *> &lists, bool per_atom_virial,
                 int n_threads, ModelWorkspace &workspace, ModelOutput &out) const;

    /// Cuts each term's list from one list with cutoff >= max_cutoff() into
    /// workspace.lists (pairs d < cutoff(t), order kept), then compute(): what an MD code with
    /// one neighbour list calls.
    void compute_from_list(Index n_centers, const std::vector<int> &numbers,
                           const NeighborList &list, bool per_atom_virial, int n_threads,
                           ModelWorkspace &workspace, ModelOutput &out) const;

    /// compute() and compute_from_list() with a workspace borrowed from the model's own pool
    /// (one per concurrent caller, kept until the model is destroyed), for callers that keep
    /// none: repeated predictions then allocate and zero no large buffer.
    void compute(Index n_centers, const std::vector<int> &numbers,
                 const std::vector<const NeighborList *> &lists, bool per_atom_virial,
                 int n_threads, ModelOutput &out) const;
    void compute_from_list(Index n_centers, const std::vector<int> &numbers,
                           const NeighborList &list, bool per_atom_virial, int n_threads,
                           ModelOutput &out) const;

  private:
    class WorkspacePool;
    std::unique_ptr<WorkspacePool> pool_;
    std::vector<int> species_;
    std::vector<Real> e0_;
    std::vector<std::unique_ptr<detail::ModelTerm>> terms_;
    Json baseline_;
};

} // namespace gapx
