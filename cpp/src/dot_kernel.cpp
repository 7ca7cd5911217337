// SPDX-License-Identifier: BSD-3-Clause
#include "dot_kernel.hpp"

#include "gapx/errors.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

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

Index padded_stride(Index n_features) { return (n_features + 7) / 8 * 8; }

namespace {

// The call is two matrix products through each chunk of points: dots (rows x chunk) = X P^T,
// then gradients += W P with W from the dots. Both are register-tiled (R rows x 4 points or
// 4 vectors of features per tile) so that each load feeds several FMAs, the dots in feature
// blocks that keep a tile's point slices in L1 while every row passes them.

/// Points per chunk: the chunk (16 x 2 100 doubles, 270 kB) stays in L2 from its dots to its
/// gradient update.
constexpr int chunk_points = static_cast<int>(dot_kernel_chunk);
/// Features per pass of the dots: 4 points' and 6 rows' slices of 480 doubles are 38 kB (L1).
/// Not a power of two: packed rows 4 kB apart would fall into the same L1 sets.
constexpr Index feature_block = 480;
constexpr int max_rows = static_cast<int>(dot_kernel_max_rows);

using Chunk = Real[chunk_points];

/// Where feature f of point k lies in a packed chunk of `count` points (see pack_points).
inline Index packed_offset(Index count, Index stride, Index k, Index f) {
    const Index f0 = f - f % feature_block;
    return count * f0 + k * std::min(feature_block, stride - f0) + (f - f0);
}

/// Local energies and gradient weights of a chunk: energies[r] += sum_k a_k c_rk^zeta,
/// w[r][k] = a_k zeta c_rk^(zeta-1).
inline void chunk_weights(const Chunk *dots, Index n, int count, const Real *weights,
                          Real zeta, Real *energies, Chunk *w) {
    for (Index r = 0; r < n; ++r) {
        Real local = 0.0;
        for (int k = 0; k < count; ++k) {
            const Real c = dots[r][k];
            const Real lower = kernel_power(c, zeta - 1.0);
            local += weights[k] * (lower * c);
            w[r][k] = weights[k] * zeta * lower;
        }
        energies[r] += local;
    }
}

#if defined(__GNUC__)
#define GAPX_INLINE inline __attribute__((always_inline))

// W doubles per vector: the generic path uses 4 (pairs of SSE2 registers), AVX2 4, AVX-512 8.
// Everything below is inlined into the per-ISA entry points, so each is compiled for its own
// instruction set. Vectors go by reference: one passed by value would have an ISA-dependent ABI.
// The types may alias doubles and need only their alignment, so rows are read through them.
template <int W> struct VectorOf;
template <> struct VectorOf<2> {
    typedef double type __attribute__((vector_size(16), aligned(8), may_alias));
};
template <> struct VectorOf<4> {
    typedef double type __attribute__((vector_size(32), aligned(8), may_alias));
};
template <> struct VectorOf<8> {
    typedef double type __attribute__((vector_size(64), aligned(8), may_alias));
};

template <typename V> constexpr int lanes = static_cast<int>(sizeof(V) / sizeof(Real));

template <typename V> GAPX_INLINE const V &at(const Real *p) {
    return *reinterpret_cast<const V *>(p);
}
template <typename V> GAPX_INLINE V &at(Real *p) { return *reinterpret_cast<V *>(p); }

template <typename V> GAPX_INLINE Real total(const V &v) {
    Real s[lanes<V>];
    std::memcpy(s, &v, sizeof(V));
    for (int half = lanes<V> / 2; half >= 1; half /= 2) {
        for (int i = 0; i < half; ++i) {
            s[i] += s[i + half];
        }
    }
    return s[0];
}

/// dots[r][k0 + k] += x_r . p_k over `length` features, for R rows (x_stride apart) and K
/// points (p_stride apart).
template <typename V, int R, int K>
GAPX_INLINE void dots_tile(const Real *x, Index x_stride, const Real *p, Index p_stride,
                           Index length, Chunk *dots, int k0) {
    V acc[R][K];
    for (int r = 0; r < R; ++r) {
        for (int k = 0; k < K; ++k) {
            acc[r][k] = V{};
        }
    }
    for (Index f = 0; f < length; f += lanes<V>) {
        V b[K];
        for (int k = 0; k < K; ++k) {
            b[k] = at<V>(p + k * p_stride + f);
        }
        for (int r = 0; r < R; ++r) {
            const V a = at<V>(x + r * x_stride + f);
            for (int k = 0; k < K; ++k) {
                acc[r][k] += a * b[k];
            }
        }
    }
    for (int r = 0; r < R; ++r) {
        for (int k = 0; k < K; ++k) {
            dots[r][k0 + k] += total(acc[r][k]);
        }
    }
}

/// g_r[0, J lanes) += sum_k w[r][k] p_k for R rows (g_stride apart) and `count` points
/// (p_stride apart).
template <typename V, int R, int J>
GAPX_INLINE void update_tile(const Real *p, Index p_stride, int count, const Chunk *w, Real *g,
                             Index g_stride) {
    constexpr int L = lanes<V>;
    V acc[R][J];
    for (int r = 0; r < R; ++r) {
        for (int j = 0; j < J; ++j) {
            acc[r][j] = at<V>(g + r * g_stride + j * L);
        }
    }
    for (int k = 0; k < count; ++k) {
        V b[J];
        for (int j = 0; j < J; ++j) {
            b[j] = at<V>(p + k * p_stride + j * L);
        }
        for (int r = 0; r < R; ++r) {
            const Real c = w[r][k];
            for (int j = 0; j < J; ++j) {
                acc[r][j] += c * b[j];
            }
        }
    }
    for (int r = 0; r < R; ++r) {
        for (int j = 0; j < J; ++j) {
            at<V>(g + r * g_stride + j * L) = acc[r][j];
        }
    }
}

template <typename V, int R>
GAPX_INLINE void dots_rows(int points, const Real *x, Index x_stride, const Real *p,
                           Index p_stride, Index length, Chunk *dots, int k0) {
    switch (points) {
    case 4: dots_tile<V, R, 4>(x, x_stride, p, p_stride, length, dots, k0); break;
    case 3: dots_tile<V, R, 3>(x, x_stride, p, p_stride, length, dots, k0); break;
    case 2: dots_tile<V, R, 2>(x, x_stride, p, p_stride, length, dots, k0); break;
    default: dots_tile<V, R, 1>(x, x_stride, p, p_stride, length, dots, k0); break;
    }
}

/// A tile of `rows` <= R rows and `points` <= 4 points.
template <typename V, int R>
GAPX_INLINE void dots_any(int rows, int points, const Real *x, Index x_stride, const Real *p,
                          Index p_stride, Index length, Chunk *dots, int k0) {
    if constexpr (R > 1) {
        if (rows < R) {
            return dots_any<V, R - 1>(rows, points, x, x_stride, p, p_stride, length, dots, k0);
        }
    }
    dots_rows<V, R>(points, x, x_stride, p, p_stride, length, dots, k0);
}

template <typename V, int J, int R>
GAPX_INLINE void update_any(int rows, const Real *p, Index p_stride, int count, const Chunk *w,
                            Real *g, Index g_stride) {
    if constexpr (R > 1) {
        if (rows < R) {
            return update_any<V, J, R - 1>(rows, p, p_stride, count, w, g, g_stride);
        }
    }
    update_tile<V, R, J>(p, p_stride, count, w, g, g_stride);
}

/// Rows of tile t when n rows are split into the fewest tiles of at most RT rows, as evenly as
/// possible (9 rows: 3 + 3 + 3, not 4 + 4 + 1: a one-row tile wastes most of its loads).
inline int tile_rows(Index n, int RT, Index t) {
    const Index tiles = (n + RT - 1) / RT;
    return static_cast<int>(n / tiles + (t < n % tiles ? 1 : 0));
}

/// The kernel for vectors V and RT rows per tile (as many as the registers hold: 6 x 4
/// accumulators with AVX-512's 32 registers, 2 x 4 with 16).
template <typename V, int RT>
GAPX_INLINE void kernel_body(const Real *x, Index n, const Real *points, Index n_points,
                             Index stride, const Real *weights, Real zeta, Real *energies,
                             Real *gradients) {
    constexpr int L = lanes<V>;
    Chunk dots[max_rows];
    Chunk w[max_rows];
    std::fill(gradients, gradients + n * stride, 0.0);
    const Index wide = stride - stride % (4 * L);
    for (Index m0 = 0; m0 < n_points; m0 += chunk_points) {
        const int count = static_cast<int>(std::min<Index>(chunk_points, n_points - m0));
        const Real *chunk = points + m0 * stride;
        for (Index r = 0; r < n; ++r) {
            std::fill(dots[r], dots[r] + chunk_points, 0.0);
        }
        for (Index f0 = 0; f0 < stride; f0 += feature_block) {
            const Index width = std::min(feature_block, stride - f0);
            const Real *block = chunk + count * f0;
            for (int k0 = 0; k0 < count; k0 += 4) {
                const int points_here = std::min(4, count - k0);
                int rows = 0;
                for (Index r0 = 0, t = 0; r0 < n; r0 += rows, ++t) {
                    rows = tile_rows(n, RT, t);
                    dots_any<V, RT>(rows, points_here, x + r0 * stride + f0, stride,
                                    block + k0 * width, width, width, dots + r0, k0);
                }
            }
        }
        chunk_weights(dots, n, count, weights + m0, zeta, energies, w);
        for (Index f = 0; f < stride; f += (f < wide ? 4 * L : L)) {
            const Index f0 = f - f % feature_block;
            const Index width = std::min(feature_block, stride - f0);
            const Real *p = chunk + count * f0 + (f - f0);
            int rows = 0;
            for (Index r0 = 0, t = 0; r0 < n; r0 += rows, ++t) {
                rows = tile_rows(n, RT, t);
                if (f < wide) {
                    update_any<V, 4, RT>(rows, p, width, count, w + r0,
                                         gradients + r0 * stride + f, stride);
                } else {
                    update_any<V, 1, RT>(rows, p, width, count, w + r0,
                                         gradients + r0 * stride + f, stride);
                }
            }
        }
    }
}

void kernel_generic(const Real *x, Index n, const Real *points, Index n_points, Index stride,
                    const Real *weights, Real zeta, Real *energies, Real *gradients) {
    kernel_body<VectorOf<2>::type, 2>(x, n, points, n_points, stride, weights, zeta, energies,
                                      gradients);
}

#if defined(__x86_64__)
#define GAPX_X86_PATHS 1
__attribute__((target("avx2,fma"))) void kernel_avx2(const Real *x, Index n, const Real *points,
                                                     Index n_points, Index stride,
                                                     const Real *weights, Real zeta,
                                                     Real *energies, Real *gradients) {
    kernel_body<VectorOf<4>::type, 2>(x, n, points, n_points, stride, weights, zeta, energies,
                                      gradients);
}

__attribute__((target("avx512f,fma"))) void
kernel_avx512(const Real *x, Index n, const Real *points, Index n_points, Index stride,
              const Real *weights, Real zeta, Real *energies, Real *gradients) {
    kernel_body<VectorOf<8>::type, 6>(x, n, points, n_points, stride, weights, zeta, energies,
                                      gradients);
}
#endif

#else // not GCC or Clang: plain loops

void kernel_generic(const Real *x, Index n, const Real *points, Index n_points, Index stride,
                    const Real *weights, Real zeta, Real *energies, Real *gradients) {
    Chunk dots[max_rows];
    Chunk w[max_rows];
    std::fill(gradients, gradients + n * stride, 0.0);
    for (Index m0 = 0; m0 < n_points; m0 += chunk_points) {
        const int count = static_cast<int>(std::min<Index>(chunk_points, n_points - m0));
        const Real *chunk = points + m0 * stride;
        for (Index r = 0; r < n; ++r) {
            for (int k = 0; k < count; ++k) {
                Real s = 0.0;
                for (Index f = 0; f < stride; ++f) {
                    s += x[r * stride + f] * chunk[packed_offset(count, stride, k, f)];
                }
                dots[r][k] = s;
            }
        }
        chunk_weights(dots, n, count, weights + m0, zeta, energies, w);
        for (Index r = 0; r < n; ++r) {
            for (int k = 0; k < count; ++k) {
                for (Index f = 0; f < stride; ++f) {
                    gradients[r * stride + f] +=
                        w[r][k] * chunk[packed_offset(count, stride, k, f)];
                }
            }
        }
    }
}
#endif

using Kernel = void (*)(const Real *, Index, const Real *, Index, Index, const Real *, Real,
                        Real *, Real *);

/// The path named `isa` ("" for the CPU's best).
Kernel kernel_for(const std::string &isa) {
#if defined(GAPX_X86_PATHS)
    static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    static const bool avx512 = __builtin_cpu_supports("avx512f");
    if (isa.empty()) {
        return avx512 ? kernel_avx512 : (avx2 ? kernel_avx2 : kernel_generic);
    }
    if (isa == "avx512" && avx512) {
        return kernel_avx512;
    }
    if (isa == "avx2" && avx2) {
        return kernel_avx2;
    }
#else
    if (isa.empty()) {
        return kernel_generic;
    }
#endif
    if (isa == "generic") {
        return kernel_generic;
    }
    throw InvalidArgument("the dot kernel has no path '" + isa + "' on this CPU (it has '" +
                          dot_kernel_isa() + "')");
}

} // namespace

