// The cycle collector (protocol.md §5): finds garbage cycles among tracked objects and frees
// them. Layer: collector, on top of stop-the-world, the collector heap and refcounting.
//
// Which threads run what:
//  * Collect(): one thread at a time (the collection lock), attached. Marking runs with the
//    world stopped, on that thread or on a oneTBB arena (lib/parallel.h); callbacks,
//    finalizers, Clear() and the final decrements run on it with the world running.
//  * OnTrackedAllocations(): every allocating thread, every kGcAllocBatch tracked allocations;
//    it starts an automatic collection when the schedule says so and nobody else is collecting.
//
// Invariants:
//  * Outside a collection every tracked object has refs == 0 and no kGcGarbage; its mark
//    epoch is older than the next collection's.
//  * An object with kGcTracked is fully constructed and not being destroyed (Make sets it last,
//    Dealloc clears it first), so Trace may run on it while the world is stopped.
//  * The collector holds one strong reference on every object of its garbage set from the
//    first stop until the end, so none of them is freed while it works on them.
//  * kGcFinalized is set, with the world stopped, before Finalize() runs and never cleared.
#include "no_destroy.h"
#include "brc/collector.h"

#include <cxxabi.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <typeinfo>
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "brc/refcount.h"
#include "brc/stop_the_world.h"
#include "brc/thread.h"
#include "brc/weak_ref.h"
#include "gc_heap.h"
#include "internal_alloc.h"
#include "merge_queue.h"
#include "parallel.h"
#include "stop_the_world.h"
#include "thread_state.h"
#include "weak_table.h"

namespace brc::detail {

// The collector's own lists come from the object allocator (lib/internal_alloc.h), so that an
// allocator that fails makes a collection fail the documented way.
using ObjectList = InternalVector<Object*>;
using PageList = InternalVector<GcPage*>;

namespace {

// ---- configuration, schedule and statistics ----

struct Shared {
  std::mutex mu;  // guards everything below that is not atomic
  CollectorConfig config;
  CollectorErrorHandler error_handler;
  std::vector<std::pair<uint64_t, CollectCallback>> callbacks;
  uint64_t next_callback_id = 1;
  CollectorStats stats;
};

Shared& G() {
  static NoDestroy<Shared> g;  // never destroyed: threads may outlive main
  return g.get();
}

// Relaxed throughout: these only decide when to collect, never what is garbage.
std::atomic<bool> g_enabled{true};
std::atomic<uint64_t> g_allocs_since{0};   // tracked allocations since the last collection
std::atomic<uint64_t> g_trigger{2000};     // allocations that start the next one
std::atomic<int> g_workers{1};
// Objects frozen now: Freeze adds, Unfreeze resets, and each frozen object that counting frees
// subtracts one (OnFrozenObjectFreed). Relaxed: a statistic.
std::atomic<uint64_t> g_frozen{0};

std::mutex& CollectLock() {
  static NoDestroy<std::mutex> mu;
  return mu.get();
}

// What the calling thread is doing inside a collection, for Collect()'s nesting error.
enum class Context { kNone, kCollecting, kCallback, kWeakCallback, kFinalizer, kClear };
constinit thread_local Context t_context = Context::kNone;
constinit thread_local const TypeInfo* t_context_type = nullptr;
// True while this thread holds the world stopped for a collection, Freeze or Unfreeze (the only
// user code that runs then is an allocator called for the collector's own lists).
constinit thread_local bool t_collector_stopped = false;

class ContextScope {
 public:
  ContextScope(Context c, const TypeInfo* type) : saved_(t_context), saved_type_(t_context_type) {
    t_context = c;
    t_context_type = type;
  }
  ~ContextScope() {
    t_context = saved_;
    t_context_type = saved_type_;
  }

