// SPDX-License-Identifier: BSD-3-Clause
#include "gapx/model.hpp"

#include "gapx/elements.hpp"
#include "gapx/errors.hpp"
#include "gapx/memory.hpp"
#include "model_terms.hpp"

#include <algorithm>
#include <cmath>
#include <mutex>
#include <set>

namespace gapx {
namespace {

const ModelArray &array(const ModelFileContents &contents, const std::string &name) {
    const auto found = contents.arrays.find(name);
    if (found == contents.arrays.end()) {
        throw InvalidArgument("array '" + name + "' is missing");
    }
    return found->second;
}

void check_finite(const std::string &name, const ModelArray &values) {
    for (Real v : values.data) {
        if (!std::isfinite(v)) {
            throw InvalidArgument("array '" + name +
                                  "' has NaN or infinite values: refusing a model that would "
                                  "predict NaN");
        }
    }
}

Real finite(const Json &value, const std::string &what) {
    const Real v = value.number(what);
    if (!std::isfinite(v)) {
        throw InvalidArgument(what + " is not finite: refusing a model that would predict NaN");
    }
    return v;
}

/// A format-1 {"type": t, "params": {...}} description as {"type": t, ...} (as serialization).
Json upgraded(const Json &description, const std::string &what) {
    const Json *params = description.find("params");
    if (params == nullptr) {
        return description;
    }
    Json out = *params;
    out.set("type", description.at("type", what));
    return out;
}

std::string species_names(const std::vector<int> &species) {
    std::string out = "[";
    for (size_t k = 0; k < species.size(); ++k) {
        out += (k > 0 ? ", '" : "'") + chemical_symbol(species[k]) + "'";
    }
    return out + "]";
}

} // namespace

/// Idle workspaces: a caller takes one (or a new one) and gives it back when done.
class Model::WorkspacePool {
  public:
    template <typename F> void with_workspace(F &&f) {
        std::unique_ptr<ModelWorkspace> ws;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (!idle_.empty()) {
                ws = std::move(idle_.back());
                idle_.pop_back();
            }
        }
        if (!ws) {
            ws = std::make_unique<ModelWorkspace>();
        }
        // Given back whether f succeeds or throws: the next call resizes what it needs.
        struct GiveBack {
            WorkspacePool &pool;
            std::unique_ptr<ModelWorkspace> &ws;
            ~GiveBack() {
                try {
                    std::lock_guard<std::mutex> lock(pool.mutex_);
                    pool.idle_.push_back(std::move(ws));
                } catch (...) { // no memory to keep it: it is freed instead
                }
            }
        } give_back{*this, ws};
        f(*ws);
    }

  private:
    std::mutex mutex_;
    std::vector<std::unique_ptr<ModelWorkspace>> idle_;
};

Model::~Model() = default;
Model::Model(Model &&) noexcept = default;
Model &Model::operator=(Model &&) noexcept = default;

Model Model::read(const std::string &path) {
    return Model(read_model_file(path), "model file '" + path + "'");
}

