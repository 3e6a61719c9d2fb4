// Marking: which tracked objects are garbage, found with the world stopped.
// (Overview of the collector's files: collector_internal.h.)
//
// The candidates are the tracked, unfrozen objects a collection examines: all of them in a
// full collection, only the young ones (kGcYoung) in a young collection. On the candidates:
//  0. Zero each candidate's scratch count (the owner half of its header, brc/detail/gc_word.h).
//  1. Count: trace each candidate and count, in the target's scratch, the references it
//     receives from other candidates.
//  2. Mark: put the owner back; a candidate whose reference count exceeds its internal count
//     is referenced from
//     outside the candidates (a stack, a global, an untracked object, another thread, or, in a
//     young collection, an old object): it is a root. Everything reachable from a root through
//     candidates gets this collection's epoch in its flags. Reaching a non-candidate (an old
//     object in a young collection) stops there: its header is read, never written.
//  3. Collect: the candidates without the epoch are garbage; only when there are any.
// Then, in the same stop, promotion: the young objects of every heap lose kGcYoung (the
// survivors are old now; the garbage set is freed or, if resurrected, old as well).
//
// Why no write barrier: a young collection must not free a young object that an old one still
// references. That reference is in the young object's reference count but not in its internal
// count (old objects are not traced), so the young object is a root. The count check is exact:
// counts are merged (every thread drained its queue, parked owners' queues are merged below),
// and no thread changes a count while the world is stopped.
#include <algorithm>
#include <atomic>
#include <vector>

#include "brc/refcount.h"
#include "brc/thread.h"
#include "collector_internal.h"
#include "merge_queue.h"
#include "mutex.h"
#include "no_destroy.h"
#include "parallel.h"
#include "thread_state.h"

namespace brc::detail {
namespace {

// The number of the running collection (1 .. kGcEpochLimit - 1), written into an object's
// collector word when it is marked reachable. Written by the collecting thread under the
// collection lock; read by marking workers (ParallelFor orders it).
uint32_t g_epoch = 0;
// kGcYoung in a young collection, else 0: the extra bit a candidate must have. Written like
// g_epoch.
uint32_t g_young_bit = 0;

// A candidate's collector bits: tracked, not frozen, young when the collection is.
inline bool IsCandidate(uint32_t bits, uint32_t young_bit) noexcept {
  return (bits & (kGcTracked | kGcFrozen | young_bit)) == (kGcTracked | young_bit);
}

// Whether a reference leads to a candidate (leaf objects never have kGcTracked).
inline bool Collectable(const Object* ob) noexcept {
  return IsCandidate(GcFlagsOf(ob), g_young_bit);
}

// ---- the scratch count, in the owner half of the header (brc/detail/gc_word.h) ----

// The owner of a tracked object outside a collection: none when its count is merged, else the
// thread whose heap holds it.
inline uint32_t OwnerFor(const Object* ob) noexcept {
  int32_t shared = Rc::shared(ob).load(std::memory_order_relaxed);
  return (shared & kStateMask) == kStateMerged ? kNoOwner : GcPageOf(ob)->heap->tid;
}
inline uint32_t Scratch(const Object* ob) noexcept { return Rc::Owner(ob); }
// Relaxed whole-word stores: the world is stopped and only the collector writes the word.
inline void SetScratch(Object* ob, uint32_t value) noexcept {
  Rc::SetBiased(ob, value, Rc::Local(ob));
}
inline void RestoreOwner(Object* ob) noexcept { SetScratch(ob, OwnerFor(ob)); }
// Counts one more reference in the scratch, which cannot carry into the local half: an object
// with 2^32 references from other tracked objects would need 128 GiB of them.
template <bool kParallel>
inline void AddScratch(Object* ob) noexcept {
  if constexpr (kParallel) {
    // Relaxed: the counts are read only after the pass ends (ParallelFor's join orders it).
    Rc::biased(ob).fetch_add(1, std::memory_order_relaxed);
  } else {
    SetScratch(ob, Scratch(ob) + 1);
  }
}

// Zeroes the scratch of a candidate. Under BRC_DEBUG, first checks that the owner can be put
// back as gc_word.h says (a violation would hand the object to the wrong thread).
inline void ZeroScratch(Object* ob) noexcept {
#ifdef BRC_DEBUG
  if (BRC_UNLIKELY(Rc::Owner(ob) != OwnerFor(ob))) {
    ReportMisuse(ob, "internal error: a tracked object's owner is neither the thread of its heap "
                     "page nor, when its count is merged, none: the collector could not restore "
                     "it");
  }
#endif
  SetScratch(ob, 0);
}

inline bool MarkedIn(uint32_t bits, uint32_t epoch) noexcept {
  return (bits >> kGcEpochShift) == epoch;
}

// Walks the candidates of pages [begin, end).
template <class Fn>
void ForEachCandidate(const PageList& pages, std::size_t begin, std::size_t end, Fn&& fn) {
  uint32_t young_bit = g_young_bit;
  for (std::size_t i = begin; i < end; ++i) {
    GcPage* p = pages[i];
    uint32_t n = p->bump;
    for (uint32_t b = 0; b < n; ++b) {
      Object* ob = p->object(b);
      uint32_t bits = GcFlagsOf(ob);
      if (!IsCandidate(bits, young_bit)) continue;
      fn(ob, bits);
    }
  }
}

// Pass 1: count, for each candidate, the references to it from other candidates.
template <bool kParallel>
class CountVisitor final : public Visitor {
 public:
  CountVisitor() noexcept : Visitor(&Fn) {}

