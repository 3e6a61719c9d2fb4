// Object memory: the built-in allocators and the process-wide choice between them.
//
// g_allocator is read on every allocation and free (acquire load: pairs with the release in
// SetAllocator, so a new allocator's own state is visible before it is used) and written only
// by SetAllocator, at start-up, when no object is alive.
#include <sys/mman.h>
#include <tbb/scalable_allocator.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <string>

#include "no_destroy.h"
#include "page_source.h"
#include "allocator_internal.h"
#include "brc/thread.h"
#include "brc/stats.h"
#include "stop_the_world.h"
#include "thread_state.h"

namespace brc {
namespace {

constexpr std::size_t kMallocAlign = alignof(std::max_align_t);
constexpr std::size_t kOsPage = 4096;
constexpr std::size_t kDirectMapBytes = std::size_t{128} << 10;  // glibc's initial threshold
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kDirectMapEnabled = false;
#else
constexpr bool kDirectMapEnabled = true;
#endif

class MallocAllocatorImpl final : public Allocator {
 public:
  static void* Alloc(std::size_t size, std::size_t align) noexcept {
    if (align <= kMallocAlign) return std::malloc(size);
    return std::aligned_alloc(align, (size + align - 1) / align * align);
  }
  static void Free(void* p, std::size_t, std::size_t) noexcept { std::free(p); }
  void* Allocate(std::size_t size, std::size_t align) noexcept override {
    return Alloc(size, align);
  }
  void Deallocate(void* p, std::size_t size, std::size_t align) noexcept override {
    Free(p, size, align);
  }
  std::string_view Name() const noexcept override { return "malloc"; }
};

class ScalableAllocatorImpl final : public Allocator {
 public:
  static void* Alloc(std::size_t size, std::size_t align) noexcept {
    if (align <= kMallocAlign) return scalable_malloc(size);
    return scalable_aligned_malloc(size, align);
  }
  static void Free(void* p, std::size_t, std::size_t align) noexcept {
    if (align <= kMallocAlign) {
      scalable_free(p);
    } else {
      scalable_aligned_free(p);
    }
  }
  void* Allocate(std::size_t size, std::size_t align) noexcept override {
    return Alloc(size, align);
  }
  void Deallocate(void* p, std::size_t size, std::size_t align) noexcept override {
    Free(p, size, align);
  }
  std::string_view Name() const noexcept override { return "tbbmalloc"; }
};

// The installed allocator, or nullptr for the built-in default, which is then called directly
// (no virtual call on the allocation and free paths). Constant-initialised, so usable from
// other translation units' static initialisers.
constinit std::atomic<Allocator*> g_current{nullptr};

#if defined(BRC_DEFAULT_ALLOCATOR_TBB) && !defined(BRC_SANITIZED)
using DefaultImpl = ScalableAllocatorImpl;
#else
using DefaultImpl = MallocAllocatorImpl;
#endif


}  // namespace

// Never destroyed: objects may still be freed during static destruction.
Allocator& MallocAllocator() noexcept {
  static detail::NoDestroy<MallocAllocatorImpl> allocator;
  return allocator.get();
}

Allocator& ScalableAllocator() noexcept {
  static detail::NoDestroy<ScalableAllocatorImpl> allocator;
  return allocator.get();
}

// The built-in default: objects of up to 8 KiB from the calling thread's leaf heap (64 KiB
// pages, lib/gc_heap.h), larger or over-aligned ones from DefaultImpl. Its Allocate/Deallocate
// are the heaps' page source: 64 KiB pages from lib/page_source.cc (mmap'd regions, given back
// with madvise), or from DefaultImpl when that source is off (AddressSanitizer) or cannot map;
// other sizes (large objects' own pages, brc's internal lists) from DefaultImpl. While it is
// installed g_current is nullptr, so AllocateObject and ReleaseObjectStorage take the leaf
// heap without a virtual call.
//
// Blocks of kDirectMapBytes and more (a merge queue after a burst of drops, the collector's
// lists) are mapped and unmapped directly: glibc raises its mmap threshold each time such a
// block is freed, after which blocks of that size come from its arenas and stay resident once
// freed (measured: an idle producer kept 3-6 MiB of its merge queue's past capacity after a
// 2,000,000-object hand-off). Under AddressSanitizer they come from malloc (LeakSanitizer does
// not look for pointers in mmap'd memory). A failed mmap is a failed allocation.
class BrcHeapAllocatorImpl final : public Allocator {
 public:
  static bool IsHeapPage(std::size_t size, std::size_t align) noexcept {
    return size == detail::kGcPageSize && align == detail::kGcPageSize;
  }
  static bool IsDirect(std::size_t size, std::size_t align) noexcept {
    return kDirectMapEnabled && size >= kDirectMapBytes && align <= kOsPage &&
           !IsHeapPage(size, align);
  }
  static std::size_t MappedBytes(std::size_t size) noexcept {
    return (size + kOsPage - 1) / kOsPage * kOsPage;
  }
  void* Allocate(std::size_t size, std::size_t align) noexcept override {
    if (IsHeapPage(size, align)) {
      if (void* p = detail::MapHeapPage()) return p;
    }
    if (IsDirect(size, align)) {
      if (size > SIZE_MAX - kOsPage) return nullptr;  // would overflow when rounded up
      void* p = mmap(nullptr, MappedBytes(size), PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      return p == MAP_FAILED ? nullptr : p;
    }
    return DefaultImpl::Alloc(size, align);
  }
  void Deallocate(void* p, std::size_t size, std::size_t align) noexcept override {
    if (IsHeapPage(size, align) && detail::UnmapHeapPage(p)) return;
    if (IsDirect(size, align)) {
      munmap(p, MappedBytes(size));
      return;
    }
    DefaultImpl::Free(p, size, align);
  }
  std::string_view Name() const noexcept override { return "brc-heap"; }
};

Allocator& DefaultAllocator() noexcept {
  static detail::NoDestroy<BrcHeapAllocatorImpl> allocator;
  return allocator.get();
}

absl::Status SetAllocator(Allocator* allocator) {
  if (allocator == nullptr) return absl::InvalidArgumentError("SetAllocator: allocator is null");
  detail::ThreadState* ts = detail::t_state;
  if (ts != nullptr && ts->blocking_depth > 0) {
    return absl::FailedPreconditionError(
        "SetAllocator inside a brc::BlockingScope (it stops the world, which a blocked thread "
        "may not do)");
  }
  if (detail::StopInProgressOnThisThread()) {
    return absl::FailedPreconditionError(
        "SetAllocator from the stop-the-world watchdog handler (the world is not stopped yet)");
  }
  // Objects alive: refuse at once, without stopping the world (the common misuse, and the
  // only answer an allocator running on an unattached marking thread can get: attaching there
  // would wait for the very collection it serves).
  if (int64_t live = detail::SumStats().live_objects(); live != 0) {
    return absl::FailedPreconditionError(
        "SetAllocator: " + std::to_string(live) +
        " objects are alive; each must be freed by the allocator that made it, so switch "
        "allocators only when none is alive (at start-up)");
  }
  // The live count is a sum of per-thread counters, exact only while nobody allocates or frees:
  // the check and the switch happen with the world stopped (every other attached thread
  // parked; detached and blocked ones cannot allocate or free objects). A thread that is not
  // attached attaches for the duration, since only attached threads stop the world.
  bool attached_here = ts == nullptr;
  if (attached_here) AttachCurrentThread();
  bool stopped_here = !detail::ThisThreadStoppedTheWorld();
  if (stopped_here) detail::StopWorld(detail::t_state);
  int64_t live = detail::SumStats().live_objects();
  if (live == 0) {
    // The default is kept as nullptr so that its calls stay direct. Release pairs with the
    // acquire loads on the allocation and free paths (and the restart orders it anyway).
    g_current.store(allocator == &DefaultAllocator() ? nullptr : allocator,
                    std::memory_order_release);
  }
  if (stopped_here) detail::RestartWorld();
  if (attached_here) DetachCurrentThread();
  if (live != 0) {
    return absl::FailedPreconditionError(
        "SetAllocator: " + std::to_string(live) +
        " objects are alive; each must be freed by the allocator that made it, so switch "
        "allocators only when none is alive (at start-up)");
  }
  return absl::OkStatus();
}

void ReleaseFreeMemory() noexcept {
  detail::ThreadState* ts = detail::t_state;
  // Not attached, or blocked: a collection may be sweeping this thread's heaps right now.
  if (ts == nullptr || ts->blocking_depth > 0) return;
  detail::SweepOwnHeaps(ts);
}

Allocator& GetAllocator() noexcept {
  Allocator* a = g_current.load(std::memory_order_acquire);
  return a != nullptr ? *a : DefaultAllocator();
}

namespace detail {

void* AllocateObject(std::size_t size, std::size_t align) {
  // Counted before the allocator runs: a custom allocator may reach a safepoint or block, and
  // a SetAllocator meanwhile must see this allocation as alive. A failure counts as freed.
  BRC_STAT_ALWAYS_INC(allocations);
  // Acquire pairs with the release in SetAllocator.
  Allocator* a = g_current.load(std::memory_order_acquire);
  void* p;
  if (a == nullptr) {
    // The default: small objects from the thread's leaf heap (lib/gc_heap.h), whose pages come
    // from DefaultImpl; others from DefaultImpl directly.
    if (LeafHeapFits(size, align)) {
      ThreadState* ts = t_state;
      p = ts != nullptr ? TryAllocateLeafLocal(ts, size) : nullptr;
      if (p == nullptr) p = AllocateLeaf(size);
    } else {
      p = DefaultImpl::Alloc(size, align);
    }
  } else {
    p = a->Allocate(size, align);
  }
  if (p == nullptr) {
    BRC_STAT_ALWAYS_INC(frees);
    throw std::bad_alloc();
  }
  return p;
}

void FreeObjectStorage(void* p, std::size_t size, std::size_t align) noexcept {
  BRC_STAT_ALWAYS_INC(frees);
  ReleaseObjectStorage(p, size, align);
}

Allocator* CurrentAllocatorOrNull() noexcept {
  return g_current.load(std::memory_order_acquire);  // pairs with SetAllocator
}

void ReleaseObjectStorage(void* mem, std::size_t size, std::size_t align) noexcept {
  // Acquire pairs with the release in SetAllocator.
  ReleaseObjectStorageWith(g_current.load(std::memory_order_acquire), mem, size, align);
}

void ReleaseObjectStorageWith(Allocator* a, void* mem, std::size_t size,
                              std::size_t align) noexcept {
  if (a == nullptr) {
    // The same choice as AllocateObject made for this size: SetAllocator cannot run while an
    // object is alive.
    if (LeafHeapFits(size, align)) {
      ThreadState* ts = t_state;
      if (ts == nullptr || !TryFreeLeafLocal(ts, mem)) FreeLeafBlock(mem);
    } else {
      DefaultImpl::Free(mem, size, align);
    }
  } else {
    a->Deallocate(mem, size, align);
  }
}

}  // namespace detail
}  // namespace brc