Model::Model(const ModelFileContents &contents, const std::string &where)
    : pool_(std::make_unique<WorkspacePool>()) {
    try {
        const Json &header = contents.header;
        // e0 by chemical symbol; the species are its keys.
        for (const auto &[symbol, value] : header.at("e0", "the header").object("e0")) {
            const int z = atomic_number(symbol);
            if (z == 0) {
                throw InvalidArgument("e0 keys must be chemical symbols, got '" + symbol + "'");
            }
            species_.push_back(z);
        }
        if (species_.empty()) {
            throw InvalidArgument("e0 must map chemical symbols to energies");
        }
        std::sort(species_.begin(), species_.end());
        for (int z : species_) {
            e0_.push_back(finite(header.at("e0", "").at(chemical_symbol(z), "e0"),
                                 "e0['" + chemical_symbol(z) + "']"));
        }
        if (const Json *listed = header.find("species")) {
            std::vector<int> numbers;
            for (const Json &symbol : listed->array("species")) {
                numbers.push_back(atomic_number(symbol.string("species")));
            }
            if (numbers != species_) {
                throw InvalidArgument("the header's species do not match the e0 keys " +
                                      species_names(species_));
            }
        }
        const auto &terms = header.at("terms", "the header").array("terms");
        for (size_t t = 0; t < terms.size(); ++t) {
            const std::string what = "term " + std::to_string(t);
            const Json settings = upgraded(terms[t], what);
            terms_.push_back(detail::make_term(settings, what));
        }
        if (terms_.empty()) {
            throw InvalidArgument("the model has no terms");
        }
        const ModelArray &alpha = array(contents, "alpha");
        if (alpha.shape.size() != 1) {
            throw InvalidArgument("alpha must be a vector");
        }
        check_finite("alpha", alpha);
        const Index n_columns = alpha.shape[0];
        if (const auto r = contents.arrays.find("R"); r != contents.arrays.end()) {
            if (r->second.shape != std::vector<Index>{n_columns, n_columns}) {
                throw InvalidArgument("alpha and R do not match");
            }
            check_finite("R", r->second);
        }
        std::vector<std::vector<SparseSet>> sets(terms_.size());
        std::vector<int> covered(static_cast<size_t>(n_columns), 0);
        const auto &metas = header.at("sparse_sets", "the header").array("sparse_sets");
        for (size_t n = 0; n < metas.size(); ++n) {
            const std::string what = "sparse set " + std::to_string(n);
            const Json &meta = metas[n];
            const Index t = meta.at("term", what).integer(what + " term");
            const Index kind = meta.at("kind", what).integer(what + " kind");
            const Index offset = meta.at("offset", what).integer(what + " offset");
            const Index size = meta.at("size", what).integer(what + " size");
            if (t < 0 || t >= n_terms()) {
                throw InvalidArgument(what + " refers to term " + std::to_string(t));
            }
            const detail::ModelTerm &term = *terms_[static_cast<size_t>(t)];
            if (term.possible_kinds(species_).count(static_cast<int>(kind)) == 0) {
                throw InvalidArgument(what + " is of kind " + std::to_string(kind) +
                                      ", which term " + std::to_string(t) +
                                      " cannot have for the species " + species_names(species_));
            }
            for (const SparseSet &other : sets[static_cast<size_t>(t)]) {
                if (other.kind == kind) {
                    throw InvalidArgument("term " + std::to_string(t) +
                                          " has two sparse sets of kind " + std::to_string(kind));
                }
            }
            const std::string points_name = "sparse_" + std::to_string(n) + "_points";
            const std::string factor_name = "sparse_" + std::to_string(n) + "_factor";
            const ModelArray &points = array(contents, points_name);
            if (points.shape.size() != 2 || points.shape[0] != size ||
                points.shape[1] != term.n_features()) {
                throw InvalidArgument(what + " points have shape other than (" +
                                      std::to_string(size) + ", " +
                                      std::to_string(term.n_features()) + ")");
            }
            check_finite(points_name, points);
            if (const auto f = contents.arrays.find(factor_name); f != contents.arrays.end()) {
                const ModelArray &factor = f->second;
                if (factor.shape != std::vector<Index>{size, size}) {
                    throw InvalidArgument(what + " arrays have inconsistent shapes");
                }
                check_finite(factor_name, factor);
                for (Index r = 0; r < size; ++r) {
                    for (Index c = 0; c < size; ++c) {
                        const Real v = factor.data[static_cast<size_t>(r * size + c)];
                        if ((c > r && v != 0.0) || (c == r && !(v > 0.0))) {
                            throw InvalidArgument(what + " factor is not lower triangular with "
                                                         "a positive diagonal");
                        }
                    }
                }
            }
            if (offset < 0 || size < 0 || offset + size > n_columns) {
                throw InvalidArgument(what + " columns out of range");
            }
            if (finite(meta.at("jitter", what), what + " jitter") < 0.0) {
                throw InvalidArgument(what + " has a negative jitter");
            }
            const Real delta = finite(meta.at("delta", what), what + " delta");
            if (delta != term.delta()) {
                throw InvalidArgument(what + " has a delta other than its term's");
            }
            SparseSet set;
            set.kind = static_cast<int>(kind);
            set.delta = delta;
            set.points = Eigen::Map<const RowMatrix>(points.data.data(), size, term.n_features());
            set.weights = Eigen::Map<const Eigen::VectorXd>(alpha.data.data() + offset, size);
            for (Index c = offset; c < offset + size; ++c) {
                ++covered[static_cast<size_t>(c)];
            }
            sets[static_cast<size_t>(t)].push_back(std::move(set));
        }
        if (std::any_of(covered.begin(), covered.end(), [](int c) { return c != 1; })) {
            throw InvalidArgument("sparse sets do not cover the weights");
        }
        for (size_t t = 0; t < terms_.size(); ++t) {
            terms_[t]->set_sparse_sets(std::move(sets[t]));
        }
        if (const Json *baseline = header.find("baseline")) {
            baseline_ = *baseline;
        }
    } catch (const InvalidArgument &error) {
        throw InvalidArgument(where + ": " + error.what());
    } catch (const NotImplemented &error) {
        throw NotImplemented(where + ": " + error.what());
    }
}

