// SPDX-License-Identifier: BSD-3-Clause
#include "gapx/neighbors.hpp"

#include "gapx/errors.hpp"
#include "gapx/memory.hpp"
#include "gapx/parallel.hpp"

#include <Eigen/Dense>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

namespace gapx {
namespace {

// A binning frame: three vectors whose fractional coordinates place every atom in [0, 1).
// Periodic directions keep the lattice vector; non-periodic ones are replaced by a vector
// orthogonal to the others that spans the atoms' extent, since their cell vector is irrelevant.
struct BinFrame {
    Cell vectors;                // rows
    Cell inverse;                // fractional = cartesian * inverse
    std::array<Real, 3> heights; // distance between opposite faces of the frame, Å
    Vector3 origin;              // cartesian origin of the frame
};

Vector3 any_orthogonal(const Vector3 &v) {
    Vector3 trial = std::abs(v.x()) < 0.9 * v.norm() ? Vector3(1, 0, 0) : Vector3(0, 1, 0);
    return v.cross(trial).normalized();
}

void check_periodic_vectors(const Cell &cell, Pbc pbc) {
    const Real rel_eps = 1e-10;
    std::vector<Vector3> periodic;
    for (int k = 0; k < 3; ++k) {
        if (!pbc[k]) {
            continue;
        }
        Vector3 a = cell.row(k).transpose();
        if (!a.allFinite()) {
            throw InvalidArgument("cell vector " + std::to_string(k) + " is not finite");
        }
        if (a.norm() == 0.0) {
            throw InvalidArgument("cell vector " + std::to_string(k) +
                                  " is zero but that direction is periodic");
        }
        periodic.push_back(a);
    }
    bool degenerate = false;
    if (periodic.size() == 2) {
        degenerate = periodic[0].cross(periodic[1]).norm() <=
                     rel_eps * periodic[0].norm() * periodic[1].norm();
    } else if (periodic.size() == 3) {
        degenerate = std::abs(periodic[0].cross(periodic[1]).dot(periodic[2])) <=
                     rel_eps * periodic[0].norm() * periodic[1].norm() * periodic[2].norm();
    }
    if (degenerate) {
        throw InvalidArgument("the periodic cell vectors are linearly dependent (zero-volume or "
                              "degenerate cell)");
    }
}

BinFrame make_frame(const Eigen::Ref<const Positions> &positions, const Cell &cell, Pbc pbc) {
    BinFrame frame;
    frame.vectors.setZero();
    std::array<int, 3> periodic_dirs{};
    std::array<int, 3> open_dirs{};
    int n_periodic = 0;
    int n_open = 0;
    for (int k = 0; k < 3; ++k) {
        if (pbc[k]) {
            periodic_dirs[n_periodic++] = k;
            frame.vectors.row(k) = cell.row(k);
        } else {
            open_dirs[n_open++] = k;
        }
    }
    // Unit vectors for the open directions, orthogonal to the periodic ones and to each other.
    if (n_open == 3) {
        frame.vectors.setIdentity();
    } else if (n_open == 2) {
        Vector3 a = cell.row(periodic_dirs[0]).transpose();
        Vector3 u = any_orthogonal(a);
        Vector3 v = a.cross(u).normalized();
        frame.vectors.row(open_dirs[0]) = u.transpose();
        frame.vectors.row(open_dirs[1]) = v.transpose();
    } else if (n_open == 1) {
        Vector3 a = cell.row(periodic_dirs[0]).transpose();
        Vector3 b = cell.row(periodic_dirs[1]).transpose();
        frame.vectors.row(open_dirs[0]) = a.cross(b).normalized().transpose();
    }
    // Stretch each open direction to span the atoms, with a margin so none sits on the far face.
    frame.origin.setZero();
    if (n_open > 0 && positions.rows() > 0) {
        Cell inv = frame.vectors.inverse();
        Positions frac = positions * inv;
        for (int o = 0; o < n_open; ++o) {
            int k = open_dirs[o];
            Real lo = frac.col(k).minCoeff();
            Real hi = frac.col(k).maxCoeff();
            Real extent = std::max<Real>(hi - lo, 1.0) * (1.0 + 1e-9) + 1e-9;
            frame.origin += lo * frame.vectors.row(k).transpose();
            frame.vectors.row(k) *= extent;
        }
    }
    frame.inverse = frame.vectors.inverse();
    Real volume = std::abs(frame.vectors.determinant());
    for (int k = 0; k < 3; ++k) {
        Vector3 b = frame.vectors.row((k + 1) % 3).transpose();
        Vector3 c = frame.vectors.row((k + 2) % 3).transpose();
        frame.heights[k] = volume / b.cross(c).norm();
    }
    return frame;
}

constexpr Real pi = 3.14159265358979323846;

/// Output bytes per pair: first and second (int64), shift (3 int32), vector (3 doubles) and
/// distance (double).
constexpr Real bytes_per_pair =
    2 * sizeof(Index) + 3 * sizeof(std::int32_t) + 4 * sizeof(Real); // 60

/// "(max_bytes; the default is half of the physical memory)" for the refusal messages.
std::string budget_text(Index budget) {
    return "the memory limit of " + detail::format_bytes(static_cast<Real>(budget)) +
           " (max_bytes; the default is half of the physical memory)";
}

/// Refuses, before anything is allocated or scanned, a cutoff whose neighbour list would not fit
/// in `budget` bytes.
///
/// Expected pairs: n_atoms times the expected number of neighbours of an atom, estimated two ways
/// and the larger kept. (1) A uniform density \f$ \rho = n_{atoms} / V \f$ over the binning
/// frame (the cell, with non-periodic directions spanning the atoms), times the part of the
/// cutoff sphere that can hold atoms: \f$ \tfrac43 \pi r_c^3 \f$, multiplied for every
/// non-periodic direction of extent h by \f$ \min(1, 3h / 4r_c) \f$ (a slab of thickness h
/// through the centre holds at most that fraction of the sphere). For a full cutoff sphere this
/// is the usual \f$ n_{atoms}^2 \tfrac43 \pi r_c^3 / V \f$, within a factor ~2 of the truth
/// whenever r_c exceeds the interatomic spacing (and tiny otherwise). (2) A lower bound that
/// holds for any arrangement: each atom's own images m a_k, \f$ 0 < |m| \le r_c/|a_k| \f$,
/// along each periodic cell vector, which catches a needle-like cell whose volume is not small.
/// The estimate costs O(1); the exact count, checked again after the counting pass, is the
/// backstop for strongly clustered atoms.
void check_expected_size(const BinFrame &frame, const Cell &cell, Pbc pbc, Index n_atoms,
                         Real cutoff, Index budget) {
    const Real n = static_cast<Real>(n_atoms);
    const Real volume = std::abs(frame.vectors.determinant());
    Real reachable = 4.0 / 3.0 * pi * cutoff * cutoff * cutoff;
    Real images = 1.0; // periodic images of the cell the cutoff sphere's bounding box overlaps
    Real own_images = 0.0;
    bool any_periodic = false;
    for (int k = 0; k < 3; ++k) {
        if (pbc[k]) {
            any_periodic = true;
            images *= 2.0 * std::ceil(cutoff / frame.heights[k]) + 1.0;
            own_images = std::max(own_images, 2.0 * std::floor(cutoff / cell.row(k).norm()));
        } else {
            reachable *= std::min<Real>(1.0, 0.75 * frame.heights[k] / cutoff);
        }
    }
    Real pairs = n * (n / volume) * reachable;
    if (!any_periodic) {
        pairs = std::min(pairs, n * (n - 1.0));
    }
    pairs = std::max(pairs, n * own_images);
    const Real bytes = pairs * bytes_per_pair;
    if (!(bytes <= static_cast<Real>(budget))) {
        std::string where = "";
        if (any_periodic) {
            where = ", the cutoff sphere spanning about " + detail::format_count(images) +
                    " periodic images of the cell";
        }
        throw InvalidArgument("cutoff " + detail::format_real(cutoff) +
                              " Å is too large for this structure: its neighbour list would have "
                              "about " +
                              detail::format_count(pairs) + " pairs (" +
                              std::to_string(n_atoms) + " atoms" + where + ") and take about " +
                              detail::format_bytes(bytes) + ", more than " +
                              budget_text(budget));
    }
}

} // namespace

NeighborList build_neighbor_list(const Eigen::Ref<const Positions> &positions, const Cell &cell,
                                 Pbc pbc, Real cutoff, int n_threads, Index max_bytes) {
    const int threads = resolve_threads(n_threads);
    const Index budget = resolve_memory_budget(max_bytes);
    if (!(cutoff > 0.0) || !std::isfinite(cutoff)) {
        throw InvalidArgument("cutoff must be a positive finite number, got " +
                              std::to_string(cutoff));
    }
    if (!positions.allFinite()) {
        throw InvalidArgument("positions contain NaN or infinite values");
    }
    check_periodic_vectors(cell, pbc);

    const Index n_atoms = positions.rows();
    NeighborList result;
    result.cutoff = cutoff;
    if (n_atoms == 0) {
        result.shifts.resize(0, 3);
        result.vectors.resize(0, 3);
        return result;
    }

    const BinFrame frame = make_frame(positions, cell, pbc);
    check_expected_size(frame, cell, pbc, n_atoms, cutoff, budget);

    // Wrap periodic coordinates into [0, 1); remember the integer lattice offset of each atom so
    // shifts can be reported relative to the positions the caller gave. The offsets are computed
    // in 64 bits; the int32 shifts they lead to are range-checked below, before any pair is made.
    Positions frac = (positions.rowwise() - frame.origin.transpose()) * frame.inverse;
    using Offsets = Eigen::Matrix<Index, Eigen::Dynamic, 3, Eigen::RowMajor>;
    Offsets wrap_offset(n_atoms, 3);
    // Beyond 2^52 cells a double has no fractional part left: the position within the cell (and
    // so any distance) is lost, and the offset would not even convert to an integer exactly.
    constexpr Real max_offset = 4503599627370496.0; // 2^52
    std::array<Index, 3> lowest_offset{0, 0, 0};
    std::array<Index, 3> highest_offset{0, 0, 0};
    for (Index a = 0; a < n_atoms; ++a) {
        for (int k = 0; k < 3; ++k) {
            Real s = frac(a, k);
            Real f = pbc[k] ? std::floor(s) : 0.0;
            if (!(std::abs(f) < max_offset)) {
                throw InvalidArgument("atom " + std::to_string(a) + " lies about " +
                                      detail::format_count(std::abs(f)) +
                                      " cell lengths outside the cell along cell vector " +
                                      std::to_string(k) +
                                      ", too far for its position in the cell to be resolved; "
                                      "wrap the positions into the cell first (ase.Atoms.wrap)");
            }
            s -= f;
            if (s >= 1.0) { // floor rounding at the upper edge
                s -= 1.0;
                f += 1.0;
            }
            frac(a, k) = std::clamp<Real>(s, 0.0, std::nextafter(1.0, 0.0));
            const auto offset = static_cast<Index>(f);
            wrap_offset(a, k) = offset;
            if (a == 0) {
                lowest_offset[k] = highest_offset[k] = offset;
            } else {
                lowest_offset[k] = std::min(lowest_offset[k], offset);
                highest_offset[k] = std::max(highest_offset[k], offset);
            }
        }
    }

    // Bin counts: bins at least as wide as the cutoff, capped so that empty space (a gas in a huge
    // box) cannot allocate more bins than a small multiple of the atoms.
    std::array<Index, 3> n_bins{};
    Real total = 1.0;
    const Real max_bins = 4.0 * static_cast<Real>(n_atoms) + 8.0;
    for (int k = 0; k < 3; ++k) {
        n_bins[k] = std::max<Index>(
            1, static_cast<Index>(std::floor(std::min(frame.heights[k] / cutoff, max_bins))));
        total *= static_cast<Real>(n_bins[k]);
    }
    if (total > max_bins) {
        Real shrink = std::cbrt(total / max_bins);
        for (int k = 0; k < 3; ++k) {
            n_bins[k] = std::max<Index>(
                1, static_cast<Index>(std::floor(static_cast<Real>(n_bins[k]) / shrink)));
        }
    }
    std::array<Index, 3> reach{};
    Real n_offsets = 1.0;
    for (int k = 0; k < 3; ++k) {
        const Real width = frame.heights[k] / static_cast<Real>(n_bins[k]);
        const Real bins_reached = std::ceil(cutoff / width);
        // shift = image + wrap_offset[i] - wrap_offset[j], and |image| <= reach / n_bins + 1.
        const Real max_shift = bins_reached / static_cast<Real>(n_bins[k]) + 1.0 +
                               static_cast<Real>(highest_offset[k] - lowest_offset[k]);
        if (pbc[k] && !(max_shift <= static_cast<Real>(std::numeric_limits<std::int32_t>::max()))) {
            throw InvalidArgument(
                "the shift vectors along cell vector " + std::to_string(k) + " would reach " +
                detail::format_count(max_shift) +
                ", beyond the int32 range they are returned in (the atoms lie across " +
                detail::format_count(static_cast<Real>(highest_offset[k] - lowest_offset[k])) +
                " cell lengths and the cutoff spans " +
                detail::format_count(cutoff / frame.heights[k]) +
                "); wrap the positions into the cell first (ase.Atoms.wrap)");
        }
        reach[k] = pbc[k] ? static_cast<Index>(bins_reached)
                          : std::min<Index>(static_cast<Index>(std::min<Real>(
                                                bins_reached, static_cast<Real>(n_bins[k]))),
                                            n_bins[k] - 1);
        n_offsets *= static_cast<Real>(2 * reach[k] + 1);
    }
    // Offsets relative to the lowest one, which the check above keeps within int32: shifts are
    // differences of offsets, so this changes none of them and keeps the inner loops in 32 bits.
    Shifts relative_offset(n_atoms, 3);
    for (Index a = 0; a < n_atoms; ++a) {
        for (int k = 0; k < 3; ++k) {
            relative_offset(a, k) = static_cast<std::int32_t>(wrap_offset(a, k) - lowest_offset[k]);
        }
    }
    // Work of the two passes: the bin stencil of every atom plus the candidate pairs in it.
    const Real expected_candidates =
        n_offsets * static_cast<Real>(n_atoms) * static_cast<Real>(n_atoms) /
        static_cast<Real>(n_bins[0] * n_bins[1] * n_bins[2]);
    const Real work = n_offsets * static_cast<Real>(n_atoms) + expected_candidates;
    if (work > 4e10) {
        throw InvalidArgument("cutoff " + detail::format_real(cutoff) +
                              " Å is far larger than the cell: the neighbour search would examine "
                              "about " +
                              detail::format_count(work) + " bins and candidate pairs (limit 4e10)");
    }

    // Counting sort of atoms into bins (CSR layout), with bin-ordered copies of the positions.
    std::vector<Index> bin_of(static_cast<size_t>(n_atoms));
    const Index n_bins_total = n_bins[0] * n_bins[1] * n_bins[2];
    std::vector<Index> bin_start(static_cast<size_t>(n_bins_total + 1), 0);
    std::array<std::vector<Index>, 3> bin_index;
    for (int k = 0; k < 3; ++k) {
        bin_index[k].resize(static_cast<size_t>(n_atoms));
    }
    for (Index a = 0; a < n_atoms; ++a) {
        Index flat = 0;
        for (int k = 0; k < 3; ++k) {
            Index b = std::min<Index>(
                static_cast<Index>(frac(a, k) * static_cast<Real>(n_bins[k])), n_bins[k] - 1);
            bin_index[k][static_cast<size_t>(a)] = b;
            flat = flat * n_bins[k] + b;
        }
        bin_of[static_cast<size_t>(a)] = flat;
        ++bin_start[static_cast<size_t>(flat + 1)];
    }
    for (Index b = 0; b < n_bins_total; ++b) {
        bin_start[static_cast<size_t>(b + 1)] += bin_start[static_cast<size_t>(b)];
    }
    std::vector<Index> sorted_atoms(static_cast<size_t>(n_atoms));
    {
        std::vector<Index> fill(bin_start.begin(), bin_start.end() - 1);
        for (Index a = 0; a < n_atoms; ++a) {
            sorted_atoms[static_cast<size_t>(fill[static_cast<size_t>(bin_of[static_cast<size_t>(a)])]++)] = a;
        }
    }
    // Wrapped positions and wrap offsets in bin order, for cache-friendly inner loops.
    const Positions wrapped = frac * frame.vectors;
    // Coordinates stored as separate x, y, z arrays so the distance loops vectorise.
    Eigen::Matrix<Real, Eigen::Dynamic, 3> sorted_positions(n_atoms, 3); // column-major
    Shifts sorted_offsets(n_atoms, 3);
    for (Index s = 0; s < n_atoms; ++s) {
        sorted_positions.row(s) = wrapped.row(sorted_atoms[static_cast<size_t>(s)]);
        sorted_offsets.row(s) = relative_offset.row(sorted_atoms[static_cast<size_t>(s)]);
    }
    const Real *xs = sorted_positions.col(0).data();
    const Real *ys = sorted_positions.col(1).data();
    const Real *zs = sorted_positions.col(2).data();

    const Real cutoff2 = cutoff * cutoff;

    // For every neighbour of centre i closer than the cutoff, calls
    // visit(j, shift_i, sorted index, vx, vy, vz, d2) in the fill pass, or only counts them.
    constexpr Index kChunk = 64;
    auto for_each_neighbor = [&](Index i, auto count_only, auto &&visit) -> Index {
        Index count = 0;
        std::array<Index, kChunk> accepted;
        const auto si = static_cast<size_t>(i);
        const Real xi = wrapped(i, 0), yi = wrapped(i, 1), zi = wrapped(i, 2);
        for (Index dx = -reach[0]; dx <= reach[0]; ++dx) {
            Index bx = bin_index[0][si] + dx;
            Index sx = 0;
            if (pbc[0]) {
                sx = static_cast<Index>(std::floor(static_cast<Real>(bx) / n_bins[0]));
                bx -= sx * n_bins[0];
            } else if (bx < 0 || bx >= n_bins[0]) {
                continue;
            }
            for (Index dy = -reach[1]; dy <= reach[1]; ++dy) {
                Index by = bin_index[1][si] + dy;
                Index sy = 0;
                if (pbc[1]) {
                    sy = static_cast<Index>(std::floor(static_cast<Real>(by) / n_bins[1]));
                    by -= sy * n_bins[1];
                } else if (by < 0 || by >= n_bins[1]) {
                    continue;
                }
                for (Index dz = -reach[2]; dz <= reach[2]; ++dz) {
                    Index bz = bin_index[2][si] + dz;
                    Index sz = 0;
                    if (pbc[2]) {
                        sz = static_cast<Index>(std::floor(static_cast<Real>(bz) / n_bins[2]));
                        bz -= sz * n_bins[2];
                    } else if (bz < 0 || bz >= n_bins[2]) {
                        continue;
                    }
                    const Index bin = (bx * n_bins[1] + by) * n_bins[2] + bz;
                    const Eigen::Matrix<Real, 1, 3> image =
                        static_cast<Real>(sx) * frame.vectors.row(0) +
                        static_cast<Real>(sy) * frame.vectors.row(1) +
                        static_cast<Real>(sz) * frame.vectors.row(2);
                    const Real ox = image(0) - xi, oy = image(1) - yi, oz = image(2) - zi;
                    // Shift relative to the caller's (unwrapped) positions.
                    const std::array<Index, 3> shift_i = {sx + relative_offset(i, 0),
                                                          sy + relative_offset(i, 1),
                                                          sz + relative_offset(i, 2)};
                    const bool own_image = dx == 0 && dy == 0 && dz == 0; // centre's own bin, shift 0
                    const Index begin = bin_start[static_cast<size_t>(bin)];
                    const Index end = bin_start[static_cast<size_t>(bin + 1)];
                    if constexpr (decltype(count_only)::value) {
                        // Branch-free so the compiler can vectorise; the centre itself (distance 0
                        // in its own image) is subtracted below.
                        for (Index s = begin; s < end; ++s) {
                            const Real vx = xs[s] + ox;
                            const Real vy = ys[s] + oy;
                            const Real vz = zs[s] + oz;
                            count += (vx * vx + vy * vy + vz * vz) < cutoff2;
                        }
                        if (own_image) {
                            count -= 1;
                        }
                    } else {
                        // Compact the accepted candidates without branching first (the accept
                        // test is unpredictable), then emit them.
                        for (Index chunk = begin; chunk < end; chunk += kChunk) {
                            const Index chunk_end = std::min(end, chunk + kChunk);
                            int n_accepted = 0;
                            for (Index s = chunk; s < chunk_end; ++s) {
                                const Real vx = xs[s] + ox;
                                const Real vy = ys[s] + oy;
                                const Real vz = zs[s] + oz;
                                accepted[n_accepted] = s;
                                n_accepted += (vx * vx + vy * vy + vz * vz) < cutoff2;
                            }
                            for (int k = 0; k < n_accepted; ++k) {
                                const Index s = accepted[k];
                                const Index j = sorted_atoms[static_cast<size_t>(s)];
                                if (own_image && j == i) {
                                    continue;
                                }
                                const Real vx = xs[s] + ox;
                                const Real vy = ys[s] + oy;
                                const Real vz = zs[s] + oz;
                                visit(j, shift_i, s, vx, vy, vz, vx * vx + vy * vy + vz * vz);
                            }
                        }
                    }
                }
            }
        }
        return count;
    };

    // Two passes (count, then fill in place) write the output arrays directly: no intermediate
    // buffers, so memory is exactly the output, linear in the number of pairs.
    std::vector<Index> pair_start(static_cast<size_t>(n_atoms) + 1, 0);
    ExceptionCapture capture;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 64)
    for (Index i = 0; i < n_atoms; ++i) {
        capture.run([&] {
            pair_start[static_cast<size_t>(i) + 1] =
                for_each_neighbor(i, std::true_type{}, [](auto &&...) {});
        });
    }
    capture.rethrow();
    for (Index i = 0; i < n_atoms; ++i) {
        pair_start[static_cast<size_t>(i) + 1] += pair_start[static_cast<size_t>(i)];
    }
    const Index n_pairs = pair_start.back();
    if (static_cast<Real>(n_pairs) * bytes_per_pair > static_cast<Real>(budget)) {
        throw InvalidArgument("the neighbour list for cutoff " + detail::format_real(cutoff) +
                              " Å would have " + std::to_string(n_pairs) + " pairs and take " +
                              detail::format_bytes(static_cast<Real>(n_pairs) * bytes_per_pair) +
                              ", more than " + budget_text(budget));
    }
    result.first.resize(static_cast<size_t>(n_pairs));
    result.second.resize(static_cast<size_t>(n_pairs));
    result.distances.resize(static_cast<size_t>(n_pairs));
    result.shifts.resize(n_pairs, 3);
    result.vectors.resize(n_pairs, 3);
#pragma omp parallel for num_threads(threads) schedule(dynamic, 64)
    for (Index i = 0; i < n_atoms; ++i) {
        capture.run([&] {
            Index row = pair_start[static_cast<size_t>(i)];
            for_each_neighbor(i, std::false_type{}, [&](Index j, const std::array<Index, 3> &shift_i, Index s, Real vx,
                                     Real vy, Real vz, Real d2) {
                const auto r = static_cast<size_t>(row);
                result.first[r] = i;
                result.second[r] = j;
                result.distances[r] = std::sqrt(d2);
                for (int k = 0; k < 3; ++k) {
                    result.shifts(row, k) =
                        static_cast<std::int32_t>(shift_i[static_cast<size_t>(k)] -
                                                  sorted_offsets(s, k));
                }
                result.vectors(row, 0) = vx;
                result.vectors(row, 1) = vy;
                result.vectors(row, 2) = vz;
                ++row;
            });
        });
    }
    capture.rethrow();
    return result;
}

} // namespace gapx
