// SPDX-License-Identifier: BSD-3-Clause
#include "model_terms.hpp"

#include "gapx/cutoff.hpp"
#include "gapx/elements.hpp"
#include "gapx/errors.hpp"
#include "gapx/parallel.hpp"
#include "gapx/soap.hpp"
#include "dot_kernel.hpp"

#include <algorithm>
#include <cmath>

namespace gapx::detail {
namespace {

/// Kind of a two-body row, as gapx.descriptors.two_body.PAIR_KIND_BASE.
constexpr int pair_kind_base = 1000;
/// Fewest sparse points per slice, and the number of tasks a set is split into when its rows
/// are few (a molecule: one block of rows, its points in slices).
constexpr Index min_slice = 128;
constexpr Index min_tasks = 8;

/// Atomic numbers of chemical symbols, in the order given.
std::vector<int> atomic_numbers_as_given(const Json &symbols, const std::string &what) {
    std::vector<int> numbers;
    for (const Json &symbol : symbols.array(what)) {
        const int z = atomic_number(symbol.string(what));
        if (z == 0) {
            throw InvalidArgument(what + " names an unknown element '" + symbol.string(what) +
                                  "'");
        }
        numbers.push_back(z);
    }
    return numbers;
}

/// Atomic numbers of chemical symbols, increasing.
std::vector<int> atomic_numbers(const Json &symbols, const std::string &what) {
    std::vector<int> numbers = atomic_numbers_as_given(symbols, what);
    std::sort(numbers.begin(), numbers.end());
    return numbers;
}

/// SOAP with the dot-product kernel k = (x . x_m)^zeta of the unit rows, per centre species.
class SoapTerm final : public ModelTerm {
  public:
    SoapTerm(const SoapOptions &options, Real zeta, Real delta)
        : soap_(options), zeta_(zeta), delta_(delta) {}

    Real cutoff() const override { return soap_.options().cutoff; }
    Real delta() const override { return delta_; }
    Index n_features() const override { return soap_.n_features(); }
    std::set<int> possible_kinds(const std::vector<int> &species) const override {
        std::set<int> kinds;
        for (int z : species) {
            const auto &own = soap_.options().species;
            if (std::find(own.begin(), own.end(), z) != own.end()) {
                kinds.insert(z);
            }
        }
        return kinds;
    }

    /// Keeps the points as the kernel reads them (pack_points) instead of the sets' own copy.
    void set_sparse_sets(std::vector<SparseSet> sets) override {
        packed_points_.clear();
        for (SparseSet &set : sets) {
            packed_points_.push_back(pack_points(set.points.data(), set.points.rows(),
                                                 set.points.cols()));
            set.points.resize(0, set.points.cols());
        }
        sets_ = std::move(sets);
    }

    void compute(Index n_centers, const std::vector<int> &numbers, const NeighborList &list,
                 int n_threads, ModelWorkspace &ws, Eigen::VectorXd &energies) const override {
        const int threads = resolve_threads(n_threads);
        PowerSpectrum::Centers &centers = ws.centers;
        soap_.centers(list, n_centers, numbers, centers);
        ws.pair_gradients.resize(list.n_pairs(), 3);
        // Centres in blocks, each block's expansions kept from its values to its gradients.
        const Index block = soap_.centre_block(n_centers, list.n_pairs());
        for (Index first = 0; first < n_centers; first += block) {
            const Index last = std::min(n_centers, first + block);
            soap_.compute(centers, first, last, ws.values, threads, ws.soap);
            kernel(first, last, numbers, threads, ws, energies);
            soap_.pair_gradients(centers, first, last, ws.values, ws.dE_dx, ws.pair_gradients,
                                 threads, ws.soap);
        }
    }