Real Model::e0(int z) const {
    const auto found = std::lower_bound(species_.begin(), species_.end(), z);
    if (found == species_.end() || *found != z) {
        throw InvalidArgument("species " + chemical_symbol(z) +
                              " is not in the model (trained on " + species_names(species_) +
                              ")");
    }
    return e0_[static_cast<size_t>(found - species_.begin())];
}

Real Model::cutoff(Index t) const {
    if (t < 0 || t >= n_terms()) {
        throw InvalidArgument("no term " + std::to_string(t));
    }
    return terms_[static_cast<size_t>(t)]->cutoff();
}

Real Model::max_cutoff() const {
    Real out = 0.0;
    for (const auto &term : terms_) {
        out = std::max(out, term->cutoff());
    }
    return out;
}

void Model::compute(Index n_centers, const std::vector<int> &numbers,
                    const std::vector<const NeighborList *> &lists, bool per_atom_virial,
                    int n_threads, ModelWorkspace &ws, ModelOutput &out) const {
    const Index n_atoms = static_cast<Index>(numbers.size());
    if (n_centers < 0 || n_centers > n_atoms) {
        throw InvalidArgument("n_centers must be between 0 and the number of atoms");
    }
    if (static_cast<Index>(lists.size()) != n_terms()) {
        throw InvalidArgument("one neighbour list per term is needed (" +
                              std::to_string(n_terms()) + "), got " +
                              std::to_string(lists.size()));
    }
    out.energies.resize(n_centers);
    for (Index i = 0; i < n_atoms; ++i) {
        const Real e = e0(numbers[static_cast<size_t>(i)]); // refuses unknown species
        if (i < n_centers) {
            out.energies[i] = e;
        }
    }
    for (size_t t = 0; t < lists.size(); ++t) {
        const NeighborList &list = *lists[t];
        if (list.n_pairs() > 0 && !(list.cutoff + 1e-12 >= terms_[t]->cutoff())) {
            throw InvalidArgument("the neighbour list of term " + std::to_string(t) +
                                  " was built for a cutoff below the term's");
        }
        for (Index k = 0; k < list.n_pairs(); ++k) {
            const Real d = list.distances[static_cast<size_t>(k)];
            if (d < overlap_distance) {
                throw InvalidArgument(
                    "atoms " + std::to_string(list.first[static_cast<size_t>(k)]) + " and " +
                    std::to_string(list.second[static_cast<size_t>(k)]) + " overlap: " +
                    detail::format_real(d) + " Å apart (below " +
                    detail::format_real(overlap_distance) + " Å)");
            }
        }
    }
    out.dE_dr.setZero(n_atoms, 3);
    out.dE_dstrain.setZero();
    if (per_atom_virial) {
        out.atom_virial.setZero(n_atoms, 6);
    }
    for (size_t t = 0; t < terms_.size(); ++t) {
        const NeighborList &list = *lists[t];
        terms_[t]->compute(n_centers, numbers, list, n_threads, ws, out.energies);
        // Each pair's energy depends on its vector D = r_j - r_i only: serial, in pair order.
        const Positions &g = ws.pair_gradients;
        for (Index k = 0; k < list.n_pairs(); ++k) {
            const Index i = list.first[static_cast<size_t>(k)];
            const Index j = list.second[static_cast<size_t>(k)];
            for (int a = 0; a < 3; ++a) {
                out.dE_dr(j, a) += g(k, a);
                out.dE_dr(i, a) -= g(k, a);
                for (int b = 0; b < 3; ++b) {
                    out.dE_dstrain(a, b) += g(k, a) * list.vectors(k, b);
                }
            }
            if (per_atom_virial) {
                // W_ab = -D_a g_b (symmetrised), half to each atom of the pair.
                const Real *d = list.vectors.row(k).data();
                const Real w[6] = {-d[0] * g(k, 0),
                                   -d[1] * g(k, 1),
                                   -d[2] * g(k, 2),
                                   -0.5 * (d[0] * g(k, 1) + d[1] * g(k, 0)),
                                   -0.5 * (d[0] * g(k, 2) + d[2] * g(k, 0)),
                                   -0.5 * (d[1] * g(k, 2) + d[2] * g(k, 1))};
                for (int v = 0; v < 6; ++v) {
                    out.atom_virial(i, v) += 0.5 * w[v];
                    out.atom_virial(j, v) += 0.5 * w[v];
                }
            }
        }
    }
    out.energy = out.energies.sum();
}

