// SPDX-License-Identifier: BSD-3-Clause
#pragma once

#include "gapx/neighbors.hpp"
#include "gapx/radial_basis.hpp"
#include "gapx/spherical_harmonics.hpp"
#include "gapx/types.hpp"

#include <memory>
#include <vector>

namespace gapx {

/// Which radial basis expands the neighbour density.
enum class RadialBasisKind {
    gto,  ///< Löwdin-orthonormalised GTOs, splined (RadialSpline); species in increasing order
    quip, ///< QUIP's equispaced Gaussians, exact (EquispacedGaussians); species in given order
};

/// SOAP hyperparameters (validated by the PowerSpectrum constructor).
struct SoapOptions {
    Real cutoff = 5.0;           ///< r_c, Å
    int n_max = 8;               ///< radial functions per species
    int l_max = 6;               ///< largest angular momentum
    Real atom_sigma = 0.5;       ///< Gaussian width of each atom's density, Å
    Real transition_width = 1.0; ///< width w of the cosine cutoff transition, 0 < w <= r_c
    Real central_weight = 1.0;   ///< weight of the centre's own Gaussian (QUIP's default 1)
    std::vector<int> species;    ///< distinct atomic numbers (strictly increasing for gto)
    RadialBasisKind radial_basis = RadialBasisKind::gto;
};

/// Index arrays of the sparse position gradients: row = [centre i, atom j].
using GradientPairs = Eigen::Matrix<Index, Eigen::Dynamic, 2, Eigen::RowMajor>;

/// Descriptor values with their position and strain gradients.
struct SoapGradients {
    RowMatrix values;    ///< (n_atoms, n_features), unit rows
    GradientPairs pairs; ///< (n_grad, 2): per centre, self first, then atoms j by increasing j
    RowMatrix gradients; ///< (n_grad, 3 * n_features): d x_i / d r_j, [pair][xyz][feature]
    RowMatrix strain;    ///< (n_atoms, 9 * n_features): d x_i / d eps_ab, [atom][a][b][feature]
};

/// Density coefficients of one centre, and the per-pair quantities their gradients need.
///
/// The coefficients c[u][lm] (u = species * n_max + n, lm = l^2 + l + m) carry an extra factor
/// (2l+1)^{-1/4}, so that the power spectrum's 1/sqrt(2l+1) is a plain product of two of them.
class SphericalExpansion {
  public:
    /// Builds (or reuses from the cache) the radial spline table. Allocates.
    explicit SphericalExpansion(const SoapOptions &options);

    /// Per-thread buffers, grown on demand (no allocation once warm).
    struct Workspace {
        std::vector<Real> coefficients; ///< [n_channels][n_lm]
        std::vector<Real> radial;       ///< [pair][n][l]: f_c(d) I_nl(d) (2l+1)^{-1/4}
        std::vector<Real> dradial;      ///< [pair][n][l]: its d-derivative
        std::vector<Real> harmonics;    ///< [pair][lm]: Y_lm(D/d)
        std::vector<Real> dharmonics;   ///< [pair][3][lm]: dY_lm(D/d)/dD
        std::vector<Real> units;        ///< [pair][3]: D/d
        std::vector<int> species;       ///< [pair]: species index of the neighbour
        std::vector<Real> scratch;      ///< spherical-harmonics scratch and grad Z_lm [3][lm]
    };

    /// Computes c for centre `center` (of species index `center_species`) from the pairs
    /// [begin, end) of `neighbors`, and, when `Gradients`, the per-pair radial and angular
    /// derivatives. `species_of_atom[j]` is the species index of atom j. Throws InvalidArgument
    /// when two atoms overlap (d < 1e-10 Å: the direction is undefined).
    template <bool Gradients>
    void compute(Index center, int center_species, const NeighborList &neighbors, Index begin,
                 Index end, const int *species_of_atom, Workspace &workspace) const;

    int n_max() const { return options_.n_max; }
    int n_l() const { return options_.l_max + 1; }
    int n_lm() const { return n_l() * n_l(); }
    int n_channels() const { return static_cast<int>(options_.species.size()) * options_.n_max; }
    const SoapOptions &options() const { return options_; }
    const RadialBasis &radial() const { return *radial_; }
    const SphericalHarmonics &harmonics() const { return harmonics_; }