  private:
    /// Local energies of centres [first, last) (rows of ws.values) into energies[first..last)
    /// and their gradients dE/dx into ws.dE_dx.
    void kernel(Index first, Index last, const std::vector<int> &numbers, int threads,
                ModelWorkspace &ws, Eigen::VectorXd &energies) const {
        const Index n_feat = n_features();
        const Index stride = padded_stride(n_feat);
        constexpr Index block_rows = dot_kernel_max_rows;
        ws.dE_dx.setZero(last - first, n_feat);
        // Tasks of every set: blocks of its rows times slices of its points, so that a small
        // molecule (one block per set) still spreads over threads, all in one parallel loop (a
        // parallel region costs tens of microseconds to start). The split depends on the sizes
        // only and the slices are summed in order: results do not depend on the thread count.
        ws.dot_rows.clear();
        ws.dot_tasks.clear();
        ws.dot_row_tasks.clear();
        Index out_rows = 0;
        for (size_t set_index = 0; set_index < sets_.size(); ++set_index) {
            const Index first_row = static_cast<Index>(ws.dot_rows.size());
            for (Index i = first; i < last; ++i) {
                if (numbers[static_cast<size_t>(i)] == sets_[set_index].kind) {
                    ws.dot_rows.push_back(i - first);
                }
            }
            const Index n_rows = static_cast<Index>(ws.dot_rows.size()) - first_row;
            const Index n_points = sets_[set_index].weights.size();
            const Index n_blocks = (n_rows + block_rows - 1) / block_rows;
            const Index n_slices =
                n_blocks == 0 ? 0
                              : std::max<Index>(1, std::min((n_points + min_slice - 1) / min_slice,
                                                            min_tasks / n_blocks));
            // Slices start at chunks of the packed points.
            const Index slice =
                n_slices == 0 ? 0
                              : (n_points + n_slices * dot_kernel_chunk - 1) /
                                    (n_slices * dot_kernel_chunk) * dot_kernel_chunk;
            for (Index b = 0; b < n_blocks; ++b) {
                const Index row_begin = first_row + b * block_rows;
                const Index n = std::min(block_rows, n_rows - b * block_rows);
                for (Index r = 0; r < n; ++r) {
                    ws.dot_row_tasks.push_back(static_cast<Index>(ws.dot_tasks.size()));
                }
                for (Index sl = 0; sl < n_slices; ++sl) {
                    const Index m0 = std::min(sl * slice, n_points);
                    ws.dot_tasks.push_back({static_cast<Index>(set_index), row_begin, n, m0,
                                            std::min(slice, n_points - m0), out_rows, n_slices});
                    out_rows += n;
                }
            }
        }
        const Index n_rows = static_cast<Index>(ws.dot_rows.size());
        ws.blocks.assign(static_cast<size_t>(n_rows * stride), 0.0);
        for (Index r = 0; r < n_rows; ++r) {
            std::copy_n(ws.values.row(ws.dot_rows[static_cast<size_t>(r)]).data(), n_feat,
                        ws.blocks.data() + r * stride);
        }
        ws.task_energies.assign(static_cast<size_t>(out_rows), 0.0);
        // Not zeroed: the kernel writes every gradient row it is given.
        if (ws.task_gradients.size() < static_cast<size_t>(out_rows * stride)) {
            ws.task_gradients.resize(static_cast<size_t>(out_rows * stride));
        }
        const Index n_tasks = static_cast<Index>(ws.dot_tasks.size());
#pragma omp parallel num_threads(threads)
        {
#pragma omp for schedule(dynamic, 1)
            for (Index t = 0; t < n_tasks; ++t) {
                const ModelWorkspace::DotTask &task = ws.dot_tasks[static_cast<size_t>(t)];
                const SparseSet &set = sets_[static_cast<size_t>(task.set)];
                dot_kernel_energies(ws.blocks.data() + task.row_begin * stride, task.n_rows,
                                    packed_points_[static_cast<size_t>(task.set)].data() +
                                        task.m0 * stride,
                                    task.n_points, stride, set.weights.data() + task.m0, zeta_,
                                    ws.task_energies.data() + task.out,
                                    ws.task_gradients.data() + task.out * stride);
            }
#pragma omp for schedule(static)
            for (Index r = 0; r < n_rows; ++r) {
                const Index first_task = ws.dot_row_tasks[static_cast<size_t>(r)];
                const ModelWorkspace::DotTask &leader =
                    ws.dot_tasks[static_cast<size_t>(first_task)];
                const Index within = r - leader.row_begin;
                const Index i = ws.dot_rows[static_cast<size_t>(r)];
                Real local = 0.0;
                Real *g = ws.dE_dx.row(i).data();
                for (Index sl = 0; sl < leader.slices; ++sl) {
                    const Index out =
                        ws.dot_tasks[static_cast<size_t>(first_task + sl)].out + within;
                    local += ws.task_energies[static_cast<size_t>(out)];
                    const Real *part = ws.task_gradients.data() + out * stride;
                    for (Index f = 0; f < n_feat; ++f) {
                        g[f] += part[f];
                    }
                }
                const Real delta = sets_[static_cast<size_t>(leader.set)].delta;
                energies[first + i] += delta * delta * local;
                for (Index f = 0; f < n_feat; ++f) {
                    g[f] *= delta * delta;
                }
            }
        }
    }

