// The collector's heap: where tracked objects live, and how the collector finds them.
//
// Each thread id has a GcHeap of 64 KiB pages, one list of pages per size class. A page is an
// array of equal blocks; each block holds an object, header first (the collector's per-object
// state is in the header: brc/detail/gc_word.h). The collector enumerates tracked objects by walking pages, so no
// per-object list links are needed and allocation and free touch no global lock or atomic:
//  * allocation (owner thread only): pop the page's local free list, or bump, or take the
//    page's remote-free list, or move to another page of the class, or map a new page;
//  * free by the owner: push on the local free list;
//  * free by another thread: one CAS pushing the block on that page's remote-free list (a
//    per-page atomic); the same CAS marks the page dirty (see "Freed by other threads").
// A block's header has kGcTracked from the end of Make to the start of Dealloc, and the freeing
// thread zeroes its flags, so a walk with the world stopped sees exactly the live, constructed
// objects. Objects above 8 KiB (or aligned above 16) get a page of their own.
//
// Young pages: a young collection examines only the objects made since the last collection
// (mark epoch 0 in their header, brc/detail/gc_word.h). So that it need not walk the whole heap to find them, each heap
// keeps a list of the pages holding such objects: the end of a tracked Make adds the object's
// page when it is not listed yet (a test of a field on the page's header line, which the
// allocation touched just before; no atomic, no lock) and keeps the lowest such object's
// address, so that a young collection walks a page from there; retiring a page unlists it, and each
// collection, having examined them all, empties the lists (ClearYoungList). Invariant: every
// constructed tracked object with mark epoch 0 lies in a page on its heap's young list.
//
// Who runs what: the thread bound to the heap's id allocates and frees locally, and cleans its
// dirty pages and decays its cache at its safepoints; any thread frees remotely; the
// collector, with the world stopped, walks every heap and sweeps (reclaims remote frees,
// returns empty pages); once the id has exited, an attached thread that freed into its pages
// cleans them under the id's ThreadState::mu ("Exited owners"). A heap outlives its thread,
// like the id, and the next thread bound to the id adopts it.
//
// The same page machinery is each thread's heap for leaf (untracked)
// objects when the built-in default allocator is in use ("leaf heap": AllocateLeaf below); the
// collector never walks it, it only sweeps it.
//
// Empty pages: a small page whose last block is freed leaves its class list and goes to the
// heap's cache of empty pages, from which the next new page of any class is taken, so a
// program that builds and drops a structure over and over does not give its pages back and
// fault them in again each time (measured: a depth-20 binary tree took 30% longer). Pages in
// use plus cached never exceed the heap's high-water mark (the most pages in use at once since
// the last trim, at least kMinCachedPages = 4 MiB): a thread keeps at most its own peak. The
// cache decays (below), at the owner's safepoints and at each sweep (every collection); a
// sweep of an exited thread's heap, a detaching thread and brc::ReleaseFreeMemory() return all
// of it. (A sweep once gave back half of the cache: with pages unmapped when given back, a
// thread building and dropping structures between collections faulted them in again each time.)
//
// Freed by other threads (the hand-off: one thread makes objects, another frees them). A
// block freed by a thread that does not own its page waits on the page's remote-free list
// until the owner takes it; without more, an owner that stops allocating would never take it
// and the page would stay. So the remote-free word has a dirty bit (kRemoteDirty, its low bit:
// blocks are 16-aligned). The freeing CAS sets it; the freer that finds it clear (the first
// since the page was last cleaned) pushes the page on its heap's lock-free `dirty` list and
// sets kPendingReclaim in the owner's pending word. At its next brc::Safepoint() the owner
// takes the list (ReclaimAtSafepoint): it clears each page's bit, takes its remote frees and
// retires the page if it is empty. A freer that finds the bit set does nothing more: the
// remote free costs what it did, one CAS, plus one test of the word it read. Rule: only the
// taker of a dirty list clears the bit, and nobody retires or reuses a page whose bit is set
// (it is on a dirty list, or its first marker is about to push it), so a page is never freed
// under a freer that still touches it.
//
// Cache decay: an idle thread's cache is given back over time. While a heap caches more than
// kDecayKeepPages, kPendingDecay stays set, and at its safepoints the owner looks at a coarse
// clock (at each one while it is idle, at one in kBusyDecayLooks while it allocates: see
// DecayLookCanWait): every CacheDecayInterval (50 ms) it returns the cached pages that sat
// unused for the whole past interval (the lowest cache size seen since the last tick) and
// lowers the high-water mark. A thread that keeps reusing its cache loses nothing; an idle
// thread keeps at most kDecayKeepPages per heap after two intervals.
//
// Exited owners: a detaching thread marks its heaps `orphaned` before its last sweep. A first
// marker that then finds its page's heap orphaned notes that thread state in a small
// thread-local list and sets its own kPendingReclaim; at its own next safepoint (or detach)
// it locks the exited state's mu, and if the id is still exited (a thread that adopts the id
// takes mu to attach, and clears `orphaned` there) cleans that state's dirty pages and
// releases every empty one, without a collection. The world cannot be stopped meanwhile (the
// cleaner is an attached thread outside a safepoint), so it never overlaps a collection's
// sweep of the same heap. A freer that is not attached cannot note; those pages wait for the
// next collection (or for another freer).
#ifndef BRC_LIB_GC_HEAP_H_
#define BRC_LIB_GC_HEAP_H_

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "brc/allocator.h"
#include "brc/detail/gc_word.h"
#include "brc/refcount.h"
#include "brc/object.h"

