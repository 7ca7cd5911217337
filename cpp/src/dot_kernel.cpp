// SPDX-License-Identifier: BSD-3-Clause
#include "dot_kernel.hpp"

#include <algorithm>
#include <cmath>

namespace gapx::detail {

Real kernel_power(Real x, Real p) {
    if (p == 0.0) {
        return 1.0;
    }
    if (p == std::floor(p) && p >= 1.0 && p <= 8.0) {
        Real out = x;
        for (int k = 1; k < static_cast<int>(p); ++k) {
            out *= x;
        }
        return out;
    }
    return std::pow(x, p);
}

namespace {

/// Points per chunk: the dots of a chunk are finished before its gradient update, so the chunk
/// (4 x F doubles) stays in L1/L2 between the two.
constexpr int chunk = 4;

#if defined(__GNUC__)
#define GAPX_INLINE inline __attribute__((always_inline))
// Four doubles: AVX registers where compiled for AVX2, pairs of SSE2 registers otherwise. The
// helpers take vectors by reference: a vector passed by value would have an ISA-dependent ABI.
typedef double Lanes __attribute__((vector_size(32), aligned(8)));
GAPX_INLINE void load(Lanes &v, const Real *p) { __builtin_memcpy(&v, p, sizeof(v)); }
GAPX_INLINE void store(Real *p, const Lanes &v) { __builtin_memcpy(p, &v, sizeof(v)); }
GAPX_INLINE Real total(const Lanes &v) { return (v[0] + v[1]) + (v[2] + v[3]); }
#define GAPX_VECTOR 1
#else
#define GAPX_INLINE inline
#define GAPX_VECTOR 0
#endif

/// dots[r][k] = x_r . p_{m0+k} for k < count (count <= chunk), rows in pairs. A compile-time
/// count keeps the accumulators in registers.
template <int count>
GAPX_INLINE void chunk_dots(const Real *x, Index n, const Real *p, Index F, Real (*dots)[chunk]) {
    const Index F4 = F - F % 4;
    for (Index r = 0; r < n; r += 2) {
        const bool two = r + 1 < n;
        const Real *x0 = x + r * F;
        const Real *x1 = two ? x0 + F : x0;
#if GAPX_VECTOR
        Lanes s0[chunk] = {};
        Lanes s1[chunk] = {};
        for (Index f = 0; f < F4; f += 4) {
            Lanes a0;
            Lanes a1;
            load(a0, x0 + f);
            load(a1, x1 + f);
            for (int k = 0; k < count; ++k) {
                Lanes b;
                load(b, p + k * F + f);
                s0[k] += a0 * b;
                s1[k] += a1 * b;
            }
        }
        for (int k = 0; k < count; ++k) {
            Real t0 = total(s0[k]);
            Real t1 = total(s1[k]);
            for (Index f = F4; f < F; ++f) {
                t0 += x0[f] * p[k * F + f];
                t1 += x1[f] * p[k * F + f];
            }
            dots[r][k] = t0;
            if (two) {
                dots[r + 1][k] = t1;
            }
        }
#else
        for (int k = 0; k < count; ++k) {
            Real t0 = 0.0;
            Real t1 = 0.0;
            for (Index f = 0; f < F; ++f) {
                t0 += x0[f] * p[k * F + f];
                t1 += x1[f] * p[k * F + f];
            }
            dots[r][k] = t0;
            if (two) {
                dots[r + 1][k] = t1;
            }
        }
        (void)F4;
#endif
    }
}

/// gradients[r] += sum_k w[r][k] p_{m0+k}, rows in pairs.
template <int count>
GAPX_INLINE void chunk_update(const Real *p, Index F, Index n, const Real (*w)[chunk],
                              Real *gradients) {
    const Index F4 = F - F % 4;
    for (Index r = 0; r < n; r += 2) {
        const bool two = r + 1 < n;
        Real *g0 = gradients + r * F;
        Real *g1 = two ? g0 + F : g0;
        const Real *w0 = w[r];
        const Real *w1 = two ? w[r + 1] : w[r];
#if GAPX_VECTOR
        for (Index f = 0; f < F4; f += 4) {
            Lanes a0;
            Lanes a1;
            load(a0, g0 + f);
            load(a1, g1 + f);
            for (int k = 0; k < count; ++k) {
                Lanes b;
                load(b, p + k * F + f);
                a0 += w0[k] * b;
                a1 += w1[k] * b;
            }
            store(g0 + f, a0);
            if (two) {
                store(g1 + f, a1);
            }
        }
#endif
        for (Index f = GAPX_VECTOR ? F4 : 0; f < F; ++f) {
            Real a0 = g0[f];
            Real a1 = g1[f];
            for (int k = 0; k < count; ++k) {
                a0 += w0[k] * p[k * F + f];
                a1 += w1[k] * p[k * F + f];
            }
            g0[f] = a0;
            if (two) {
                g1[f] = a1;
            }
        }
    }
}

/// Largest number of rows per call (the engine's blocks): the per-chunk dots live on the stack.
constexpr Index max_rows = 64;

GAPX_INLINE void kernel_body(const Real *x, Index n, const Real *points, Index n_points, Index F,
                             const Real *weights, Real zeta, Real *energies, Real *gradients) {
    Real dots[max_rows][chunk];
    Real w[max_rows][chunk];
    std::fill(gradients, gradients + n * F, 0.0);
    for (Index m0 = 0; m0 < n_points; m0 += chunk) {
        const int count = static_cast<int>(std::min<Index>(chunk, n_points - m0));
        const Real *p = points + m0 * F;
        switch (count) {
        case 4: chunk_dots<4>(x, n, p, F, dots); break;
        case 3: chunk_dots<3>(x, n, p, F, dots); break;
        case 2: chunk_dots<2>(x, n, p, F, dots); break;
        default: chunk_dots<1>(x, n, p, F, dots); break;
        }
        for (Index r = 0; r < n; ++r) {
            Real local = 0.0;
            for (int k = 0; k < count; ++k) {
                const Real c = dots[r][k];
                const Real lower = kernel_power(c, zeta - 1.0);
                local += weights[m0 + k] * (lower * c);
                w[r][k] = weights[m0 + k] * zeta * lower;
            }
            energies[r] += local;
        }
        switch (count) {
        case 4: chunk_update<4>(p, F, n, w, gradients); break;
        case 3: chunk_update<3>(p, F, n, w, gradients); break;
        case 2: chunk_update<2>(p, F, n, w, gradients); break;
        default: chunk_update<1>(p, F, n, w, gradients); break;
        }
    }
}

void kernel_default(const Real *x, Index n, const Real *points, Index n_points, Index F,
                    const Real *weights, Real zeta, Real *energies, Real *gradients) {
    kernel_body(x, n, points, n_points, F, weights, zeta, energies, gradients);
}

#if defined(__GNUC__) && defined(__x86_64__)
__attribute__((target("avx2,fma"))) void kernel_avx2(const Real *x, Index n, const Real *points,
                                                     Index n_points, Index F,
                                                     const Real *weights, Real zeta,
                                                     Real *energies, Real *gradients) {
    kernel_body(x, n, points, n_points, F, weights, zeta, energies, gradients);
}

bool has_avx2() {
    static const bool supported = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return supported;
}
#endif

} // namespace

void dot_kernel_energies(const Real *x, Index n, const Real *points, Index n_points,
                         Index n_features, const Real *weights, Real zeta, Real *energies,
                         Real *gradients) {
    for (Index r0 = 0; r0 < n; r0 += max_rows) {
        const Index rows = std::min(max_rows, n - r0);
        const Real *xr = x + r0 * n_features;
        Real *er = energies + r0;
        Real *gr = gradients + r0 * n_features;
#if defined(__GNUC__) && defined(__x86_64__)
        if (has_avx2()) {
            kernel_avx2(xr, rows, points, n_points, n_features, weights, zeta, er, gr);
            continue;
        }
#endif
        kernel_default(xr, rows, points, n_points, n_features, weights, zeta, er, gr);
    }
}

} // namespace gapx::detail