 private:
  Context saved_;
  const TypeInfo* saved_type_;
};

// Last resort when a report cannot be built or delivered (out of memory, or the handler
// threw): a fixed line on stderr, written without allocating.
void ReportErrorRaw(const char* what) noexcept {
  const char* parts[] = {"brc: exception in ", what,
                         " (the full report could not be built or delivered)\n"};
  for (const char* p : parts) {
    ssize_t ignored = write(STDERR_FILENO, p, std::strlen(p));
    (void)ignored;
  }
}

void ReportError(const std::string& message) {
  CollectorErrorHandler handler;
  {
    std::lock_guard<std::mutex> lock(G().mu);
    handler = G().error_handler;
  }
  if (handler) {
    handler(message);
  } else {
    std::fprintf(stderr, "%s\n", message.c_str());
  }
}

// The dynamic type of the exception being handled, demangled ("std::runtime_error").
std::string CurrentExceptionType() {
  std::type_info* t = abi::__cxa_current_exception_type();
  if (t == nullptr) return "unknown";
  int status = 0;
  // Freed however this ends: building the string below may throw std::bad_alloc.
  std::unique_ptr<char, void (*)(void*)> name(
      abi::__cxa_demangle(t->name(), nullptr, nullptr, &status), &std::free);
  return status == 0 && name != nullptr ? std::string(name.get()) : std::string(t->name());
}

// Runs fn, catching and reporting what it throws: where (a finalizer of type T, a callback),
// the exception's type and its message. Returns false if it threw. Never throws itself: it
// runs inside decrements, which cannot fail, so a report that cannot be built (out of memory)
// or a handler that throws falls back to ReportErrorRaw.
template <class Fn>
bool Guarded(const char* what, const TypeInfo* type, Fn&& fn) noexcept {
  try {
    fn();
    return true;
  } catch (...) {
    try {
      std::string detail;
      try {
        throw;  // the exception being handled, to read its type and message
      } catch (const std::exception& e) {
        detail = CurrentExceptionType() + ": " + e.what();
      } catch (...) {
        detail = CurrentExceptionType() + " (not a std::exception)";
      }
      std::string msg = std::string("brc: exception in ") + what;
      if (type != nullptr) msg += " of type " + std::string(type->name);
      ReportError(msg + ": " + detail);
    } catch (...) {
      ReportErrorRaw(what);
    }
  }
  return false;
}

void RecordPause(absl::Duration d) {
  CollectorStats& s = G().stats;  // caller holds G().mu
  s.total_stopped += d;
  s.max_pause = std::max(s.max_pause, d);
  int64_t us = absl::ToInt64Microseconds(d);
  int bucket = 0;
  while (bucket + 1 < kPauseBuckets && (int64_t{2} << bucket) <= us) ++bucket;
  ++s.pause_histogram[bucket];
}

// A ResourceExhausted status with `message`, or, when even the message cannot be allocated,
// with none (a status without a message needs no memory).
absl::Status OutOfMemoryStatus(const char* message) noexcept {
  try {
    return absl::ResourceExhaustedError(message);
  } catch (const std::bad_alloc&) {
    return absl::Status(absl::StatusCode::kResourceExhausted, "");
  }
}

// ---- marking, world stopped ----

// The number of the running collection (1 .. kGcEpochLimit - 1), written into an object's
// collector word when it is marked reachable. Written by the collecting thread under the
// collection lock; read by marking workers (ParallelFor orders it).
uint32_t g_epoch = 0;

// Tracked, unfrozen: what a collection scans. kFlagGcHeap first, because only objects of
// tracked types have a collector word to read.
inline bool Collectable(const Object* ob) noexcept {
  if (!(Rc::flags(ob).load(std::memory_order_relaxed) & kFlagGcHeap)) return false;
  return (GcWordOf(ob)->bits.load(std::memory_order_relaxed) & (kGcTracked | kGcFrozen)) ==
         kGcTracked;
}

inline bool MarkedIn(uint32_t bits, uint32_t epoch) noexcept {
  return (bits >> kGcEpochShift) == epoch;
}

inline void TraceObject(Object* ob, Visitor& v) { ob->type_info()->gc->trace(ob, v); }

// Walks the tracked, unfrozen objects of pages [begin, end).
template <class Fn>
void ForEachCandidate(const PageList& pages, std::size_t begin, std::size_t end,
                      Fn&& fn) {
  for (std::size_t i = begin; i < end; ++i) {
    GcPage* p = pages[i];
    uint32_t n = p->bump;
    for (uint32_t b = 0; b < n; ++b) {
      GcWord* w = p->word(b);
      uint32_t bits = w->bits.load(std::memory_order_relaxed);
      if ((bits & (kGcTracked | kGcFrozen)) != kGcTracked) continue;
      fn(p->object(b), w, bits);
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
    if (!Collectable(r)) return;
    GcWord* w = GcWordOf(r);
    if constexpr (kParallel) {
      // Relaxed: the counts are read only after the pass ends (ParallelFor's join orders it).
      w->refs.fetch_add(1, std::memory_order_relaxed);
    } else {
      w->refs.store(w->refs.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    }
  }
};

// Marks `w` reachable in this collection; true if this call did it (and must trace it).
template <bool kParallel>
inline bool Claim(GcWord* w, uint32_t epoch) noexcept {
  uint32_t bits = w->bits.load(std::memory_order_relaxed);
  if constexpr (kParallel) {
    // Relaxed: only the epoch field is contended during marking; the CAS picks one claimant.
    while (!MarkedIn(bits, epoch)) {
      if (w->bits.compare_exchange_weak(bits, (bits & kGcFlagMask) | (epoch << kGcEpochShift),
                                        std::memory_order_relaxed, std::memory_order_relaxed)) {
        return true;
      }
    }
    return false;
  } else {
    if (MarkedIn(bits, epoch)) return false;
    w->bits.store((bits & kGcFlagMask) | (epoch << kGcEpochShift), std::memory_order_relaxed);
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
    if (!Collectable(r) || !Claim<kParallel>(GcWordOf(r), me->epoch_)) return;
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

struct MarkResult {
  ObjectList garbage;  // kGcGarbage set on each
  uint64_t scanned = 0;
};

// Finds the unreachable candidates: two passes over the heap when nothing is garbage, three
// otherwise. Leaves every candidate's refs at 0 and marks in the epoch field only.
// With one worker, `take` runs on each garbage object as it is found (it may do count work:
// the caller is the collecting thread); with several, the caller runs it afterwards.
template <bool kParallel>
MarkResult Mark(const PageList& pages, int workers, uint32_t epoch,
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
    CountVisitor<kParallel> v;
    ForEachCandidate(pages, b, e, [&](Object* ob, GcWord*, uint32_t) { TraceObject(ob, v); });
  });
  ParallelFor(w_count, pages.size(), kGrain, [&](std::size_t b, std::size_t e, int worker) {
    WorkerState& me = ws[static_cast<std::size_t>(worker)];
    MarkVisitor<kParallel> v(&me.stack, epoch);
    uint64_t scanned = 0;
    ForEachCandidate(pages, b, e, [&](Object* ob, GcWord* w, uint32_t) {
      ++scanned;
      int64_t count = Rc::RefCount(ob);
      int64_t internal = w->refs.load(std::memory_order_relaxed);
      w->refs.store(0, std::memory_order_relaxed);  // its last use in this collection
      // Checked for every object, marked already or not: a Trace that over-reports would
      // otherwise let the collector free an object that is still referenced.
      if (BRC_UNLIKELY(count < internal)) ReportOvercount(ob);
      // Count zero: dead, only waiting in a merge queue (its owner's drain is in progress
      // further up its stack, or the queue could not be merged here). It is no garbage, and
      // what it references stays alive until its destructor runs: treat it as a root, so that
      // none of that is cleared.
      if ((count > internal || count == 0) && Claim<kParallel>(w, epoch)) v.MarkFrom(ob);
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
    ForEachCandidate(pages, b, e, [&](Object* ob, GcWord* w, uint32_t bits) {
      if (MarkedIn(bits, epoch)) return;
      w->bits.store(bits | kGcGarbage, std::memory_order_relaxed);
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

// After a failed mark: back to the between-collections state (refs 0, no kGcGarbage). The
// epoch marks may stay: the next collection has a new epoch. World stopped; no allocation.
void ResetScratch(const PageList& pages) noexcept {
  ForEachCandidate(pages, 0, pages.size(), [](Object*, GcWord* w, uint32_t bits) {
    w->refs.store(0, std::memory_order_relaxed);
    w->bits.store(bits & ~kGcGarbage, std::memory_order_relaxed);
  });
}

// Starts a collection's epoch. At the (rare) wrap-around every object's mark is reset to 0
// first, so that no stale mark can read as current. World stopped.
uint32_t NextEpoch(const PageList& pages) {
  if (++g_epoch < kGcEpochLimit) return g_epoch;
  for (GcPage* p : pages) {
    for (uint32_t b = 0; b < p->bump; ++b) {
      GcWord* w = p->word(b);
      w->bits.store(w->bits.load(std::memory_order_relaxed) & kGcFlagMask,
                    std::memory_order_relaxed);
    }
  }
  g_epoch = 1;
  return g_epoch;
}

// Every page of every heap, after sweeping remote frees and empty pages.
PageList CollectPages() {
  PageList pages;
  uint64_t total = 0;
  ForEachThreadState([&](ThreadState* ts) {
    // A thread that has exited keeps no empty pages (its id may never be used again).
    bool exited;
    {
      MutexLock lock(&ts->mu);
      exited = ts->status == ThreadStatus::kExited;
    }
    total += SweepHeap(ts->heap, exited);
    SweepHeap(ts->leaf_heap, exited);
    ForEachPage(ts->heap, [&](GcPage* p) { pages.push_back(p); });
  });
  return pages;
}

// Merges, with the world stopped, the objects queued to other attached threads that have not
// drained since (an owner parked by an earlier stop stays parked across back-to-back stops and
// drains nothing meanwhile). Without this, garbage that the last collection queued to such an
// owner (its final decrement) would still look like a member of a garbage cycle, and the next
// collection would clear and count it again. Merging on an owner's behalf is allowed while the
// world is stopped (the owner is parked and does not touch its half). An object whose count
// reaches zero keeps one reference, appended to `dead`: the collector drops it with the world
// running, which frees it. If `dead` cannot be reserved the queues stay as they are (those
// objects read as count zero and the garbage pass skips them). No other allocation.
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

// ---- resurrection check, world stopped, over the garbage set only ----

class GarbageCountVisitor final : public Visitor {
 public:
  GarbageCountVisitor() noexcept : Visitor(&Fn) {}

 private:
  static void Fn(Visitor*, Object* r) noexcept {
    if (r->type_info() == nullptr || r->type_info()->gc == nullptr) return;
    GcWord* w = GcWordOf(r);
    if (!w->Has(kGcGarbage)) return;
    w->refs.store(w->refs.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
};

class ResurrectVisitor final : public Visitor {
 public:
  explicit ResurrectVisitor(ObjectList* stack) noexcept
      : Visitor(&Fn), stack_(stack) {}

 private:
  static void Fn(Visitor* self, Object* r) noexcept {
    if (r->type_info() == nullptr || r->type_info()->gc == nullptr) return;
    GcWord* w = GcWordOf(r);
    if (!w->Has(kGcGarbage)) return;
    w->Unset(kGcGarbage);
    static_cast<ResurrectVisitor*>(self)->stack_->push_back(r);
  }
  ObjectList* stack_;
};

// Removes from the garbage set (clears kGcGarbage on) every member that something outside the
// set references, beyond the collector's own reference, and every member they reach.
void FindResurrected(const ObjectList& garbage) {
  GarbageCountVisitor count;
  for (Object* ob : garbage) TraceObject(ob, count);
  ObjectList stack;
  ResurrectVisitor mark(&stack);
  for (Object* ob : garbage) {
    GcWord* w = GcWordOf(ob);
    if (!w->Has(kGcGarbage)) continue;  // already resurrected through another member
    int64_t outside = Rc::RefCount(ob) - 1 - w->refs.load(std::memory_order_relaxed);
    if (outside <= 0) continue;
    w->Unset(kGcGarbage);
    stack.push_back(ob);
    while (!stack.empty()) {
      Object* x = stack.back();
      stack.pop_back();
      TraceObject(x, mark);
    }
  }
  for (Object* ob : garbage) GcWordOf(ob)->refs.store(0, std::memory_order_relaxed);
}

// ---- the collection ----

// Runs the collection callbacks (a copy of the list, so that they may add and remove
// callbacks). False when the copy could not be allocated: none ran.
bool RunCollectCallbacks(CollectPhase phase, const CollectResult& result, CollectResult* out) {
  std::vector<std::pair<uint64_t, CollectCallback>> callbacks;
  try {
    std::lock_guard<std::mutex> lock(G().mu);
    callbacks = G().callbacks;
  } catch (const std::bad_alloc&) {
    return false;
  }
  ContextScope scope(Context::kCallback, nullptr);
  for (auto& entry : callbacks) {
    CollectCallback& cb = entry.second;  // (clang 14 cannot capture a structured binding)
    if (!Guarded("a collection callback", nullptr, [&] { cb(phase, result); })) ++out->errors;
  }
  return true;
}

// The garbage list's storage, kept between collections (collection lock).
ObjectList& GarbageBuffer() {
  static NoDestroy<ObjectList> buffer;
  return buffer.get();
}

// Runs fn with the world stopped by `self`. Nothing may unwind out of a stopped world (the
// marks would be half done and every other thread parked): an exception there, which can only
// be the collector running out of memory for its own vectors, is a fatal error.
template <class Fn>
void WithWorldStopped(ThreadState* self, Fn&& fn) {
  StopWorld(self);
  t_collector_stopped = true;
  try {
    fn();
    t_collector_stopped = false;
  } catch (...) {
    CheckFailed(__FILE__, __LINE__,
                "an exception (out of memory?) while the world was stopped for a "
                "collection: a half-done mark cannot be undone");
  }
  RestartWorld();
}

// Takes the collection lock; while waiting the thread counts as blocked, so a collection
// running on another thread (which may be stopping the world) does not wait for it.
void LockCollection(ThreadState* self) {
  std::mutex& mu = CollectLock();
  if (mu.try_lock()) return;
  DrainAndLeaveAttached(self, ThreadStatus::kBlocked);
  mu.lock();
  ReenterAttached(self);
}

absl::StatusOr<CollectResult> RunCollection(ThreadState* self, bool automatic) {
  auto start = std::chrono::steady_clock::now();
  ContextScope collecting(Context::kCollecting, nullptr);
  CollectResult result;
  result.automatic = automatic;
  if (!RunCollectCallbacks(CollectPhase::kStart, result, &result)) {
    return OutOfMemoryStatus(
        "brc::Collect: out of memory while copying the collection callbacks; nothing was "
        "collected");
  }
  DrainQueue(self);

  // Stop 1: find the garbage, take a reference on it, clear weak references to it.
  auto stop_start = std::chrono::steady_clock::now();
  WeakCallbacks weak_callbacks;
  ObjectList to_finalize;
  std::size_t heap_pages = 0;
  MarkResult marked;
  bool out_of_memory = false;
  ObjectList merged_dead;  // objects MergeParkedQueues found dead, each with one reference
  WithWorldStopped(self, [&] {
    g_allocs_since.store(0, std::memory_order_relaxed);
    PageList pages;
    try {
      pages = CollectPages();
    } catch (const std::bad_alloc&) {
      out_of_memory = true;  // nothing marked yet
      return;
    }
    heap_pages = pages.size();
    MergeParkedQueues(self, &merged_dead);
    int workers = g_workers.load(std::memory_order_relaxed);
    constexpr std::size_t kMinPagesPerWorker = 8;  // below this, threads cost more than they save
    if (pages.size() < kMinPagesPerWorker * static_cast<std::size_t>(workers)) {
      workers = std::max<int>(1, static_cast<int>(pages.size() / kMinPagesPerWorker));
    }
    uint32_t epoch = NextEpoch(pages);
    // For each garbage object: the collector's reference, its weak references cleared, and its
    // finalizer claimed (kGcFinalized before it runs: it never runs twice, even if it throws).
    auto take = [&](Object* ob) {
      Rc::IncRef(ob);
      if (Rc::flags(ob).load(std::memory_order_relaxed) & kFlagHasWeakRefs) {
        ClearWeakSlotOf(ob, &weak_callbacks);
      }
      GcWord* w = GcWordOf(ob);
      if (ob->type_info()->gc->finalize != nullptr && !w->Has(kGcFinalized)) {
        w->Set(kGcFinalized);
        to_finalize.push_back(ob);
      }
    };
    auto prepare = [&](std::size_t garbage) {
      to_finalize.reserve(garbage);
      weak_callbacks.reserve(garbage);
    };
    try {
      marked = workers > 1
                   ? Mark<true>(pages, workers, epoch, take, prepare, &GarbageBuffer())
                   : Mark<false>(pages, 1, epoch, take, prepare, &GarbageBuffer());
    } catch (const std::bad_alloc&) {
      ResetScratch(pages);
      marked = MarkResult();
      out_of_memory = true;
    }
  });
  // The world runs again: free what the merge of parked owners' queues found dead.
  for (Object* ob : merged_dead) Rc::DecRef(ob);
  merged_dead = ObjectList();
  if (out_of_memory) {
    return OutOfMemoryStatus(
        "brc::Collect: out of memory while marking; the world was restarted and nothing was "
        "collected");
  }
  ObjectList& garbage = marked.garbage;
  result.scanned = marked.scanned;
  result.unreachable = garbage.size();
  absl::Duration pause1 = absl::FromChrono(std::chrono::steady_clock::now() - stop_start);
  result.time_stopped += pause1;

  // World running: weak-reference callbacks, then finalizers.
  auto run_weak_callbacks = [&] {
    ContextScope scope(Context::kWeakCallback, nullptr);
    WeakCallbackRun run = RunWeakCallbacks(weak_callbacks);
    result.weak_callbacks += run.run;
    result.errors += run.errors;
  };
  run_weak_callbacks();
  for (Object* ob : to_finalize) {
    const TypeInfo* type = ob->type_info();
    ContextScope scope(Context::kFinalizer, type);
    if (!Guarded("Finalize()", type, [&] { type->gc->finalize(ob); })) ++result.errors;
  }
  result.finalized = to_finalize.size();

  // Stop 2, only if finalizers ran: drop from the set whatever they made reachable again.
  absl::Duration pause2;
  ObjectList resurrected;
  if (!to_finalize.empty()) {
    DrainQueue(self);
    auto stop2_start = std::chrono::steady_clock::now();
    bool check_failed = false;
    WithWorldStopped(self, [&] {
      try {
        FindResurrected(garbage);
        auto keep = std::partition(garbage.begin(), garbage.end(),
                                   [](Object* ob) { return GcWordOf(ob)->Has(kGcGarbage); });
        resurrected.assign(keep, garbage.end());
        garbage.erase(keep, garbage.end());
      } catch (const std::bad_alloc&) {
        // Out of memory: nothing can be proven garbage now, so all of it survives.
        for (Object* ob : garbage) {
          GcWordOf(ob)->refs.store(0, std::memory_order_relaxed);
          GcWordOf(ob)->Unset(kGcGarbage);
        }
        resurrected.swap(garbage);
        garbage.clear();
        check_failed = true;
      }
      // A finalizer may have made a new WeakRef to a member it did not resurrect: clear those
      // too, or a Lock() could hand out an object that Clear() is about to empty.
      for (Object* ob : garbage) {
        if (Rc::flags(ob).load(std::memory_order_relaxed) & kFlagHasWeakRefs) {
          ClearWeakSlotOf(ob, &weak_callbacks);
        }
      }
    });
    pause2 = absl::FromChrono(std::chrono::steady_clock::now() - stop2_start);
    result.time_stopped += pause2;
    if (check_failed) {
      ++result.errors;
      try {
        ReportError("brc: out of memory in the collector's resurrection check: this "
                    "collection's garbage survives until the next one");
      } catch (...) {
        ReportErrorRaw("the collector's resurrection check (out of memory)");
      }
    }
  }
  result.resurrected = resurrected.size();
  run_weak_callbacks();

  // World running: break the cycles, then let reference counting free them.
  for (Object* ob : garbage) {
    const TypeInfo* type = ob->type_info();
    ContextScope scope(Context::kClear, type);
    if (!Guarded("Clear()", type, [&] { type->gc->clear(ob); })) ++result.errors;
  }
  // Every Clear() has run, so garbage objects no longer reference each other: dropping one
  // frees only that one, and the next one's count is final. One still referenced from
  // elsewhere (an incomplete Clear, or one that stored the object somewhere) survives.
  // First merge what was queued to this thread meanwhile: an object it owns whose last
  // references were dropped by Clear() may still have its queued entry counted (found by the
  // collector stress program).
  DrainQueue(self);
  for (Object* ob : garbage) {
    if (Rc::RefCount(ob) > 1) ++result.uncollectable;
    // The collector still holds a reference, so nobody else writes the word now.
    GcWordOf(ob)->Unset(kGcGarbage);
    Rc::DecRef(ob);
  }
  result.collected = garbage.size() - result.uncollectable;
  // Keep the list's memory for the next collection, unless it is far larger than needed.
  garbage.clear();
  if (garbage.capacity() > 4 * std::max<std::size_t>(result.unreachable, 4096)) {
    garbage.shrink_to_fit();
  }
  GarbageBuffer() = std::move(garbage);
  for (Object* ob : resurrected) Rc::DecRef(ob);

  uint64_t survivors = result.scanned - result.collected;
  uint64_t threshold;
  double ratio;
  {
    std::lock_guard<std::mutex> lock(G().mu);
    threshold = G().config.threshold;
    ratio = G().config.ratio;
    CollectorStats& s = G().stats;
    ++s.collections;
    if (automatic) ++s.automatic_collections;
    s.collected += result.collected;
    s.uncollectable += result.uncollectable;
    s.resurrected += result.resurrected;
    s.finalized += result.finalized;
    s.errors += result.errors;
    s.tracked = survivors;
    s.heap_pages = heap_pages;
    RecordPause(pause1);
    if (!to_finalize.empty()) RecordPause(pause2);
  }
  // The next automatic collection waits for `ratio` x the surviving heap in new allocations:
  // the work per allocation stays bounded however large the heap grows (gh-114746).
  auto by_ratio = static_cast<uint64_t>(ratio * static_cast<double>(survivors));
  g_trigger.store(std::max(threshold, by_ratio), std::memory_order_relaxed);
  result.total_time = absl::FromChrono(std::chrono::steady_clock::now() - start);
  if (!RunCollectCallbacks(CollectPhase::kStop, result, &result)) {
    // The collection is done; only its kStop callbacks were skipped.
    ++result.errors;
    ReportErrorRaw("the collection callbacks at kStop (out of memory: skipped)");
  }
  return result;
}

// Why a collection cannot run on this thread now (a phrase for the error), or nullptr.
// Allocates nothing: automatic collections ask on every batch of allocations.
const char* CannotCollectReason() noexcept {
  ThreadState* self = t_state;
  if (self == nullptr) return "on a thread that is not attached";
  if (self->blocking_depth > 0) return "inside a brc::BlockingScope";
  if (ThisThreadStoppedTheWorld()) {
    return "while this thread holds the world stopped (brc::StopTheWorld)";
  }
  switch (t_context) {
    case Context::kNone: return nullptr;
    case Context::kCollecting: return "called during a collection on the same thread";
    case Context::kCallback: return "called from a collection callback";
    case Context::kWeakCallback: return "called from a weak-reference callback";
    case Context::kFinalizer: return "called from Finalize()";
    case Context::kClear: return "called from Clear()";
  }
  return nullptr;
}

absl::Status CheckCanCollect(const char* what) noexcept {
  const char* reason = CannotCollectReason();
  if (reason == nullptr) return absl::OkStatus();
  try {
    std::string msg = std::string(what) + " " + reason;
    if (t_context != Context::kNone) {
      if (t_context_type != nullptr) msg += " of type " + std::string(t_context_type->name);
      msg += ": collections do not nest";
    }
    return absl::FailedPreconditionError(msg);
  } catch (const std::bad_alloc&) {
    return absl::Status(absl::StatusCode::kFailedPrecondition, "");  // no memory for a message
  }
}

}  // namespace

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

void OnFrozenObjectFreed() noexcept { g_frozen.fetch_sub(1, std::memory_order_relaxed); }

void CountTrackedAllocations(uint32_t n) noexcept {
  g_allocs_since.fetch_add(n, std::memory_order_relaxed);
}

void OnTrackedAllocations(uint32_t n) {
  if (!g_enabled.load(std::memory_order_relaxed)) return;
  uint64_t total = g_allocs_since.fetch_add(n, std::memory_order_relaxed) + n;
  if (total < g_trigger.load(std::memory_order_relaxed)) return;
  if (CannotCollectReason() != nullptr) return;
  // Someone else is collecting (or waiting to): this allocation need not wait for it.
  std::unique_lock<std::mutex> lock(CollectLock(), std::try_to_lock);
  if (!lock.owns_lock()) return;
  (void)RunCollection(t_state, /*automatic=*/true);  // a failure only skips this one
}

}  // namespace brc::detail

namespace brc {

using detail::G;

absl::StatusOr<CollectResult> Collect() {
  if (absl::Status s = detail::CheckCanCollect("brc::Collect"); !s.ok()) return s;
  detail::LockCollection(detail::t_state);
  std::unique_lock<std::mutex> lock(detail::CollectLock(), std::adopt_lock);
  return detail::RunCollection(detail::t_state, /*automatic=*/false);
}

absl::Status SetCollectorConfig(const CollectorConfig& config) {
  if (config.threshold == 0) {
    return absl::InvalidArgumentError("SetCollectorConfig: threshold must be at least 1");
  }
  if (!std::isfinite(config.ratio) || config.ratio < 0) {
    return absl::InvalidArgumentError(
        "SetCollectorConfig: ratio must be a finite number >= 0, not " +
        std::to_string(config.ratio));
  }
  if (config.workers < 1 || config.workers > 256) {
    return absl::InvalidArgumentError("SetCollectorConfig: workers must be in [1, 256], not " +
                                      std::to_string(config.workers));
  }
  std::lock_guard<std::mutex> lock(G().mu);
  G().config = config;
  detail::g_workers.store(config.workers, std::memory_order_relaxed);
  uint64_t survivors = G().stats.tracked;
  auto by_ratio = static_cast<uint64_t>(config.ratio * static_cast<double>(survivors));
  detail::g_trigger.store(std::max(config.threshold, by_ratio), std::memory_order_relaxed);
  return absl::OkStatus();
}

CollectorConfig GetCollectorConfig() {
  std::lock_guard<std::mutex> lock(G().mu);
  return G().config;
}

void EnableCollector() noexcept { detail::g_enabled.store(true, std::memory_order_relaxed); }
void DisableCollector() noexcept { detail::g_enabled.store(false, std::memory_order_relaxed); }
bool IsCollectorEnabled() noexcept { return detail::g_enabled.load(std::memory_order_relaxed); }

namespace {

// Stops the world under the collection lock and applies fn to every tracked object.
absl::StatusOr<uint64_t> ForAllTracked(const char* what,
                                       absl::FunctionRef<bool(Object*, detail::GcWord*)> fn) {
  if (absl::Status s = detail::CheckCanCollect(what); !s.ok()) return s;
  detail::ThreadState* self = detail::t_state;
  detail::LockCollection(self);
  std::unique_lock<std::mutex> lock(detail::CollectLock(), std::adopt_lock);
  detail::ContextScope scope(detail::Context::kCollecting, nullptr);
  uint64_t n = 0;
  // Walks the heaps directly, without listing their pages: nothing here allocates, so Freeze
  // and Unfreeze cannot run out of memory.
  detail::WithWorldStopped(self, [&] {
    detail::ForEachThreadState([&](detail::ThreadState* ts) {
      detail::ForEachPage(ts->heap, [&](detail::GcPage* p) {
        for (uint32_t b = 0; b < p->bump; ++b) {
          detail::GcWord* w = p->word(b);
          if (w->Has(detail::kGcTracked) && fn(p->object(b), w)) ++n;
        }
      });
    });
  });
  return n;
}

}  // namespace

absl::StatusOr<uint64_t> Freeze() {
  auto n = ForAllTracked("brc::Freeze", [](Object*, detail::GcWord* w) {
    if (w->Has(detail::kGcFrozen)) return false;
    w->Set(detail::kGcFrozen);
    return true;
  });
  if (n.ok()) {
    std::lock_guard<std::mutex> lock(G().mu);
    detail::g_frozen.fetch_add(*n, std::memory_order_relaxed);
    G().stats.tracked -= std::min(G().stats.tracked, *n);
  }
  return n;
}

absl::StatusOr<uint64_t> Unfreeze() {
  auto n = ForAllTracked("brc::Unfreeze", [](Object*, detail::GcWord* w) {
    if (!w->Has(detail::kGcFrozen)) return false;
    w->Unset(detail::kGcFrozen);
    return true;
  });
  if (n.ok()) {
    std::lock_guard<std::mutex> lock(G().mu);
    detail::g_frozen.store(0, std::memory_order_relaxed);
    G().stats.tracked += *n;
  }
  return n;
}

uint64_t AddCollectCallback(CollectCallback callback) {
  std::lock_guard<std::mutex> lock(G().mu);
  uint64_t id = G().next_callback_id++;
  G().callbacks.emplace_back(id, std::move(callback));
  return id;
}

bool RemoveCollectCallback(uint64_t id) {
  CollectCallback doomed;  // destroyed after the lock is released
  std::lock_guard<std::mutex> lock(G().mu);
  auto& cbs = G().callbacks;
  for (auto it = cbs.begin(); it != cbs.end(); ++it) {
    if (it->first == id) {
      doomed = std::move(it->second);
      cbs.erase(it);
      return true;
    }
  }
  return false;
}

void SetCollectorErrorHandler(CollectorErrorHandler handler) {
  {
    std::lock_guard<std::mutex> lock(G().mu);
    std::swap(G().error_handler, handler);
  }
  // The previous handler is destroyed here, outside the lock (it may own objects).
}

bool IsTracked(const Object* ob) noexcept {
  const TypeInfo* type = ob->type_info();
  return type != nullptr && type->gc != nullptr && detail::GcWordOf(ob)->Has(detail::kGcTracked);
}

namespace {

class CollectVisitor final : public Visitor {
 public:
  explicit CollectVisitor(std::vector<Object*>* out) noexcept : Visitor(&Fn), out_(out) {}
  bool out_of_memory = false;  // a push failed: the caller throws std::bad_alloc

 private:
  static void Fn(Visitor* self, Object* r) noexcept {
    auto* me = static_cast<CollectVisitor*>(self);
    try {
      me->out_->push_back(r);
    } catch (const std::bad_alloc&) {
      me->out_of_memory = true;
    }
  }
  std::vector<Object*>* out_;
};

class FindVisitor final : public Visitor {
 public:
  explicit FindVisitor(const Object* target) noexcept : Visitor(&Fn), target_(target) {}
  bool found = false;

 private:
  static void Fn(Visitor* self, Object* r) noexcept {
    auto* me = static_cast<FindVisitor*>(self);
    if (r == me->target_) me->found = true;
  }
  const Object* target_;
};

}  // namespace

std::vector<Ref<Object>> GetReferents(const Object* ob) {
  std::vector<Ref<Object>> out;
  const TypeInfo* type = ob->type_info();
  if (type == nullptr || type->gc == nullptr) return out;
  std::vector<Object*> raw;
  CollectVisitor v(&raw);
  type->gc->trace(ob, v);
  if (v.out_of_memory) throw std::bad_alloc();
  out.reserve(raw.size());
  for (Object* r : raw) out.push_back(Ref<Object>::NewRef(r));
  return out;
}

std::vector<Ref<Object>> GetReferrers(const Object* target) {
  if (detail::t_collector_stopped) {
    detail::ReportMisuse(target, "brc::GetReferrers called while this thread holds the world "
                                 "stopped for a collection (from an allocator the collector "
                                 "called for its own lists): the heaps are being walked");
  }
  if (detail::StopInProgressOnThisThread()) {
    detail::ReportMisuse(target, "brc::GetReferrers from a stop-the-world watchdog handler (the "
                                 "world is not stopped yet, so the heaps cannot be walked)");
  }
  std::vector<Ref<Object>> out;
  auto scan = [&] {
    detail::PageList pages = detail::CollectPages();
    for (detail::GcPage* p : pages) {
      for (uint32_t b = 0; b < p->bump; ++b) {
        detail::GcWord* w = p->word(b);
        // Members of a running collection's garbage set are about to be cleared: never hand
        // one out.
        if (!w->Has(detail::kGcTracked) || w->Has(detail::kGcGarbage)) continue;
        Object* ob = p->object(b);
        FindVisitor v(target);
        detail::TraceObject(ob, v);
        // A new reference while the world is stopped: the referrer cannot be freed meanwhile.
        if (v.found) out.push_back(Ref<Object>::NewRef(ob));
      }
    }
  };
  if (detail::ThisThreadStoppedTheWorld()) {
    scan();
  } else {
    StopTheWorld stop;
    scan();
  }
  return out;
}

CollectorStats GetCollectorStats() {
  std::lock_guard<std::mutex> lock(G().mu);
  CollectorStats s = G().stats;
  s.frozen = detail::g_frozen.load(std::memory_order_relaxed);
  return s;
}

}  // namespace brc
