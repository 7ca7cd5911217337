// SPDX-License-Identifier: BSD-3-Clause
// Times gapx::build_neighbor_list on rattled diamond Si supercells, without Python.
//
//   bench_neighbors [n_atoms=10000] [cutoff=5.0] [n_threads=1]
#include "gapx/neighbors.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>

int main(int argc, char **argv) {
    const long target = argc > 1 ? std::atol(argv[1]) : 10000;
    const double cutoff = argc > 2 ? std::atof(argv[2]) : 5.0;
    const int threads = argc > 3 ? std::atoi(argv[3]) : 1;

    const double a = 5.43;
    const int repeat = std::max(1, static_cast<int>(std::lround(std::cbrt(target / 8.0))));
    const double basis[8][3] = {{0, 0, 0},       {0, 0.5, 0.5},   {0.5, 0, 0.5},
                                {0.5, 0.5, 0},   {0.25, 0.25, 0.25}, {0.25, 0.75, 0.75},
                                {0.75, 0.25, 0.75}, {0.75, 0.75, 0.25}};
    gapx::Positions positions(8L * repeat * repeat * repeat, 3);
    std::mt19937_64 rng(0);
    std::normal_distribution<double> rattle(0.0, 0.05);
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
    gapx::Cell cell = gapx::Cell::Identity() * (a * repeat);
    const gapx::Pbc pbc{true, true, true};

    gapx::build_neighbor_list(positions, cell, pbc, cutoff, threads); // warm-up
    int repeats = 0;
    double elapsed = 0.0;
    gapx::Index n_pairs = 0;
    while (elapsed < 1.0 || repeats < 3) {
        auto start = std::chrono::steady_clock::now();
        auto nl = gapx::build_neighbor_list(positions, cell, pbc, cutoff, threads);
        elapsed += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        n_pairs = nl.n_pairs();
        ++repeats;
    }
    const double per_call = elapsed / repeats;
    std::printf("neighbour list: %ld atoms, cutoff %.2f, %d threads, %ld pairs: %.4f s, "
                "%.3f us/atom, %.1f ns/pair\n",
                static_cast<long>(positions.rows()), cutoff, threads, static_cast<long>(n_pairs),
                per_call, 1e6 * per_call / positions.rows(), 1e9 * per_call / n_pairs);
    return 0;
}
