// The merge queue, and the thread lifecycle built on it: attach, safepoints, blocking regions
// and exit. Layer: refcount (it merges counts) on top of lib/thread_state.
//
// Who runs what:
//  * QueueToOwner: any attached thread whose decrement would take a shared count below zero;
//    it keeps the object in a hand-off buffer (lib/handoff.cc), which PushToOwner empties into
//    the owner's queue in one locked step.
//  * DrainQueue: only the owner, at Safepoint(), on entering a BlockingScope and at detach.
//
// Invariants kept here:
//  * An entry in a queue (or a hand-off buffer) holds exactly one reference (the decrement
//    that was not applied).
//  * A thread only queues to a kAttached owner. For a kExited or kBlocked owner it merges
//    itself, holding the owner's mu, so an owner that attaches or unblocks (it takes mu to
//    change status) sees the merged header: owner = 0 and local = 0.
//  * Destructors never run under a queue lock: they may decrement, and so queue, again.
//  * A thread leaves kAttached (to kBlocked or kExited) only with an empty queue and empty
//    hand-off buffers, checked under mu in the same critical section as the status change.
#include "merge_queue.h"

#include "gc_heap.h"
#include "handoff.h"
#include "per_thread.h"
#include "stop_the_world.h"

#include <new>
#include <utility>
#include <vector>

#include "brc/detail/thread_local.h"
#include "brc/refcount.h"
#include "brc/stats.h"
#include "brc/thread.h"

