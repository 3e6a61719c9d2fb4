// The collector's heap: see gc_heap.h for the design. This file holds the allocation and free
// paths and the sweep the collector runs with the world stopped.
#include "gc_heap.h"

#include <algorithm>
#include <array>
#include <new>
#include <utility>

#include "allocator_internal.h"
#include "brc/detail/thread_local.h"
#include "brc/ref.h"
#include "brc/stats.h"
#include "thread_state.h"

namespace brc::detail {
namespace {

constexpr uint32_t kMaxTrackedAlign = 4096;

// Tracked allocations since the last report to the collector. This thread only.
constinit thread_local uint32_t t_allocs_unreported = 0;

std::size_t RoundUp(std::size_t n, std::size_t to) { return (n + to - 1) / to * to; }

void Link(GcHeap& heap, GcPage* p, bool front) noexcept {
  int l = p->list;
  if (front) {
    p->prev = nullptr;
    p->next = heap.lists[l];
    if (p->next != nullptr) p->next->prev = p; else heap.tails[l] = p;
    heap.lists[l] = p;
  } else {
    p->next = nullptr;
    p->prev = heap.tails[l];
    if (p->prev != nullptr) p->prev->next = p; else heap.lists[l] = p;
    heap.tails[l] = p;
  }
}

void Unlink(GcHeap& heap, GcPage* p) noexcept {
  int l = p->list;
  if (p->prev != nullptr) p->prev->next = p->next; else heap.lists[l] = p->next;
  if (p->next != nullptr) p->next->prev = p->prev; else heap.tails[l] = p->prev;
  p->prev = p->next = nullptr;
}

void UnlistYoung(GcHeap& heap, GcPage* p) noexcept {
  if (!p->young) return;
  if (p->young_prev != nullptr) {
    p->young_prev->young_next = p->young_next;
  } else {
    heap.young = p->young_next;
  }
  if (p->young_next != nullptr) p->young_next->young_prev = p->young_prev;
  p->young_prev = p->young_next = nullptr;
  p->young = false;
  --heap.young_pages;
}

// Gives an unlinked page's memory back to the allocator that made it.
void FreePageMemory(GcPage* p) noexcept {
  Allocator* a = p->allocator;
  std::size_t bytes = p->bytes;
  p->~GcPage();
  a->Deallocate(p, bytes, kGcPageSize);
}

void ReleasePage(GcHeap& heap, GcPage* p) noexcept {
  Unlink(heap, p);
  UnlistYoung(heap, p);
  --heap.pages;
  FreePageMemory(p);
}

// A page with no allocated block leaves its class list: large pages go back to the allocator,
// small ones to the cache (gc_heap.h, "Empty pages"). Its remote list is empty: `used` counts
// remote frees until they are reclaimed, and it is 0.
void RetirePage(GcHeap& heap, GcPage* p) noexcept {
  if (p->list == kGcLarge) {
    ReleasePage(heap, p);
    return;
  }
  Unlink(heap, p);
  UnlistYoung(heap, p);
  --heap.pages;
  if (heap.pages + heap.cached_count >= std::max<uint64_t>(kMinCachedPages, heap.high_water)) {
    FreePageMemory(p);
    return;
  }
  p->next = heap.cached;
  heap.cached = p;
  ++heap.cached_count;
}

GcPage* NewPage(GcHeap& heap, int list, std::size_t bytes, uint32_t block_size,
                uint32_t capacity, uint32_t obj_offset) {
  Allocator& a = GetAllocator();
  void* mem = nullptr;
  if (bytes == kGcPageSize) {
    // A cached page made by another allocator (SetAllocator ran since) goes back to it.
    while (GcPage* c = heap.cached) {
      heap.cached = c->next;
      --heap.cached_count;
      if (c->allocator == &a) {
        c->~GcPage();
        mem = c;
        break;
      }
      FreePageMemory(c);
    }
  }
  if (mem == nullptr) {
    mem = a.Allocate(bytes, kGcPageSize);
    if (mem == nullptr) throw std::bad_alloc();
    BRC_CHECK(reinterpret_cast<uintptr_t>(mem) % kGcPageSize == 0,
              "the allocator returned a collector page that is not 64 KiB aligned");
  }
  auto* p = ::new (mem) GcPage{&heap, &a, bytes, block_size, capacity, obj_offset, list};
  Link(heap, p, /*front=*/true);
  if (++heap.pages > heap.high_water) heap.high_water = heap.pages;
  return p;
}

// Moves every remotely freed block of `p` to its local list. Owner or stopped collector.
void ReclaimRemote(GcPage* p) noexcept {
  // Acquire pairs with the release CAS of each push: the freeing threads' writes (the cleared
  // zeroed header flags, the link) are visible before the blocks are reused.
  GcFreeBlock* list = p->remote_free.exchange(nullptr, std::memory_order_acquire);
  while (list != nullptr) {
    GcFreeBlock* next = list->next;
    list->next = p->local_free;
    p->local_free = list;
    --p->used;
    list = next;
  }
}

// A free block of `p` (its object start), or nullptr when the page is full.
char* Pop(GcPage* p) noexcept {
  if (char* b = TryPopLocal(p)) return b;
  // Relaxed peek: the exchange in ReclaimRemote is what synchronises.
  if (p->remote_free.load(std::memory_order_relaxed) != nullptr) {
    ReclaimRemote(p);
    return Pop(p);
  }
  return nullptr;
}

// The head page of `list` is full: look at a few more pages of the class (full ones rotate to
// the back), or map a new page, which becomes the head.
char* PopSlow(GcHeap& heap, int list, uint32_t block_size, uint32_t obj_offset) {
  for (int budget = 8; budget > 0; --budget) {
    GcPage* p = heap.lists[list];
    if (p == nullptr || p->next == nullptr) break;
    Unlink(heap, p);
    Link(heap, p, /*front=*/false);  // the full head goes to the back
    if (char* b = Pop(heap.lists[list])) return b;
  }
  uint32_t capacity = static_cast<uint32_t>((kGcPageSize - kGcPageHeader) / block_size);
  GcPage* p = NewPage(heap, list, kGcPageSize, block_size, capacity, obj_offset);
  return Pop(p);
}

// Releases the large pages other threads freed. Owner or stopped collector.
void ReleaseLargeFreed(GcHeap& heap) noexcept {
  if (heap.large_freed.load(std::memory_order_relaxed) == nullptr) return;
  // Acquire pairs with the pushes' release: their frees happen-before the release here.
  GcPage* p = heap.large_freed.exchange(nullptr, std::memory_order_acquire);
  while (p != nullptr) {
    GcPage* next = p->freed_next;
    ReleasePage(heap, p);
    p = next;
  }
}

char* AllocateLarge(GcHeap& heap, std::size_t size, std::size_t align) {
  ReleaseLargeFreed(heap);
  std::size_t object_at = RoundUp(kGcPageHeader, align);
  auto obj_offset = static_cast<uint32_t>(object_at - kGcPageHeader);
  std::size_t bytes = RoundUp(object_at + size, 64);
  GcPage* p = NewPage(heap, kGcLarge, bytes, static_cast<uint32_t>(bytes - kGcPageHeader), 1,
                      obj_offset);
  return Pop(p);
}

}  // namespace

void ListYoungPage(GcHeap& heap, GcPage* p, Object* first) noexcept {
  p->young = true;
  p->young_low = first;
  p->young_prev = nullptr;
  p->young_next = heap.young;
  if (heap.young != nullptr) heap.young->young_prev = p;
  heap.young = p;
  ++heap.young_pages;
}

void ClearYoungList(GcHeap& heap) noexcept {
  ForEachYoungPage(heap, [&](GcPage* p) { UnlistYoung(heap, p); });
}

void TrackConstructed(Object* ob) noexcept {
  // A plain store (gc_word.h): the bits are 0 since the constructor, and no collection writes
  // them while this thread runs. Relaxed: a stop of the world orders this before any collector
  // that reads them.
  Rc::gc_bits(ob).store(kGcTracked, std::memory_order_relaxed);
  // Made by an allocator that a collection called with the world stopped: it carries that
  // collection's epoch, which makes it no candidate of it (its references count as external;
  // lib/collector_mark.cc, IsCandidate) and old afterwards.
  if (BRC_UNLIKELY(t_collector_stopped)) {
    GcSetEpoch(ob, RunningCollectionEpoch());
    return;
  }
  GcPage* page = GcPageOf(ob);
  // Young (mark epoch 0) from now on: its page must be listed, with young_low at or below it.
  if (BRC_UNLIKELY(!page->young)) {
    ListYoungPage(*page->heap, page, ob);
  } else if (ob < page->young_low) {
    page->young_low = ob;
  }
}

int GcListFor(std::size_t size, std::size_t align) noexcept {
  if (align > 16) return kGcLarge;
  std::size_t need = RoundUp(size, 16);  // blocks start 16-aligned; the object at offset 0
  if (need > kLeafMaxSize) return kGcLarge;
  return kClassOf16[need / 16];
}

void* AllocateTracked(std::size_t size, std::size_t align) {
  ThreadState* ts = t_state;
  BRC_CHECK(ts != nullptr, "tracked allocation on a thread that is not attached");
  if (BRC_UNLIKELY(++t_allocs_unreported >= kGcAllocBatch)) {
    uint32_t n = t_allocs_unreported;
    t_allocs_unreported = 0;
    OnTrackedAllocations(n);  // may collect: before this allocation, never in the middle
  }
  BRC_CHECK(align <= kMaxTrackedAlign, "tracked types aligned above 4096 bytes are not supported");
  GcHeap& heap = ts->heap;
  int list = GcListFor(size, align);
  char* ob = nullptr;
  GcPage* page;
  if (list != kGcLarge) {
    GcPage* head = heap.lists[list];
    if (head == nullptr || (ob = Pop(head)) == nullptr) {
      ob = PopSlow(heap, list, GcBlockSizeOfList(list), 0);
    }
  } else {
    ob = AllocateLarge(heap, size, align);
  }
  page = GcPageOf(reinterpret_cast<Object*>(ob));
  ++page->used;
  // The block's flags are 0 (zeroed at its free, or never walked: beyond the page's bump) and
  // the Object constructor zeroes them again; TrackConstructed sets the collector's bits.
  BRC_STAT_ALWAYS_INC(allocations);
  return ob;
}

void FlushTrackedAllocationCount() {
  uint32_t n = std::exchange(t_allocs_unreported, 0);
  if (n != 0) CountTrackedAllocations(n);
  FlushOldFreed();
}

void* AllocateLeaf(std::size_t size) {
  ThreadState* ts = t_state;
  BRC_CHECK(ts != nullptr, "object allocation on a thread that is not attached");
  GcHeap& heap = ts->leaf_heap;
  // The object starts at the block (16-aligned).
  int list = GcLeafListFor(size);
  GcPage* head = heap.lists[list];
  char* ob;
  if (head == nullptr || (ob = Pop(head)) == nullptr) {
    ob = PopSlow(heap, list, GcBlockSizeOfList(list), 0);
  }
  ++GcPageOf(reinterpret_cast<Object*>(ob))->used;
  return ob;
}

namespace {

// Returns a block (its object start) to page `p`: locally when `p` belongs to `own` (the
// calling thread's heap of the same kind, or nullptr), else with one CAS.
void FreeBlock(GcPage* p, void* object_start, GcHeap* own) noexcept {
  auto* b = static_cast<GcFreeBlock*>(object_start);
  if (p->heap == own) {
    b->next = p->local_free;
    p->local_free = b;
    // An empty page leaves its list unless allocation is using it.
    if (--p->used == 0 && (p->list == kGcLarge || p != own->lists[p->list])) {
      RetirePage(*own, p);
    }
    return;
  }
  // Another thread's page. Release: the writes above (and the destructor's) happen-before the
  // owner's reuse of the block (its acquire exchange in ReclaimRemote or ReleaseLargeFreed).
  if (p->list == kGcLarge) {
    GcHeap& owner = *p->heap;
    GcPage* head = owner.large_freed.load(std::memory_order_relaxed);
    do {
      p->freed_next = head;
    } while (!owner.large_freed.compare_exchange_weak(head, p, std::memory_order_release,
                                                      std::memory_order_relaxed));
    return;
  }
  GcFreeBlock* head = p->remote_free.load(std::memory_order_relaxed);
  do {
    b->next = head;
  } while (!p->remote_free.compare_exchange_weak(head, b, std::memory_order_release,
                                                 std::memory_order_relaxed));
}

}  // namespace

void FreeLeafBlock(void* mem) noexcept {
  ThreadState* ts = t_state;
  FreeBlock(GcPageOf(static_cast<Object*>(mem)), mem, ts != nullptr ? &ts->leaf_heap : nullptr);
}

void FreeTrackedBlock(void* object_start) noexcept {
  auto* ob = static_cast<Object*>(object_start);
  // The object is dead: nobody else writes its header. A stopped collector now skips the block.
  Rc::flags(ob).store(0, std::memory_order_relaxed);
  Rc::gc_bits(ob).store(0, std::memory_order_relaxed);
  GcSetEpoch(ob, 0);
  ThreadState* ts = t_state;
  FreeBlock(GcPageOf(ob), object_start, ts != nullptr ? &ts->heap : nullptr);
}

void TrimCachedPages(GcHeap& heap, uint64_t keep) noexcept {
  while (heap.cached_count > keep) {
    GcPage* p = heap.cached;
    heap.cached = p->next;
    --heap.cached_count;
    FreePageMemory(p);
  }
}

void FreeTrackedStorage(void* object_start) noexcept {
  BRC_STAT_ALWAYS_INC(frees);
  FreeTrackedBlock(object_start);
}

void SweepOwnHeaps(ThreadState* ts) noexcept {
  for (GcHeap* heap : {&ts->heap, &ts->leaf_heap}) SweepHeap(*heap, /*owner_exited=*/true);
}

uint64_t SweepHeap(GcHeap& heap, bool owner_exited) noexcept {
  ReleaseLargeFreed(heap);
  for (int l = 0; l < kGcLists; ++l) {
    for (GcPage* p = heap.lists[l]; p != nullptr;) {
      GcPage* next = p->next;
      if (p->remote_free.load(std::memory_order_relaxed) != nullptr) ReclaimRemote(p);
      // An empty page at the head of its class is kept for the next allocation, unless
      // everything goes (the owner exited or asked for it): then nobody allocates meanwhile.
      if (p->used == 0 && (owner_exited || l == kGcLarge || p != heap.lists[l])) {
        RetirePage(heap, p);
      }
      p = next;
    }
  }
  TrimCachedPages(heap, owner_exited ? 0 : heap.cached_count / 2);
  heap.high_water = heap.pages + heap.cached_count;
  return heap.pages;
}

}  // namespace brc::detail