 private:
  static void Fn(Visitor*, Object* r) noexcept {
    if (Collectable(r)) AddScratch<kParallel>(r);
  }
};

// Marks `w` reachable in this collection; true if this call did it (and must trace it).
template <bool kParallel>
inline bool Claim(Object* ob, uint32_t epoch) noexcept {
  std::atomic<uint32_t>& f = GcFlags(ob);
  uint32_t bits = f.load(std::memory_order_relaxed);
  if constexpr (kParallel) {
    while (!MarkedIn(bits, epoch)) {
      uint32_t marked = (bits & kGcFlagMask) | (epoch << kGcEpochShift);
      // Relaxed on success and failure: only the epoch field is contended during marking,
      // and the CAS only picks one claimant; ParallelFor's join publishes the marks.
      if (f.compare_exchange_weak(bits, marked, std::memory_order_relaxed)) return true;
    }
    return false;
  } else {
    if (MarkedIn(bits, epoch)) return false;
    f.store((bits & kGcFlagMask) | (epoch << kGcEpochShift), std::memory_order_relaxed);
    return true;
  }
}

// Pass 2: mark everything reachable from a root (depth first, explicit stack).
template <bool kParallel>
class MarkVisitor final : public Visitor {
 public:
  MarkVisitor(ObjectList* stack, uint32_t epoch) noexcept
      : Visitor(&Fn), stack_(stack), epoch_(epoch) {}

  void MarkFrom(Object* root) {
    ++marked;
    stack_->push_back(root);
    while (!stack_->empty()) {
      Object* ob = stack_->back();
      stack_->pop_back();
      TraceObject(ob, *this);
    }
  }
  uint64_t marked = 0;