namespace brc::detail {

inline constexpr std::size_t kGcPageSize = std::size_t{64} << 10;
inline constexpr std::size_t kGcPageHeader = 128;  // bytes before the first block
inline constexpr uint64_t kMinCachedPages = 64;      // see "Empty pages" above
// Block sizes of the small classes.
inline constexpr uint32_t kGcClassSizes[] = {
    32,  48,  64,  80,   96,   112,  128,  160,  192,  224,  256,  320,  384,  448,
    512, 640, 768, 896, 1024, 1280, 1536, 1792, 2048, 2560, 3072, 4096, 5120, 8192};
inline constexpr int kGcSmallClasses = sizeof(kGcClassSizes) / sizeof(kGcClassSizes[0]);
// A list per small class (index = class), and one more for large objects.
inline constexpr int kGcLarge = kGcSmallClasses;
inline constexpr int kGcLists = kGcLarge + 1;

struct GcHeap;

struct GcFreeBlock {
  GcFreeBlock* next;
};

struct alignas(64) GcPage {
  // Fixed when the page is made.
  GcHeap* heap;
  Allocator* allocator;  // made the page's memory and gets it back
  std::size_t bytes;     // size of the page's memory
  uint32_t block_size;
  uint32_t capacity;     // blocks in the page
  uint32_t obj_offset;   // object start within a block (0 but for large over-aligned objects)
  int list;              // index in GcHeap::lists
  // Owner thread only, and the collector while the world is stopped.
  GcPage* prev = nullptr;
  GcPage* next = nullptr;
  uint32_t bump = 0;     // blocks [0, bump) have been handed out at least once
  uint32_t used = 0;     // allocated blocks, counting remote frees not yet reclaimed
  GcFreeBlock* local_free = nullptr;
  // The remote-free list, with kRemoteDirty in its low bit (see "Freed by other threads"). Any
  // thread pushes a block and sets the bit (CAS, acq_rel, see FreeBlock); the owner or the
  // stopped collector takes the blocks and keeps the bit (fetch_and, acquire: pairs with the
  // pushes, so the freed blocks' writes are visible); the taker of the heap's dirty list takes
  // both (exchange, acq_rel).
  std::atomic<uintptr_t> remote_free{0};
  // The heap's young list (see "Young pages"): owner thread only, and the collector while the
  // world is stopped.
  GcPage* young_prev = nullptr;
  GcPage* young_next = nullptr;
  Object* young_low = nullptr;  // while listed: no young object lies below it
  bool young = false;    // on the young list
  // The part of a parallel mark this page belongs to (collector_mark.cc, "Parts"): written by
  // the collecting thread with the world stopped, before the marking workers read it.
  uint16_t mark_part = 0;
  // Large pages only: the link in GcHeap::large_freed, written by the freeing thread before its
  // push.
  GcPage* freed_next = nullptr;
  // Small pages: the link in GcHeap::dirty, written by the page's first marker before its push
  // (while it alone has set the dirty bit) and read by the list's taker before it clears it.
  GcPage* dirty_next = nullptr;

