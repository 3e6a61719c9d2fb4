// The collector's heap: see gc_heap.h for the design. This file holds the allocation and free
// paths and the sweep the collector runs with the world stopped.
#include "gc_heap.h"

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

void ReleasePage(GcHeap& heap, GcPage* p) noexcept {
  Unlink(heap, p);
  --heap.pages;
  Allocator* a = p->allocator;
  std::size_t bytes = p->bytes;
  p->~GcPage();
  a->Deallocate(p, bytes, kGcPageSize);
}

GcPage* NewPage(GcHeap& heap, int list, std::size_t bytes, uint32_t block_size,
                uint32_t capacity, uint32_t obj_offset) {
  Allocator& a = GetAllocator();
  void* mem = a.Allocate(bytes, kGcPageSize);
  if (mem == nullptr) throw std::bad_alloc();
  BRC_CHECK(reinterpret_cast<uintptr_t>(mem) % kGcPageSize == 0,
            "the allocator returned a collector page that is not 64 KiB aligned");
  auto* p = ::new (mem) GcPage{&heap, &a, bytes, block_size, capacity, obj_offset, list};
  Link(heap, p, /*front=*/true);
  ++heap.pages;
  return p;
}

// Moves every remotely freed block of `p` to its local list. Owner or stopped collector.
void ReclaimRemote(GcPage* p) noexcept {
  // Acquire pairs with the release CAS of each push: the freeing threads' writes (the cleared
  // collector word, the link) are visible before the blocks are reused.
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
  if (GcFreeBlock* b = p->local_free) {
    p->local_free = b->next;
    return reinterpret_cast<char*>(b);
  }
  if (p->bump < p->capacity) return p->block(p->bump++) + p->obj_offset;
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
  std::size_t object_at = RoundUp(kGcPageHeader + sizeof(GcWord), align);
  auto obj_offset = static_cast<uint32_t>(object_at - kGcPageHeader);
  std::size_t bytes = RoundUp(object_at + size, 64);
  GcPage* p = NewPage(heap, kGcLarge, bytes, static_cast<uint32_t>(bytes - kGcPageHeader), 1,
                      obj_offset);
  return Pop(p);
}

}  // namespace

int GcListFor(std::size_t size, std::size_t align) noexcept {
  if (align > 16) return kGcLarge;
  std::size_t obj_offset = align > 8 ? 16 : 8;
  std::size_t need = RoundUp(obj_offset + size, 16);
  for (int cls = 0; cls < kGcSmallClasses; ++cls) {
    if (kGcClassSizes[cls] >= need) return cls * 2 + (obj_offset == 16 ? 1 : 0);
  }
  return kGcLarge;
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
      ob = PopSlow(heap, list, GcBlockSizeOfList(list), (list & 1) != 0 ? 16 : 8);
    }
  } else {
    ob = AllocateLarge(heap, size, align);
  }
  page = GcPageOf(reinterpret_cast<Object*>(ob));
  ++page->used;
  GcWord* w = GcWordOf(reinterpret_cast<Object*>(ob));
  // Relaxed: see GcWord. The block was free, so nobody else reads or writes this word now.
  w->refs.store(0, std::memory_order_relaxed);
  w->bits.store(kGcAllocated, std::memory_order_relaxed);
  BRC_STAT_INC(allocations);
  return ob;
}

void FlushTrackedAllocationCount() {
  uint32_t n = std::exchange(t_allocs_unreported, 0);
  if (n != 0) CountTrackedAllocations(n);
}

void FreeTrackedBlock(void* object_start) noexcept {
  auto* ob = static_cast<Object*>(object_start);
  GcPage* p = GcPageOf(ob);
  GcWord* w = GcWordOf(ob);
  w->refs.store(0, std::memory_order_relaxed);
  w->bits.store(0, std::memory_order_relaxed);  // a stopped collector now skips the block
  auto* b = static_cast<GcFreeBlock*>(object_start);
  ThreadState* ts = t_state;
  if (ts != nullptr && p->heap == &ts->heap) {
    GcHeap& heap = ts->heap;
    b->next = p->local_free;
    p->local_free = b;
    // An empty page goes back to its allocator unless allocation is using it.
    if (--p->used == 0 && (p->list == kGcLarge || p != heap.lists[p->list])) {
      ReleasePage(heap, p);
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

void FreeTrackedStorage(void* object_start) noexcept {
  BRC_STAT_INC(frees);
  FreeTrackedBlock(object_start);
}

uint64_t SweepHeap(GcHeap& heap) noexcept {
  ReleaseLargeFreed(heap);
  for (int l = 0; l < kGcLists; ++l) {
    for (GcPage* p = heap.lists[l]; p != nullptr;) {
      GcPage* next = p->next;
      if (p->remote_free.load(std::memory_order_relaxed) != nullptr) ReclaimRemote(p);
      if (p->used == 0 && (l == kGcLarge || p != heap.lists[l])) ReleasePage(heap, p);
      p = next;
    }
  }
  return heap.pages;
}

}  // namespace brc::detail
