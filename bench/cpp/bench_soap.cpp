// SPDX-License-Identifier: BSD-3-Clause
// Times the SOAP power spectrum (values only, with position+strain gradients, and
// backpropagation) on a rattled diamond Si supercell, without Python.
//
//   bench_soap [n_max=8] [l_max=6] [n_threads=1] [n_atoms=1000] [cutoff=5.0] [atom_sigma=0.5]
//              [only=all|values|gradients|backpropagate]  (one mode only, e.g. for perf)
#include "bench_common.hpp"
#include "gapx/soap.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

using gapx::bench::Timing;
using gapx::bench::time_per_call;

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

    gapx::Cell cell;
    const gapx::Positions positions = gapx::bench::diamond_silicon(target, 0.1, cell);
    const long n_atoms = positions.rows();
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
