// The collector's heap: see gc_heap.h for the design. This file holds the allocation and free
// paths, the sweep the collector runs with the world stopped, and the reclaim of pages freed
// by other threads (dirty pages, cache decay, exited owners) that runs at safepoints.
#include "gc_heap.h"

#include <time.h>

#include <algorithm>
#include <array>
#include <new>
#include <utility>

#include "allocator_internal.h"
#include "brc/detail/thread_local.h"
#include "brc/ref.h"
#include "brc/stats.h"
#include "stop_the_world.h"
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
  // Relaxed: `orphaned` is written by this heap's own thread (or under the mu the cleaners
  // hold); an exiting thread keeps no cache.
  if (heap.orphaned.load(std::memory_order_relaxed) ||
      heap.pages + heap.cached_count >= std::max<uint64_t>(kMinCachedPages, heap.high_water)) {
    FreePageMemory(p);
    return;
  }
  p->next = heap.cached;
  heap.cached = p;
  if (++heap.cached_count == kDecayKeepPages + 1) {
    // The cache may now decay: the owner looks at the clock at its safepoints. Relaxed: a
    // hint, and mostly set by the owner itself.
    std::atomic<uint32_t>& pending = LookupThread(heap.tid)->pending;
    if (!(pending.load(std::memory_order_relaxed) & kPendingDecay)) {
      pending.fetch_or(kPendingDecay, std::memory_order_relaxed);
    }
  }
}

