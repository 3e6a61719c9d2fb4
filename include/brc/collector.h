// The cycle collector: frees garbage reference cycles among tracked objects.
//
// Reference counting frees every object whose count reaches zero, but not objects that keep
// each other alive in a cycle. Types that can form cycles declare Trace and Clear (see
// brc/visitor.h); brc::Make then *tracks* their instances, and a collection finds tracked
// objects that are referenced only from other tracked objects and are unreachable from
// anything else (a Ref on a stack, in a global, in an untracked object, a count held by
// another thread). Leaf types (no Trace) are never tracked and cost the collector nothing.
//
// A collection (CPython's algorithm, run with the world stopped; protocol.md §5):
//  1. Every attached thread drains its merge queue and parks (brc/stop_the_world.h).
//  2. For each tracked object: its references from other tracked objects are counted; those
//     whose reference count is larger are referenced from outside and are roots; everything
//     the roots reach is alive, the rest is garbage. With workers > 1 this runs on oneTBB.
//  3. The collector takes a reference on each garbage object and clears the weak references to
//     it. The world restarts; weak-reference callbacks run, then finalizers (Finalize(), at most
//     once per object ever).
//  4. If any finalizer ran, the world stops again and anything a finalizer made reachable again
//     (resurrected), and everything it reaches, leaves the garbage set untouched.
//  5. Clear() runs on each remaining garbage object with the world running, then the collector
//     drops its references and ordinary decrements free the objects.
// Callbacks, finalizers and Clear() run on the collecting thread with the world running. An
// exception they throw is caught and reported (brc::SetCollectorErrorHandler) and the collection
// goes on.
//
// Young and full collections. Reference counts already include every reference from an old
// object to a young one, so a collection may examine only part of the heap: a *young*
// collection examines only the tracked objects allocated since the previous collection (the
// young set); a reference into the set from anything outside it, an older object included,
// makes its target a root, exactly like a reference from a stack. Garbage cycles entirely
// inside the young set are collected as by a full collection; the survivors are promoted
// (old from then on). A *full* collection examines every tracked object, so it also finds
// cycles that reach into old objects. No write barrier is needed, and finding the young set
// costs neither a walk of the heap nor an atomic on allocation (lib/gc_heap.h, "Young pages").
//
// Automatic collections run inside brc::Make of a tracked type once `young_threshold` tracked
// objects were allocated since the last collection. Each is a young collection, unless the old
// heap has grown by `full_ratio` times the objects that survived the last full collection
// (CPython's rule; growth: objects promoted since, less old objects freed since): then it is a
// full one. A young collection costs about the
// young set; full collections come each time the old heap grew by `full_ratio`, so the total
// work stays linear in the number of allocations however large the heap grows. A full
// collection that frees less than 1% of what it examined doubles a backoff factor on
// `full_ratio` (up to 16x; one that frees more resets it), so a heap that only grows is not
// examined four or five times over (lib/collector_schedule.cc; README "Young and full").
//
// The acyclic check: garbage that counting has not freed always contains a reference cycle, so
// a collection whose examined objects have none among them frees nothing. Each collection first
// walks its objects once to look for a cycle, and skips the counting passes when there is none
// (CollectResult::acyclic); after a walk that found one, the next collections of that kind skip
// the walk for a while (README "The acyclic check").
#ifndef BRC_COLLECTOR_H_
#define BRC_COLLECTOR_H_

#include <array>
#include <cstdint>
#include <functional>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "brc/object.h"
#include "brc/ref.h"
#include "brc/visitor.h"

