// SPDX-License-Identifier: BSD-3-Clause
// The prediction engine's terms (private to the engine: model.cpp builds them from a header).
#pragma once

#include "gapx/json.hpp"
#include "gapx/model.hpp"

#include <memory>
#include <set>
#include <string>
#include <vector>

namespace gapx::detail {

/// One GP term of a model: its local energies and their derivatives along each pair vector.
class ModelTerm {
  public:
    virtual ~ModelTerm() = default;
    virtual Real cutoff() const = 0;
    virtual Real delta() const = 0;
    virtual Index n_features() const = 0;
    /// Kinds this term's rows can have in structures of `species` (atomic numbers).
    virtual std::set<int> possible_kinds(const std::vector<int> &species) const = 0;
    /// Adds the local energies of centres [0, n_centers) to `energies` and writes dE/dD of every
    /// pair of `list` into workspace.pair_gradients (resized to (n_pairs, 3)).
    virtual void compute(Index n_centers, const std::vector<int> &numbers,
                         const NeighborList &list, int n_threads, ModelWorkspace &workspace,
                         Eigen::VectorXd &energies) const = 0;
    /// The term's sparse sets (each of a kind it can have, at most once per kind).
    virtual void set_sparse_sets(std::vector<SparseSet> sets) { sets_ = std::move(sets); }

  protected:
    std::vector<SparseSet> sets_;
};

/// settings[key] as a positive finite number (InvalidArgument naming `what` otherwise).
Real positive_setting(const Json &settings, const std::string &key, const std::string &what);

/// From a term's to_dict() settings ("soap", "two_body", "three_body"); the sparse sets come later
/// (set_sparse_sets). Throws NotImplemented for another type, InvalidArgument for bad settings.
std::unique_ptr<ModelTerm> make_term(const Json &settings, const std::string &what);
/// make_term for "three_body" (three_body_term.cpp).
std::unique_ptr<ModelTerm> make_three_body_term(const Json &settings, const std::string &what);

} // namespace gapx::detail