// A page the dirty-page rule lets its owner retire: nobody's first marker holds it. Relaxed:
// with no block allocated (used == 0) no thread can set the bit, and this thread saw every
// earlier write of the word through its own reclaim's acquire.
bool IsDirty(const GcPage* p) noexcept {
  return (p->remote_free.load(std::memory_order_relaxed) & kRemoteDirty) != 0;
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
      heap.cache_low = std::min(heap.cache_low, heap.cached_count);  // decay: it was used
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

// Moves a taken remote-free list of `p` to its local list.
void TakeBlocks(GcPage* p, uintptr_t word) noexcept {
  auto* list = reinterpret_cast<GcFreeBlock*>(word & ~kRemoteDirty);
  while (list != nullptr) {
    GcFreeBlock* next = list->next;
    list->next = p->local_free;
    p->local_free = list;
    --p->used;
    list = next;
  }
}

// Moves every remotely freed block of `p` to its local list, leaving the dirty bit as it is.
// Owner or stopped collector.
void ReclaimRemote(GcPage* p) noexcept {
  // Acquire pairs with the release of each push's CAS: the freeing threads' writes (the
  // zeroed header flags, the link) are visible before the blocks are reused.
  TakeBlocks(p, p->remote_free.fetch_and(kRemoteDirty, std::memory_order_acquire));
}

bool HasRemoteFrees(const GcPage* p) noexcept {
  // Relaxed peek: the fetch_and in ReclaimRemote is what synchronises.
  return (p->remote_free.load(std::memory_order_relaxed) & ~kRemoteDirty) != 0;
}

// A free block of `p` (its object start), or nullptr when the page is full.
char* Pop(GcPage* p) noexcept {
  if (char* b = TryPopLocal(p)) return b;
  if (HasRemoteFrees(p)) {
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

// Unlinks a page whose memory the caller frees later (after dropping a lock), chaining it on
// *out through `next`.
void UnlinkInto(GcHeap& heap, GcPage* p, GcPage** out) noexcept {
  Unlink(heap, p);
  UnlistYoung(heap, p);
  --heap.pages;
  p->next = *out;
  *out = p;
}

// Releases the large pages other threads freed (into *out when `out` is given). Owner, stopped
// collector, or a cleaner of an exited owner.
void ReleaseLargeFreed(GcHeap& heap, GcPage** out = nullptr) noexcept {
  if (heap.large_freed.load(std::memory_order_relaxed) == nullptr) return;
  // seq_cst (acquire at least: pairs with the pushes' release, so their frees happen-before
  // the release here): the pushes' store-load pair with `orphaned` (MarkDirty).
  GcPage* p = heap.large_freed.exchange(nullptr, std::memory_order_seq_cst);
  while (p != nullptr) {
    GcPage* next = p->freed_next;
    if (out != nullptr) {
      UnlinkInto(heap, p, out);
    } else {
      ReleasePage(heap, p);
    }
    p = next;
  }
}

// Takes `heap`'s dirty list: clears each page's dirty bit, takes its remote frees, and retires
// it when empty (every empty page when `everything`, else all but each class's head, which
// allocation uses next). Into *out when `out` is given, else RetirePage. Owner, stopped
// collector, or a cleaner of an exited owner.
void CleanDirtyPages(GcHeap& heap, bool everything, GcPage** out) noexcept {
  if (heap.dirty.load(std::memory_order_relaxed) == nullptr) return;  // relaxed peek
  // seq_cst: pairs with the first markers' pushes (acquire: the pages' links are visible) and
  // is their store-load pair with `orphaned` (MarkDirty).
  GcPage* p = heap.dirty.exchange(nullptr, std::memory_order_seq_cst);
  while (p != nullptr) {
    // Read before the bit is cleared: from then on another first marker may push p again.
    GcPage* next = p->dirty_next;
    // acq_rel: acquire pairs with the pushes' release (their blocks' writes); release orders
    // the read of dirty_next above before the next first marker's write of it (its CAS is
    // acq_rel and reads this value or a later one).
    TakeBlocks(p, p->remote_free.exchange(0, std::memory_order_acq_rel));
    if (p->used == 0 && (everything || p != heap.lists[p->list])) {
      if (out != nullptr) {
        UnlinkInto(heap, p, out);
      } else {
        RetirePage(heap, p);  // may run an allocator's Deallocate; p is off every list here
      }
    }
    p = next;
  }
}

// Gives back pages chained by UnlinkInto.
void FreeChain(GcPage* p) noexcept {
  while (p != nullptr) {
    GcPage* next = p->next;
    FreePageMemory(p);
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

// ---- exited owners: notes of the states to clean (gc_heap.h, "Exited owners") ----

constexpr int kMaxOrphanNotes = 16;
// This thread only. A note whose owner is still detaching is kept for the next safepoint.
constinit thread_local ThreadState* t_orphan_notes[kMaxOrphanNotes] = {};
constinit thread_local int t_orphan_count = 0;

void NoteOrphan(ThreadState* owner) noexcept {
  ThreadState* self = t_state;
  // Not attached: no safepoint to clean it at (the next collection's sweep does it).
  if (self == nullptr) return;
  for (int i = 0; i < t_orphan_count; ++i) {
    if (t_orphan_notes[i] == owner) return;
  }
  // Full (16 exited threads since this thread's last safepoint): the rest waits for a
  // collection, or for another freer.
  if (t_orphan_count == kMaxOrphanNotes) return;
  t_orphan_notes[t_orphan_count++] = owner;
  // Relaxed: this thread's own bit, read by itself.
  self->pending.fetch_or(kPendingReclaim, std::memory_order_relaxed);
}

// `heap` has work for its owner (a dirty page, a freed large page), published just before.
void NotifyOwner(GcHeap& heap) noexcept {
  ThreadState* owner = LookupThread(heap.tid);
  // Release: if the owner's clearing fetch_and (acquire, ReclaimAtSafepoint) reads this value,
  // it then sees the push; if it came first, the bit stays set for its next safepoint.
  owner->pending.fetch_or(kPendingReclaim, std::memory_order_release);
  // seq_cst, like the push before it and the detaching thread's store of `orphaned` and its
  // take of the list after it: either this load sees the heap orphaned, or that take sees the
  // push. Either way somebody cleans the page.
  if (heap.orphaned.load(std::memory_order_seq_cst)) NoteOrphan(owner);
}

// The first marker of small page `p` (it set the dirty bit): pushes the page on its heap's
// dirty list and tells the owner. The set bit keeps the page alive meanwhile.
void MarkDirty(GcPage* p) noexcept {
  GcHeap& heap = *p->heap;
  GcPage* head = heap.dirty.load(std::memory_order_relaxed);
  do {
    p->dirty_next = head;
  } while (!heap.dirty.compare_exchange_weak(head, p, std::memory_order_seq_cst,
                                             std::memory_order_relaxed));
  NotifyOwner(heap);
}

// Cleans the heaps of the exited state `ts` (a note): its dirty pages and freed large pages,
// every empty one released. False when the thread is still detaching (the note is kept).
bool CleanOrphan(ThreadState* ts) noexcept {
  GcPage* release = nullptr;
  {
    MutexLock lock(&ts->mu);
    // Relaxed: `orphaned` is set before the kExited store made under mu, and cleared under mu.
    if (!ts->heap.orphaned.load(std::memory_order_relaxed)) return true;  // adopted
    if (ts->status != ThreadStatus::kExited) return false;  // still detaching
    // Nobody else touches these heaps now: a new owner must take mu to attach, and no
    // collection can sweep them while this attached thread runs (it is not at a safepoint).
    for (GcHeap* heap : {&ts->heap, &ts->leaf_heap}) {
      ReleaseLargeFreed(*heap, &release);
      CleanDirtyPages(*heap, /*everything=*/true, &release);
    }
  }
  FreeChain(release);  // outside the lock: an installed allocator is user code
  return true;
}

// Cleans the states this thread noted; true when some must be tried again later.
bool CleanOrphanNotes() noexcept {
  if (t_orphan_count == 0) return false;
  // A copy: CleanOrphan may run an allocator that frees objects and notes again.
  ThreadState* notes[kMaxOrphanNotes];
  int n = std::exchange(t_orphan_count, 0);
  std::copy(t_orphan_notes, t_orphan_notes + n, notes);
  bool again = false;
  for (int i = 0; i < n; ++i) {
    if (!CleanOrphan(notes[i])) {
      NoteOrphan(notes[i]);
      again = true;
    }
  }
  return again;
}

// ---- cache decay (gc_heap.h, "Cache decay") ----

// Written by tests only (relaxed: a setting, read at each decay check).
std::atomic<int64_t> g_decay_interval_ms{50};

int64_t CoarseNowMs() noexcept {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &t);  // vDSO: no system call
  return static_cast<int64_t>(t.tv_sec) * 1000 + t.tv_nsec / 1000000;
}

// One decay check of `heap`'s cache at a safepoint of its owner, at coarse time `now`; true
// while the cache is big enough to decay further (the owner keeps kPendingDecay set).
bool DecayCache(GcHeap& heap, int64_t now) noexcept {
  if (heap.cached_count <= kDecayKeepPages) {
    heap.cache_low = heap.cached_count;
    return false;
  }
  if (now - heap.last_decay_ms < CacheDecayInterval()) return true;
  heap.last_decay_ms = now;
  // The pages no allocation needed during the whole past interval go back.
  uint64_t idle = std::min(heap.cache_low, heap.cached_count);
  TrimCachedPages(heap, std::max(kDecayKeepPages, heap.cached_count - idle));
  heap.high_water = std::min(heap.high_water, heap.pages + heap.cached_count);
  heap.cache_low = heap.cached_count;
  return heap.cached_count > kDecayKeepPages;
}

// Returns a block (its object start) to page `p`: locally when `p` belongs to `own` (the
// calling thread's heap of the same kind, or nullptr), else with one CAS.
void FreeBlock(GcPage* p, void* object_start, GcHeap* own) noexcept {
  auto* b = static_cast<GcFreeBlock*>(object_start);
  if (p->heap == own) {
    b->next = p->local_free;
    p->local_free = b;
    // An empty page leaves its list unless allocation is using it (a detaching thread's heap:
    // even then) or a first marker holds it (then its dirty list's taker retires it).
    if (--p->used == 0 &&
        (p->list == kGcLarge || p != own->lists[p->list] ||
         own->orphaned.load(std::memory_order_relaxed)) &&  // relaxed: this thread wrote it
        !IsDirty(p)) {
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
      // seq_cst (release at least): also the store-load pair with `orphaned` (NotifyOwner).
    } while (!owner.large_freed.compare_exchange_weak(head, p, std::memory_order_seq_cst,
                                                      std::memory_order_relaxed));
    // The first large page since the owner last looked: tell it. p may be gone already (the
    // owner may have released it); the heap is never freed.
    if (head == nullptr) NotifyOwner(owner);
    return;
  }
  // acq_rel: release publishes the block; acquire pairs with the dirty list taker's exchange
  // that cleared the bit, so its read of dirty_next happens before MarkDirty writes it.
  const uintptr_t pushed = reinterpret_cast<uintptr_t>(b) | kRemoteDirty;
  uintptr_t old = p->remote_free.load(std::memory_order_relaxed);  // relaxed: the CAS checks it
  do {
    b->next = reinterpret_cast<GcFreeBlock*>(old & ~kRemoteDirty);
  } while (!p->remote_free.compare_exchange_weak(old, pushed, std::memory_order_acq_rel,
                                                 std::memory_order_relaxed));
  if (!(old & kRemoteDirty)) MarkDirty(p);  // the first since the page was last cleaned
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
  heap.cache_low = std::min(heap.cache_low, heap.cached_count);
}

void FreeTrackedStorage(void* object_start) noexcept {
  BRC_STAT_ALWAYS_INC(frees);
  FreeTrackedBlock(object_start);
}

void SweepOwnHeaps(ThreadState* ts) noexcept {
  for (GcHeap* heap : {&ts->heap, &ts->leaf_heap}) SweepHeap(*heap, /*owner_exited=*/true);
}

void ReleaseHeapsAtDetach(ThreadState* ts) noexcept {
  for (GcHeap* heap : {&ts->heap, &ts->leaf_heap}) {
    // seq_cst: the store-load pair with first markers (NotifyOwner); the sweep below takes
    // the dirty lists after it.
    heap->orphaned.store(true, std::memory_order_seq_cst);
  }
  // Notes of other exited states: a thread that attaches again later keeps what is left.
  CleanOrphanNotes();
  SweepOwnHeaps(ts);
}

void AdoptHeaps(ThreadState* ts) noexcept {
  for (GcHeap* heap : {&ts->heap, &ts->leaf_heap}) {
    // Under ts->mu (cleaners read it there). seq_cst: as in ReleaseHeapsAtDetach; a first
    // marker that still sees it set only notes a state that its cleaner then finds adopted.
    heap->orphaned.store(false, std::memory_order_seq_cst);
  }
}

namespace {

// True when the only work the pending bits announce is a cache decay that is not due yet at
// coarse time `now`: then a safepoint returns after a few loads, with no atomic write.
bool OnlyDecayNotDue(ThreadState* ts, int64_t now) noexcept {
  if (t_orphan_count != 0) return false;
  bool waiting = false;
  for (GcHeap* heap : {&ts->heap, &ts->leaf_heap}) {
    // Relaxed peeks: a push seen late is found at the next safepoint (kPendingReclaim stays
    // set).
    if (heap->dirty.load(std::memory_order_relaxed) != nullptr ||
        heap->large_freed.load(std::memory_order_relaxed) != nullptr) {
      return false;
    }
    if (heap->cached_count > kDecayKeepPages) {
      if (now - heap->last_decay_ms >= CacheDecayInterval()) return false;
      waiting = true;
    }
  }
  return waiting;
}

}  // namespace

bool DecayLookCanWait(ThreadState* ts) noexcept {
  // Relaxed: this thread's own counter.
  uint64_t allocs = tls_stats.allocations.load(std::memory_order_relaxed);
  bool busy = allocs != ts->decay_allocs_seen;
  ts->decay_allocs_seen = allocs;
  if (!busy) return false;
  if (++ts->decay_busy_skips < kBusyDecayLooks) return true;
  ts->decay_busy_skips = 0;
  return false;
}

void ReclaimAtSafepoint(ThreadState* ts) noexcept {
  // Holding the world stopped (a custom allocator called by the collector reached a
  // safepoint): the collector may be walking these heaps. The bits stay set.
  if (t_collector_stopped || ThisThreadStoppedTheWorld()) return;
  int64_t now = CoarseNowMs();
  if (OnlyDecayNotDue(ts, now)) return;
  // Acquire: pairs with the first markers' release fetch_or, so the pages they pushed before
  // it are seen by the takes below. Cleared first: work published later sets them again.
  ts->pending.fetch_and(~(kPendingReclaim | kPendingDecay), std::memory_order_acquire);
  bool decay_again = false;
  for (GcHeap* heap : {&ts->heap, &ts->leaf_heap}) {
    // Destructors do not run here, but an installed allocator's Deallocate may: it may reach
    // a safepoint and come back here, which is safe (each call takes its own lists; a page
    // whose dirty bit is set is never retired by anyone but its list's taker).
    ReleaseLargeFreed(*heap);
    CleanDirtyPages(*heap, /*everything=*/false, nullptr);
    decay_again |= DecayCache(*heap, now);
  }
  // Relaxed: this thread's own bits.
  if (CleanOrphanNotes()) ts->pending.fetch_or(kPendingReclaim, std::memory_order_relaxed);
  if (decay_again) ts->pending.fetch_or(kPendingDecay, std::memory_order_relaxed);
}

int64_t CacheDecayInterval() noexcept {
  return g_decay_interval_ms.load(std::memory_order_relaxed);  // relaxed: a setting
}

void SetCacheDecayInterval(int64_t ms) noexcept {
  g_decay_interval_ms.store(ms, std::memory_order_relaxed);  // relaxed: a setting
}

uint64_t SweepHeap(GcHeap& heap, bool owner_exited) noexcept {
  ReleaseLargeFreed(heap);
  CleanDirtyPages(heap, owner_exited, nullptr);
  for (int l = 0; l < kGcLists; ++l) {
    for (GcPage* p = heap.lists[l]; p != nullptr;) {
      GcPage* next = p->next;
      if (HasRemoteFrees(p)) ReclaimRemote(p);
      // An empty page at the head of its class is kept for the next allocation, unless
      // everything goes (the owner exited or asked for it): then nobody allocates meanwhile.
      // A dirty page waits for its list's taker (a first marker may be about to push it).
      if (p->used == 0 && (owner_exited || l == kGcLarge || p != heap.lists[l]) &&
          !IsDirty(p)) {
        RetirePage(heap, p);
      }
      p = next;
    }
  }
  if (owner_exited) {
    TrimCachedPages(heap, 0);
    heap.high_water = heap.pages;
  } else {
    // The cache follows the decay rule, not a blind cut: a page given back is unmapped
    // (madvise), and a thread that builds and drops structures between collections would
    // fault its pages in again after every collection (measured: tracked binary trees 1.2-1.6x
    // slower when each sweep gave back half of the cache). What no allocation needed during
    // a whole decay interval goes back, as at a safepoint.
    (void)DecayCache(heap, CoarseNowMs());
  }
  return heap.pages;
}

}  // namespace brc::detail
