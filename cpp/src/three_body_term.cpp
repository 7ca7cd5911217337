// SPDX-License-Identifier: BSD-3-Clause
// The engine's three-body term (gapx.ThreeBody, QUIP's angle_3b with the ARD squared exponential).
#include "model_terms.hpp"

#include "gapx/cutoff.hpp"
#include "gapx/elements.hpp"
#include "gapx/errors.hpp"
#include "gapx/parallel.hpp"

#include <algorithm>
#include <array>
#include <cmath>

namespace gapx::detail {
namespace {

/// Kind of a triplet row, as gapx.descriptors.three_body.triplet_kind.
constexpr int pair_kind_base = 1000;
constexpr int triplet_kind_base = pair_kind_base * pair_kind_base;
constexpr int n_geometric = 3;
/// A species filter that matches any atomic number (the Python term's None, QUIP's 0).
constexpr int any_species = 0;

int triplet_kind(int centre, int zj, int zk) {
    return centre * triplet_kind_base + std::min(zj, zk) * pair_kind_base + std::max(zj, zk);
}

/// Rows (r_ij + r_ik, (r_ij - r_ik)^2, r_jk, f_c(r_ij) f_c(r_ik)) for each centre i and ordered
/// pair of distinct neighbour entries (j, k) that the species filters admit; kernel
/// w w' exp(-sum_d (x_d - x'_d)^2 / 2 theta_d^2) per species triplet; local energy to i.
class ThreeBodyTerm final : public ModelTerm {
  public:
    ThreeBodyTerm(Real cutoff, Real width, Real delta, std::array<Real, n_geometric> theta,
                  int centre, int neighbour_1, int neighbour_2)
        : cutoff_(cutoff), width_(width), delta_(delta), centre_(centre),
          neighbour_1_(neighbour_1), neighbour_2_(neighbour_2) {
        for (int d = 0; d < n_geometric; ++d) {
            inv_theta2_[d] = 1.0 / (theta[d] * theta[d]);
        }
    }

    Real cutoff() const override { return cutoff_; }
    Real delta() const override { return delta_; }
    Index n_features() const override { return n_geometric + 1; }
    std::set<int> possible_kinds(const std::vector<int> &species) const override {
        std::vector<int> numbers = species;
        std::sort(numbers.begin(), numbers.end());
        std::set<int> kinds;
        for (int c : numbers) {
            if (!matches(c, centre_)) {
                continue;
            }
            for (size_t a = 0; a < numbers.size(); ++a) {
                for (size_t b = a; b < numbers.size(); ++b) {
                    if (neighbours_match(numbers[a], numbers[b])) {
                        kinds.insert(triplet_kind(c, numbers[a], numbers[b]));
                    }
                }
            }
        }
        return kinds;
    }

    void compute(Index n_centers, const std::vector<int> &numbers, const NeighborList &list,
                 int n_threads, ModelWorkspace &ws, Eigen::VectorXd &energies) const override {
        const int threads = resolve_threads(n_threads);
        const Index n_pairs = list.n_pairs();
        // Each centre's pairs are one run of the list: starts[i] .. starts[i + 1].
        std::vector<Index> &starts = ws.centre_starts;
        starts.assign(static_cast<size_t>(n_centers + 1), 0);
        for (Index k = 0; k < n_pairs; ++k) {
            const Index i = list.first[static_cast<size_t>(k)];
            if (k > 0 && i < list.first[static_cast<size_t>(k - 1)]) {
                throw InvalidArgument("the neighbour list is not grouped by increasing centre");
            }
            if (i < n_centers) {
                ++starts[static_cast<size_t>(i + 1)];
            }
        }
        for (Index i = 0; i < n_centers; ++i) {
            starts[static_cast<size_t>(i + 1)] += starts[static_cast<size_t>(i)];
        }
        ws.pair_gradients.setZero(n_pairs, 3);
        ws.pair_energies.setZero(n_centers);
        // The rows (j, k) and (k, j) are equal (the features are symmetric in j and k): each
        // unordered pair is computed once and counts twice.
        const Real twice_d2 = 2.0 * delta_ * delta_;
        // Each centre writes its own energy and the gradients of its own pairs only: no two
        // threads touch one entry, and every sum runs in list order whatever the thread count.
        const Index chunk = dynamic_chunk(n_centers, threads, 8);
#pragma omp parallel for num_threads(threads) schedule(dynamic, chunk)
        for (Index i = 0; i < n_centers; ++i) {
            const int zi = numbers[static_cast<size_t>(i)];
            if (!matches(zi, centre_)) {
                continue;
            }
            const Index begin = starts[static_cast<size_t>(i)];
            const Index end = starts[static_cast<size_t>(i + 1)];
            Real energy = 0.0;
            for (Index a = begin; a < end; ++a) {
                const int zj = numbers[static_cast<size_t>(list.second[static_cast<size_t>(a)])];
                if (!can_be_neighbour(zj)) {
                    continue;
                }
                const Real r_ij = list.distances[static_cast<size_t>(a)];
                Real fc_ij = 0.0;
                Real dfc_ij = 0.0;
                cosine_cutoff(r_ij, cutoff_, width_, fc_ij, dfc_ij);
                for (Index b = a + 1; b < end; ++b) {
                    const int zk =
                        numbers[static_cast<size_t>(list.second[static_cast<size_t>(b)])];
                    if (!neighbours_match(zj, zk)) {
                        continue;
                    }
                    const SparseSet *set = find_set(triplet_kind(zi, zj, zk));
                    if (set == nullptr) {
                        continue;
                    }
                    const Real r_ik = list.distances[static_cast<size_t>(b)];
                    Real fc_ik = 0.0;
                    Real dfc_ik = 0.0;
                    cosine_cutoff(r_ik, cutoff_, width_, fc_ik, dfc_ik);
                    Real jk[3];
                    for (int c = 0; c < 3; ++c) {
                        jk[c] = list.vectors(b, c) - list.vectors(a, c);
                    }
                    const Real r_jk = std::sqrt(jk[0] * jk[0] + jk[1] * jk[1] + jk[2] * jk[2]);
                    const Real gap = r_ij - r_ik;
                    const Real x[n_geometric] = {r_ij + r_ik, gap * gap, r_jk};
                    const Real weight = fc_ij * fc_ik;
                    // sum_m alpha_m w_m k_m and sum_m alpha_m w_m k_m (x_d - x_md) / theta_d^2.
                    Real sum = 0.0;
                    Real pull[n_geometric] = {0.0, 0.0, 0.0};
                    for (Index m = 0; m < set->points.rows(); ++m) {
                        const Real *point = set->points.row(m).data();
                        Real scaled[n_geometric];
                        Real q = 0.0;
                        for (int d = 0; d < n_geometric; ++d) {
                            const Real diff = x[d] - point[d];
                            scaled[d] = diff * inv_theta2_[d];
                            q += diff * scaled[d];
                        }
                        const Real e = set->weights[m] * point[n_geometric] * std::exp(-0.5 * q);
                        sum += e;
                        for (int d = 0; d < n_geometric; ++d) {
                            pull[d] += e * scaled[d];
                        }
                    }
                    energy += twice_d2 * weight * sum;
                    // dE/dx_d = -2 d2 w pull_d, dE/dw = 2 d2 sum; then through the distances.
                    const Real dE_dr_ij = twice_d2 * (-weight * (pull[0] + 2.0 * gap * pull[1]) +
                                                      sum * dfc_ij * fc_ik);
                    const Real dE_dr_ik = twice_d2 * (-weight * (pull[0] - 2.0 * gap * pull[1]) +
                                                      sum * fc_ij * dfc_ik);
                    const Real dE_dr_jk =
                        r_jk > 0.0 ? -twice_d2 * weight * pull[2] / r_jk : 0.0;
                    // r_jk = |D_ik - D_ij|: its gradient lands on the two pairs of the centre.
                    for (int c = 0; c < 3; ++c) {
                        ws.pair_gradients(a, c) +=
                            dE_dr_ij * list.vectors(a, c) / r_ij - dE_dr_jk * jk[c];
                        ws.pair_gradients(b, c) +=
                            dE_dr_ik * list.vectors(b, c) / r_ik + dE_dr_jk * jk[c];
                    }
                }
            }
            ws.pair_energies[i] = energy;
        }
        energies += ws.pair_energies;
    }

