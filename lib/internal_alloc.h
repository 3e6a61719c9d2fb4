// Memory for brc's own bookkeeping (merge queues, the collector's lists), taken from the
// configured object allocator, so that an allocator that fails makes these allocations fail
// too and their failure paths get exercised (stress scenario "alloc"). Internal to lib/.
//
// Each block records the allocator that made it in a 16-byte prefix, so a vector that outlives
// a SetAllocator() call still returns its memory to the right one. Failure throws
// std::bad_alloc, like std::allocator.
#ifndef BRC_LIB_INTERNAL_ALLOC_H_
#define BRC_LIB_INTERNAL_ALLOC_H_

#include <cstddef>
#include <new>
#include <vector>

#include "brc/allocator.h"

namespace brc::detail {

inline constexpr std::size_t kInternalPrefix = 16;

inline void* InternalAllocate(std::size_t bytes) {
  Allocator& a = GetAllocator();
  void* p = a.Allocate(bytes + kInternalPrefix, kInternalPrefix);
  if (p == nullptr) throw std::bad_alloc();
  *static_cast<Allocator**>(p) = &a;
  return static_cast<char*>(p) + kInternalPrefix;
}

inline void InternalDeallocate(void* p, std::size_t bytes) noexcept {
  char* base = static_cast<char*>(p) - kInternalPrefix;
  (*reinterpret_cast<Allocator**>(base))->Deallocate(base, bytes + kInternalPrefix,
                                                     kInternalPrefix);
}

template <class T>
struct InternalAllocator {
  using value_type = T;
  InternalAllocator() noexcept = default;
  template <class U>
  InternalAllocator(const InternalAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) { return static_cast<T*>(InternalAllocate(n * sizeof(T))); }
  void deallocate(T* p, std::size_t n) noexcept { InternalDeallocate(p, n * sizeof(T)); }
  template <class U>
  bool operator==(const InternalAllocator<U>&) const noexcept {
    return true;
  }
};
static_assert(alignof(std::max_align_t) <= kInternalPrefix);

template <class T>
using InternalVector = std::vector<T, InternalAllocator<T>>;

}  // namespace brc::detail

#endif  // BRC_LIB_INTERNAL_ALLOC_H_