  private:
    SoapOptions options_;
    std::shared_ptr<const RadialBasis> radial_;
    SphericalHarmonics harmonics_;
    std::vector<Real> central_; ///< [n]: w_c I_n0(0) Y_00, the centre's own Gaussian
};

/// The normalised SOAP power spectrum, its position and strain gradients, and the contraction
/// of an upstream gradient with them (backpropagation), all in parallel over centres.
///
/// \f$ p_i[u, v, l] = \kappa_{uv} (2l+1)^{-1/2} \sum_m c_{u,lm} c_{v,lm} \f$ for channels
/// u <= v (u = species * n_max + n), with \f$ \kappa_{uu} = 1 \f$ and \f$ \kappa_{uv} = \sqrt2
/// \f$ otherwise so that dot products of the stored half equal the sum over all channel pairs.
/// Feature order: u outer, then v >= u, then l inner. Rows are normalised,
/// \f$ \hat x = p/|p| \f$ (a zero row stays zero with zero gradient).
class PowerSpectrum {
  public:
    /// Validates the options (throws InvalidArgument, before anything is allocated or tabulated:
    /// see RadialSpline::check_settings and max_features) and builds the tables. Allocates.
    explicit PowerSpectrum(const SoapOptions &options);

    /// Largest number of features accepted: 2^24 (a 128 MiB descriptor row). The largest
    /// settings in use (a few species, n_max <= 20, l_max <= 30) stay below 10^6; beyond this
    /// every kernel and sparse-point matrix would be gigabytes per row, and the per-thread
    /// buffers alone would not fit.
    static constexpr Index max_features = Index{1} << 24;

    Index n_features() const;
    const SoapOptions &options() const { return expansion_.options(); }
    const SphericalExpansion &expansion() const { return expansion_; }

    /// Normalised descriptors of every atom: (n_atoms, n_features). `positions` (n_atoms, 3) Å,
    /// `cell` one lattice vector per row, `numbers` atomic numbers (n_atoms). Allocates the
    /// result. `n_threads` 0 uses OpenMP's default; negative or above max_threads() throws
    /// InvalidArgument (see resolve_threads). `max_bytes` bounds the memory of the call (the
    /// result, per-thread scratch and the neighbour list; 0: default_memory_budget(), half of the
    /// physical memory): a larger request throws InvalidArgument before anything big is
    /// allocated.
    ///
    /// Every entry point takes an optional `neighbors`: the full list of this structure for the
    /// SOAP cutoff, so that a caller that already has one (another term with that cutoff, the
    /// overlap check) does not build it again. Null builds the list here.
    RowMatrix compute(const Eigen::Ref<const Positions> &positions, const Cell &cell, Pbc pbc,
                      const std::vector<int> &numbers, int n_threads = 0,
                      const NeighborList *neighbors = nullptr, Index max_bytes = 0) const;

    /// Values plus sparse position gradients and strain gradients (see SoapGradients); memory
    /// is linear in the number of pairs. `n_threads` and `max_bytes` as in compute (the budget
    /// covers the gradients, checked once their number is known and before they are allocated).
    SoapGradients compute_gradients(const Eigen::Ref<const Positions> &positions,
                                    const Cell &cell, Pbc pbc, const std::vector<int> &numbers,
                                    int n_threads = 0,
                                    const NeighborList *neighbors = nullptr,
                                    Index max_bytes = 0) const;

    /// Given dE/dx (n_atoms, n_features) with respect to the normalised rows, writes
    /// dE/dr (n_atoms, 3) = sum_i dE/dx_i . dx_i/dr_j and dE/deps (3, 3) without storing any
    /// gradient (O(pairs n_max (l_max+1)^2) work). The result does not depend on the number of
    /// threads (per-pair contributions are reduced serially in pair order). `n_threads` and
    /// `max_bytes` as in compute.
    void backpropagate(const Eigen::Ref<const Positions> &positions, const Cell &cell, Pbc pbc,
                       const std::vector<int> &numbers, const Eigen::Ref<const RowMatrix> &dE_dx,
                       Positions &dE_dr, Cell &dE_dstrain, int n_threads = 0,
                       const NeighborList *neighbors = nullptr, Index max_bytes = 0) const;

