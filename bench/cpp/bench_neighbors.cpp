// SPDX-License-Identifier: BSD-3-Clause
// Times gapx::build_neighbor_list on rattled diamond Si supercells, without Python.
//
//   bench_neighbors [n_atoms=10000] [cutoff=5.0] [n_threads=1]
#include "bench_common.hpp"
#include "gapx/neighbors.hpp"

#include <cstdio>
#include <cstdlib>

int main(int argc, char **argv) {
    const long target = argc > 1 ? std::atol(argv[1]) : 10000;
    const double cutoff = argc > 2 ? std::atof(argv[2]) : 5.0;
    const int threads = argc > 3 ? std::atoi(argv[3]) : 1;

    gapx::Cell cell;
    const gapx::Positions positions = gapx::bench::diamond_silicon(target, 0.05, cell);
    const gapx::Pbc pbc{true, true, true};

    gapx::Index n_pairs = 0;
    const double per_call = gapx::bench::time_per_call([&] {
                                n_pairs = gapx::build_neighbor_list(positions, cell, pbc, cutoff,
                                                                    threads)
                                              .n_pairs();
                            }).wall;
    std::printf("neighbour list: %ld atoms, cutoff %.2f, %d threads, %ld pairs: %.4f s, "
                "%.3f us/atom, %.1f ns/pair\n",
                static_cast<long>(positions.rows()), cutoff, threads, static_cast<long>(n_pairs),
                per_call, 1e6 * per_call / positions.rows(), 1e9 * per_call / n_pairs);
    return 0;
}
