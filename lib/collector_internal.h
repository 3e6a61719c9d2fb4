// The cycle collector's parts and what they share. Layer: collector, on top of stop-the-world,
// the collector heap (lib/gc_heap.h) and reference counting. The public contract is in
// brc/collector.h; the algorithm is protocol.md §5. The files, in the order a collection runs:
//
//   collector_schedule.cc   when to collect and which kind (young or full), configuration,
//                           statistics, collection callbacks, error reports, nesting rules
//   collector_pages.cc      with the world stopped, first: which pages to examine, merging
//                           parked owners' queues; after marking, emptying the young lists
//   collector_mark.cc       with the world stopped: counting internal references, marking
//                           from the roots (by parts with several workers), the garbage list,
//                           promotion, the resurrection check
//   collector_acyclic.cc    with the world stopped, before counting: the acyclic check, one
//                           walk that proves a cycle-free set holds no garbage
//   mark_stack.h            the stacks of marking and of the acyclic check (mmap'd)
//   collector.cc            one collection from start to end: stop 1 (mark, take the garbage,
//                           clear weak references), weak callbacks and finalizers with the world
//                           running, stop 2 (resurrection), Clear(), the final decrements
//   collector_introspect.cc Freeze/Unfreeze, IsTracked, GetReferents, GetReferrers
//
// Which threads run what:
//  * A collection: one thread at a time (the collection lock), attached. Marking runs with the
//    world stopped, on that thread or on a oneTBB arena (lib/parallel.h); callbacks,
//    finalizers, Clear() and the final decrements run on it with the world running.
//  * OnTrackedAllocations(): every allocating thread, every kGcAllocBatch tracked allocations;
//    it starts an automatic collection when the schedule says so and nobody else is collecting.
//
// Invariants:
//  * Outside a collection's stops every tracked object's owner half holds its owner (the
//    scratch counts are put back), it has no kGcGarbage, and its mark epoch is 0 (young) or
//    older than the next collection's.
//  * An object with kGcTracked is fully constructed and not being destroyed (Make sets it last,
//    Dealloc clears it first), so Trace may run on it while the world is stopped.
//  * A young collection reads, and never writes, the collector state of an object outside the
//    young set: old objects keep their owner, their marks and their bits.
//  * No user code (an Allocator) runs while a scratch count is in use (gc_word.h): what the
//    stops allocate is allocated before the counting or after every owner is back.
//  * The collector holds one strong reference on every object of its garbage set from the
//    first stop until the end, so none of them is freed while it works on them.
//  * kGcFinalized is set, with the world stopped, before Finalize() runs and never cleared.
#ifndef BRC_LIB_COLLECTOR_INTERNAL_H_
#define BRC_LIB_COLLECTOR_INTERNAL_H_

#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "brc/collector.h"
#include "brc/detail/config.h"
#include "gc_heap.h"
#include "internal_alloc.h"
#include "stop_the_world.h"

namespace brc::detail {

struct ThreadState;

// The collector's own lists come from the object allocator (lib/internal_alloc.h), so that an
// allocator that fails makes a collection fail the documented way.
using ObjectList = InternalVector<Object*>;
using PageList = InternalVector<GcPage*>;

// ---- collector_schedule.cc ----

// Configuration, statistics and the schedule's state, under `mu`.
struct Shared {
  std::mutex mu;  // guards everything below
  CollectorConfig config;
  CollectorErrorHandler error_handler;
  std::vector<std::pair<uint64_t, CollectCallback>> callbacks;
  uint64_t next_callback_id = 1;
  CollectorStats stats;
  // The old heap as the schedule sees it: the objects that survived the last full collection,
  // and those promoted by young collections since (CPython's long_lived_total and _pending).
  uint64_t old_after_full = 0;
  uint64_t promoted_since_full = 0;
  // g_old_freed when the last full collection ended: the old objects freed since then shrink
  // the old heap (FullDue). A collection's garbage is not among them: it dies with
  // kGcEpochCollected, which Dealloc does not count.
  uint64_t old_freed_at_full = 0;
  // Multiplies full_ratio: doubled (up to kMaxFullBackoff) after each full collection that
  // found (almost) no garbage, back to 1 after one that did (collector_schedule.cc).
  uint32_t full_backoff = 1;
};
Shared& G();

// Relaxed throughout: these only decide when to collect, never what is garbage.
extern std::atomic<bool> g_enabled;
extern std::atomic<uint64_t> g_allocs_since;  // tracked allocations since the last collection
extern std::atomic<uint64_t> g_trigger;       // allocations that start the next one
extern std::atomic<int> g_workers;
extern std::atomic<uint64_t> g_frozen;        // objects frozen now (CollectorStats::frozen)

// One collection (or Freeze/Unfreeze, or GetReferrers' walk) at a time.
std::mutex& CollectLock();

// What the calling thread is doing inside a collection, for the nesting errors.
enum class Context { kNone, kCollecting, kCallback, kWeakCallback, kFinalizer, kClear };
extern constinit thread_local Context t_context;
extern constinit thread_local const TypeInfo* t_context_type;
// t_collector_stopped: see lib/gc_heap.h.

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
  ContextScope(const ContextScope&) = delete;
  ContextScope& operator=(const ContextScope&) = delete;

