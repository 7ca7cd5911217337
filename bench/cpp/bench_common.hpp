// SPDX-License-Identifier: BSD-3-Clause
// What the standalone C++ benchmarks share: the test structure and the timer.
#pragma once

#include "gapx/types.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <random>

namespace gapx::bench {

/// Rattled diamond Si supercell of about `target` atoms (a = 5.43 Å, Gaussian rattle of
/// `rattle` Å, fixed seed); `cell` receives the cubic supercell.
inline Positions diamond_silicon(long target, double rattle, Cell &cell) {
    const double a = 5.43;
    const int repeat = std::max(1, static_cast<int>(std::lround(std::cbrt(target / 8.0))));
    const double basis[8][3] = {{0, 0, 0},          {0, 0.5, 0.5},      {0.5, 0, 0.5},
                                {0.5, 0.5, 0},      {0.25, 0.25, 0.25}, {0.25, 0.75, 0.75},
                                {0.75, 0.25, 0.75}, {0.75, 0.75, 0.25}};
    Positions positions(8L * repeat * repeat * repeat, 3);
    std::mt19937_64 rng(0);
    std::normal_distribution<double> noise(0.0, rattle);
    long row = 0;
    for (int x = 0; x < repeat; ++x) {
        for (int y = 0; y < repeat; ++y) {
            for (int z = 0; z < repeat; ++z) {
                for (const auto &b : basis) {
                    positions(row, 0) = a * (x + b[0]) + noise(rng);
                    positions(row, 1) = a * (y + b[1]) + noise(rng);
                    positions(row, 2) = a * (z + b[2]) + noise(rng);
                    ++row;
                }
            }
        }
    }
    cell = Cell::Identity() * (a * repeat);
    return positions;
}

/// Best wall time per call, and the process CPU time (all threads) of that call: on a shared
/// machine the CPU time is less disturbed by other jobs than the wall time.
struct Timing {
    double wall = 1e300;
    double cpu = 0.0;
};

/// One warm-up call, then repeats filling `budget` seconds (at least three).
template <typename F> Timing time_per_call(F &&f, double budget = 1.0) {
    f();
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

} // namespace gapx::bench
