// SPDX-License-Identifier: BSD-3-Clause
#pragma once

#include <cstddef>
#include <new>
#include <vector>

namespace gapx {

/// Allocator of memory aligned to a cache line (64 bytes, one AVX-512 vector): rows whose
/// stride is a multiple of 8 doubles then start on cache lines, so no vector load of the hot
/// loops straddles two.
template <typename T> struct CacheLineAllocator {
    using value_type = T;
    static constexpr std::align_val_t alignment{64};

    CacheLineAllocator() = default;
    template <typename U> CacheLineAllocator(const CacheLineAllocator<U> &) noexcept {}

    T *allocate(std::size_t n) {
        return static_cast<T *>(::operator new(n * sizeof(T), alignment));
    }
    void deallocate(T *p, std::size_t) noexcept { ::operator delete(p, alignment); }

    template <typename U> bool operator==(const CacheLineAllocator<U> &) const noexcept {
        return true;
    }
    template <typename U> bool operator!=(const CacheLineAllocator<U> &) const noexcept {
        return false;
    }
};

template <typename T> using AlignedVector = std::vector<T, CacheLineAllocator<T>>;

} // namespace gapx
