// brc/testing.h: test-only access to the header and the queues.
#include "brc/testing.h"

#include <algorithm>
#include <mutex>

#include "brc/detail/thread_local.h"
#include "brc/refcount.h"
#include "collector_internal.h"
#include "debug.h"
#include "merge_queue.h"
#include "page_source.h"
#include "per_thread.h"
#include "thread_state.h"

namespace brc::testing {

using detail::Rc;

Counts GetCounts(const Object* ob) noexcept {
  int32_t shared = Rc::shared(ob).load(std::memory_order_relaxed);
  uint64_t biased = Rc::biased(ob).load(std::memory_order_relaxed);
  return Counts{detail::OwnerOf(biased), detail::LocalOf(biased), shared >> kSharedShift,
                static_cast<SharedState>(shared & kStateMask),
                Rc::flags(ob).load(std::memory_order_relaxed)};
}

void SetCountsForTesting(Object* ob, uint32_t local, int32_t shared_count, SharedState state) {
  if (detail::tls_tid == detail::kNotAttached) {
    detail::ReportMisuse(ob, "SetCountsForTesting on a thread that is not attached");
  }
  if (shared_count < -(1 << 29) || shared_count >= (1 << 29)) {
    detail::ReportMisuse(ob, "SetCountsForTesting: shared_count does not fit in 30 bits");
  }
  // The owner half is kept, but for a merged state, which has no owner (brc/object.h; the
  // collector relies on it, brc/detail/gc_word.h).
  Rc::SetBiased(ob, state == kStateMerged ? detail::kNoOwner : Rc::Owner(ob), local);
  // Release: a thread that later reads the counts through an acquire sees both halves.
  Rc::shared(ob).store(static_cast<int32_t>(static_cast<uint32_t>(shared_count) << kSharedShift) |
                           state,
                       std::memory_order_release);
}

void FreeImmortalForTesting(Object* ob) {
  if (!Rc::IsImmortal(ob)) {
    detail::ReportMisuse(ob, "FreeImmortalForTesting: the object is not immortal");
  }
  // A non-owner's decrement may have queued the object to its owner while it was still mortal,
  // just before the owner's own increment made it immortal: the entry would outlive the object
  // (found by the saturation stress scenario). An object made immortal by a merge has no owner
  // and no entry.
  if (Rc::IsPerThread(ob)) detail::ForgetPerThread(ob);
  if (uint32_t owner = Rc::Owner(ob); owner != detail::kNoOwner) {
    detail::ThreadState* ts = detail::LookupThread(owner);
    detail::MutexLock lock(&ts->mu);
    if (std::find(ts->queue.begin(), ts->queue.end(), ob) != ts->queue.end()) {
      detail::ReportMisuse(ob, "FreeImmortalForTesting: the object still waits in its owner's "
                               "merge queue (let the owner reach brc::Safepoint() first)");
    }
  }
  Rc::Dealloc(ob);
}

std::size_t QueuedObjectsForTesting(uint32_t tid) {
  detail::ThreadState* ts = detail::LookupThread(tid);
  detail::MutexLock lock(&ts->mu);
  return ts->queue.size();
}

std::size_t HandoffBufferedForTesting() {
  detail::ThreadState* ts = detail::t_state;
  return ts == nullptr ? 0 : ts->handoff_held;
}

bool StopRequestedForTesting() noexcept {
  detail::ThreadState* ts = detail::t_state;
  // Relaxed: a snapshot of a bit another thread sets; the test polls it.
  return ts != nullptr && (ts->pending.load(std::memory_order_relaxed) & detail::kPendingStop);
}

void ReleaseQueueMemoryForTesting() {
  detail::ThreadState* ts = detail::t_state;
  if (ts == nullptr) return;
  detail::DrainQueue(ts);
  detail::InternalVector<Object*>().swap(ts->batch);
  detail::MutexLock lock(&ts->mu);
  if (ts->queue.empty()) detail::InternalVector<Object*>().swap(ts->queue);
}

uint64_t CollectorHeapPagesForTesting() {
  uint64_t pages = 0;
  // Pages in use and cached empty ones: the memory the collector's heaps hold.
  detail::ForEachThreadState(
      [&](detail::ThreadState* ts) { pages += ts->heap.pages + ts->heap.cached_count; });
  return pages;
}

uint64_t LeafHeapPagesForTesting() {
  uint64_t pages = 0;
  detail::ForEachThreadState([&](detail::ThreadState* ts) {
    pages += ts->leaf_heap.pages + ts->leaf_heap.cached_count;
  });
  return pages;
}

bool LeafHeapEnabledForTesting() { return detail::kLeafHeapEnabled; }

HeapPages HeapPagesOfThreadForTesting(uint32_t tid) {
  detail::ThreadState* ts = detail::LookupThread(tid);
  detail::MutexLock lock(&ts->mu);
  return HeapPages{ts->heap.pages + ts->leaf_heap.pages,
                   ts->heap.cached_count + ts->leaf_heap.cached_count};
}

void SetCacheDecayIntervalForTesting(int64_t ms) { detail::SetCacheDecayInterval(ms); }

std::size_t PageSourcePagesForTesting() { return detail::PageSourcePagesInUse(); }

bool PageSourceEnabledForTesting() {
#if defined(__SANITIZE_ADDRESS__)
  return false;
#else
  return true;
#endif
}

void FailPageSourceMapsForTesting(bool fail) { detail::FailPageSourceMapsForTesting(fail); }

std::size_t TrackedBlockSizeForTesting(std::size_t size, std::size_t align) {
  return detail::GcBlockSizeOfList(detail::GcListFor(size, align));  // 0: a page of its own
}

std::size_t QuarantineCapacityForTesting() {
#ifdef BRC_DEBUG
  return detail::kQuarantineCapacity;
#else
  return 0;
#endif
}

void ResetAcyclicScheduleForTesting() {
  std::lock_guard<std::mutex> lock(detail::CollectLock());
  detail::ResetAcyclicSchedule();
}

bool AcyclicWalkNewestFirstForTesting(bool young) {
  std::lock_guard<std::mutex> lock(detail::CollectLock());
  return detail::AcyclicWalkNewestFirst(young);
}

void SetAcyclicWalkNewestFirstForTesting(bool newest_first) {
  std::lock_guard<std::mutex> lock(detail::CollectLock());
  detail::SetAcyclicWalkNewestFirst(newest_first);
}

int LastMarkRoundsForTesting() {
  std::lock_guard<std::mutex> lock(detail::CollectLock());
  return detail::LastMarkRounds();
}

void LimitMarkStacksForTesting(std::size_t max_entries) {
  std::lock_guard<std::mutex> lock(detail::CollectLock());
  detail::LimitMarkStacks(max_entries);
}

}  // namespace brc::testing