    /// The neighbourhoods of `n_centers` centres in a neighbour list the caller owns (the
    /// prediction engine, LAMMPS): its centres are atoms [0, n_centers) in increasing order, its
    /// neighbours any of the `numbers.size()` atoms (ghost atoms included), and it holds every
    /// pair of a centre closer than the SOAP cutoff and none beyond it.
    struct Centers {
        const NeighborList *neighbors = nullptr;
        Index n_centers = 0;
        std::vector<int> species;  ///< species index of every atom (n_atoms)
        std::vector<Index> starts; ///< pairs of centre i: [starts[i], starts[i+1])
    };
    /// Checks the list against `n_centers` and `numbers` (atomic numbers of all atoms) and
    /// indexes it; throws InvalidArgument naming what is wrong. Allocates O(n_atoms).
    Centers centers(const NeighborList &neighbors, Index n_centers,
                    const std::vector<int> &numbers) const;
    /// The same into `out`, reusing its buffers (no allocation once their sizes settle).
    void centers(const NeighborList &neighbors, Index n_centers, const std::vector<int> &numbers,
                 Centers &out) const;
    /// Buffers of the two calls below, for a caller that makes them again and again (an MD
    /// code): with the same Scratch, a call allocates nothing once the sizes settle.
    struct Scratch {
        struct Thread {
            std::vector<Real> p, de_dp, de_dc;
        };
        std::vector<Thread> threads;
        /// Per centre of the current block: its expansion with the per-pair derivatives and the
        /// norm of its power spectrum, kept from compute to pair_gradients so that each is
        /// computed once.
        std::vector<SphericalExpansion::Workspace> kept;
        std::vector<Real> norms;
    };
    /// Bytes a block of centres takes between compute and pair_gradients: its kept expansions,
    /// values and dE/dx (about 300 centres of 40 pairs at n_max 8, l_max 6, one species).
    static constexpr Index block_bytes = Index{32} << 20;
    /// Centres per block of compute and pair_gradients for a list of n_pairs pairs of
    /// n_centers centres: as many as fit in block_bytes (at least one); depends on the sizes
    /// only.
    Index centre_block(Index n_centers, Index n_pairs) const;
    /// Normalised descriptors of centres [begin, end) into rows 0 .. end - begin of `values`
    /// (resized), their expansions kept in `scratch` for pair_gradients. `n_threads` as in
    /// compute.
    void compute(const Centers &centers, Index begin, Index end, RowMatrix &values,
                 int n_threads, Scratch &scratch) const;
    /// After compute for the same centres [begin, end) and `scratch`, with its `values`:
    /// dE/dD_k (rows of `dE_dD`, which must have a row per pair of the list) for every pair k
    /// of those centres, D_k its vector, given dE/dx (rows 0 .. end - begin) with respect to
    /// the normalised rows: forces and virials follow by summing over pairs (each pair's energy
    /// depends on its vector only).
    void pair_gradients(const Centers &centers, Index begin, Index end, const RowMatrix &values,
                        const Eigen::Ref<const RowMatrix> &dE_dx, Positions &dE_dD,
                        int n_threads, Scratch &scratch) const;

  private:
    /// What every structure entry point needs first: the neighbour list (the caller's, or one
    /// built here) and its Centers. Checks that numbers and the caller's list match positions.
    struct Environments {
        std::unique_ptr<NeighborList> owned; ///< on the heap: `centers` points into it
        Centers centers;
    };
    Environments environments(const Eigen::Ref<const Positions> &positions, const Cell &cell,
                              Pbc pbc, const std::vector<int> &numbers, int n_threads,
                              const NeighborList *neighbors, Index max_bytes) const;
    void species_indices(const std::vector<int> &numbers, std::vector<int> &indices) const;
    /// Bytes of one centre between compute and pair_gradients (see block_bytes).
    Index bytes_per_centre(Index n_centers, Index n_pairs) const;
    /// Normalised descriptors of all centres into `values` (resized), without the derivatives.
    void values_only(const Centers &centers, RowMatrix &values, int threads) const;

    SphericalExpansion expansion_;
};

} // namespace gapx
