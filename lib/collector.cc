// One collection, from start to end (protocol.md §5; the files: collector_internal.h):
//
//   kStart callbacks        world running
//   stop 1                  mark (collector_mark.cc) the young set or the whole heap; take a
//                           reference on each garbage object, clear its weak references, claim
//                           its finalizer; promote the young survivors
//   weak callbacks,         world running; user code may do anything but collect
//   finalizers
//   stop 2                  only when a finalizer ran: whatever a finalizer made reachable
//                           again leaves the garbage set (resurrection)
//   Clear()                 world running: the garbage set's references to each other go
//   final decrements        the collector drops its references: counting frees the objects
//   statistics, schedule,
//   kStop callbacks
//
// A young and a full collection differ only in the candidates stop 1 examines and in what the
// schedule records; everything after the mark works on the garbage set alone.
#include <algorithm>
#include <chrono>
#include <mutex>
#include <utility>

#include "brc/hot.h"
#include "brc/refcount.h"
#include "brc/thread.h"
#include "brc/weak_ref.h"
#include "collector_internal.h"
#include "handoff.h"
#include "merge_queue.h"
#include "no_destroy.h"
#include "per_thread.h"
#include "thread_state.h"
#include "weak_table.h"

namespace brc::detail {

void LockCollection(ThreadState* self) {
  std::mutex& mu = CollectLock();
  if (mu.try_lock()) return;
  DrainAndLeaveAttached(self, ThreadStatus::kBlocked);
  mu.lock();
  ReenterAttached(self);
}

WeakCallbackRun RunWeakSlotCallbacks(WeakSlot* slot) noexcept {
  WeakCallbackRun r;
  std::function<void()> cb;
  while (TakeWeakCallback(slot, &cb)) {
    ++r.run;
    if (!Guarded("a weak-reference callback", nullptr, cb)) ++r.errors;
    cb = nullptr;  // whatever it captured goes now, before the next one runs
  }
  ReleaseWeakSlot(slot);
  return r;
}

WeakCallbackRun RunWeakCallbacks(WeakCallbacks& callbacks) noexcept {
  WeakCallbackRun r;
  for (WeakSlot* slot : callbacks) {
    WeakCallbackRun one = RunWeakSlotCallbacks(slot);
    r.run += one.run;
    r.errors += one.errors;
  }
  callbacks.clear();
  return r;
}

namespace {

// The garbage list's storage, kept between collections (collection lock).
ObjectList& GarbageBuffer() {
  static NoDestroy<ObjectList> buffer;
  return buffer.get();
}

// The acyclic check's schedule (collector_acyclic.cc), for young and full
// collections apart: after a collection whose check found a cycle, the next `skip`
// collections of its kind do not try it; each failure in a row doubles that (up to
// kMaxAcyclicSkip), a success resets it. A program whose heap keeps its cycles so pays for a
// failed check (a walk up to the first cycle, and an undo pass) about once in 64 collections.
// The walk's order: a check that proved its set acyclic but had to enter more than half of it
// depth first (the objects mostly reference newer ones: a tree built top down, a list grown at
// its tail) makes the next check of its kind walk the other way, where those objects meet
// their referents first and take the cheap in-order step. Collection lock.
constexpr uint32_t kMaxAcyclicSkip = 64;
struct AcyclicSchedule {
  uint32_t skip = 0;
  uint32_t backoff = 0;
  bool newest_first = false;
};
AcyclicSchedule g_acyclic[2];  // [young, full]

AcyclicSchedule& ScheduleOf(CollectKind kind) {
  return g_acyclic[kind == CollectKind::kYoung ? 0 : 1];
}
// Whether this collection tries the check; if so, *walk says in which order.
bool TryAcyclicCheck(CollectKind kind, AcyclicWalk* walk) {
  AcyclicSchedule& s = ScheduleOf(kind);
  if (s.skip == 0) {
    walk->newest_first = s.newest_first;
    return true;
  }
  --s.skip;
  return false;
}
void RecordAcyclicCheck(CollectKind kind, bool acyclic, uint64_t scanned,
                        const AcyclicWalk& walk) {
  AcyclicSchedule& s = ScheduleOf(kind);
  s.backoff = acyclic ? 0 : std::min(std::max(1u, 2 * s.backoff), kMaxAcyclicSkip);
  s.skip = s.backoff;
  if (acyclic && walk.deep > scanned / 2) s.newest_first = !walk.newest_first;
}

}  // namespace

void ResetAcyclicSchedule() noexcept {
  g_acyclic[0] = g_acyclic[1] = AcyclicSchedule();
}

bool AcyclicWalkNewestFirst(bool young) noexcept {
  return g_acyclic[young ? 0 : 1].newest_first;
}

void SetAcyclicWalkNewestFirst(bool newest_first) noexcept {
  g_acyclic[0].newest_first = g_acyclic[1].newest_first = newest_first;
}

namespace {

absl::Duration Since(std::chrono::steady_clock::time_point t) {
  return absl::FromChrono(std::chrono::steady_clock::now() - t);
}

// What one collection carries from phase to phase. Collecting thread only.
struct Collection {
  ThreadState* self = nullptr;
  CollectKind kind = CollectKind::kFull;
  CollectResult result;
  ObjectList garbage;        // the garbage set (kGcGarbage on each); one reference held on each
  ObjectList to_finalize;    // members whose finalizer this collection runs
  ObjectList resurrected;    // left the set in stop 2; one reference held on each
  WeakCallbacks weak_callbacks;
  absl::Duration pause1, pause2;
  uint64_t heap_pages = 0;
};

// Stop 1. False when the collector ran out of memory for its lists: nothing was marked, and
// every object is as it was.
bool FindGarbage(Collection& c) {
  auto stop_start = std::chrono::steady_clock::now();
  bool young = c.kind == CollectKind::kYoung;
  bool out_of_memory = false;
  MarkResult marked;
  ObjectList merged_dead;  // objects MergeParkedQueues found dead, each with one reference
  WithWorldStopped(c.self, [&] {
    g_allocs_since.store(0, std::memory_order_relaxed);
    PageList pages;
    try {
      pages = young ? YoungPages() : CollectPages();
    } catch (const std::bad_alloc&) {
      out_of_memory = true;  // nothing marked yet
      return;
    }
    c.heap_pages = CountHeapPages();
    MergeParkedQueues(c.self, &merged_dead);
    // Counts must be exact: every thread's per-thread slots go into the shared words (objects
    // found dead join merged_dead; without room they stay, read as count zero, and the next
    // pass looks again).
    try {
      merged_dead.reserve(merged_dead.size() + PerThreadObjectCount());
    } catch (const std::bad_alloc&) {
    }
    FoldPerThreadCounts(&merged_dead);
    uint32_t epoch = NextEpoch();
    // For each garbage object: the collector's reference, its weak references cleared, and its
    // finalizer claimed (kGcFinalized before it runs: it never runs twice, even if it throws).
    auto take = [&](Object* ob) {
      Rc::IncRef(ob);
      if (Rc::flags(ob).load(std::memory_order_relaxed) & kFlagHasWeakRefs) {
        ClearWeakSlotOf(ob, &c.weak_callbacks);
      }
      if (ob->type_info()->gc->finalize != nullptr && !(GcBitsOf(ob) & kGcFinalized)) {
        GcSetBits(ob, kGcFinalized, 0);  // world stopped
        c.to_finalize.push_back(ob);
      }
    };
    auto prepare = [&](std::size_t garbage) {
      c.to_finalize.reserve(garbage);
      c.weak_callbacks.reserve(garbage);
    };
    AcyclicWalk walk;
    bool try_acyclic = TryAcyclicCheck(c.kind, &walk);
    try {
      marked = Mark(pages, young, try_acyclic ? &walk : nullptr,
                    g_workers.load(std::memory_order_relaxed), epoch,
                    take, prepare, &GarbageBuffer());
      if (try_acyclic) RecordAcyclicCheck(c.kind, marked.acyclic, marked.scanned, walk);
    } catch (const std::bad_alloc&) {
      ResetScratch(pages, young, epoch);
      marked = MarkResult();
      out_of_memory = true;
      return;
    }
    // Every young object is old from now on (a full collection examined them too).
    if (!young) ClearWasYoung();
    ClearYoungLists();
  });
  // The world runs again: free what the merge of parked owners' queues found dead.
  for (Object* ob : merged_dead) Rc::DecRef(ob);
  if (out_of_memory) return false;
  c.garbage = std::move(marked.garbage);
  c.result.scanned = marked.scanned;
  c.result.unreachable = c.garbage.size();
  c.result.acyclic = marked.acyclic;
  c.pause1 = Since(stop_start);
  c.result.time_stopped += c.pause1;
  return true;
}

void RunCollectionWeakCallbacks(Collection& c) {
  ContextScope scope(Context::kWeakCallback, nullptr);
  WeakCallbackRun run = RunWeakCallbacks(c.weak_callbacks);
  c.result.weak_callbacks += run.run;
  c.result.errors += run.errors;
}

void RunFinalizers(Collection& c) {
  for (Object* ob : c.to_finalize) {
    const TypeInfo* type = ob->type_info();
    ContextScope scope(Context::kFinalizer, type);
    if (!Guarded("Finalize()", type, [&] { type->gc->finalize(ob); })) ++c.result.errors;
  }
  c.result.finalized = c.to_finalize.size();
}

// Stop 2, only if finalizers ran: drop from the set whatever they made reachable again.
void CheckResurrection(Collection& c) {
  if (c.to_finalize.empty()) return;
  DrainQueue(c.self);
  auto stop_start = std::chrono::steady_clock::now();
  bool check_failed = false;
  ObjectList merged_dead;  // per-thread-counted objects the fold below found dead
  WithWorldStopped(c.self, [&] {
    // Finalizers may have counted per thread (a resurrecting one, say): fold first.
    try {
      merged_dead.reserve(PerThreadObjectCount());
    } catch (const std::bad_alloc&) {
    }
    FoldPerThreadCounts(&merged_dead);
    ObjectList& garbage = c.garbage;
    try {
      FindResurrected(garbage);
      auto keep = std::partition(garbage.begin(), garbage.end(),
                                 [](Object* ob) { return (GcBitsOf(ob) & kGcGarbage) != 0; });
      c.resurrected.assign(keep, garbage.end());
      garbage.erase(keep, garbage.end());
    } catch (const std::bad_alloc&) {
      // Out of memory: nothing can be proven garbage now, so all of it survives (the owners
      // are back: FindResurrected restores them however it ends).
      for (Object* ob : garbage) GcSetBits(ob, 0, kGcGarbage);
      c.resurrected.swap(garbage);
      garbage.clear();
      check_failed = true;
    }
    // A finalizer may have made a new WeakRef to a member it did not resurrect: clear those
    // too, or a Lock() could hand out an object that Clear() is about to empty.
    for (Object* ob : garbage) {
      if (Rc::flags(ob).load(std::memory_order_relaxed) & kFlagHasWeakRefs) {
        ClearWeakSlotOf(ob, &c.weak_callbacks);
      }
    }
  });
  for (Object* ob : merged_dead) Rc::DecRef(ob);
  c.pause2 = Since(stop_start);
  c.result.time_stopped += c.pause2;
  if (check_failed) {
    ++c.result.errors;
    try {
      ReportError("brc: out of memory in the collector's resurrection check: this "
                  "collection's garbage survives until the next one");
    } catch (...) {
      ReportErrorRaw("the collector's resurrection check (out of memory)");
    }
  }
}

// World running: break the cycles, then let reference counting free them.
void ClearAndRelease(Collection& c) {
  ObjectList& garbage = c.garbage;
  for (Object* ob : garbage) {
    const TypeInfo* type = ob->type_info();
    ContextScope scope(Context::kClear, type);
    if (!Guarded("Clear()", type, [&] { type->gc->clear(ob); })) ++c.result.errors;
  }
  // Every Clear() has run, so garbage objects no longer reference each other: dropping one
  // frees only that one, and the next one's count is final. One still referenced from
  // elsewhere (an incomplete Clear, or one that stored the object somewhere) survives.
  // First merge what was queued to this thread meanwhile: an object it owns whose last
  // references were dropped by Clear() may still have its queued entry counted (found by the
  // collector stress program).
  DrainQueue(c.self);
  bool per_thread = false;  // a member counted per thread is freed by a merge pass
  for (Object* ob : garbage) {
    per_thread |= Rc::IsPerThread(ob);
    if (Rc::RefCount(ob) > 1) ++c.result.uncollectable;
    // Plain stores: the collector still holds a reference, so no Dealloc writes the bits. The
    // epoch tells Dealloc not to count this death as old (the schedule counted it already),
    // whenever and on whichever thread it happens; an object that survives is old.
    GcSetBits(ob, 0, kGcGarbage);
    GcSetEpoch(ob, kGcEpochCollected);
    Rc::DecRef(ob);
  }
  c.result.collected = garbage.size() - c.result.uncollectable;
  // Keep the list's memory for the next collection, unless it is far larger than needed.
  garbage.clear();
  if (garbage.capacity() > 4 * std::max<std::size_t>(c.result.unreachable, 4096)) {
    garbage.shrink_to_fit();
  }
  GarbageBuffer() = std::move(garbage);
  for (Object* ob : c.resurrected) Rc::DecRef(ob);
  // Garbage owned by other attached threads now waits in this thread's hand-off buffers: send
  // it to its owners now rather than at this thread's next safepoint.
  if (c.self->handoff_held != 0) FlushHandoffs(c.self);
  if (per_thread) (void)MergePerThreadCounts();
}

}  // namespace

absl::StatusOr<CollectResult> RunCollection(ThreadState* self, CollectKind kind,
                                            bool automatic) {
  auto start = std::chrono::steady_clock::now();
  ContextScope collecting(Context::kCollecting, nullptr);
  Collection c;
  c.self = self;
  c.kind = kind;
  c.result.kind = kind;
  c.result.automatic = automatic;
  if (!RunCollectCallbacks(CollectPhase::kStart, c.result, &c.result)) {
    return OutOfMemoryStatus(
        "brc::Collect: out of memory while copying the collection callbacks; nothing was "
        "collected");
  }
  DrainQueue(self);
  if (!FindGarbage(c)) {
    return OutOfMemoryStatus(
        "brc::Collect: out of memory while marking; the world was restarted and nothing was "
        "collected");
  }
  RunCollectionWeakCallbacks(c);
  RunFinalizers(c);
  CheckResurrection(c);
  c.result.resurrected = c.resurrected.size();
  RunCollectionWeakCallbacks(c);
  ClearAndRelease(c);
  // Everything a young collection examined and did not free is old now.
  if (kind == CollectKind::kYoung) c.result.promoted = c.result.scanned - c.result.collected;
  RecordCollection(c.result, c.pause1, c.pause2, c.heap_pages);
  c.result.total_time = Since(start);
  if (!RunCollectCallbacks(CollectPhase::kStop, c.result, &c.result)) {
    // The collection is done; only its kStop callbacks were skipped.
    ++c.result.errors;
    ReportErrorRaw("the collection callbacks at kStop (out of memory: skipped)");
  }
  return c.result;
}

namespace {

absl::StatusOr<CollectResult> CollectNow(const char* what, CollectKind kind) {
  if (absl::Status s = CheckCanCollect(what); !s.ok()) return s;
  LockCollection(t_state);
  std::unique_lock<std::mutex> lock(CollectLock(), std::adopt_lock);
  return RunCollection(t_state, kind, /*automatic=*/false);
}

}  // namespace

}  // namespace brc::detail

namespace brc {

absl::StatusOr<CollectResult> Collect() {
  return detail::CollectNow("brc::Collect", CollectKind::kFull);
}

absl::StatusOr<CollectResult> CollectYoung() {
  return detail::CollectNow("brc::CollectYoung", CollectKind::kYoung);
}

}  // namespace brc