 private:
  static void Fn(Visitor* self, Object* r) noexcept {
    auto* me = static_cast<MarkVisitor*>(self);
    if (!Collectable(r) || !Claim<kParallel>(r, me->epoch_)) return;
    ++me->marked;
    me->stack_->push_back(r);
  }
  ObjectList* stack_;
  uint32_t epoch_;
};

[[noreturn]] void ReportOvercount(Object* ob) {
  ReportMisuse(ob, "a Trace() reports more references to this object than its reference count "
                   "(a Trace visits a reference its object does not hold, or visits one twice)");
}

// One per marking worker, on its own cache lines (the counters change per object).
struct alignas(64) WorkerState {
  ObjectList stack;
  ObjectList garbage;
  uint64_t scanned = 0;
  uint64_t marked = 0;
};

// Mark with one worker (serial) or several (parallel); see Mark below. With one worker,
// `take` runs on each garbage object as it is found; with several, afterwards.
template <bool kParallel>
MarkResult MarkWith(const PageList& pages, int workers, uint32_t epoch,
                    absl::FunctionRef<void(Object*)> take,
                    absl::FunctionRef<void(std::size_t)> prepare, ObjectList* reuse) {
  int w_count = kParallel ? workers : 1;
  // Kept between collections (collection lock), so that the workers' vectors keep their
  // memory: fresh memory costs a page fault per 4 KiB, a large part of a collection's time.
  static NoDestroy<std::vector<WorkerState>> states_storage;
  std::vector<WorkerState>* states = &states_storage.get();
  if (states->size() < static_cast<std::size_t>(w_count)) states->resize(w_count);
  std::vector<WorkerState>& ws = *states;
  for (WorkerState& w : ws) {
    w.garbage.clear();
    w.scanned = w.marked = 0;
  }
  constexpr std::size_t kGrain = 4;  // pages per chunk
  ParallelFor(w_count, pages.size(), kGrain, [&](std::size_t b, std::size_t e, int) {
    ForEachCandidate(pages, b, e, [&](Object* ob, uint32_t) { ZeroScratch(ob); });
  });
  ParallelFor(w_count, pages.size(), kGrain, [&](std::size_t b, std::size_t e, int) {
    CountVisitor<kParallel> v;
    ForEachCandidate(pages, b, e, [&](Object* ob, uint32_t) { TraceObject(ob, v); });
  });
  ParallelFor(w_count, pages.size(), kGrain, [&](std::size_t b, std::size_t e, int worker) {
    WorkerState& me = ws[static_cast<std::size_t>(worker)];
    MarkVisitor<kParallel> v(&me.stack, epoch);
    uint64_t scanned = 0;
    ForEachCandidate(pages, b, e, [&](Object* ob, uint32_t) {
      ++scanned;
      int64_t internal = Scratch(ob);
      RestoreOwner(ob);  // the scratch's last use in this collection
      int64_t count = Rc::RefCount(ob);
      // Checked for every object, marked already or not: a Trace that over-reports would
      // otherwise let the collector free an object that is still referenced.
      if (BRC_UNLIKELY(count < internal)) ReportOvercount(ob);
      // Count zero: dead, only waiting in a merge queue (its owner's drain is in progress
      // further up its stack, or the queue could not be merged here). It is no garbage, and
      // what it references stays alive until its destructor runs: treat it as a root, so that
      // none of that is cleared.
      if ((count > internal || count == 0) && Claim<kParallel>(ob, epoch)) v.MarkFrom(ob);
    });
    me.marked += v.marked;
    me.scanned += scanned;
  });
  MarkResult r;
  uint64_t marked = 0;
  for (int i = 0; i < w_count; ++i) {
    WorkerState& w = ws[static_cast<std::size_t>(i)];
    r.scanned += w.scanned;
    marked += w.marked;
  }
  if (marked == r.scanned) return r;  // everything reachable: no third pass
  // The garbage list of the serial case is the reused buffer, sized exactly: growing a vector
  // of a million entries page-faults its way through fresh memory several times over.
  // Everything that may allocate happens before the first `take`, so that running out of
  // memory leaves nothing to undo but the scratch fields (see ResetScratch).
  prepare(r.scanned - marked);
  if (!kParallel) {
    ws[0].garbage = std::move(*reuse);
    ws[0].garbage.reserve(r.scanned - marked);
  }
  ParallelFor(w_count, pages.size(), kGrain, [&](std::size_t b, std::size_t e, int worker) {
    WorkerState& me = ws[static_cast<std::size_t>(worker)];
    ForEachCandidate(pages, b, e, [&](Object* ob, uint32_t bits) {
      if (MarkedIn(bits, epoch)) return;
      GcFlags(ob).store(bits | kGcGarbage, std::memory_order_relaxed);  // world stopped
      me.garbage.push_back(ob);
      if constexpr (!kParallel) take(ob);
    });
  });
  if constexpr (kParallel) {
    r.garbage = std::move(*reuse);
    r.garbage.reserve(r.scanned - marked);  // before any take: see above
    for (int i = 0; i < w_count; ++i) {
      ObjectList& part = ws[static_cast<std::size_t>(i)].garbage;
      r.garbage.insert(r.garbage.end(), part.begin(), part.end());
    }
  } else {
    r.garbage = std::move(ws[0].garbage);
  }
  if constexpr (kParallel) {
    for (Object* ob : r.garbage) take(ob);
  }
  return r;
}

}  // namespace

MarkResult Mark(const PageList& pages, bool young, int workers, uint32_t epoch,
                absl::FunctionRef<void(Object*)> take,
                absl::FunctionRef<void(std::size_t)> prepare, ObjectList* reuse) {
  g_young_bit = young ? uint32_t{kGcYoung} : 0u;
  constexpr std::size_t kMinPagesPerWorker = 8;  // below this, threads cost more than they save
  if (pages.size() < kMinPagesPerWorker * static_cast<std::size_t>(workers)) {
    workers = std::max<int>(1, static_cast<int>(pages.size() / kMinPagesPerWorker));
  }
  return workers > 1 ? MarkWith<true>(pages, workers, epoch, take, prepare, reuse)
                     : MarkWith<false>(pages, 1, epoch, take, prepare, reuse);
}

void ResetScratch(const PageList& pages, bool young) noexcept {
  g_young_bit = young ? uint32_t{kGcYoung} : 0u;
  ForEachCandidate(pages, 0, pages.size(), [](Object* ob, uint32_t bits) {
    RestoreOwner(ob);  // idempotent: right whether or not its scratch was in use
    GcFlags(ob).store(bits & ~kGcGarbage, std::memory_order_relaxed);
  });
}

uint32_t NextEpoch() noexcept {
  if (++g_epoch < kGcEpochLimit) return g_epoch;
  // Wrap-around (every 16M collections): reset every object's mark, so that no stale mark can
  // read as current. Walks the heaps directly: no allocation.
  ForEachThreadState([](ThreadState* ts) {
    ForEachPage(ts->heap, [](GcPage* p) {
      for (uint32_t b = 0; b < p->bump; ++b) {
        Object* ob = p->object(b);
        GcFlags(ob).store(GcFlagsOf(ob) & kGcFlagMask, std::memory_order_relaxed);
      }
    });
  });
  g_epoch = 1;
  return g_epoch;
}

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

void PromoteAllYoung() noexcept {
  ForEachThreadState([](ThreadState* ts) { PromoteYoung(ts->heap); });
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

// ---- resurrection check, over the garbage set only ----

namespace {

class GarbageCountVisitor final : public Visitor {
 public:
  GarbageCountVisitor() noexcept : Visitor(&Fn) {}

 private:
  static void Fn(Visitor*, Object* r) noexcept {
    if (GcFlagsOf(r) & kGcGarbage) AddScratch<false>(r);
  }
};

class ResurrectVisitor final : public Visitor {
 public:
  explicit ResurrectVisitor(ObjectList* stack) noexcept : Visitor(&Fn), stack_(stack) {}

 private:
  static void Fn(Visitor* self, Object* r) noexcept {
    if (!(GcFlagsOf(r) & kGcGarbage)) return;
    GcSetBits(r, 0, kGcGarbage);  // world stopped
    static_cast<ResurrectVisitor*>(self)->stack_->push_back(r);
  }
  ObjectList* stack_;
};

}  // namespace

void FindResurrected(const ObjectList& garbage) {
  // Every member's owner is back however this ends (the stack below may run out of memory).
  struct Restore {
    const ObjectList& garbage;
    ~Restore() {
      for (Object* ob : garbage) RestoreOwner(ob);
    }
  } restore{garbage};
  for (Object* ob : garbage) SetScratch(ob, 0);
  GarbageCountVisitor count;
  for (Object* ob : garbage) TraceObject(ob, count);
  // The outside references of each member, before any owner is restored.
  ObjectList stack;
  ResurrectVisitor mark(&stack);
  for (Object* ob : garbage) {
    if (!(GcFlagsOf(ob) & kGcGarbage)) continue;  // already resurrected through another member
    int64_t outside = Rc::RefCount(ob) - 1 - Scratch(ob);
    if (outside <= 0) continue;
    GcSetBits(ob, 0, kGcGarbage);
    stack.push_back(ob);
    while (!stack.empty()) {
      Object* x = stack.back();
      stack.pop_back();
      TraceObject(x, mark);
    }
  }
}

}  // namespace brc::detail
