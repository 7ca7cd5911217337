// SPDX-License-Identifier: BSD-3-Clause
// Times the SOAP power spectrum (values only, with position+strain gradients, and
// backpropagation) on a rattled diamond Si supercell, without Python.
//
//   bench_soap [n_max=8] [l_max=6] [n_threads=1] [n_atoms=1000] [cutoff=5.0] [atom_sigma=0.5]
//              [only=all|values|gradients|backpropagate]  (one mode only, e.g. for perf)
#include "gapx/soap.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

namespace {

// Best wall time per call, and the process CPU time (all threads) of that call: on a shared
// machine the CPU time is less disturbed by other jobs than the wall time.
struct Timing {
    double wall = 1e300;
    double cpu = 0.0;
};

template <typename F> Timing time_per_call(F &&f, double budget = 1.0) {
    f(); // warm-up (also builds the cached spline tables)
    int repeats = 0;
    double elapsed = 0.0;
    Timing best;
    while (elapsed < budget || repeats < 3) {
        const std::clock_t cpu_start = std::clock();
        const auto start = std::chrono::steady_clock::now();
        f();
        const double t =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        const double cpu = static_cast<double>(std::clock() - cpu_start) / CLOCKS_PER_SEC;
        elapsed += t;
        if (t < best.wall) {
            best.wall = t;
            best.cpu = cpu;
        }
        ++repeats;
    }
    return best;
}

} // namespace

int main(int argc, char **argv) {
    gapx::SoapOptions options;
    options.n_max = argc > 1 ? std::atoi(argv[1]) : 8;
    options.l_max = argc > 2 ? std::atoi(argv[2]) : 6;
    const int threads = argc > 3 ? std::atoi(argv[3]) : 1;
    const long target = argc > 4 ? std::atol(argv[4]) : 1000;
    options.cutoff = argc > 5 ? std::atof(argv[5]) : 5.0;
    options.atom_sigma = argc > 6 ? std::atof(argv[6]) : 0.5;
    options.transition_width = 1.0;
    options.central_weight = 1.0;
    options.species = {14};
    const std::string only = argc > 7 ? argv[7] : "all";
    const auto wanted = [&only](const char *mode) { return only == "all" || only == mode; };

    const double a = 5.43;
    const int repeat = std::max(1, static_cast<int>(std::lround(std::cbrt(target / 8.0))));
    const double basis[8][3] = {{0, 0, 0},          {0, 0.5, 0.5},      {0.5, 0, 0.5},
                                {0.5, 0.5, 0},      {0.25, 0.25, 0.25}, {0.25, 0.75, 0.75},
                                {0.75, 0.25, 0.75}, {0.75, 0.75, 0.25}};
    const long n_atoms = 8L * repeat * repeat * repeat;
    gapx::Positions positions(n_atoms, 3);
    std::mt19937_64 rng(0);
    std::normal_distribution<double> rattle(0.0, 0.1);
    long row = 0;
    for (int x = 0; x < repeat; ++x) {
        for (int y = 0; y < repeat; ++y) {
            for (int z = 0; z < repeat; ++z) {
                for (const auto &b : basis) {
                    positions(row, 0) = a * (x + b[0]) + rattle(rng);
                    positions(row, 1) = a * (y + b[1]) + rattle(rng);
                    positions(row, 2) = a * (z + b[2]) + rattle(rng);
                    ++row;
                }
            }
        }
    }
    const gapx::Cell cell = gapx::Cell::Identity() * (a * repeat);
    const gapx::Pbc pbc{true, true, true};
    const std::vector<int> numbers(n_atoms, 14);

    const gapx::PowerSpectrum soap(options);
    const auto neighbors = gapx::build_neighbor_list(positions, cell, pbc, options.cutoff, threads);
    const Timing t_neighbors = time_per_call(
        [&] { gapx::build_neighbor_list(positions, cell, pbc, options.cutoff, threads); });
    Timing t_values;
    Timing t_gradients;
    Timing t_backprop;
    if (wanted("values")) {
        t_values = time_per_call([&] { soap.compute(positions, cell, pbc, numbers, threads); });
    }
    if (wanted("gradients")) {
        t_gradients = time_per_call(
            [&] { soap.compute_gradients(positions, cell, pbc, numbers, threads); });
    }
    gapx::RowMatrix dE_dx = gapx::RowMatrix::Ones(n_atoms, soap.n_features());
    gapx::Positions dE_dr;
    gapx::Cell dE_dstrain;
    if (wanted("backpropagate")) {
        t_backprop = time_per_call([&] {
            soap.backpropagate(positions, cell, pbc, numbers, dE_dx, dE_dr, dE_dstrain, threads);
        });
    }
    std::printf("SOAP n_max %d l_max %d cutoff %.2f sigma %.2f: %ld atoms, %.1f neighbours/atom, "
                "%ld features, %d threads\n",
                options.n_max, options.l_max, options.cutoff, options.atom_sigma, n_atoms,
                static_cast<double>(neighbors.n_pairs()) / n_atoms,
                static_cast<long>(soap.n_features()), threads);
    const auto report = [n_atoms](const char *name, const Timing &t) {
        if (t.wall > 1e299) {
            return;
        }
        std::printf("  %-20s %9.2f us/atom wall, %9.2f us/atom cpu\n", name, 1e6 * t.wall / n_atoms,
                    1e6 * t.cpu / n_atoms);
    };
    report("neighbour list", t_neighbors);
    report("values", t_values);
    report("values + gradients", t_gradients);
    report("backpropagate", t_backprop);
    return 0;
}