  private:
    static bool matches(int z, int wanted) { return wanted == any_species || z == wanted; }
    bool can_be_neighbour(int z) const {
        return matches(z, neighbour_1_) || matches(z, neighbour_2_);
    }
    /// Whether neighbour species (zj, zk) are (Z1, Z2) in either order.
    bool neighbours_match(int zj, int zk) const {
        return (matches(zj, neighbour_1_) && matches(zk, neighbour_2_)) ||
               (matches(zk, neighbour_1_) && matches(zj, neighbour_2_));
    }
    const SparseSet *find_set(int kind) const {
        for (const SparseSet &set : sets_) {
            if (set.kind == kind) {
                return &set;
            }
        }
        return nullptr;
    }

    Real cutoff_;
    Real width_;
    Real delta_;
    Real inv_theta2_[n_geometric];
    int centre_;      ///< Z: atomic number of the centre, or any_species
    int neighbour_1_; ///< Z1
    int neighbour_2_; ///< Z2
};

/// A species filter setting: null or 0 for any, else an atomic number.
int species_filter(const Json &settings, const std::string &key, const std::string &what) {
    const Json &value = settings.at(key, what);
    if (value.is_null()) {
        return any_species;
    }
    const Index z = value.integer(what + " " + key);
    if (z < 0 || z > 118) {
        throw InvalidArgument(what + " " + key + " must be an atomic number or null, got " +
                              std::to_string(z));
    }
    return static_cast<int>(z);
}

} // namespace

std::unique_ptr<ModelTerm> make_three_body_term(const Json &settings, const std::string &what) {
    const Real cutoff = positive_setting(settings, "cutoff", what);
    const Real width = positive_setting(settings, "cutoff_transition_width", what);
    if (width > cutoff) {
        throw InvalidArgument(what + ": cutoff_transition_width exceeds the cutoff");
    }
    // theta: one length scale for the three features, or three (as ThreeBody accepts).
    const Json &theta_setting = settings.at("theta", what);
    std::array<Real, n_geometric> theta{};
    if (theta_setting.is_array()) {
        const auto &values = theta_setting.array(what + " theta");
        if (values.size() != static_cast<size_t>(n_geometric)) {
            throw InvalidArgument(what + ": theta must be one length scale or three, got " +
                                  std::to_string(values.size()));
        }
        for (int d = 0; d < n_geometric; ++d) {
            theta[static_cast<size_t>(d)] =
                values[static_cast<size_t>(d)].number(what + " theta");
        }
    } else {
        theta.fill(theta_setting.number(what + " theta"));
    }
    for (Real t : theta) {
        if (!(t > 0.0) || !std::isfinite(t)) {
            throw InvalidArgument(what + " theta must be positive");
        }
    }
    return std::make_unique<ThreeBodyTerm>(
        cutoff, width, positive_setting(settings, "delta", what), theta,
        species_filter(settings, "Z", what), species_filter(settings, "Z1", what),
        species_filter(settings, "Z2", what));
}

} // namespace gapx::detail