    PowerSpectrum soap_;
    Real zeta_;
    Real delta_;
    std::vector<AlignedVector<Real>> packed_points_; ///< per set: its points as the kernel reads
};

/// Pair distances with k = f_c(r) f_c(r') exp(-(r - r')^2 / 2 theta^2) per species pair, each
/// pair's local energy shared equally by its atoms (gapx.TwoBody).
class TwoBodyTerm final : public ModelTerm {
  public:
    TwoBodyTerm(Real cutoff, Real width, Real delta, Real theta, std::vector<int> species)
        : cutoff_(cutoff), width_(width), delta_(delta), theta_(theta),
          species_(std::move(species)) {}

    Real cutoff() const override { return cutoff_; }
    Real delta() const override { return delta_; }
    Index n_features() const override { return 2; }
    std::set<int> possible_kinds(const std::vector<int> &species) const override {
        std::vector<int> allowed;
        for (int z : species) {
            if (species_.empty() || std::binary_search(species_.begin(), species_.end(), z)) {
                allowed.push_back(z);
            }
        }
        std::sort(allowed.begin(), allowed.end());
        std::set<int> kinds;
        for (size_t a = 0; a < allowed.size(); ++a) {
            for (size_t b = a; b < allowed.size(); ++b) {
                kinds.insert(allowed[a] * pair_kind_base + allowed[b]);
            }
        }
        return kinds;
    }

    void compute(Index n_centers, const std::vector<int> &numbers, const NeighborList &list,
                 int n_threads, ModelWorkspace &ws, Eigen::VectorXd &energies) const override {
        const int threads = resolve_threads(n_threads);
        if (!species_.empty()) {
            for (int z : numbers) {
                if (!std::binary_search(species_.begin(), species_.end(), z)) {
                    throw InvalidArgument("species " + chemical_symbol(z) +
                                          " is not in this TwoBody's species");
                }
            }
        }
        const Index n_pairs = list.n_pairs();
        ws.pair_gradients.resize(n_pairs, 3);
        ws.pair_energies.resize(n_pairs);
        const Real inv_theta2 = 1.0 / (theta_ * theta_);
        const Real d2 = delta_ * delta_;
#pragma omp parallel for num_threads(threads) schedule(static)
        for (Index k = 0; k < n_pairs; ++k) {
            const auto idx = static_cast<size_t>(k);
            const int zi = numbers[static_cast<size_t>(list.first[idx])];
            const int zj = numbers[static_cast<size_t>(list.second[idx])];
            const int kind = std::min(zi, zj) * pair_kind_base + std::max(zi, zj);
            const SparseSet *set = nullptr;
            for (const SparseSet &s : sets_) {
                if (s.kind == kind) {
                    set = &s;
                }
            }
            Real energy = 0.0;
            Real slope = 0.0;
            const Real r = list.distances[idx];
            if (set != nullptr) {
                Real fc = 0.0;
                Real dfc = 0.0;
                cosine_cutoff(r, cutoff_, width_, fc, dfc);
                for (Index m = 0; m < set->points.rows(); ++m) {
                    const Real diff = r - set->points(m, 0);
                    const Real e = set->weights[m] * set->points(m, 1) *
                                   std::exp(-0.5 * diff * diff * inv_theta2);
                    energy += fc * e;
                    slope += e * (dfc - fc * diff * inv_theta2);
                }
            }
            // Half of the pair's energy belongs to the centre (the full list holds j -> i too).
            ws.pair_energies[k] = 0.5 * d2 * energy;
            const Real scale = r > 0.0 ? 0.5 * d2 * slope / r : 0.0;
            for (int a = 0; a < 3; ++a) {
                ws.pair_gradients(k, a) = scale * list.vectors(k, a);
            }
        }
        // In pair order: the sums do not depend on the number of threads.
        for (Index k = 0; k < n_pairs; ++k) {
            const Index i = list.first[static_cast<size_t>(k)];
            if (i < n_centers) {
                energies[i] += ws.pair_energies[k];
            }
        }
    }