 private:
  Context saved_;
  const TypeInfo* saved_type_;
};

// Why a collection cannot run on this thread now (a phrase for the error), or nullptr.
// Allocates nothing: automatic collections ask on every batch of allocations.
const char* CannotCollectReason() noexcept;
// FailedPrecondition naming the rule when CannotCollectReason() says so; never throws.
absl::Status CheckCanCollect(const char* what) noexcept;

// Last resort when a report cannot be built or delivered (out of memory, or the handler
// threw): a fixed line on stderr, written without allocating.
void ReportErrorRaw(const char* what) noexcept;
// Delivers `message` to the error handler (default: a line on stderr). May throw bad_alloc.
void ReportError(const std::string& message);
// Reports the exception being handled: where (`what`, of `type`), its type and message.
// Never throws (falls back to ReportErrorRaw).
void ReportCurrentException(const char* what, const TypeInfo* type) noexcept;

// Runs fn, catching and reporting what it throws. Returns false if it threw. Never throws
// itself: it runs inside decrements, which cannot fail.
template <class Fn>
bool Guarded(const char* what, const TypeInfo* type, Fn&& fn) noexcept {
  try {
    fn();
    return true;
  } catch (...) {
    ReportCurrentException(what, type);
  }
  return false;
}

// A ResourceExhausted status with `message`, or, when even the message cannot be allocated,
// with none (a status without a message needs no memory).
absl::Status OutOfMemoryStatus(const char* message) noexcept;

// Runs the collection callbacks (a copy of the list, so that they may add and remove
// callbacks). False when the copy could not be allocated: none ran.
bool RunCollectCallbacks(CollectPhase phase, const CollectResult& result, CollectResult* out);

// The kind of the automatic collection due now.
CollectKind AutomaticKind();
// After a collection: statistics, and the schedule of the next automatic one.
// `pauses`: the stops' durations (the second is zero when there was one stop).
void RecordCollection(const CollectResult& result, absl::Duration pause1, absl::Duration pause2,
                      uint64_t heap_pages);

// ---- collector_mark.cc (world stopped unless said otherwise) ----

inline void TraceObject(Object* ob, Visitor& v) { ob->type_info()->gc->trace(ob, v); }

// The pages a collection examines. Full: every page of every heap, after sweeping remote
// frees and empty pages. Young: the heaps' young lists only (no sweep). Throws bad_alloc.
PageList CollectPages();
PageList YoungPages();
// The sum of every heap's pages (a statistic).
uint64_t CountHeapPages() noexcept;

// Starts a collection's mark epoch (at its rare wrap-around every examined object's mark is
// reset to 1 first).
uint32_t NextEpoch() noexcept;

// A candidate of a collection (tracked, unfrozen; young: never examined, full: not marked by
// the running collection, whose epoch is `running`), the kind fixed at compile time (the
// passes' inner loops: nothing reloaded after each indirect Trace call). Before marking starts
// only objects made during the stop, by an Allocator the collector called, carry the running
// epoch (TrackConstructed): they are no candidates, so their references count as external,
// like a stack's.
template <bool kYoung>
inline bool IsCandidateOf(uint8_t bits, uint16_t epoch, uint32_t running) noexcept {
  return (bits & (kGcTracked | kGcFrozen)) == kGcTracked &&
         (kYoung ? epoch == 0 : epoch != running);
}

