// SPDX-License-Identifier: BSD-3-Clause
#include "gapx/equispaced_gaussians.hpp"
#include "gapx/errors.hpp"
#include "gapx/memory.hpp"
#include "gapx/parallel.hpp"
#include "gapx/soap.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

#ifdef __linux__
#include <sys/mman.h>

#include <cstdint>
#endif

namespace gapx {
namespace {

/// Asks Linux for transparent huge pages on a large, not yet touched output buffer: the
/// gradients of a 1000-atom structure take hundreds of MB, and first-touch page faults on 4 kB
/// pages otherwise cost a quarter of the gradient time. A hint only; harmless where unsupported.
void advise_huge_pages(Real *data, Index size) {
#ifdef __linux__
    const std::uintptr_t page = 4096;
    const std::uintptr_t begin = (reinterpret_cast<std::uintptr_t>(data) + page - 1) & ~(page - 1);
    const std::uintptr_t end = reinterpret_cast<std::uintptr_t>(data + size) & ~(page - 1);
    if (end > begin + (std::uintptr_t{4} << 20)) {
        madvise(reinterpret_cast<void *>(begin), end - begin, MADV_HUGEPAGE);
    }
#else
    (void)data;
    (void)size;
#endif
}

constexpr Real sqrt2 = 1.41421356237309504880;

/// Sums over m of c_lm Y_lm and of c_lm dY_lm/dx, /dy, /dz for one l: the contraction every
/// pair needs (Y and its Cartesian gradient laid out as in the pair workspace, dy = 3 x n_lm).
struct MSums {
    Real y = 0.0, dx = 0.0, dy = 0.0, dz = 0.0;
};
inline MSums sum_over_m(const Real *c, const Real *y, const Real *dy, int n_lm, int l) {
    MSums s;
    for (int lm = l * l; lm < (l + 1) * (l + 1); ++lm) {
        s.y += c[lm] * y[lm];
        s.dx += c[lm] * dy[lm];
        s.dy += c[lm] * dy[n_lm + lm];
        s.dz += c[lm] * dy[2 * n_lm + lm];
    }
    return s;
}

/// First pair of each centre into `starts`: pairs of centre i are [starts[i], starts[i+1]).
void center_starts(const NeighborList &neighbors, Index n_atoms, std::vector<Index> &starts) {
    starts.assign(static_cast<size_t>(n_atoms) + 1, 0);
    for (Index i_pair = 0; i_pair < neighbors.n_pairs(); ++i_pair) {
        ++starts[neighbors.first[i_pair] + 1];
    }
    for (Index i = 0; i < n_atoms; ++i) {
        starts[i + 1] += starts[i];
    }
}

/// Refuses a call whose buffers (`bytes`, outputs plus per-thread scratch) exceed `budget`.
void check_budget(const std::string &what, Real bytes, Index budget) {
    if (!(bytes <= static_cast<Real>(budget))) {
        throw InvalidArgument(what + " would take " + detail::format_bytes(bytes) +
                              ", more than the memory limit of " +
                              detail::format_bytes(static_cast<Real>(budget)) +
                              " (max_bytes; the default is half of the physical memory)");
    }
}

/// "the SOAP gradients of 1000 atoms (12000 features)" for check_budget messages.
std::string describe(const char *what, Index n_atoms, Index n_features) {
    return std::string(what) + " of " + std::to_string(n_atoms) + " atoms (" +
           std::to_string(n_features) + " features)";
}

constexpr Real bytes_per_real = sizeof(Real);
/// Bytes of the neighbour list per pair (see build_neighbor_list).
constexpr Real neighbor_bytes_per_pair = 60.0;

/// Offset of the features (u, v >= u) in units of l-blocks: sum_{u' < u} (n_channels - u').
inline Index channel_offset(int u, int n_channels) {
    return static_cast<Index>(u) * n_channels - static_cast<Index>(u) * (u - 1) / 2;
}

/// p[(u, v, l)] = kappa_uv sum_m c[u][lm] c[v][lm] (the (2l+1)^{-1/2} lives in c).
void power_spectrum(const Real *c, int n_channels, int n_l, Real *out) {
    const int n_lm = n_l * n_l;
    Index f = 0;
    for (int u = 0; u < n_channels; ++u) {
        const Real *cu = c + u * n_lm;
        for (int v = u; v < n_channels; ++v) {
            const Real *cv = c + v * n_lm;
            const Real kappa = u == v ? 1.0 : sqrt2;
            for (int l = 0; l < n_l; ++l) {
                Real sum = 0.0;
                for (int lm = l * l; lm < (l + 1) * (l + 1); ++lm) {
                    sum += cu[lm] * cv[lm];
                }
                out[f++] = kappa * sum;
            }
        }
    }
}

/// Derivative of the power spectrum along dc: kappa_uv sum_m (dc_u c_v + c_u dc_v).
void power_spectrum_derivative(const Real *c, const Real *dc, int n_channels, int n_l,
                               Real *out) {
    const int n_lm = n_l * n_l;
    Index f = 0;
    for (int u = 0; u < n_channels; ++u) {
        const Real *cu = c + u * n_lm;
        const Real *dcu = dc + u * n_lm;
        for (int v = u; v < n_channels; ++v) {
            const Real *cv = c + v * n_lm;
            const Real *dcv = dc + v * n_lm;
            const Real kappa = u == v ? 1.0 : sqrt2;
            for (int l = 0; l < n_l; ++l) {
                Real sum = 0.0;
                for (int lm = l * l; lm < (l + 1) * (l + 1); ++lm) {
                    sum += dcu[lm] * cv[lm] + cu[lm] * dcv[lm];
                }
                out[f++] = kappa * sum;
            }
        }
    }
}

/// x . y with four independent partial sums (a single running sum is bound by the latency of
/// the additions; the compiler may not reassociate floating-point sums itself).
inline Real dot_product(const Real *x, const Real *y, Index n) {
    Real s0 = 0.0;
    Real s1 = 0.0;
    Real s2 = 0.0;
    Real s3 = 0.0;
    Index f = 0;
    for (; f + 4 <= n; f += 4) {
        s0 += x[f] * y[f];
        s1 += x[f + 1] * y[f + 1];
        s2 += x[f + 2] * y[f + 2];
        s3 += x[f + 3] * y[f + 3];
    }
    for (; f < n; ++f) {
        s0 += x[f] * y[f];
    }
    return (s0 + s1) + (s2 + s3);
}

/// Chain rule through x = p/|p|: row <- (row - x (x . row)) / |p|.
inline void project_normalisation(Real *row, const Real *x, Real inv_norm, Index n_features) {
    const Real dot = dot_product(x, row, n_features);
    for (Index f = 0; f < n_features; ++f) {
        row[f] = (row[f] - x[f] * dot) * inv_norm;
    }
}

Real normalise(const Real *p, Real *x, Index n_features) {
    const Real norm = std::sqrt(dot_product(p, p, n_features));
    const Real inv = norm > 0.0 ? 1.0 / norm : 0.0;
    for (Index f = 0; f < n_features; ++f) {
        x[f] = p[f] * inv;
    }
    return norm;
}

struct GradientScratch {
    std::vector<Real> p;
    std::vector<Real> a;      // [v][l]: sum_m Y_lm c_v,lm
    std::vector<Real> b;      // [xyz][v][l]: sum_m dY_lm/dD c_v,lm
    std::vector<Real> m;      // [2][n][v][l]: R_nl and dR_nl repeated over v
    std::vector<Real> g;      // [xyz][n][lm]: dc/dD of one pair
    std::vector<Real> dc_deps; // [a <= b][channel][lm]
    std::vector<std::pair<Index, int>> order;
    std::vector<int> entry;
};

/// Sizes shared by the per-centre kernels.
struct Dims {
    int n_max;
    int n_l;
    int n_lm;
    int n_nl;
    int n_channels;
    Index n_features;
};

/// One pair's quantities in the expansion workspace (see SphericalExpansion::Workspace).
struct PairView {
    int s0;              // first channel of the neighbour's species
    const Real *y;       // [lm]
    const Real *dy;      // [xyz][lm]
    const Real *radial;  // [n][l]
    const Real *dradial; // [n][l]
    const Real *u;       // [xyz]
};

PairView pair_view(const SphericalExpansion::Workspace &ws, int k, const Dims &dims) {
    return {ws.species[k] * dims.n_max,
            ws.harmonics.data() + static_cast<size_t>(k) * dims.n_lm,
            ws.dharmonics.data() + static_cast<size_t>(k) * 3 * dims.n_lm,
            ws.radial.data() + static_cast<size_t>(k) * dims.n_nl,
            ws.dradial.data() + static_cast<size_t>(k) * dims.n_nl,
            ws.units.data() + 3 * k};
}

/// The independent strain components a <= b. x is rotation invariant, so
/// d x/d eps_ab = sum_pairs d x/dD_a D_b is symmetric (its antisymmetric part is the derivative
/// along an infinitesimal rotation): only these six are computed.
constexpr int strain_upper[6][2] = {{0, 0}, {0, 1}, {0, 2}, {1, 1}, {1, 2}, {2, 2}};

void symmetrise_strain(Real *strain, Index n_features) {
    for (const auto &ab : strain_upper) {
        if (ab[0] != ab[1]) {
            const Real *row = strain + (3 * ab[0] + ab[1]) * n_features;
            std::copy(row, row + n_features, strain + (3 * ab[1] + ab[0]) * n_features);
        }
    }
}

/// Adds dp/dD of one pair, [xyz][feature], to `entry_row`.
///
/// For the pair's contribution c_{s n,lm} += R_nl Y_lm, dp[u,v,l]/dD = kappa (dc_u . c_v +
/// c_u . dc_v) restricted to u or v in the neighbour's species block; with
/// dc_{n,lm}/dD = dR_nl u Y_lm + R_nl dY_lm/dD, dc_n . c_v = dR_nl u A[v][l] + R_nl B[v][l]
/// where A = sum_m Y c_v and B = sum_m dY/dD c_v: O(n_channels (l_max+1)^2) per pair, not per
/// (n, v). A and B carry kappa = sqrt 2 (all off-diagonal channel pairs); the diagonal
/// (u = v, kappa = 1, counted twice) is added separately.
void add_pair_position_gradient(const Real *c, const PairView &pair, const Dims &dims,
                                GradientScratch &sc, Real *entry_row) {
    const int n_max = dims.n_max;
    const int n_l = dims.n_l;
    const int n_lm = dims.n_lm;
    const int n_channels = dims.n_channels;
    const int n_vl = n_channels * n_l;
    const Real *y = pair.y;
    const Real *dy = pair.dy;
    Real *a = sc.a.data();
    Real *bx = sc.b.data();
    Real *by = bx + n_vl;
    Real *bz = by + n_vl;
    for (int v = 0; v < n_channels; ++v) {
        const Real *cv = c + v * n_lm;
        for (int l = 0; l < n_l; ++l) {
            const MSums m = sum_over_m(cv, y, dy, n_lm, l);
            a[v * n_l + l] = sqrt2 * m.y;
            bx[v * n_l + l] = sqrt2 * m.dx;
            by[v * n_l + l] = sqrt2 * m.dy;
            bz[v * n_l + l] = sqrt2 * m.dz;
        }
    }
    // Radial rows repeated over v so the loops below run over contiguous (v, l).
    Real *r_rep = sc.m.data();
    Real *dr_rep = r_rep + static_cast<size_t>(n_max) * n_vl;
    for (int n = 0; n < n_max; ++n) {
        for (int v = 0; v < n_channels; ++v) {
            for (int l = 0; l < n_l; ++l) {
                r_rep[n * n_vl + v * n_l + l] = pair.radial[n * n_l + l];
                dr_rep[n * n_vl + v * n_l + l] = pair.dradial[n * n_l + l];
            }
        }
    }
    for (int alpha = 0; alpha < 3; ++alpha) {
        const Real ua = pair.u[alpha];
        const Real *b = sc.b.data() + static_cast<size_t>(alpha) * n_vl;
        Real *row = entry_row + alpha * dims.n_features;
        for (int n = 0; n < n_max; ++n) {
            const int w = pair.s0 + n;
            const Real *rn = r_rep + n * n_vl;
            const Real *drn = dr_rep + n * n_vl;
            // Features (w, v > w): contiguous in the row and in (v, l).
            Real *target = row + (channel_offset(w, n_channels) + 1) * n_l;
            for (int q = (w + 1) * n_l; q < n_vl; ++q) {
                target[q - (w + 1) * n_l] += ua * drn[q] * a[q] + rn[q] * b[q];
            }
            // Features (v < w, w): one l-block per v.
            for (int v = 0; v < w; ++v) {
                Real *t = row + (channel_offset(v, n_channels) + w - v) * n_l;
                const int q0 = v * n_l;
                for (int l = 0; l < n_l; ++l) {
                    t[l] += ua * drn[q0 + l] * a[q0 + l] + rn[q0 + l] * b[q0 + l];
                }
            }
            // Feature (w, w): 2 dc_w . c_w with kappa = 1.
            Real *t = row + channel_offset(w, n_channels) * n_l;
            const int q0 = w * n_l;
            for (int l = 0; l < n_l; ++l) {
                t[l] += sqrt2 * (ua * drn[q0 + l] * a[q0 + l] + rn[q0 + l] * b[q0 + l]);
            }
        }
    }
}

/// Strain from a finished, normalised position-gradient entry d x/dD of a single pair with
/// vector D: strain[a][b] += d x/dD_a D_b for a <= b. Costs 6 n_features per pair.
void add_entry_strain(const Real *entry_row, const Real *vector, Index n_features,
                      Real *strain) {
    for (const auto &ab : strain_upper) {
        const Real d_beta = vector[ab[1]];
        const Real *source = entry_row + ab[0] * n_features;
        Real *target = strain + (3 * ab[0] + ab[1]) * n_features;
        for (Index f = 0; f < n_features; ++f) {
            target[f] += source[f] * d_beta;
        }
    }
}

/// dc/deps_ab += dc/dD_a D_b of one pair (sc.dc_deps, [a <= b][channel][lm]). Costs
/// 9 n_max (l_max+1)^2 per pair, independent of the number of species.
void add_pair_strain_coefficients(const PairView &pair, const Real *vector, const Dims &dims,
                                  GradientScratch &sc) {
    const int n_max = dims.n_max;
    const int n_l = dims.n_l;
    const int n_lm = dims.n_lm;
    const size_t block = static_cast<size_t>(dims.n_channels) * n_lm;
    for (int alpha = 0; alpha < 3; ++alpha) {
        for (int n = 0; n < n_max; ++n) {
            Real *g = sc.g.data() + (alpha * n_max + n) * n_lm;
            for (int l = 0; l < n_l; ++l) {
                const Real radial_part = pair.dradial[n * n_l + l] * pair.u[alpha];
                const Real r = pair.radial[n * n_l + l];
                for (int lm = l * l; lm < (l + 1) * (l + 1); ++lm) {
                    g[lm] = radial_part * pair.y[lm] + r * pair.dy[alpha * n_lm + lm];
                }
            }
        }
    }
    for (int ab = 0; ab < 6; ++ab) {
        const Real d_beta = vector[strain_upper[ab][1]];
        Real *target = sc.dc_deps.data() + ab * block + static_cast<size_t>(pair.s0) * n_lm;
        const Real *g = sc.g.data() + strain_upper[ab][0] * n_max * n_lm;
        for (int q = 0; q < n_max * n_lm; ++q) {
            target[q] += g[q] * d_beta;
        }
    }
}

/// Strain rows a <= b from dc/deps through the bilinear power spectrum and the normalisation.
void strain_from_coefficients(const Real *c, const Real *x, Real inv_norm, const Dims &dims,
                              const GradientScratch &sc, Real *strain) {
    const size_t block = static_cast<size_t>(dims.n_channels) * dims.n_lm;
    for (int ab = 0; ab < 6; ++ab) {
        Real *row = strain + (3 * strain_upper[ab][0] + strain_upper[ab][1]) * dims.n_features;
        power_spectrum_derivative(c, sc.dc_deps.data() + ab * block, dims.n_channels, dims.n_l,
                                  row);
        project_normalisation(row, x, inv_norm, dims.n_features);
    }
}

} // namespace

PowerSpectrum::PowerSpectrum(const SoapOptions &options) : expansion_([&options] {
    if (!(options.cutoff > 0.0) || !std::isfinite(options.cutoff)) {
        throw InvalidArgument("cutoff must be positive, got " + std::to_string(options.cutoff));
    }
    if (!(options.transition_width > 0.0) || !(options.transition_width <= options.cutoff)) {
        throw InvalidArgument("transition_width must satisfy 0 < width <= cutoff, got " +
                              std::to_string(options.transition_width));
    }
    if (!std::isfinite(options.central_weight)) {
        throw InvalidArgument("central_weight must be finite");
    }
    if (options.species.empty()) {
        throw InvalidArgument("species must not be empty");
    }
    const bool quip = options.radial_basis == RadialBasisKind::quip;
    for (size_t k = 0; k < options.species.size(); ++k) {
        const auto begin = options.species.begin();
        const bool repeated =
            std::find(begin, begin + static_cast<std::ptrdiff_t>(k), options.species[k]) !=
            begin + static_cast<std::ptrdiff_t>(k);
        if (options.species[k] < 1 || repeated ||
            (!quip && k > 0 && options.species[k] <= options.species[k - 1])) {
            throw InvalidArgument(quip ? "species must be distinct positive atomic numbers"
                                       : "species must be distinct positive atomic numbers in "
                                         "increasing order");
        }
    }
    RadialSettings radial;
    radial.cutoff = options.cutoff;
    radial.n_max = options.n_max;
    radial.l_max = options.l_max;
    radial.atom_sigma = options.atom_sigma;
    if (quip) {
        EquispacedGaussians::check_settings(radial);
    } else {
        RadialSpline::check_settings(radial);
    }
    // In floating point: the channel count squared can overflow any integer type.
    const Real n_channels = static_cast<Real>(options.species.size()) * options.n_max;
    const Real n_features = n_channels * (n_channels + 1.0) / 2.0 * (options.l_max + 1);
    if (!(n_features <= static_cast<Real>(max_features))) {
        throw InvalidArgument(
            "SOAP with " + std::to_string(options.species.size()) + " species, n_max " +
            std::to_string(options.n_max) + " and l_max " + std::to_string(options.l_max) +
            " would have " + detail::format_count(n_features) +
            " features: one descriptor row would take " +
            detail::format_bytes(n_features * sizeof(Real)) + " (limit " +
            std::to_string(max_features) + " features, " +
            detail::format_bytes(static_cast<Real>(max_features) * sizeof(Real)) +
            " per row); use fewer species or a smaller n_max or l_max");
    }
    return options;
}()) {}

Index PowerSpectrum::n_features() const {
    const Index n_channels = expansion_.n_channels();
    return n_channels * (n_channels + 1) / 2 * expansion_.n_l();
}

void PowerSpectrum::species_indices(const std::vector<int> &numbers,
                                    std::vector<int> &indices) const {
    const auto &species = options().species;
    indices.resize(numbers.size());
    for (size_t k = 0; k < numbers.size(); ++k) {
        // Linear search: species may be in any order (QUIP basis), and there are only a few.
        const auto found = std::find(species.begin(), species.end(), numbers[k]);
        if (found == species.end() || *found != numbers[k]) {
            throw InvalidArgument("atom " + std::to_string(k) + " has atomic number " +
                                  std::to_string(numbers[k]) +
                                  ", which is not in the SOAP species");
        }
        indices[k] = static_cast<int>(found - species.begin());
    }
}

PowerSpectrum::Centers PowerSpectrum::centers(const NeighborList &neighbors, Index n_centers,
                                              const std::vector<int> &numbers) const {
    Centers out;
    centers(neighbors, n_centers, numbers, out);
    return out;
}

void PowerSpectrum::centers(const NeighborList &neighbors, Index n_centers,
                            const std::vector<int> &numbers, Centers &out) const {
    const Index n_atoms = static_cast<Index>(numbers.size());
    if (n_centers < 0 || n_centers > n_atoms) {
        throw InvalidArgument("n_centers must be between 0 and the number of atoms");
    }
    const Real cutoff = options().cutoff;
    for (Index k = 0; k < neighbors.n_pairs(); ++k) {
        const auto idx = static_cast<size_t>(k);
        const Index i = neighbors.first[idx];
        if (i < 0 || i >= n_centers || neighbors.second[idx] < 0 ||
            neighbors.second[idx] >= n_atoms) {
            throw InvalidArgument("the neighbour list refers to centres beyond n_centers or "
                                  "atoms beyond n_atoms");
        }
        if (k > 0 && i < neighbors.first[idx - 1]) {
            throw InvalidArgument("the neighbour list is not grouped by increasing centre");
        }
        if (!(neighbors.distances[idx] <= cutoff)) {
            throw InvalidArgument("the neighbour list has a pair " +
                                  detail::format_real(neighbors.distances[idx]) +
                                  " Å apart, beyond the SOAP cutoff " +
                                  detail::format_real(cutoff));
        }
    }
    out.neighbors = &neighbors;
    out.n_centers = n_centers;
    species_indices(numbers, out.species);
    center_starts(neighbors, n_centers, out.starts);
}

PowerSpectrum::Environments PowerSpectrum::environments(const Eigen::Ref<const Positions> &positions,
                                                        const Cell &cell, Pbc pbc,
                                                        const std::vector<int> &numbers,
                                                        int n_threads,
                                                        const NeighborList *neighbors,
                                                        Index max_bytes) const {
    const Index n_atoms = positions.rows();
    if (static_cast<Index>(numbers.size()) != n_atoms) {
        throw InvalidArgument("numbers and positions have different lengths");
    }
    Environments env;
    const Real cutoff = options().cutoff;
    if (neighbors == nullptr) {
        env.owned = std::make_unique<NeighborList>(
            build_neighbor_list(positions, cell, pbc, cutoff, n_threads, max_bytes));
        neighbors = env.owned.get();
    } else if (neighbors->cutoff != cutoff) {
        // Pair order within a centre depends on the cell-list bins and so on the cutoff: only a
        // list built for this cutoff gives the same numbers as building it here.
        throw InvalidArgument("the neighbour list was built for cutoff " +
                              std::to_string(neighbors->cutoff) + ", not the SOAP cutoff " +
                              std::to_string(cutoff));
    }
    env.centers = centers(*neighbors, n_atoms, numbers);
    return env;
}

Index PowerSpectrum::bytes_per_centre(Index n_centers, Index n_pairs) const {
    const Index pairs_per_centre = std::max<Index>(1, n_pairs / std::max<Index>(1, n_centers));
    const Index doubles_per_pair =
        2 * expansion_.n_max() * expansion_.n_l() + 4 * expansion_.n_lm() + 3;
    const Index doubles_per_centre = pairs_per_centre * doubles_per_pair + 2 * n_features() +
                                     expansion_.n_channels() * expansion_.n_lm();
    return static_cast<Index>(sizeof(Real)) * doubles_per_centre +
           pairs_per_centre * static_cast<Index>(sizeof(int));
}

Index PowerSpectrum::centre_block(Index n_centers, Index n_pairs) const {
    return std::max<Index>(1, block_bytes / bytes_per_centre(n_centers, n_pairs));
}

void PowerSpectrum::values_only(const Centers &centers, RowMatrix &values, int threads) const {
    const Index n_feat = n_features();
    const NeighborList &neighbors = *centers.neighbors;
    const std::vector<int> &species = centers.species;
    const std::vector<Index> &starts = centers.starts;
    values.resize(centers.n_centers, n_feat);
    const Index chunk = dynamic_chunk(centers.n_centers, threads, 16);
    ExceptionCapture capture;
#pragma omp parallel num_threads(threads)
    {
        SphericalExpansion::Workspace ws;
        std::vector<Real> p(static_cast<size_t>(n_feat));
#pragma omp for schedule(dynamic, chunk)
        for (Index i = 0; i < centers.n_centers; ++i) {
            capture.run([&] {
                expansion_.compute<false>(i, species[i], neighbors, starts[i], starts[i + 1],
                                          species.data(), ws);
                power_spectrum(ws.coefficients.data(), expansion_.n_channels(), expansion_.n_l(),
                               p.data());
                normalise(p.data(), values.row(i).data(), n_feat);
            });
        }
    }
    capture.rethrow();
}

void PowerSpectrum::compute(const Centers &centers, Index begin, Index end, RowMatrix &values,
                            int n_threads, Scratch &scratch) const {
    const int threads = resolve_threads(n_threads);
    if (scratch.threads.size() < static_cast<size_t>(threads)) {
        scratch.threads.resize(static_cast<size_t>(threads));
    }
    if (scratch.kept.size() < static_cast<size_t>(end - begin)) {
        scratch.kept.resize(static_cast<size_t>(end - begin));
    }
    scratch.norms.resize(static_cast<size_t>(end - begin));
    const Index n_feat = n_features();
    const NeighborList &neighbors = *centers.neighbors;
    const std::vector<int> &species = centers.species;
    const std::vector<Index> &starts = centers.starts;
    values.resize(end - begin, n_feat);
    const Index chunk = dynamic_chunk(end - begin, threads, 16);
    ExceptionCapture capture;
#pragma omp parallel num_threads(threads)
    {
        std::vector<Real> &p = scratch.threads[static_cast<size_t>(thread_id())].p;
        p.resize(n_feat);
#pragma omp for schedule(dynamic, chunk)
        for (Index i = begin; i < end; ++i) {
            capture.run([&] {
                SphericalExpansion::Workspace &ws = scratch.kept[static_cast<size_t>(i - begin)];
                expansion_.compute<true>(i, species[i], neighbors, starts[i], starts[i + 1],
                                         species.data(), ws);
                power_spectrum(ws.coefficients.data(), expansion_.n_channels(), expansion_.n_l(),
                               p.data());
                scratch.norms[static_cast<size_t>(i - begin)] =
                    normalise(p.data(), values.row(i - begin).data(), n_feat);
            });
        }
    }
    capture.rethrow();
}

RowMatrix PowerSpectrum::compute(const Eigen::Ref<const Positions> &positions, const Cell &cell,
                                 Pbc pbc, const std::vector<int> &numbers, int n_threads,
                                 const NeighborList *neighbors_in, Index max_bytes) const {
    const int threads = resolve_threads(n_threads);
    const Index budget = resolve_memory_budget(max_bytes);
    const Index n_atoms = positions.rows();
    const Index n_feat = n_features();
    // The values and one power spectrum per thread; the neighbour list gets what is left.
    const Real own_bytes = static_cast<Real>(n_atoms + threads) * n_feat * bytes_per_real;
    check_budget(describe("the SOAP descriptors", n_atoms, n_feat), own_bytes, budget);
    const Environments env =
        environments(positions, cell, pbc, numbers, threads, neighbors_in,
                     std::max<Index>(1, budget - static_cast<Index>(own_bytes)));
    RowMatrix values;
    values_only(env.centers, values, threads);
    return values;
}

SoapGradients PowerSpectrum::compute_gradients(const Eigen::Ref<const Positions> &positions,
                                               const Cell &cell, Pbc pbc,
                                               const std::vector<int> &numbers,
                                               int n_threads,
                                               const NeighborList *neighbors_in,
                                               Index max_bytes) const {
    const int threads = resolve_threads(n_threads);
    const Index budget = resolve_memory_budget(max_bytes);
    const Index n_atoms = positions.rows();
    const Index n_feat = n_features();
    // Values and strain (10 rows of features per atom) and the per-thread power spectra are
    // known now; the position gradients (3 per gradient pair) once the neighbours are.
    const Real fixed_bytes = static_cast<Real>(10 * n_atoms + threads) * n_feat * bytes_per_real;
    check_budget(describe("the SOAP gradients", n_atoms, n_feat), fixed_bytes, budget);
    // Named references, not a structured binding: lambdas below capture them (C++17).
    const Environments env =
        environments(positions, cell, pbc, numbers, threads, neighbors_in,
                     std::max<Index>(1, budget - static_cast<Index>(fixed_bytes)));
    const std::vector<int> &species = env.centers.species;
    const NeighborList &neighbors = *env.centers.neighbors;
    const std::vector<Index> &starts = env.centers.starts;

    // Pass 1: one gradient entry per centre (self) plus one per distinct neighbour atom j != i
    // (periodic images of one atom merge; an atom's own images do not move relative to it).
    std::vector<Index> entry_starts(n_atoms + 1, 0);
#pragma omp parallel num_threads(threads)
    {
        std::vector<Index> js;
#pragma omp for schedule(static)
        for (Index i = 0; i < n_atoms; ++i) {
            js.clear();
            for (Index k = starts[i]; k < starts[i + 1]; ++k) {
                if (neighbors.second[k] != i) {
                    js.push_back(neighbors.second[k]);
                }
            }
            std::sort(js.begin(), js.end());
            entry_starts[i + 1] = 1 + (std::unique(js.begin(), js.end()) - js.begin());
        }
    }
    for (Index i = 0; i < n_atoms; ++i) {
        entry_starts[i + 1] += entry_starts[i];
    }
    const Index n_grad = entry_starts[n_atoms];
    check_budget(describe("the SOAP gradients", n_atoms, n_feat) + " with " +
                     std::to_string(n_grad) + " gradient pairs",
                 fixed_bytes + static_cast<Real>(n_grad) * (3 * n_feat + 2) * bytes_per_real +
                     static_cast<Real>(neighbors.n_pairs()) * neighbor_bytes_per_pair,
                 budget);

    SoapGradients out;
    out.values.resize(n_atoms, n_feat);
    out.pairs.resize(n_grad, 2);
    out.gradients.resize(n_grad, 3 * n_feat);
    out.strain.resize(n_atoms, 9 * n_feat);
    advise_huge_pages(out.gradients.data(), out.gradients.size());
    advise_huge_pages(out.strain.data(), out.strain.size());

    const int n_max = expansion_.n_max();
    const int n_l = expansion_.n_l();
    const int n_lm = expansion_.n_lm();
    const int n_nl = n_max * n_l;
    const int n_channels = expansion_.n_channels();

    // Strain from the finished position-gradient rows costs 6 n_features per pair, from the
    // density coefficients 9 n_max (l_max+1)^2 per pair (plus a per-centre contraction).
    const bool entry_strain_is_cheaper =
        6 * n_feat < 9 * static_cast<Index>(n_max) * static_cast<Index>(n_lm);
    const Dims dims{n_max, n_l, n_lm, n_nl, n_channels, n_feat};
    ExceptionCapture capture;
#pragma omp parallel num_threads(threads)
    {
        SphericalExpansion::Workspace ws;
        GradientScratch sc;
        sc.p.resize(n_feat);
        sc.a.resize(static_cast<size_t>(n_channels) * n_l);
        sc.b.resize(static_cast<size_t>(3) * n_channels * n_l);
        sc.m.resize(static_cast<size_t>(2) * n_max * n_channels * n_l);
        sc.g.resize(static_cast<size_t>(3) * n_max * n_lm);
        sc.dc_deps.resize(static_cast<size_t>(6) * n_channels * n_lm);
#pragma omp for schedule(dynamic, 4)
        for (Index i = 0; i < n_atoms; ++i) {
            capture.run([&] {
                const Index begin = starts[i];
                const int n_local = static_cast<int>(starts[i + 1] - begin);
                expansion_.compute<true>(i, species[i], neighbors, begin, starts[i + 1],
                                         species.data(), ws);
                const Real *c = ws.coefficients.data();
                power_spectrum(c, n_channels, n_l, sc.p.data());
                Real *x = out.values.row(i).data();
                const Real norm = normalise(sc.p.data(), x, n_feat);
                const Real inv_norm = norm > 0.0 ? 1.0 / norm : 0.0;

                // Entries: self first, then distinct atoms j by increasing j.
                sc.order.clear();
                for (int k = 0; k < n_local; ++k) {
                    const Index j = neighbors.second[begin + k];
                    if (j != i) {
                        sc.order.emplace_back(j, k);
                    }
                }
                std::sort(sc.order.begin(), sc.order.end());
                sc.entry.assign(n_local, -1);
                const Index row0 = entry_starts[i];
                out.pairs(row0, 0) = i;
                out.pairs(row0, 1) = i;
                int e = 0;
                Index previous = -1;
                for (const auto &[j, k] : sc.order) {
                    if (j != previous) {
                        ++e;
                        out.pairs(row0 + e, 0) = i;
                        out.pairs(row0 + e, 1) = j;
                        previous = j;
                    }
                    sc.entry[k] = e;
                }
                const int n_entries = e + 1;
                const Index row_size = 3 * n_feat;
                Real *grad = out.gradients.data() + row0 * row_size;
                std::fill(grad, grad + n_entries * row_size, 0.0);
                Real *strain = out.strain.row(i).data();
                std::fill(strain, strain + 9 * n_feat, 0.0);
                if (norm == 0.0) {
                    return;
                }

                for (int k = 0; k < n_local; ++k) {
                    if (sc.entry[k] >= 0) {
                        add_pair_position_gradient(c, pair_view(ws, k, dims), dims, sc,
                                                   grad + sc.entry[k] * row_size);
                    }
                }
                // Normalisation, then the self term: the pair contributions depend on
                // r_j - r_i only, so d x_i/d r_i = -sum_j d x_i/d r_j (each row is still in L1
                // when it is subtracted).
                for (int q = 3; q < 3 * n_entries; ++q) {
                    Real *row = grad + q * n_feat;
                    project_normalisation(row, x, inv_norm, n_feat);
                    Real *self = grad + (q % 3) * n_feat;
                    for (Index f = 0; f < n_feat; ++f) {
                        self[f] -= row[f];
                    }
                }
                if (entry_strain_is_cheaper && n_entries - 1 == n_local) {
                    // Every pair has its own entry (no merged or own images).
                    for (int q = 1; q < n_entries; ++q) {
                        const Index pair = begin + sc.order[q - 1].second;
                        add_entry_strain(grad + q * row_size, neighbors.vectors.row(pair).data(),
                                         n_feat, strain);
                    }
                } else {
                    std::fill(sc.dc_deps.begin(), sc.dc_deps.end(), 0.0);
                    for (int k = 0; k < n_local; ++k) {
                        add_pair_strain_coefficients(pair_view(ws, k, dims),
                                                     neighbors.vectors.row(begin + k).data(),
                                                     dims, sc);
                    }
                    strain_from_coefficients(c, x, inv_norm, dims, sc, strain);
                }
                symmetrise_strain(strain, n_feat);
            });
        }
    }
    capture.rethrow();
    return out;
}

void PowerSpectrum::pair_gradients(const Centers &centers, Index first, Index last,
                                   const RowMatrix &values,
                                   const Eigen::Ref<const RowMatrix> &dE_dx, Positions &dE_dD,
                                   int n_threads, Scratch &scratch) const {
    const int threads = resolve_threads(n_threads);
    if (scratch.threads.size() < static_cast<size_t>(threads)) {
        scratch.threads.resize(static_cast<size_t>(threads));
    }
    const Index n_feat = n_features();
    if (dE_dx.rows() != last - first || dE_dx.cols() != n_feat || values.rows() != last - first ||
        values.cols() != n_feat || scratch.norms.size() != static_cast<size_t>(last - first)) {
        throw InvalidArgument("dE_dX and the values must have shape (centres, n_features) = (" +
                              std::to_string(last - first) + ", " + std::to_string(n_feat) +
                              ") of the centres compute() was last called for");
    }
    const std::vector<Index> &starts = centers.starts;
    const int n_max = expansion_.n_max();
    const int n_l = expansion_.n_l();
    const int n_lm = expansion_.n_lm();
    const int n_nl = n_max * n_l;
    const int n_channels = expansion_.n_channels();

    Positions &pair_gradients = dE_dD;
    const Index chunk = dynamic_chunk(last - first, threads, 8);
    ExceptionCapture capture;
#pragma omp parallel num_threads(threads)
    {
        Scratch::Thread &own = scratch.threads[static_cast<size_t>(thread_id())];
        std::vector<Real> &de_dp = own.de_dp;
        std::vector<Real> &de_dc = own.de_dc;
        de_dp.resize(n_feat);
        de_dc.resize(static_cast<size_t>(n_channels) * n_lm);
#pragma omp for schedule(dynamic, chunk)
        for (Index i = first; i < last; ++i) {
            capture.run([&] {
                const Index row = i - first;
                const SphericalExpansion::Workspace &ws = scratch.kept[static_cast<size_t>(row)];
                const Index begin = starts[i];
                const int n_local = static_cast<int>(starts[i + 1] - begin);
                const Real *c = ws.coefficients.data();
                const Real *x = values.row(row).data();
                const Real norm = scratch.norms[static_cast<size_t>(row)];
                if (norm == 0.0) {
                    pair_gradients.middleRows(begin, n_local).setZero();
                    return;
                }
                // dE/dp = (G - x (x . G)) / |p|
                for (Index f = 0; f < n_feat; ++f) {
                    de_dp[f] = dE_dx(row, f);
                }
                project_normalisation(de_dp.data(), x, 1.0 / norm, n_feat);
                // dE/dc_w,lm = sum_v H_l[w][v] c_v,lm with H_l[u][v] = kappa dE/dp[u,v,l]
                // (u != v, both orders) and H_l[u][u] = 2 dE/dp[u,u,l].
                std::fill(de_dc.begin(), de_dc.end(), 0.0);
                Index f = 0;
                for (int uu = 0; uu < n_channels; ++uu) {
                    const Real *cu = c + uu * n_lm;
                    Real *gu = de_dc.data() + uu * n_lm;
                    for (int vv = uu; vv < n_channels; ++vv) {
                        const Real *cv = c + vv * n_lm;
                        Real *gv = de_dc.data() + vv * n_lm;
                        for (int l = 0; l < n_l; ++l) {
                            const Real h = de_dp[f++];
                            if (uu == vv) {
                                for (int lm = l * l; lm < (l + 1) * (l + 1); ++lm) {
                                    gu[lm] += 2.0 * h * cu[lm];
                                }
                            } else {
                                const Real hk = sqrt2 * h;
                                for (int lm = l * l; lm < (l + 1) * (l + 1); ++lm) {
                                    gu[lm] += hk * cv[lm];
                                    gv[lm] += hk * cu[lm];
                                }
                            }
                        }
                    }
                }
                for (int k = 0; k < n_local; ++k) {
                    const int s0 = ws.species[k] * n_max;
                    const Real *y = ws.harmonics.data() + static_cast<size_t>(k) * n_lm;
                    const Real *dy = ws.dharmonics.data() + static_cast<size_t>(k) * 3 * n_lm;
                    const Real *radial = ws.radial.data() + static_cast<size_t>(k) * n_nl;
                    const Real *dradial = ws.dradial.data() + static_cast<size_t>(k) * n_nl;
                    const Real *u = ws.units.data() + 3 * k;
                    Real radial_sum = 0.0;
                    Real gx = 0.0;
                    Real gy = 0.0;
                    Real gz = 0.0;
                    for (int n = 0; n < n_max; ++n) {
                        const Real *gn = de_dc.data() + (s0 + n) * n_lm;
                        for (int l = 0; l < n_l; ++l) {
                            const MSums m = sum_over_m(gn, y, dy, n_lm, l);
                            const Real r = radial[n * n_l + l];
                            radial_sum += dradial[n * n_l + l] * m.y;
                            gx += r * m.dx;
                            gy += r * m.dy;
                            gz += r * m.dz;
                        }
                    }
                    pair_gradients(begin + k, 0) = radial_sum * u[0] + gx;
                    pair_gradients(begin + k, 1) = radial_sum * u[1] + gy;
                    pair_gradients(begin + k, 2) = radial_sum * u[2] + gz;
                }
            });
        }
    }
    capture.rethrow();
}

void PowerSpectrum::backpropagate(const Eigen::Ref<const Positions> &positions, const Cell &cell,
                                  Pbc pbc, const std::vector<int> &numbers,
                                  const Eigen::Ref<const RowMatrix> &dE_dx, Positions &dE_dr,
                                  Cell &dE_dstrain, int n_threads,
                                  const NeighborList *neighbors_in, Index max_bytes) const {
    const int threads = resolve_threads(n_threads);
    const Index budget = resolve_memory_budget(max_bytes);
    const Index n_atoms = positions.rows();
    const Index n_feat = n_features();
    if (dE_dx.rows() != n_atoms || dE_dx.cols() != n_feat) {
        throw InvalidArgument("dE_dX must have shape (n_atoms, n_features) = (" +
                              std::to_string(n_atoms) + ", " + std::to_string(n_feat) + ")");
    }
    // Two feature-length buffers per thread; the neighbour list (and one 3-vector per pair)
    // and a block of centres (checked below, once the pairs are known) get what is left.
    const Real scratch_bytes = 2.0 * threads * n_feat * bytes_per_real;
    check_budget(describe("backpropagating through the SOAP", n_atoms, n_feat), scratch_bytes,
                 budget);
    const Environments env =
        environments(positions, cell, pbc, numbers, threads, neighbors_in,
                     std::max<Index>(1, budget - static_cast<Index>(scratch_bytes)));
    const NeighborList &neighbors = *env.centers.neighbors;
    const Index block = centre_block(n_atoms, neighbors.n_pairs());
    const Real list_bytes =
        static_cast<Real>(neighbors.n_pairs()) * (neighbor_bytes_per_pair + 3 * bytes_per_real);
    const Real block_of_centres = static_cast<Real>(std::min(n_atoms, block)) *
                                  static_cast<Real>(bytes_per_centre(n_atoms, neighbors.n_pairs()));
    check_budget(describe("backpropagating through the SOAP", n_atoms, n_feat),
                 scratch_bytes + list_bytes + block_of_centres, budget);
    Positions pair_gradients(neighbors.n_pairs(), 3);
    Scratch scratch;
    RowMatrix values;
    for (Index first = 0; first < n_atoms; first += block) {
        const Index last = std::min(n_atoms, first + block);
        compute(env.centers, first, last, values, threads, scratch);
        this->pair_gradients(env.centers, first, last, values, dE_dx.middleRows(first, last - first),
                             pair_gradients, threads, scratch);
    }
    // Serial reduction in pair order: the result is independent of the thread count.
    dE_dr = Positions::Zero(n_atoms, 3);
    dE_dstrain.setZero();
    for (Index k = 0; k < neighbors.n_pairs(); ++k) {
        const Index i = neighbors.first[k];
        const Index j = neighbors.second[k];
        for (int a = 0; a < 3; ++a) {
            const Real g = pair_gradients(k, a);
            dE_dr(j, a) += g;
            dE_dr(i, a) -= g;
            for (int b = 0; b < 3; ++b) {
                dE_dstrain(a, b) += g * neighbors.vectors(k, b);
            }
        }
    }
}

} // namespace gapx