AlignedVector<Real> pack_points(const Real *rows, Index n_points, Index n_features) {
    const Index stride = padded_stride(n_features);
    AlignedVector<Real> out(static_cast<size_t>(n_points * stride), 0.0);
    for (Index m0 = 0; m0 < n_points; m0 += chunk_points) {
        const Index count = std::min<Index>(chunk_points, n_points - m0);
        Real *chunk = out.data() + m0 * stride;
        for (Index k = 0; k < count; ++k) {
            for (Index f = 0; f < n_features; ++f) {
                chunk[packed_offset(count, stride, k, f)] = rows[(m0 + k) * n_features + f];
            }
        }
    }
    return out;
}

std::string dot_kernel_isa() {
#if defined(GAPX_X86_PATHS)
    if (kernel_for("") == kernel_avx512) {
        return "avx512";
    }
    if (kernel_for("") == kernel_avx2) {
        return "avx2";
    }
#endif
    return "generic";
}

void dot_kernel_energies(const Real *x, Index n, const Real *points, Index n_points,
                         Index stride, const Real *weights, Real zeta, Real *energies,
                         Real *gradients, const std::string &isa) {
    if (n > dot_kernel_max_rows || stride % 8 != 0) {
        throw InvalidArgument("dot_kernel_energies takes at most " +
                              std::to_string(dot_kernel_max_rows) +
                              " rows with a stride that is a multiple of 8");
    }
    kernel_for(isa)(x, n, points, n_points, stride, weights, zeta, energies, gradients);
}

} // namespace gapx::detail