struct MarkStack;
// The acyclic check (collector_acyclic.cc), run by Mark before it counts. True when the
// candidates of `pages` have no reference cycle among them: each then carries `epoch`,
// *scanned counts them, and nothing else changed but kGcWasYoung on those that were young in
// a full collection (ClearWasYoung). False when it found a cycle or `stack` could not grow:
// then UndoAcyclicCheck must run, with `marked` the count it left in *scanned. No allocation,
// no user code but Trace.
// The walk goes oldest first (allocation order) or newest first, as `walk` says; it reports
// how many candidates it had to enter depth first, which the schedule (collector.cc) uses to
// pick the order of the next check.
struct AcyclicWalk {
  bool newest_first = false;  // in
  uint64_t deep = 0;          // out: candidates marked by the depth-first part of the walk
};
bool CheckAcyclic(const PageList& pages, bool young, uint32_t epoch, MarkStack* stack,
                  uint64_t* scanned, AcyclicWalk* walk) noexcept;
void UndoAcyclicCheck(const PageList& pages, bool young, bool newest_first, uint32_t epoch,
                      uint64_t marked) noexcept;

struct MarkResult {
  ObjectList garbage;  // kGcGarbage set on each
  uint64_t scanned = 0;
  bool acyclic = false;  // proven acyclic, so no garbage: no counting passes ran
};
// Finds the unreachable objects among the candidates in `pages`: every tracked, unfrozen
// object, or with `young` only the young ones (mark epoch 0). `take` runs on each garbage object
// (on this thread), `prepare(n)` before the first with the number to come; `reuse` lends its
// storage to the result. Throws bad_alloc before the first `take` only; then ResetScratch.
// With `acyclic_walk` (else nullptr) it first tries to prove the candidates acyclic, which
// needs no counting (collector_acyclic.cc), walking them in the order it says.
MarkResult Mark(const PageList& pages, bool young, AcyclicWalk* acyclic_walk, int workers,
                uint32_t epoch, absl::FunctionRef<void(Object*)> take,
                absl::FunctionRef<void(std::size_t)> prepare, ObjectList* reuse);
// After a failed Mark of `epoch`: back to the between-collections state (owners restored, no
// kGcGarbage; a young collection's marks undone, so its objects are young again). No
// allocation.
void ResetScratch(const PageList& pages, bool young, uint32_t epoch) noexcept;
// After a successful full collection's mark: clears the kGcWasYoung that marking (or the
// acyclic check) left on the objects that were young. World stopped; no allocation.
void ClearWasYoung() noexcept;
// After a successful mark: every young object is old now (marked or garbage, it has an
// epoch), so the heaps' young lists are emptied. No allocation.
void ClearYoungLists() noexcept;
// Merges the queues of other (parked) attached threads on their behalf; objects found dead
// keep one reference, appended to `dead`, for the caller to drop with the world running.
void MergeParkedQueues(ThreadState* self, ObjectList* dead) noexcept;
// Tests (brc/testing.h), with the collection lock held: returns the mark stacks' memory and caps
// them at `max_entries` (0: no cap); the acyclic check's schedule forgets its backoff.
void LimitMarkStacks(std::size_t max_entries);
void ResetAcyclicSchedule() noexcept;
// The rounds of the last counting mark (brc::testing::LastMarkRoundsForTesting).
int LastMarkRounds() noexcept;
// The order the next acyclic check of each kind walks in ([young, full]); read and set.
bool AcyclicWalkNewestFirst(bool young) noexcept;
void SetAcyclicWalkNewestFirst(bool newest_first) noexcept;
// Removes from the garbage set (clears kGcGarbage on) every member that something outside the
// set references, beyond the collector's own reference, and every member they reach.
// Throws bad_alloc.
void FindResurrected(const ObjectList& garbage);

// ---- collector.cc ----

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
void LockCollection(ThreadState* self);

// One collection on `self`, which holds the collection lock and may collect.
absl::StatusOr<CollectResult> RunCollection(ThreadState* self, CollectKind kind,
                                            bool automatic);

}  // namespace brc::detail

#endif  // BRC_LIB_COLLECTOR_INTERNAL_H_
