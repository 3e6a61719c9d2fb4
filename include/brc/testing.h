// Test-only access to internals: reading and forcing the two count halves, and looking into
// merge queues. Not for production code; the functions check their preconditions and abort on
// misuse like the rest of brc.
#ifndef BRC_TESTING_H_
#define BRC_TESTING_H_

#include <cstddef>
#include <cstdint>

#include "brc/object.h"

namespace brc::testing {

struct Counts {
  uint32_t owner;        // owner thread id, 0 when unowned
  uint32_t local;        // local half
  int32_t shared_count;  // shared half, count part (may be negative while unmerged)
  SharedState state;     // shared half, state bits
  uint32_t flags;        // ObjectFlag bits
};

// Relaxed snapshot of the header.
Counts GetCounts(const Object* ob) noexcept;

// Overwrite both halves, e.g. to put a count near the saturation limit without performing 2^32
// operations. The owner stays as it is. No other thread may touch the object concurrently, and
// the owner must not be running (it is the caller, or it has exited). `shared_count` must fit
// in 30 signed bits.
void SetCountsForTesting(Object* ob, uint32_t local, int32_t shared_count, SharedState state);

// Destroys and frees an immortal object, which brc otherwise never frees, so that leak checkers
// stay quiet in tests. Nothing may use the object afterwards, and that includes its owner's
// merge queue: a non-owner's decrement can queue the object while it is still mortal, so the
// owner must reach brc::Safepoint() after the last such decrement (the entry's merge is a no-op
// on an immortal object). Aborts, naming the object, if it is still queued to its owner.
void FreeImmortalForTesting(Object* ob);

// Objects currently waiting in the merge queue of thread `tid`.
std::size_t QueuedObjectsForTesting(uint32_t tid);

// Objects the calling thread dropped for other owners that wait in its hand-off buffers
// (lib/handoff.cc) for its next safepoint; 0 on a thread that is not attached.
std::size_t HandoffBufferedForTesting();

// Whether a stop of the world is waiting for the calling thread to park (it will at its next
// safepoint, or before its next free); false on a thread that is not attached.
bool StopRequestedForTesting() noexcept;

// Returns the calling (attached) thread's merge-queue memory to the allocator, so that the next
// object queued to it needs a fresh allocation (to test what happens when that fails).
void ReleaseQueueMemoryForTesting();

// Pages of the collector's heap, summed over every thread id (racy while others allocate).
uint64_t CollectorHeapPagesForTesting();
// Pages (in use and cached empty) of the default allocator's per-thread leaf heaps, summed over
// every thread id; and whether that heap is in use in this build (not under AddressSanitizer).
uint64_t LeafHeapPagesForTesting();
bool LeafHeapEnabledForTesting();

// The pages of thread id `tid`'s two heaps (leaf and collector heap, lib/gc_heap.h): in their
// class lists, and cached empty. Read under the id's lock: call it for the calling thread, or
// for an id whose thread has exited (its pages are cleaned under that lock).
struct HeapPages {
  uint64_t in_use;
  uint64_t cached;
};
HeapPages HeapPagesOfThreadForTesting(uint32_t tid);
// How often a safepoint may return an idle thread's cached pages (milliseconds, default 50;
// 0: at every safepoint while there is something to return).
void SetCacheDecayIntervalForTesting(int64_t ms);
// Pages the default allocator's page source (mmap'd regions, lib/page_source.cc) has handed
// out and not got back, and whether that source is on in this build (not under
// AddressSanitizer).
std::size_t PageSourcePagesForTesting();
bool PageSourceEnabledForTesting();
// Makes the page source's region maps fail (true) or not (false), as if mmap found no memory:
// pages then come from the default allocator's malloc path.
void FailPageSourceMapsForTesting(bool fail);

// Bytes a tracked object of `size` bytes and alignment `align` occupies in the collector's heap
// (its block: header and fields, rounded to the size class); 0 when it gets a
// page of its own.
std::size_t TrackedBlockSizeForTesting(std::size_t size, std::size_t align);

// How many freed objects BRC_DEBUG keeps quarantined (their memory is not reused until they
// leave it); 0 in builds without BRC_DEBUG.
std::size_t QuarantineCapacityForTesting();

// The collector's acyclic check (README, "The acyclic check"): forgets the backoff after failed
// checks, so that the next collection of each kind tries it, oldest first. Not during a
// collection.
void ResetAcyclicScheduleForTesting();
// The order the next acyclic check walks in: true when newest first (young collections with
// `young`, else full ones); the setter sets both kinds. The reset above means oldest first.
bool AcyclicWalkNewestFirstForTesting(bool young);
void SetAcyclicWalkNewestFirstForTesting(bool newest_first);
// The rounds the last counting collection's marking took: 1 with one worker (or none when no
// counting ran); by parts, 1 + the rounds that marked from mail, the last of which (the 8th)
// the collecting thread finishes alone.
int LastMarkRoundsForTesting();
// Caps the collector's mark stacks at `max_entries` (0: no cap): a growth beyond it fails as if
// mmap found no memory, so tests can reach those paths. Returns the stacks' memory first, so
// that the next collection needs a growth. Not during a collection.
void LimitMarkStacksForTesting(std::size_t max_entries);

// Per-thread counts (brc/hot.h). The calling thread's slot for `ob` (0 when it has none yet);
// setting it grows the thread's slot array if needed (false: out of memory). `ob` must be
// counted per thread. Setting a slot changes the object's count: tests use it to reach the
// slot limits without 2^30 operations, and put the value back.
int32_t PerThreadSlotForTesting(const Object* ob);
bool SetPerThreadSlotForTesting(Object* ob, int32_t value);
// Feeds the contention detector one lost decrement race on `ob` from this thread, as
// brc::DecRef does when its compare-and-swap fails. The caller holds a reference.
void NoteContentionForTesting(Object* ob);
// Forgets what the calling thread's contention detector noted (an object freed earlier at the
// same address would otherwise count towards a new one there).
void ResetContentionForTesting();
// Makes every allocation of the per-thread tables and slot arrays fail (true) or not (false),
// as if the Allocator returned null, without installing one (SetAllocator needs no object
// alive). The allocation-failure sweep (tests/oom_sweep/) fails the real Allocator.
void FailPerThreadAllocationsForTesting(bool fail);

}  // namespace brc::testing

#endif  // BRC_TESTING_H_
