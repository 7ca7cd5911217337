// SPDX-License-Identifier: BSD-3-Clause
#pragma once

// The only place that includes <omp.h>: everything else uses these shims, which fall back to a
// serial build when the compiler has no OpenMP.
#ifdef _OPENMP
#include <omp.h>
#endif

#include "gapx/errors.hpp"
#include "gapx/types.hpp"

#include <algorithm>
#include <exception>
#include <mutex>
#include <string>
#include <thread>

namespace gapx {

/// Processors available to this process: omp_get_num_procs() (which honours the affinity mask),
/// or std::thread::hardware_concurrency() in a serial build; at least 1.
inline int available_processors() {
#ifdef _OPENMP
    return std::max(1, omp_get_num_procs());
#else
    return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
#endif
}

/// Largest `n_threads` any entry point accepts: \f$ \max(256, 4 P) \f$ with P =
/// available_processors(). More threads than a few per processor only add contention, and an
/// absurd request (100000) makes the OpenMP runtime fail to create its threads and crash the
/// process instead of raising; the floor of 256 keeps deliberate oversubscription (tests on a
/// small machine) possible, and bounds the per-thread stacks (a few MiB each) and scratch buffers.
inline int max_threads() { return std::max(256, 4 * available_processors()); }

/// Number of threads to use for an entry point's parallel regions: `requested` if positive,
/// otherwise (0) OpenMP's default (omp_get_max_threads(), which honours OMP_NUM_THREADS), capped
/// at max_threads() so an absurd OMP_NUM_THREADS cannot crash the runtime either. Every entry
/// point taking `n_threads` calls this before doing any work. Throws InvalidArgument when
/// `requested` is negative or exceeds max_threads(). Does not allocate.
inline int resolve_threads(int requested) {
    const int limit = max_threads();
    if (requested < 0 || requested > limit) {
        throw InvalidArgument("n_threads must be between 1 and " + std::to_string(limit) +
                              " (max(256, 4 x the " + std::to_string(available_processors()) +
                              " available processors)), or 0 for OpenMP's default; got " +
                              std::to_string(requested));
    }
    if (requested > 0) {
        return requested;
    }
#ifdef _OPENMP
    return std::min(std::max(1, omp_get_max_threads()), limit);
#else
    return 1;
#endif
}

inline int thread_id() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/// Chunk for `schedule(dynamic, chunk)` over n items on `threads` threads: `most` (what amortises
/// the scheduling of a large structure), lowered so that each thread gets about four chunks (a
/// 21-atom molecule in chunks of 16 would leave one of two threads 5 atoms).
inline Index dynamic_chunk(Index n, int threads, Index most) {
    return std::max<Index>(1, std::min<Index>(most, n / (4 * static_cast<Index>(threads))));
}

/// Keeps the first exception thrown inside a parallel region so it can be rethrown after it:
/// an exception must never escape an OpenMP region (that terminates the process).
class ExceptionCapture {
  public:
    template <typename F> void run(F &&f) noexcept {
        try {
            f();
        } catch (...) {
            std::lock_guard<std::mutex> lock(mutex_);
            if (!error_) {
                error_ = std::current_exception();
            }
        }
    }
    void rethrow() const {
        if (error_) {
            std::rethrow_exception(error_);
        }
    }

  private:
    std::exception_ptr error_;
    std::mutex mutex_;
};

} // namespace gapx