namespace brc::detail {

void PushToOwner(ThreadState* ts, Object** obs, uint32_t n) noexcept {
  uint32_t to_free = 0;  // obs[0, to_free): merged to zero on the owner's behalf
  bool push_failed = false;
  // A larger buffer for the queue, allocated outside the lock: the allocator is user code (a
  // custom brc::Allocator may itself count, queue or stop the world) and must never run under
  // a queue lock. The old buffer is freed after the lock is released, with `spare`.
  InternalVector<Object*> spare;
  for (;;) {
    std::size_t seen;
    {
      MutexLock lock(&ts->mu);
      if (ts->status != ThreadStatus::kAttached) {
        for (uint32_t i = 0; i < n; ++i) {
          if (Rc::ExplicitMerge(obs[i], -1)) obs[to_free++] = obs[i];
          BRC_STAT_INC(merges_for_owner);
        }
        break;
      }
      std::size_t size = ts->queue.size();
      if (ts->queue.capacity() - size < n && spare.capacity() >= size + n) {
        spare.assign(ts->queue.begin(), ts->queue.end());  // fits: no allocation
        spare.swap(ts->queue);
      }
      if (ts->queue.capacity() - size >= n) {
        ts->queue.insert(ts->queue.end(), obs, obs + n);  // fits: no allocation
        // Relaxed: the owner reads the queue under mu; the bit only tells it to look.
        ts->pending.fetch_or(kPendingMerge, std::memory_order_relaxed);
        BRC_STAT_ADD(queued, n);
        return;
      }
      seen = size;
    }
    std::size_t want = 2 * seen + n + 64;
    try {
      spare.clear();
      spare.reserve(want);
    } catch (const std::bad_alloc&) {
      push_failed = true;  // handled below
      BRC_STAT_INC(queue_push_failures);
      break;
    }
  }
  if (push_failed) {
    // The queue could not grow (out of memory). A decrement cannot fail, so merge on the
    // owner's behalf with the owner parked (CPython's brc.c does the same): a parked owner
    // does not touch its half. This reaches up to the stop-the-world layer: a deliberate, rare
    // exception to the layering.
    bool stop_here = !ThisThreadStoppedTheWorld();
    if (stop_here) StopWorld(t_state, /*push_handoffs=*/false);  // this is such a push
    for (uint32_t i = 0; i < n; ++i) {
      if (Rc::ExplicitMerge(obs[i], -1)) obs[to_free++] = obs[i];
      BRC_STAT_INC(merges_for_owner);
    }
    if (stop_here) RestartWorld();
  }
  for (uint32_t i = 0; i < to_free; ++i) Rc::Dealloc(obs[i]);
}

void QueueToOwner(Object* ob) noexcept {
  // Relaxed: the owner cannot give up ownership while this entry's reference is outstanding
  // (its local count is >= 1 until the entry is merged), so its owner is stable here.
  uint32_t owner = Rc::Owner(ob);
  BRC_CHECK(owner != kNoOwner, "queued object has no owner");
  ThreadState* self = t_state;
  // Batched (lib/handoff.cc) unless this thread cannot keep a buffer until its next safepoint:
  // blocked or detaching threads have none, and a thread holding the world stopped pushes at
  // once so that the stop sees the entry in the owner's queue.
  if (self != nullptr && owner != self->tid && self->blocking_depth == 0 && !self->detaching &&
      !ThisThreadStoppedTheWorld()) {
    BufferHandoff(self, owner, ob);
    return;
  }
  PushToOwner(LookupThread(owner), &ob, 1);
}

// Entries of queue capacity a drained batch keeps for the next swap (32 KiB).
constexpr std::size_t kKeptQueueCapacity = 4096;

void DrainQueue(ThreadState* ts) noexcept {
  // Destructors run below may reach a safepoint and drain again (re-entrantly), so the batch
  // being processed is this call's own: it borrows the spare vector's capacity and returns it
  // only if no nested drain has taken the spare meanwhile.
  //
  // One batch per call: what is queued while it runs waits for the next safepoint (the pending
  // bit is set again by those pushes), so a thread that others keep queueing to still gets
  // out of Safepoint() in bounded time (found by the thread stress program).
  // This thread's own drops for other owners go first (every collection drains before it
  // stops the world, and so sees them queued).
  if (ts->handoff_held != 0) FlushHandoffs(ts);
  InternalVector<Object*> batch = std::move(ts->batch);
  batch.clear();
  {
    MutexLock lock(&ts->mu);
    // Relaxed: see QueueToOwner. Cleared under mu, so a push after this sets it again. The
    // stop bit is left alone: it belongs to the stop-the-world handshake.
    ts->pending.fetch_and(~kPendingMerge, std::memory_order_relaxed);
    batch.swap(ts->queue);
  }
  ++t_draining;
  for (Object* ob : batch) {
    // BRC_DEBUG: an entry whose object was freed meanwhile is reported as a use after free,
    // not as the negative count its tombstone would merge to.
    Rc::CheckNotFreed(ob);
    if (Rc::ExplicitMerge(ob, -1)) Rc::Dealloc(ob);
  }
  --t_draining;
  batch.clear();  // keeps its capacity for the next swap
  // But not a burst's: a queue that once held a million entries would keep 8 MiB (twice,
  // counting the vector it alternates with) for the rest of the thread's life. Freed here,
  // outside the lock; the queue grows again (outside the lock too) if bursts go on.
  if (batch.capacity() > kKeptQueueCapacity) InternalVector<Object*>().swap(batch);
  if (ts->batch.capacity() < batch.capacity()) ts->batch = std::move(batch);
}

void SafepointSlow() noexcept {
  ThreadState* ts = t_state;
  if (ts == nullptr || ts->blocking_depth > 0) return;
  // Relaxed: the bits only say "look"; what they announce is read under locks.
  uint32_t pending = ts->pending.load(std::memory_order_relaxed);
  if (pending & (kPendingMerge | kPendingHandoff)) DrainQueue(ts);  // pushes the buffers first
  if (pending & kPendingPerThread) PerThreadSafepoint(ts);
  if (pending & (kPendingReclaim | kPendingDecay)) {
    // lib/gc_heap.h; a decay alone, on a thread that keeps allocating, can wait a little.
    if (pending != kPendingDecay || !DecayLookCanWait(ts)) ReclaimAtSafepoint(ts);
  }
  pending = ts->pending.load(std::memory_order_relaxed);
  if (pending & kPendingStop) {
    // A parked thread holds no buffered entry (the stop must find them in queues).
    if (pending & kPendingHandoff) FlushHandoffs(ts);
    ParkIfStopped(ts);
  }
}

void ReenterAttached(ThreadState* ts) {
  for (;;) {
    {
      // Taking mu orders this thread after every merge done on its behalf while it was away.
      MutexLock lock(&ts->mu);
      // The world may be stopped: a blocked thread cannot rejoin it until it restarts.
      if (!WorldStoppedByOther(ts->tid)) {
        ts->status = ThreadStatus::kAttached;
        ts->accepts_queue.store(true, std::memory_order_relaxed);  // relaxed: under mu
        return;
      }
    }
    WaitForWorldRestart(ts->tid);
  }
}

// Drains until the queue is empty and, in the same critical section, moves to `next`.
void DrainAndLeaveAttached(ThreadState* ts, ThreadStatus next) {
  for (;;) {
    DrainQueue(ts);  // pushes the hand-off buffers first
    MutexLock lock(&ts->mu);
    // Destructors run by the drain may have queued to this thread or buffered drops again.
    if (ts->queue.empty() && ts->handoff_held == 0) {
      ts->status = next;
      ts->accepts_queue.store(false, std::memory_order_relaxed);  // relaxed: under mu
      // A stop waiting for this thread need not wait any longer: wake it now.
      LeavingAttachedUnderLock(ts);
      return;
    }
  }
}


}  // namespace brc::detail