namespace brc {

// Which objects a collection examined (see above).
enum class CollectKind { kYoung, kFull };

struct CollectResult {
  CollectKind kind = CollectKind::kFull;
  uint64_t scanned = 0;        // tracked objects examined (frozen ones are not)
  uint64_t promoted = 0;       // young: the survivors, old from now on (0 for a full one)
  uint64_t unreachable = 0;    // found unreachable by the first pass
  uint64_t resurrected = 0;    // made reachable again by a finalizer; not cleared, not freed
  uint64_t collected = 0;      // unreachable objects cleared and freed by this collection
  uint64_t uncollectable = 0;  // unreachable, but still referenced after Clear() (see README)
  uint64_t finalized = 0;      // Finalize() calls made
  uint64_t weak_callbacks = 0; // weak-reference callbacks run
  uint64_t errors = 0;         // exceptions caught from finalizers, callbacks and Clear()
  bool automatic = false;      // started by an allocation rather than brc::Collect()
  // The examined objects hold no reference cycle among them (one depth-first walk proved it),
  // so none can be garbage: the counting passes were skipped (young collections; README).
  bool acyclic = false;
  absl::Duration time_stopped; // total time the world was stopped (one or two stops)
  absl::Duration total_time;   // from the start of Collect() to its return
};

// Runs a full collection on the calling thread (which must be attached) and returns what it
// did. Runs even when automatic collection is disabled. Errors, with nothing collected:
//  * FailedPrecondition when called from a finalizer, Clear(), a weak-reference callback or a
//    collection callback (collections do not nest), or while this thread holds the world
//    stopped. The message names the rule and, for a finalizer or Clear(), the object's type.
//  * ResourceExhausted when the collector's own lists could not be allocated while marking
//    (the configured allocator failed): the world is restarted, nothing is collected, and
//    every object is as it was.
// Called while another thread is collecting, it waits for that collection to end (as if
// blocked, delaying nobody) and then runs its own.
absl::StatusOr<CollectResult> Collect();
// Runs a young collection: examines only the tracked objects allocated since the previous
// collection (of either kind) and promotes the survivors. Same errors as Collect().
absl::StatusOr<CollectResult> CollectYoung();

struct CollectorConfig {
  // An automatic collection runs when `young_threshold` tracked objects were allocated since
  // the last collection.
  uint64_t young_threshold = 2000;
  // It is a full collection when the old heap grew (objects promoted, less old objects freed)
  // by `full_ratio` x the tracked objects that survived the last full one since it ran;
  // otherwise a young one. With
  // `generational` false every automatic collection is full, and the next one waits for
  // max(young_threshold, full_ratio x the survivors) allocations (brc's schedule before young
  // collections: the same linear bound, with each collection examining the whole heap).
  double full_ratio = 0.25;
  bool generational = true;
  // Marking threads while the world is stopped: 1 marks on the collecting thread; more use a
  // oneTBB arena of that many threads. Small heaps are always marked serially.
  int workers = 1;
};
// Errors (InvalidArgument): young_threshold 0 or above 2^40, a full_ratio that is negative,
// not finite or above 1e6, workers < 1 or > 256.
absl::Status SetCollectorConfig(const CollectorConfig& config);
CollectorConfig GetCollectorConfig();

// Automatic collection on (the default) or off. Explicit Collect() always runs.
void EnableCollector() noexcept;
void DisableCollector() noexcept;
bool IsCollectorEnabled() noexcept;

// Freeze: every tracked object alive now is left out of later collections (never scanned, never
// freed by the collector; reference counting still frees it). For a long-lived heap built at
// start-up. Returns the number of objects frozen. Unfreeze returns them all to collections.
// Both stop the world; errors as for Collect().
absl::StatusOr<uint64_t> Freeze();
absl::StatusOr<uint64_t> Unfreeze();

enum class CollectPhase { kStart, kStop };
// Called on the collecting thread, with the world running, before (kStart, result empty) and
// after (kStop, the final result) each collection. Returns an id for RemoveCollectCallback.
using CollectCallback = std::function<void(CollectPhase, const CollectResult&)>;
uint64_t AddCollectCallback(CollectCallback callback);
bool RemoveCollectCallback(uint64_t id);

// Where exceptions from finalizers, callbacks and Clear() are reported: the message names the
// type and the exception's what(). Default: one line on stderr. nullptr restores the default.
using CollectorErrorHandler = std::function<void(std::string_view message)>;
void SetCollectorErrorHandler(CollectorErrorHandler handler);

// Whether `ob` is tracked (a container type, constructed and not being destroyed).
bool IsTracked(const Object* ob) noexcept;
// The objects `ob` references, as reported by its Trace (empty for a leaf). Caller: attached.
std::vector<Ref<Object>> GetReferents(const Object* ob);
// The tracked objects whose Trace reports `ob`. Stops the world to walk the heap.
std::vector<Ref<Object>> GetReferrers(const Object* ob);

// Pause-time histogram: bucket i counts stops that lasted [2^i, 2^(i+1)) microseconds (bucket 0
// also holds shorter ones, the last bucket longer ones).
inline constexpr int kPauseBuckets = 24;

struct CollectorStats {
  uint64_t collections = 0;        // young + full
  uint64_t young_collections = 0;
  uint64_t full_collections = 0;
  uint64_t automatic_collections = 0;
  uint64_t collected = 0;
  uint64_t uncollectable = 0;
  uint64_t resurrected = 0;
  uint64_t finalized = 0;
  uint64_t errors = 0;
  uint64_t promoted = 0;           // young survivors promoted, all collections
  uint64_t acyclic_collections = 0;  // collections with CollectResult::acyclic
  // Tracked objects alive after the last full collection plus those promoted since (old
  // objects freed by counting since are not subtracted: an upper bound).
  uint64_t tracked = 0;
  uint64_t frozen = 0;             // objects frozen now
  uint64_t heap_pages = 0;         // pages of the collector's heap
  absl::Duration total_stopped;    // all collections' stopped time
  absl::Duration max_pause;        // the longest single stop
  absl::Duration young_stopped;    // stopped time of young collections
  absl::Duration young_max_pause;  // their longest stop
  absl::Duration full_stopped;     // stopped time of full collections
  absl::Duration full_max_pause;   // their longest stop
  std::array<uint64_t, kPauseBuckets> pause_histogram{};  // both kinds
};
CollectorStats GetCollectorStats();

}  // namespace brc

#endif  // BRC_COLLECTOR_H_
