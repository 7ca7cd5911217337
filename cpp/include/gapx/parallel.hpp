// SPDX-License-Identifier: BSD-3-Clause
#pragma once

// The only place that includes <omp.h>: everything else uses these shims, which fall back to a
// serial build when the compiler has no OpenMP.
#ifdef _OPENMP
#include <omp.h>
#endif

#include <exception>
#include <mutex>

namespace gapx {

/// Number of threads to use: `requested` if positive, otherwise OpenMP's default.
inline int resolve_threads(int requested) {
    if (requested > 0) {
        return requested;
    }
#ifdef _OPENMP
    return omp_get_max_threads();
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