namespace brc {

using detail::t_state;
using detail::ThreadState;
using detail::ThreadStatus;

namespace {

// Detaches a thread that exits while still attached. thread_locals are destroyed in reverse
// order of construction, so Refs held in thread_locals created after the thread attached are
// dropped before this runs. Without it the exited thread would keep its id, pin its queued
// objects and leave the registry pointing at its freed thread-local counters.
struct ExitGuard {
  ~ExitGuard() {
    ThreadState* ts = t_state;
    if (ts == nullptr) return;
    if (ts->blocking_depth > 0) {
      // Exiting inside a BlockingScope (one held in a thread_local): rejoin properly first, so
      // that the detach below drains as an attached owner (waiting out a stop if need be).
      ts->blocking_depth = 0;
      detail::ReenterAttached(ts);
    }
    ts->attach_depth = 1;
    detail::tls_tid = ts->tid;
    detail::PerThreadAttached(ts);
    DetachCurrentThread();
  }
};
thread_local ExitGuard t_exit_guard;

}  // namespace

void AttachCurrentThread() {
  if (t_state != nullptr) {
    BRC_CHECK(t_state->blocking_depth == 0, "AttachCurrentThread inside a BlockingScope");
    ++t_state->attach_depth;
    return;
  }
  (void)&t_exit_guard;  // constructs it: its destructor runs at thread exit
  ThreadState* ts = detail::RegisterCurrentThread();
  ts->attach_depth = 1;
  t_state = ts;
  detail::tls_pending = &ts->pending;
  detail::tls_tid = ts->tid;
  detail::PerThreadAttached(ts);
}

void DetachCurrentThread() {
  ThreadState* ts = t_state;
  BRC_CHECK(ts != nullptr, "DetachCurrentThread on a thread that is not attached");
  BRC_CHECK(ts->blocking_depth == 0, "DetachCurrentThread inside a BlockingScope");
  if (ts->attach_depth > 1) {
    --ts->attach_depth;
    return;
  }
  // The outermost detach. attach_depth stays 1 while the queue drains, so that a destructor
  // run by the drain that opens (and closes) its own ThreadScope nests instead of detaching
  // in the middle of this one; a destructor that detaches without having attached is misuse.
  BRC_CHECK(!ts->detaching, "DetachCurrentThread without a matching AttachCurrentThread, "
                            "called by code that runs while this thread detaches");
  ts->detaching = true;
  detail::FlushTrackedAllocationCount();
  // Still attached: spills this thread's per-thread counts into the shared words, and hands
  // a due merge pass to the attached threads (lib/per_thread.cc).
  detail::PerThreadLeaving(ts, /*blocking=*/false);
  // Still attached, so no collection is sweeping these heaps: reclaim other threads' frees and
  // return every empty page now; pages the drain below or later frees empty are released by
  // their freers (lib/gc_heap.h, "Exited owners").
  detail::ReleaseHeapsAtDetach(ts);
  detail::DrainAndLeaveAttached(ts, ThreadStatus::kExited);
  ts->detaching = false;
  ts->attach_depth = 0;
  // From here on this thread does no count work (protocol.md §3).
  detail::tls_tid = detail::kNotAttached;
  detail::tls_pending = nullptr;
  detail::PerThreadDetached();
  t_state = nullptr;
  detail::PerThreadDetachedDrain(ts);
  detail::UnregisterCurrentThread(ts);
}

bool IsAttached() noexcept { return t_state != nullptr; }

uint32_t CurrentThreadId() noexcept { return t_state != nullptr ? t_state->tid : 0; }

ParkableFrees::ParkableFrees() noexcept { ++detail::t_parkable_frees; }

ParkableFrees::~ParkableFrees() { --detail::t_parkable_frees; }

BlockingScope::BlockingScope() : active_(t_state != nullptr) {
  if (!active_) return;
  ThreadState* ts = t_state;
  if (ts->blocking_depth > 0) {
    ++ts->blocking_depth;
    return;
  }
  // Destructors run by this drain still see an attached thread (blocking_depth 0): they may
  // count, reach safepoints, and open their own ThreadScope or BlockingScope, which nest.
  // A merge pass this thread owes goes to the attached threads.
  if (ts->pending.load(std::memory_order_relaxed) & detail::kPendingPerThread) {
    detail::PerThreadLeaving(ts, /*blocking=*/true);
  }
  detail::DrainAndLeaveAttached(ts, ThreadStatus::kBlocked);
  ts->blocking_depth = 1;
  // Any count operation in the scope now fails the owner check (and finds no per-thread
  // slots) and is reported.
  detail::tls_tid = detail::kNotAttached;
  detail::PerThreadDetached();
}

BlockingScope::~BlockingScope() {
  ThreadState* ts = t_state;
  // Not active, or the thread already detached at exit (a BlockingScope in a thread_local).
  if (!active_ || ts == nullptr) return;
  if (--ts->blocking_depth > 0) return;
  detail::ReenterAttached(ts);
  detail::tls_tid = ts->tid;
  detail::PerThreadAttached(ts);
}

}  // namespace brc
