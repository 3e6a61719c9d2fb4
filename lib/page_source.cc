// The page source: 64 KiB heap pages for the built-in default allocator, carved from 4 MiB
// regions that it maps from the OS itself, so that a page given back stops being resident.
//
// Why not malloc: glibc keeps freed memory in its arenas (only blocks above its mmap threshold
// are unmapped), so a heap page freed through free() stays resident, and a process that once
// held 200 MiB of objects keeps 200 MiB after they die. Here a freed page gets
// madvise(MADV_DONTNEED): its physical memory goes back at once, its address stays mapped for
// reuse, and touching it again faults in zeroed memory.
//
// Layout: a region is 64 pages (4 MiB), mapped with mmap and trimmed to a 64 KiB aligned start
// (pages are found from an object's address by masking: lib/gc_heap.h). Regions are kept in
// an array sorted by address (its own mmap'd memory, so this file never calls malloc or
// operator new) with a 64-bit mask of each region's free pages. A page is taken from the
// lowest region with a free page, so the busy pages pack into few regions. Address space stays
// bounded: a freed page is reused before any new region is mapped, and a region whose pages are
// all free is unmapped, but for one kept mapped (not resident) against map/unmap churn.
//
// Who runs what: any thread that needs a page (a heap's owner, the collector's sweep, a thread
// releasing an exited thread's pages) calls MapHeapPage / UnmapHeapPage; one mutex guards the
// region table. It is taken once per 64 KiB page, never on an object's allocation or free,
// and no user code runs under it. madvise and mmap run outside it; munmap of an unlinked region
// too.
//
// Failure: when mmap fails (or a test makes it fail) MapHeapPage returns nullptr and the
// default allocator falls back to aligned_alloc for that page; UnmapHeapPage tells the two
// kinds apart by looking the address up in the table. Under AddressSanitizer the source is off:
// LeakSanitizer does not scan mmap'd memory for pointers, so objects held only from objects in
// such pages would be reported as leaks; pages come from malloc there, as before.
#include "page_source.h"

#include <sys/mman.h>

#include <atomic>
#include <bit>
#include <cstdint>
#include <cstring>

#include "brc/detail/config.h"
#include "mutex.h"
#include "no_destroy.h"

namespace brc::detail {
namespace {

constexpr std::size_t kPage = std::size_t{64} << 10;
constexpr std::size_t kRegionPages = 64;
constexpr std::size_t kRegionBytes = kPage * kRegionPages;  // 4 MiB
constexpr uint64_t kAllFree = ~uint64_t{0};
static_assert(kRegionPages == 64, "one bit per page in a uint64_t");
// The region table's capacity (its memory is reserved, and touched only as it fills): 2^20
// regions are 4 TiB of pages.
constexpr std::size_t kMaxRegions = std::size_t{1} << 20;
// Fully free regions kept mapped (not resident): see "Address space" above.
constexpr std::size_t kKeptEmptyRegions = 1;

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSourceEnabled = false;
#else
constexpr bool kSourceEnabled = true;
#endif

struct Region {
  uintptr_t base;      // 64 KiB aligned
  uint64_t free_mask;  // bit i: page i is free (not handed out, not resident)
};

// Written by tests only; read when a region is about to be mapped (relaxed: a test switch).
std::atomic<bool> g_fail_maps{false};

class PageSource {
 public:
  void* Take() noexcept {
    {
      MutexLock lock(&mu_);
      if (void* p = TakeFreeLocked()) return p;
    }
    uintptr_t base = MapRegion();
    if (base == 0) return nullptr;
    MutexLock lock(&mu_);
    if (!EnsureTableLocked()) {
      munmap(reinterpret_cast<void*>(base), kRegionBytes);
      return nullptr;
    }
    // Another thread may have freed a page meanwhile; the new region is used anyway (its
    // first page) and serves the next takers.
    std::size_t i = LowerBoundLocked(base);
    std::memmove(&table_[i + 1], &table_[i], (count_ - i) * sizeof(Region));
    table_[i] = Region{base, kAllFree & ~uint64_t{1}};
    ++count_;
    if (i < first_free_) first_free_ = i;
    ++in_use_;
    return reinterpret_cast<void*>(base);
  }

