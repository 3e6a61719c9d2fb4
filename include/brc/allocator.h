// Object memory comes from a pluggable allocator. Three are built in:
//  * DefaultAllocator(), "brc-heap": each attached thread allocates objects of up to 8 KiB
//    from its own heap of 64 KiB pages of equal blocks (a free-list pop, no lock, no atomic);
//    the owner frees with a push, other threads with one CAS on the page. Pages come from
//    4 MiB regions brc maps itself and go back with madvise (resident memory drops); larger
//    objects come from malloc. Under AddressSanitizer every object comes from malloc instead,
//    so that ASan checks each one.
//  * MallocAllocator(): glibc malloc for every object.
//  * ScalableAllocator(): oneTBB's tbbmalloc for every object.
// bench/ compares them (README).
#ifndef BRC_ALLOCATOR_H_
#define BRC_ALLOCATOR_H_

#include <cstddef>
#include <string_view>

#include "absl/status/status.h"

namespace brc {

class Allocator {
 public:
  virtual ~Allocator() = default;
  // Returns nullptr on failure (brc::Make then throws std::bad_alloc). Called concurrently
  // from any attached thread; also while the calling thread holds the world stopped (the
  // collector's own lists), and, with CollectorConfig::workers > 1, on marking threads that are
  // not attached. brc never calls it under one of its own locks, so it may call brc back
  // (README, "Re-entrancy"), but where it runs for the collector it cannot stop the world or
  // collect (a fatal error / FailedPrecondition), and on a marking thread it cannot count.
  virtual void* Allocate(std::size_t size, std::size_t align) noexcept = 0;
  // `size` and `align` are those given to Allocate. May be called on any thread.
  virtual void Deallocate(void* p, std::size_t size, std::size_t align) noexcept = 0;
  virtual std::string_view Name() const noexcept = 0;
};

Allocator& MallocAllocator() noexcept;
Allocator& ScalableAllocator() noexcept;  // oneTBB tbbmalloc
// The default (brc-heap). Its Allocate/Deallocate are its page source (64 KiB pages from mmap'd
// regions; malloc for other sizes, or when mapping fails).
Allocator& DefaultAllocator() noexcept;

// Installs `allocator` for all later object allocations. Call it at start-up: it fails with
// FailedPrecondition while any object is alive (each object must be freed by the allocator
// that made it), and with InvalidArgument for nullptr. The allocator must outlive its objects.
absl::Status SetAllocator(Allocator* allocator);
Allocator& GetAllocator() noexcept;

// Each thread keeps the empty 64 KiB pages of its heaps (default allocator's objects and
// tracked objects) for reuse, up to its own peak of pages in use; its safepoints give back
// what sat unused for 50 ms (so does a collection), and take back blocks other threads freed
// on its pages; a detaching thread gives back all of them (README, "When freed memory goes
// back"). This gives back the calling thread's now.
void ReleaseFreeMemory() noexcept;

namespace detail {
// Allocate from the current allocator; throws std::bad_alloc on failure. Counts allocations.
void* AllocateObject(std::size_t size, std::size_t align);
// Return storage of an object that was never constructed (its constructor threw).
void FreeObjectStorage(void* p, std::size_t size, std::size_t align) noexcept;
}  // namespace detail

}  // namespace brc

#endif  // BRC_ALLOCATOR_H_