  private:
    Real cutoff_;
    Real width_;
    Real delta_;
    Real theta_;
    std::vector<int> species_; ///< allowed atomic numbers, increasing; empty: any
};

} // namespace

Real positive_setting(const Json &settings, const std::string &key, const std::string &what) {
    const Real value = settings.at(key, what).number(what + " " + key);
    if (!(value > 0.0) || !std::isfinite(value)) {
        throw InvalidArgument(what + " " + key + " must be positive");
    }
    return value;
}

std::unique_ptr<ModelTerm> make_term(const Json &settings, const std::string &what) {
    const std::string &type = settings.at("type", what).string(what + " type");
    if (type == "soap") {
        SoapOptions options;
        // Files written before the QUIP basis existed have no radial_basis: GTO. QUIP's basis
        // orders the species channels as given, the GTO basis by atomic number.
        const Json *basis = settings.find("radial_basis");
        const std::string basis_name =
            basis == nullptr ? std::string("gto") : basis->string(what + " radial_basis");
        if (basis_name == "quip") {
            options.radial_basis = RadialBasisKind::quip;
            options.species =
                atomic_numbers_as_given(settings.at("species", what), what + " species");
        } else if (basis_name == "gto") {
            options.species = atomic_numbers(settings.at("species", what), what + " species");
        } else {
            throw InvalidArgument(what + ": radial_basis must be 'gto' or 'quip', got '" +
                                  basis_name + "'");
        }
        options.cutoff = positive_setting(settings, "cutoff", what);
        options.n_max = static_cast<int>(settings.at("n_max", what).integer(what + " n_max"));
        options.l_max = static_cast<int>(settings.at("l_max", what).integer(what + " l_max"));
        options.atom_sigma = positive_setting(settings, "atom_sigma", what);
        options.transition_width = positive_setting(settings, "cutoff_transition_width", what);
        options.central_weight =
            settings.at("central_weight", what).number(what + " central_weight");
        if (options.n_max < 1 || options.l_max < 0 || options.l_max > 30) {
            throw InvalidArgument(what + ": n_max must be >= 1 and l_max in [0, 30]");
        }
        return std::make_unique<SoapTerm>(options, positive_setting(settings, "zeta", what),
                                          positive_setting(settings, "delta", what));
    }
    if (type == "two_body") {
        const Real cutoff = positive_setting(settings, "cutoff", what);
        const Real width = positive_setting(settings, "cutoff_transition_width", what);
        if (width > cutoff) {
            throw InvalidArgument(what + ": cutoff_transition_width exceeds the cutoff");
        }
        const Json &species = settings.at("species", what);
        return std::make_unique<TwoBodyTerm>(
            cutoff, width, positive_setting(settings, "delta", what), positive_setting(settings, "theta", what),
            species.is_null() ? std::vector<int>{} : atomic_numbers(species, what + " species"));
    }
    if (type == "three_body") {
        return make_three_body_term(settings, what);
    }
    throw NotImplemented(what + " is of type '" + type +
                         "', which the C++ prediction engine does not implement (it has soap, "
                         "two_body and three_body)");
}

} // namespace gapx::detail
