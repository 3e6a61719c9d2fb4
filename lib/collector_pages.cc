// What a collection examines, gathered with the world stopped before marking: the page lists
// (every page of the collector's heaps for a full collection, the young pages for a young
// one), the heaps' young lists emptied after a successful mark, and the queues of parked owners
// merged on their behalf so that every count is exact. (Overview of the collector's files:
// collector_internal.h.)
#include <new>

#include "brc/refcount.h"
#include "brc/thread.h"
#include "collector_internal.h"
#include "mutex.h"
#include "thread_state.h"

namespace brc::detail {

PageList CollectPages() {
  PageList pages;
  ForEachThreadState([&](ThreadState* ts) {
    // A thread that has exited keeps no empty pages (its id may never be used again).
    bool exited;
    {
      MutexLock lock(&ts->mu);
      exited = ts->status == ThreadStatus::kExited;
    }
    SweepHeap(ts->heap, exited);
    SweepHeap(ts->leaf_heap, exited);
    ForEachPage(ts->heap, [&](GcPage* p) { pages.push_back(p); });
  });
  return pages;
}

PageList YoungPages() {
  PageList pages;
  std::size_t n = 0;
  ForEachThreadState([&](ThreadState* ts) { n += ts->heap.young_pages; });
  pages.reserve(n);
  ForEachThreadState([&](ThreadState* ts) {
    ForEachYoungPage(ts->heap, [&](GcPage* p) { pages.push_back(p); });
  });
  return pages;
}

uint64_t CountHeapPages() noexcept {
  uint64_t n = 0;
  ForEachThreadState([&](ThreadState* ts) { n += ts->heap.pages; });
  return n;
}

void ClearYoungLists() noexcept {
  ForEachThreadState([](ThreadState* ts) { ClearYoungList(ts->heap); });
}

// Merging on behalf of parked owners: an owner parked by an earlier stop stays parked across
// back-to-back stops and drains nothing meanwhile. Without this, garbage that the last
// collection queued to such an owner (its final decrement) would still look like a member of
// a garbage cycle, and the next collection would clear and count it again. Merging on an
// owner's behalf is allowed while the world is stopped (the owner is parked and does not touch
// its half). An object whose count reaches zero keeps one reference, appended to `dead`. If
// `dead` cannot be reserved the queues stay as they are (those objects read as count zero and
// are roots, see MarkWith). No other allocation.
void MergeParkedQueues(ThreadState* self, ObjectList* dead) noexcept {
  std::size_t total = 0;
  ForEachThreadState([&](ThreadState* ts) {
    if (ts == self) return;
    MutexLock lock(&ts->mu);
    total += ts->queue.size();
  });
  if (total == 0) return;
  try {
    dead->reserve(total);
  } catch (const std::bad_alloc&) {
    return;
  }
  ForEachThreadState([&](ThreadState* ts) {
    if (ts == self) return;
    MutexLock lock(&ts->mu);
    for (Object* ob : ts->queue) {
      if (!Rc::ExplicitMerge(ob, -1)) continue;
      // Count zero, unowned: restore one reference for `dead`, marked dead so that no Lock()
      // revives it meanwhile. Relaxed: the world is stopped; the restart publishes both.
      Rc::flags(ob).fetch_or(kFlagDead, std::memory_order_relaxed);
      Rc::shared(ob).store(kSharedOne | kStateMerged, std::memory_order_relaxed);
      dead->push_back(ob);
    }
    ts->queue.clear();
    // Relaxed: as in DrainQueue; cleared under mu.
    ts->pending.fetch_and(~kPendingMerge, std::memory_order_relaxed);
  });
}

}  // namespace brc::detail