  bool Give(void* page) noexcept {
    auto addr = reinterpret_cast<uintptr_t>(page);
    {
      MutexLock lock(&mu_);
      if (FindLocked(addr) == count_) return false;  // not ours: the malloc fallback's
    }
    // Outside the lock: the page is still marked in use, so nobody takes it meanwhile, and its
    // region cannot be unmapped while one of its pages is in use.
    madvise(page, kPage, MADV_DONTNEED);
    uintptr_t unmap = 0;
    {
      MutexLock lock(&mu_);
      std::size_t i = FindLocked(addr);
      Region& r = table_[i];
      r.free_mask |= uint64_t{1} << ((addr - r.base) / kPage);
      --in_use_;
      if (i < first_free_) first_free_ = i;
      if (r.free_mask == kAllFree) {
        if (empty_regions_ < kKeptEmptyRegions) {
          ++empty_regions_;
        } else {
          unmap = r.base;
          std::memmove(&table_[i], &table_[i + 1], (count_ - i - 1) * sizeof(Region));
          --count_;
        }
      }
    }
    if (unmap != 0) munmap(reinterpret_cast<void*>(unmap), kRegionBytes);
    return true;
  }

  std::size_t InUse() noexcept {
    MutexLock lock(&mu_);
    return in_use_;
  }
  std::size_t Regions() noexcept {
    MutexLock lock(&mu_);
    return count_;
  }

 private:
  void* TakeFreeLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (std::size_t i = first_free_; i < count_; ++i) {
      Region& r = table_[i];
      if (r.free_mask == 0) continue;
      first_free_ = i;
      if (r.free_mask == kAllFree) --empty_regions_;
      int bit = std::countr_zero(r.free_mask);
      r.free_mask &= ~(uint64_t{1} << bit);
      ++in_use_;
      return reinterpret_cast<void*>(r.base + static_cast<std::size_t>(bit) * kPage);
    }
    first_free_ = count_;
    return nullptr;
  }

  // A fresh region, 64 KiB aligned, or 0. Outside the lock.
  static uintptr_t MapRegion() noexcept {
    // Relaxed: a test switch, set before the allocations it is meant to fail.
    if (g_fail_maps.load(std::memory_order_relaxed)) return 0;
    std::size_t span = kRegionBytes + kPage;
    void* m = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return 0;
    auto start = reinterpret_cast<uintptr_t>(m);
    uintptr_t base = (start + kPage - 1) & ~(kPage - 1);
    if (base > start) munmap(m, base - start);
    uintptr_t end = start + span;
    if (end > base + kRegionBytes) {
      munmap(reinterpret_cast<void*>(base + kRegionBytes), end - base - kRegionBytes);
    }
    // 64 KiB pages are given back one at a time: transparent huge pages would only be split
    // again (and would make a partly used 2 MiB resident as a whole).
    madvise(reinterpret_cast<void*>(base), kRegionBytes, MADV_NOHUGEPAGE);
    return base;
  }

  // Reserves the table on first use; false when that mapping fails or the table is full.
  bool EnsureTableLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (table_ == nullptr) {
      void* m = mmap(nullptr, kMaxRegions * sizeof(Region), PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (m == MAP_FAILED) return false;
      table_ = static_cast<Region*>(m);
    }
    return count_ < kMaxRegions;
  }

  // The first region whose base is not below `base`.
  std::size_t LowerBoundLocked(uintptr_t base) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::size_t lo = 0, hi = count_;
    while (lo < hi) {
      std::size_t mid = (lo + hi) / 2;
      if (table_[mid].base < base) lo = mid + 1; else hi = mid;
    }
    return lo;
  }

  // The region holding `addr`, or count_.
  std::size_t FindLocked(uintptr_t addr) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::size_t i = LowerBoundLocked(addr + 1);  // first base above addr
    if (i == 0) return count_;
    --i;
    return addr - table_[i].base < kRegionBytes ? i : count_;
  }

  Mutex mu_;
  Region* table_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::size_t count_ ABSL_GUARDED_BY(mu_) = 0;
  std::size_t first_free_ ABSL_GUARDED_BY(mu_) = 0;  // no region below it has a free page
  std::size_t empty_regions_ ABSL_GUARDED_BY(mu_) = 0;
  std::size_t in_use_ ABSL_GUARDED_BY(mu_) = 0;
};

PageSource& Source() {
  static NoDestroy<PageSource> source;  // never destroyed: pages are freed at static destruction
  return source.get();
}

}  // namespace

void* MapHeapPage() noexcept {
  if constexpr (!kSourceEnabled) return nullptr;
  return Source().Take();
}

bool UnmapHeapPage(void* page) noexcept {
  if constexpr (!kSourceEnabled) return false;
  return Source().Give(page);
}

std::size_t PageSourcePagesInUse() noexcept { return kSourceEnabled ? Source().InUse() : 0; }
std::size_t PageSourceRegions() noexcept { return kSourceEnabled ? Source().Regions() : 0; }

void FailPageSourceMapsForTesting(bool fail) noexcept {
  g_fail_maps.store(fail, std::memory_order_relaxed);  // relaxed: see g_fail_maps
}

}  // namespace brc::detail