  char* block(uint32_t i) noexcept {
    return reinterpret_cast<char*>(this) + kGcPageHeader + std::size_t{i} * block_size;
  }
  Object* object(uint32_t i) noexcept { return reinterpret_cast<Object*>(block(i) + obj_offset); }
  // The first block a young collection looks at: young_low's (listed pages only).
  uint32_t young_first() noexcept {
    return static_cast<uint32_t>((reinterpret_cast<char*>(young_low) - block(0)) / block_size);
  }
};
static_assert(sizeof(GcPage) <= kGcPageHeader);

struct GcHeap {
  // The thread id the heap belongs to, fixed when its ThreadState is made: the owner of every
  // owned object in it (brc/detail/gc_word.h).
  uint32_t tid = 0;
  // Owner thread only, and the collector while the world is stopped.
  GcPage* lists[kGcLists] = {};    // pages per class; the head is where allocation goes
  GcPage* tails[kGcLists] = {};    // full pages rotate to the back
  uint64_t pages = 0;              // pages in the class lists
  GcPage* cached = nullptr;        // empty small pages kept for reuse, linked through `next`
  uint64_t cached_count = 0;
  uint64_t high_water = 0;         // see "Empty pages" above
  GcPage* young = nullptr;         // pages allocated from since the last collection
  uint64_t young_pages = 0;
  // Large pages whose object another thread freed: pushed by that thread (CAS, release), taken
  // and released by the owner at its next large allocation or by the stopped collector
  // (exchange, acquire). A per-heap atomic, so a large page is not pinned until a collection.
  std::atomic<GcPage*> large_freed{nullptr};
  // Pages marked dirty by other threads' frees ("Freed by other threads"): pushed by first
  // markers (CAS, seq_cst: with `orphaned` it forms a store-load pair, see MarkDirty), taken
  // by the owner at a safepoint, a stopped collector, or a cleaner of an exited owner
  // (exchange, seq_cst).
  std::atomic<GcPage*> dirty{nullptr};
  // Set (seq_cst) by the thread detaching from this id before its last sweep; cleared by the
  // next thread bound to it, under its ThreadState::mu. Read by first markers (seq_cst) and by
  // cleaners under that mu. See "Exited owners".
  std::atomic<bool> orphaned{false};
  // Cache decay: owner only (and the stopped collector). The fewest cached pages since the
  // last tick, and that tick's coarse clock in milliseconds.
  uint64_t cache_low = 0;
  int64_t last_decay_ms = 0;
};

inline constexpr uintptr_t kRemoteDirty = 1;
// Cached pages per heap that never decay (their reuse is worth a clock read per safepoint).
inline constexpr uint64_t kDecayKeepPages = 4;

// The small-class list for an object of `size` bytes aligned to `align`, or kGcLarge when it
// gets a page of its own.
int GcListFor(std::size_t size, std::size_t align) noexcept;
inline uint32_t GcBlockSizeOfList(int list) noexcept {
  return list == kGcLarge ? 0 : kGcClassSizes[list];
}

// The page holding a tracked object.
inline GcPage* GcPageOf(const Object* ob) noexcept {
  return reinterpret_cast<GcPage*>(reinterpret_cast<uintptr_t>(ob) & ~(kGcPageSize - 1));
}

// The collector's bits and mark epoch of an object (brc/detail/gc_word.h). Relaxed loads and
// stores: their writers never overlap (gc_word.h says who they are).
inline uint8_t GcBitsOf(const Object* ob) noexcept {
  return Rc::gc_bits(ob).load(std::memory_order_relaxed);
}
inline void GcSetBits(Object* ob, uint8_t set, uint8_t clear) noexcept {
  std::atomic<uint8_t>& f = Rc::gc_bits(ob);
  f.store(static_cast<uint8_t>((f.load(std::memory_order_relaxed) & ~clear) | set),
          std::memory_order_relaxed);
}
inline uint16_t GcEpochOf(const Object* ob) noexcept {
  return Rc::gc_epoch(ob).load(std::memory_order_relaxed);
}
inline void GcSetEpoch(Object* ob, uint32_t epoch) noexcept {
  Rc::gc_epoch(ob).store(static_cast<uint16_t>(epoch), std::memory_order_relaxed);
}

// Calls fn(object) for each block of `p` below its bump, from its young_low when
// `from_young_low` (a listed page) or else from its first block, in address order, until fn
// returns false; returns false if it stopped early. Free blocks are included (their collector
// bits are 0). World stopped (or the page's owner).
template <class Fn>
inline bool ForEachBlockOf(GcPage* p, bool from_young_low, Fn&& fn) {
  std::size_t size = p->block_size;
  char* b = p->block(from_young_low ? p->young_first() : 0) + p->obj_offset;
  char* stop = p->block(p->bump) + p->obj_offset;
  for (; b < stop; b += size) {
    if (!fn(reinterpret_cast<Object*>(b))) return false;
  }
  return true;
}

// The same blocks as ForEachBlockOf, last to first (against address order).
template <class Fn>
inline bool ForEachBlockOfBackward(GcPage* p, bool from_young_low, Fn&& fn) {
  std::size_t size = p->block_size;
  char* first = p->block(from_young_low ? p->young_first() : 0) + p->obj_offset;
  char* b = p->block(p->bump) + p->obj_offset;
  while (b > first) {
    b -= size;
    if (!fn(reinterpret_cast<Object*>(b))) return false;
  }
  return true;
}

// Calls fn(page) for every page of `heap`. World stopped (or the heap's owner).
template <class Fn>
void ForEachPage(GcHeap& heap, Fn&& fn) {
  for (GcPage* head : heap.lists) {
    for (GcPage* p = head; p != nullptr;) {
      GcPage* next = p->next;  // fn may release p
      fn(p);
      p = next;
    }
  }
}

// The smallest class whose blocks hold `need` bytes (a multiple of 16, at most 8192), by
// table: index need / 16.
inline constexpr std::size_t kLeafMaxSize = 8192;
inline constexpr auto kClassOf16 = [] {
  std::array<uint8_t, kLeafMaxSize / 16 + 1> table{};
  int cls = 0;
  for (std::size_t i = 0; i < table.size(); ++i) {
    while (kGcClassSizes[cls] < i * 16) ++cls;
    table[i] = static_cast<uint8_t>(cls);
  }
  return table;
}();
static_assert(kGcClassSizes[kGcSmallClasses - 1] == kLeafMaxSize);

// The small-class list of leaf blocks of `size` bytes (LeafHeapFits).
inline int GcLeafListFor(std::size_t size) noexcept {
  return kClassOf16[(size + 15) / 16];
}

// Local part of allocation from a page: its free list, else a block never handed out; nullptr
// when the page needs its remote frees reclaimed or is full. Owner only. Returns the object
// start.
inline char* TryPopLocal(GcPage* p) noexcept {
  if (GcFreeBlock* b = p->local_free) {
    p->local_free = b->next;
    return reinterpret_cast<char*>(b);
  }
  if (p->bump < p->capacity) return p->block(p->bump++) + p->obj_offset;
  return nullptr;
}

// The leaf heap: storage for an untracked object of `size` bytes aligned to `align` (the caller
// checked LeafHeapFits), from the calling (attached) thread's leaf heap. Throws std::bad_alloc.
// Under AddressSanitizer every leaf object comes from malloc, which ASan checks object by object.
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kLeafHeapEnabled = false;
#else
inline constexpr bool kLeafHeapEnabled = true;
#endif
inline bool LeafHeapFits(std::size_t size, std::size_t align) noexcept {
  return kLeafHeapEnabled && size <= kLeafMaxSize && align <= 16;
}
void* AllocateLeaf(std::size_t size);
// Returns a leaf block to its page; any thread, attached or not. The object has been destroyed.
void FreeLeafBlock(void* mem) noexcept;
// Returns the heap's cached empty pages beyond `keep` to their allocator. Owner or stopped
// collector.
void TrimCachedPages(GcHeap& heap, uint64_t keep) noexcept;

// Returns a tracked object's block to its page (locally, or to the page's remote-free list
// when the page belongs to another thread's heap). The object has been destroyed. No stats.
void FreeTrackedBlock(void* object_start) noexcept;

// World stopped: takes every page's remote frees into its local list, moves pages with no
// allocated block (but each class's head page, which the owner allocates from next) to the
// cache, and applies the cache's decay rule. When `owner_exited` (an exited owner, or an owner that
// asked to release everything) empty head pages go too and the cache is emptied. Returns the
// number of pages in use.
uint64_t SweepHeap(GcHeap& heap, bool owner_exited) noexcept;
// The calling thread (attached, not blocked: no collection can be sweeping) sweeps its own
// tracked and leaf heaps as a collection would, returns every empty page and lowers the
// high-water marks (brc::ReleaseFreeMemory, and a detaching thread).
struct ThreadState;
void SweepOwnHeaps(ThreadState* ts) noexcept;
// The outermost DetachCurrentThread, still attached: marks the heaps orphaned, cleans what
// this thread noted of other exited threads, then SweepOwnHeaps.
void ReleaseHeapsAtDetach(ThreadState* ts) noexcept;
// A thread is being bound to `ts`'s id (RegisterCurrentThread, under ts->mu): the heaps are
// its own again.
void AdoptHeaps(ThreadState* ts) noexcept;
// kPendingReclaim or kPendingDecay (lib/thread_state.h) at a safepoint of the attached thread
// `ts`: cleans its dirty pages, releases large pages freed by others, decays its caches and
// cleans the exited states it noted. Does nothing on a thread holding the world stopped (the
// bits stay set).
void ReclaimAtSafepoint(ThreadState* ts) noexcept;
// Pacing of the decay's clock. A cache decays by whole intervals (50 ms), yet kPendingDecay
// stays set for as long as a cache is above kDecayKeepPages, which for a thread that builds
// and drops structures is most of the time; reading the coarse clock at each of its
// safepoints cost more than the rest of the safepoint (a vDSO read: 5 ns on the KVM guest
// measured, at every node of a tree whose builder calls Safepoint() per node). So when a
// decay is all that waits (kPendingDecay alone), a thread that allocated since its previous
// safepoint reads the clock at one such safepoint in kBusyDecayLooks; the first safepoint
// after it stopped allocating reads it at once. An idle thread's cache decays as before, a
// busy one's at most kBusyDecayLooks safepoints late. True when this safepoint may skip the
// look. This thread only.
inline constexpr uint32_t kBusyDecayLooks = 64;
bool DecayLookCanWait(ThreadState* ts) noexcept;
// The decay interval in milliseconds (default 50; brc::testing may change it).
int64_t CacheDecayInterval() noexcept;
void SetCacheDecayInterval(int64_t ms) noexcept;

// Puts `p` on its heap's young list, with `first` its lowest young object. Owner thread only.
void ListYoungPage(GcHeap& heap, GcPage* p, Object* first) noexcept;
// True while this thread holds the world stopped for a collection, Freeze or Unfreeze (the only
// user code that runs then is an allocator called for the collector's own lists). Written by
// the collector (lib/collector_internal.h); read by TrackConstructed on every tracked Make, so
// it is a thread-local here rather than behind a call.
extern constinit thread_local bool t_collector_stopped;
// The running collection's mark epoch (lib/collector_mark.cc), for TrackConstructed.
uint32_t RunningCollectionEpoch() noexcept;
// Calls fn(page) for every page on `heap`'s young list. World stopped (or the heap's owner).
template <class Fn>
void ForEachYoungPage(GcHeap& heap, Fn&& fn) {
  for (GcPage* p = heap.young; p != nullptr;) {
    GcPage* next = p->young_next;  // fn may unlist p
    fn(p);
    p = next;
  }
}
// World stopped, after a collection examined every young object: empties `heap`'s young list.
// An object whose construction is still running (a collection its constructor started) is
// not young yet: TrackConstructed lists its page again. No allocation.
void ClearYoungList(GcHeap& heap) noexcept;

// Hook into the collector (lib/collector.cc), called by the allocating thread every
// kGcAllocBatch tracked allocations, before it allocates: may run an automatic collection.
inline constexpr uint32_t kGcAllocBatch = 64;
void OnTrackedAllocations(uint32_t n);
// A frozen object was freed by reference counting (for CollectorStats::frozen).
void OnFrozenObjectFreed() noexcept;
// An old (marked, unfrozen) tracked object is being freed: counted per thread, reported in
// batches, for the schedule of full collections (collector_schedule.cc, FullDue).
extern constinit thread_local uint32_t t_old_freed;
void FlushOldFreed() noexcept;
inline void NoteOldFreed() noexcept {
  if (BRC_UNLIKELY(++t_old_freed >= kGcAllocBatch)) FlushOldFreed();
}
// The same, without ever starting a collection (a detaching thread).
void CountTrackedAllocations(uint32_t n) noexcept;
// Reports this thread's not yet reported allocations without collecting (at detach: an exiting
// thread's count must not be lost, or short-lived threads would never trigger a collection;
// the next allocation anywhere starts it).
void FlushTrackedAllocationCount();

}  // namespace brc::detail

#endif  // BRC_LIB_GC_HEAP_H_