void Model::compute_from_list(Index n_centers, const std::vector<int> &numbers,
                              const NeighborList &list, bool per_atom_virial, int n_threads,
                              ModelWorkspace &ws, ModelOutput &out) const {
    if (list.cutoff < max_cutoff()) {
        throw InvalidArgument("the neighbour list's cutoff is below the model's " +
                              detail::format_real(max_cutoff()) + " Å");
    }
    ws.lists.resize(terms_.size());
    std::vector<const NeighborList *> lists;
    for (size_t t = 0; t < terms_.size(); ++t) {
        NeighborList &cut = ws.lists[t];
        const Real cutoff = terms_[t]->cutoff();
        Index n = 0;
        for (Index k = 0; k < list.n_pairs(); ++k) {
            n += list.distances[static_cast<size_t>(k)] < cutoff ? 1 : 0;
        }
        cut.cutoff = cutoff;
        cut.first.clear();
        cut.second.clear();
        cut.distances.clear();
        cut.shifts.resize(n, 3);
        cut.vectors.resize(n, 3);
        Index row = 0;
        for (Index k = 0; k < list.n_pairs(); ++k) {
            const auto idx = static_cast<size_t>(k);
            if (list.distances[idx] < cutoff) {
                cut.first.push_back(list.first[idx]);
                cut.second.push_back(list.second[idx]);
                cut.distances.push_back(list.distances[idx]);
                cut.shifts.row(row) = list.shifts.row(k);
                cut.vectors.row(row) = list.vectors.row(k);
                ++row;
            }
        }
        lists.push_back(&cut);
    }
    compute(n_centers, numbers, lists, per_atom_virial, n_threads, ws, out);
}

void Model::compute(Index n_centers, const std::vector<int> &numbers,
                    const std::vector<const NeighborList *> &lists, bool per_atom_virial,
                    int n_threads, ModelOutput &out) const {
    pool_->with_workspace([&](ModelWorkspace &ws) {
        compute(n_centers, numbers, lists, per_atom_virial, n_threads, ws, out);
    });
}

void Model::compute_from_list(Index n_centers, const std::vector<int> &numbers,
                              const NeighborList &list, bool per_atom_virial, int n_threads,
                              ModelOutput &out) const {
    pool_->with_workspace([&](ModelWorkspace &ws) {
        compute_from_list(n_centers, numbers, list, per_atom_virial, n_threads, ws, out);
    });
}

} // namespace gapx
