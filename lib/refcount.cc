// The refcount slow paths: every transition of protocol.md §2 that the inline fast paths in
// brc/refcount.h send here, plus freeing.
//
// Which threads run what:
//  * IncRefSlow / DecRefSlow: any thread, after the fast path declined. They sort out misuse
//    (not attached, count already zero), immortality, local saturation and the owner's count
//    reaching zero.
//  * SharedIncRefEdge / SharedDecRef: non-owners, on the shared word only.
//  * ExplicitMerge: the owner (queue drain), or a thread holding an exited/blocked owner's
//    queue lock (see lib/merge_queue.cc).
//
// Invariants (see also brc/object.h):
//  * owner and local (the biased word) are written as 0 *before* the CAS that publishes kStateMerged, so a
//    thread that sees merged never sees a stale owner (CPython gh-119999, gh-121794).
//  * The owner reads the shared word with acquire when its count reaches zero: other threads'
//    releasing decrements happen-before a free here (gh-117657).
//  * Saturation is sticky: no path subtracts from a count in the saturation band, and every
//    increment that lands in it re-centres it.
#include <atomic>
#include <cstdint>
#include <vector>

#include "brc/detail/thread_local.h"
#include "brc/hot.h"
#include "brc/ref.h"
#include "brc/refcount.h"
#include "brc/stats.h"
#include "brc/stop_the_world.h"
#include "brc/testing.h"
#include "brc/thread.h"
#include "allocator_internal.h"
#include "debug.h"
#include "gc_heap.h"
#include "merge_queue.h"
#include "per_thread.h"
#include "stop_the_world.h"
#include "thread_state.h"
#include "weak_table.h"

namespace brc::detail {
namespace {


}  // namespace

void Rc::ReportNotAttached(const Object* ob) noexcept {
  if (t_state != nullptr) {
    ReportMisuse(ob, "reference count operation inside a brc::BlockingScope (a blocked thread "
                     "must not touch objects)");
  }
  ReportMisuse(ob, "reference count operation on a thread that is not attached (create a "
                   "brc::ThreadScope first)");
}

namespace {

// Frees of objects whose destructors or weak callbacks are already running on this thread
// kMaxDeallocDepth deep are deferred to the outermost Dealloc, so dropping a long chain (a
// million-node list, or weak callbacks that each drop the next object) uses bounded stack. The
// deferred objects form an intrusive list through their own dead count fields (the biased word
// holds the next pointer), so deferring never allocates.
constexpr int kMaxDeallocDepth = 64;
constinit thread_local int t_dealloc_depth = 0;
constinit thread_local Object* t_deferred = nullptr;
// Cleared weak slots whose callbacks wait for the outermost Dealloc, linked through the slots.
constinit thread_local WeakSlot* t_deferred_slots = nullptr;

// A stop of the world requested while this thread frees a long cascade (dropping a tree or a
// list) waits for the whole cascade: measured, two threads building and dropping tracked trees
// of 131k nodes spent more time waiting for each other's drops than collecting. Inside a
// brc::ParkableFrees scope each free first honours a pending stop with a safepoint (which
// drains the queue, then parks), except inside a drain (t_draining: a drain completes before
// its thread parks). It is the safepoint a destructor may call itself: the dying object is no
// longer tracked (Dealloc's first step), so a collection run meanwhile does not trace it, and
// what it still references counts as referenced from outside; deferred objects are untracked
// too. Not by default: a thread that frees while holding a lock that another attached thread
// waits for outside a BlockingScope would deadlock the stop (the collector's concurrent test
// does exactly that with a table of references under a std::mutex). Costs a compare of a
// thread-local per free outside the scope; inside, a relaxed load more.
BRC_ALWAYS_INLINE void HonourStopRequest() noexcept {
  // The scope first: outside one (the common case) this is one compare of a thread-local.
  if (BRC_LIKELY(t_parkable_frees == 0)) return;
  std::atomic<uint32_t>* pending = tls_pending;
  // Relaxed: the bit only says "look"; ParkIfStopped reads the stop's state under its mutex.
  // Never on the thread holding the world stopped: no stop can be waiting for it then.
  if (pending != nullptr && BRC_UNLIKELY(pending->load(std::memory_order_relaxed) & kPendingStop) &&
      t_draining == 0 && !ThisThreadStoppedTheWorld()) {
    SafepointSlow();
  }
}

void PushDeferred(Object* ob) noexcept {
  auto next = reinterpret_cast<uintptr_t>(t_deferred);
  // Relaxed: the object is dead and unreachable (its weak slot is already cleared); only this
  // thread reads these fields again. The shared word reads "zero, merged", so a buggy count
  // operation on the object in the meantime is still reported as misuse.
  Rc::shared(ob).store(kStateMerged, std::memory_order_relaxed);
  Rc::biased(ob).store(next, std::memory_order_relaxed);
  t_deferred = ob;
}

Object* PopDeferred() noexcept {
  Object* ob = t_deferred;
  uintptr_t next = Rc::biased(ob).load(std::memory_order_relaxed);
  t_deferred = reinterpret_cast<Object*>(next);
  return ob;
}

BRC_ALWAYS_INLINE void DestroyAndFree(Object* ob, const TypeInfo* type) noexcept {
  void* mem = type->destroy(ob);
  BRC_STAT_ALWAYS_INC(frees);
#ifdef BRC_DEBUG
  Quarantine(ob, mem, type);  // poisons the header and keeps the memory for a while
#else
  if (type->gc != nullptr) {
    FreeTrackedBlock(mem);
  } else {
    ReleaseObjectStorage(mem, type->size, type->align);
  }
#endif
}

}  // namespace

void Rc::IncRefSlow(Object* ob) noexcept {
  uint64_t biased = ob->biased_.load(std::memory_order_relaxed);  // relaxed: see IncRef
  uint32_t local = LocalOf(biased);
  if (tls_tid == kNotAttached) ReportNotAttached(ob);
  if (local == kLocalImmortal) return;
  if (OwnerOf(biased) != tls_tid) {
    // Reached only from the inline path's owner branch; re-route to the shared word.
    int32_t old = ob->shared_.fetch_add(kSharedOne, std::memory_order_relaxed);
    BRC_OP_STAT_INC(shared_increfs);
    SharedIncRefEdge(ob, old);
    return;
  }
  if (local == 0) {
    ReportMisuse(ob, "increment of an object whose reference count is zero (use after free)");
  }
  // local >= 2^31, below kLocalImmortal. At kLocalImmortal - 1 one more reaches the marker:
  // the count saturates and the object is immortal.
  SetBiased(ob, tls_tid, local + 1);
  BRC_OP_STAT_INC(local_increfs);
  if (local + 1 == kLocalImmortal) BRC_STAT_INC(saturated);
}

void Rc::SharedIncRefEdge(Object* ob, int32_t old) noexcept {
  if (old == kStateMerged) {
    ReportMisuse(ob, "increment of an object whose reference count is zero (use after free)");
  }
  if (InSaturationBand(CountOf(old) + 1)) {
    if (!InSaturationBand(CountOf(old))) BRC_STAT_INC(saturated);
    Saturate(ob);
  }
}

bool Rc::Saturate(Object* ob) noexcept {
  // Re-centre the count in the band, keeping the state bits. Relaxed: an immortal object is
  // never freed, so no ordering depends on this write. Returns true for the one call that
  // moved the count into the band (so racing callers count a saturation once).
  int32_t cur = ob->shared_.load(std::memory_order_relaxed);
  while (CountOf(cur) != kSharedSaturated) {
    if (ob->shared_.compare_exchange_weak(cur, Word(kSharedSaturated, StateOf(cur)),
                                          std::memory_order_relaxed,
                                          std::memory_order_relaxed)) {
      return !InSaturationBand(CountOf(cur));
    }
  }
  return false;
}

void Rc::DecRefSlow(Object* ob) noexcept {
  uint64_t biased = ob->biased_.load(std::memory_order_relaxed);  // relaxed: see IncRef
  uint32_t local = LocalOf(biased);
  if (tls_tid == kNotAttached) ReportNotAttached(ob);
  if (local == kLocalImmortal) return;
  if (OwnerOf(biased) != tls_tid) {
    SharedDecRef(ob);
    return;
  }
  if (local == 0) {
    ReportMisuse(ob, "negative reference count: decrement of an object whose count is already "
                     "zero (more releases than references, or use after free)");
  }
  if (local != 1) {  // a count of 2^31 or more, below kLocalImmortal
    SetBiased(ob, tls_tid, local - 1);
    BRC_OP_STAT_INC(local_decrefs);
    return;
  }
  // local == 1: the owner's half reaches zero. Stored as unowned (with the shared word merged
  // before any free, MergeZeroLocal), so that a destructor touching the dying object takes
  // the shared path and is reported as a use after free: the owner's inline increment has no
  // range test that would catch a count of zero.
  SetBiased(ob, kNoOwner, 0);
  BRC_OP_STAT_INC(local_decrefs);
  MergeZeroLocal(ob);
}

void Rc::MergeZeroLocal(Object* ob) noexcept {
  // Acquire pairs with the acq_rel decrements and queue CASes of other threads: their writes to
  // the object happen-before a free here.
  int32_t shared = ob->shared_.load(std::memory_order_acquire);
  if (shared == 0) {
    // No other thread ever took a reference, no weak reference, nothing queued: free with no
    // atomic read-modify-write at all. Published as "zero, merged" first (a plain store:
    // nobody else holds a reference), so that owner 0 still implies merged (gh-121794) and a
    // resurrecting increment is reported.
    ob->shared_.store(kStateMerged, std::memory_order_relaxed);
    Dealloc(ob);
    return;
  }
  // Ownership was given up (owner 0, local 0) by the caller before this publishes merged
  // (gh-119999). Ordered before the CAS by its release.
  int32_t desired;
  do {
    int32_t count = CountOf(shared);
    // A queued entry still holds one reference that the count does not show yet.
    int32_t pending = StateOf(shared) == kStateQueued ? 1 : 0;
    if (InSaturationBand(count)) {
      desired = Word(kSharedSaturated, kStateMerged);
    } else if (count - pending < 0) {
      ReportMisuse(ob, "negative reference count: the owner released its last reference while "
                       "other threads had released more than they took");
    } else {
      if (pending == 1 && count == 1) {
        // Only the queue entry is left: the object is dead and waits for this thread's drain.
        // Published by the release of the CAS below, before anyone can see it merged.
        ob->flags_.fetch_or(kFlagDead, std::memory_order_relaxed);
      }
      desired = Word(count, kStateMerged);
    }
  } while (!ob->shared_.compare_exchange_weak(shared, desired, std::memory_order_acq_rel,
                                              std::memory_order_acquire));
  BRC_STAT_INC(merges);
  if (desired == kStateMerged) Dealloc(ob);
}

void Rc::SharedDecRef(Object* ob) noexcept {
  // Counted per thread (DecRefSlow comes here too): never freed by a decrement.
  if (BRC_UNLIKELY(IsPerThread(ob))) {
    PerThreadSharedDecRef(ob);
    return;
  }
  int32_t old = ob->shared_.load(std::memory_order_relaxed);
  // The inline path gives up only when its compare-and-swap failed or the count is at an edge.
  // A word back in the inline path's range means the swap lost a race with another thread:
  // that is what the contention detector counts (lib/per_thread.cc).
  if (old >= kSharedOne && old < (kSharedSaturationMin << kSharedShift) &&
      tls_tid != kNotAttached) {
    NoteContention(ob);
  }
  for (;;) {
    int32_t count = CountOf(old);
    int32_t state = StateOf(old);
    if (InSaturationBand(count)) return;  // immortal: never decremented
    if (count == 0 && (state == kStateDefault || state == kStateMaybeWeak)) {
      // The owner still holds the rest in its local half. Do not subtract: mark queued and hand
      // this reference to the queue entry. Release: this thread's writes to the object reach
      // the owner, which may free it.
      if (ob->shared_.compare_exchange_weak(old, Word(0, kStateQueued), std::memory_order_acq_rel,
                                            std::memory_order_relaxed)) {
        BRC_OP_STAT_INC(shared_decrefs);
        QueueToOwner(ob);
        return;
      }
      continue;
    }
    if (state == kStateMerged && count <= 0) {
      ReportMisuse(ob, "negative reference count: decrement of an object whose count is already "
                       "zero (more releases than references, or use after free)");
    }
    if (count <= kSharedNegativeLimit) {
      // Would leave the 30-bit range: leak rather than wrap.
      if (Saturate(ob)) BRC_STAT_INC(saturated);
      return;
    }
    int32_t desired = old - kSharedOne;
    if (ob->shared_.compare_exchange_weak(old, desired, std::memory_order_acq_rel,
                                          std::memory_order_relaxed)) {
      BRC_OP_STAT_INC(shared_decrefs);
      if (desired == kStateMerged) Dealloc(ob);
      return;
    }
  }
}

bool Rc::ExplicitMerge(Object* ob, int32_t extra) noexcept {
  uint32_t local = Local(ob);
  if (local == kLocalImmortal) return false;
  if (IsPerThread(ob)) {
    // Switched while a merge-queue entry held it (the switch folded the owner's half): the
    // entry's reference goes through the shared word, and a merge pass decides its fate.
    BRC_CHECK(extra <= 0, "a positive merge of an object counted per thread");
    for (int32_t i = extra; i < 0; ++i) PerThreadSharedDecRef(ob);
    return false;
  }
  // Zero the owner's half and give up ownership before the CAS publishes merged (gh-119999).
  SetBiased(ob, kNoOwner, 0);
  int32_t shared = ob->shared_.load(std::memory_order_relaxed);
  int32_t desired;
  bool saturates;
  do {
    saturates = false;
    int64_t total = int64_t{CountOf(shared)} + local + extra;
    if (InSaturationBand(CountOf(shared)) || total >= kSharedSaturationMin) {
      desired = Word(kSharedSaturated, kStateMerged);
      saturates = !InSaturationBand(CountOf(shared));
    } else if (total < 0) {
      ReportMisuse(ob, "negative reference count found while merging the local and shared "
                       "counts (more releases than references)");
    } else {
      desired = Word(static_cast<int32_t>(total), kStateMerged);
    }
  } while (!ob->shared_.compare_exchange_weak(shared, desired, std::memory_order_acq_rel,
                                              std::memory_order_relaxed));
  BRC_STAT_INC(merges);
  if (saturates) BRC_STAT_INC(saturated);  // the sum did not fit: immortal
  return desired == kStateMerged;
}

bool Rc::TryIncRef(Object* ob) noexcept {
  uint64_t biased = ob->biased_.load(std::memory_order_relaxed);  // relaxed: see IncRef
  if (tls_tid == kNotAttached) ReportNotAttached(ob);
  if (LocalOf(biased) == kLocalImmortal) return true;
  if (OwnerOf(biased) == kPerThreadOwner) {
    // Counted per thread: not freed before a merge pass finds it dead, and a pass leaves it
    // an ordinary (dead) object, so while it reads per-thread it is alive. A Lock() between
    // its last DecRef and that pass succeeds (brc/hot.h).
    IncRef(ob);
    return true;
  }
  int32_t shared = ob->shared_.load(std::memory_order_acquire);
  if (OwnerOf(biased) == tls_tid) {
    // Owned by this thread, so nobody else can give up ownership or free it without this
    // thread's merge: the local half is exact. Refuse an object whose only reference left is a
    // merge-queue entry (another thread dropped the last one): it is dead, awaiting its merge.
    if (StateOf(shared) == kStateQueued &&
        int64_t{LocalOf(biased)} + CountOf(shared) - 1 <= 0 && !InSaturationBand(CountOf(shared))) {
      return false;
    }
    IncRef(ob);
    return true;
  }
  for (;;) {
    // 0: default state, the owner may free it without atomics (not maybe-weak: refuse).
    // kStateMerged: count zero and unowned, it is being freed.
    if (shared == 0 || shared == kStateMerged) return false;
    int32_t count = CountOf(shared);
    if (InSaturationBand(count)) return true;
    // Dead, waiting for a merge or the collector's last drop (kFlagDead is set before the
    // count that still includes that reference is published; the acquire loads of `shared`
    // make it visible here).
    if (ob->flags_.load(std::memory_order_relaxed) & kFlagDead) return false;
    if (StateOf(shared) == kStateQueued) {
      // Queued: the entry holds one reference the count does not show. If the owner's half is
      // all that is left besides it, the true count is zero and the object only waits for its
      // owner's merge to be freed: refuse. The owner's half is read racily (relaxed), so the
      // shared word is read again: if it moved (the owner merged meanwhile, say), decide again
      // from the new value rather than from a mix of old and new. What is left is the race in
      // the README ("Weak references").
      uint64_t now = ob->biased_.load(std::memory_order_relaxed);
      int32_t again = ob->shared_.load(std::memory_order_acquire);
      if (again != shared || OwnerOf(now) == kNoOwner) {
        shared = again;
        continue;
      }
      if (int64_t{LocalOf(now)} + count - 1 <= 0) return false;
    }
    // Acquire pairs with the release of whoever published the object's current contents.
    if (ob->shared_.compare_exchange_weak(shared, shared + kSharedOne, std::memory_order_acquire,
                                          std::memory_order_acquire)) {
      BRC_OP_STAT_INC(shared_increfs);
      if (BRC_UNLIKELY(InSaturationBand(count + 1))) {
        // This reference took the count into the saturation band: immortal from now on,
        // re-centred and counted like every other path that saturates.
        BRC_STAT_INC(saturated);  // `count` was below the band: this call crossed into it
        Saturate(ob);
      }
      return true;
    }
  }
}

void Rc::SetMaybeWeak(Object* ob) noexcept {
  int32_t shared = ob->shared_.load(std::memory_order_relaxed);
  // Only the default state changes: queued and merged already force the owner onto the atomic
  // path. Relaxed: the caller holds a reference, and the weak table's lock publishes the slot.
  while (StateOf(shared) == kStateDefault &&
         !ob->shared_.compare_exchange_weak(shared, shared | kStateMaybeWeak,
                                            std::memory_order_relaxed,
                                            std::memory_order_relaxed)) {
  }
}

void Rc::Dealloc(Object* ob) noexcept {
  const TypeInfo* type = ob->type_;
  BRC_CHECK(type != nullptr, "freeing an object that brc::Make did not finish creating");
  // A dying object leaves the collector's view before anything else happens to it: a
  // collection that a destructor triggers must not trace it (or its deferred-list header).
  if (type->gc != nullptr) {
    // A plain update: at count zero no other thread writes the bits (brc/detail/gc_word.h).
    uint8_t bits = ob->gc_bits_.load(std::memory_order_relaxed);
    ob->gc_bits_.store(static_cast<uint8_t>(bits & ~kGcTracked), std::memory_order_relaxed);
    if (bits & kGcFrozen) {
      OnFrozenObjectFreed();
    } else if (uint16_t epoch = ob->gc_epoch_.load(std::memory_order_relaxed);
               epoch != 0 && epoch != kGcEpochCollected) {
      NoteOldFreed();  // an old object leaves the old heap (not one a collection took)
    }
  }
  // First make the object unreachable through weak references (no user code, no allocation).
  // Relaxed: the decrement that took the count to zero (acquire) ordered every writer of the
  // flag before this point.
  WeakSlot* callbacks = nullptr;
  if (ob->flags_.load(std::memory_order_relaxed) & kFlagHasWeakRefs) {
    callbacks = ClearWeakSlot(ob);
  }
  if (t_dealloc_depth >= kMaxDeallocDepth) {
    // Too deep: the outermost Dealloc of this thread runs the callbacks and frees the object.
    if (callbacks != nullptr) {
      SetDeferredNext(callbacks, t_deferred_slots);
      t_deferred_slots = callbacks;
    }
    PushDeferred(ob);
    return;
  }
  // Weak callbacks and destructors run one level deeper, so a chain of either (each dropping
  // the last reference to the next object) is cut at kMaxDeallocDepth.
  ++t_dealloc_depth;
  if (callbacks != nullptr) (void)RunWeakSlotCallbacks(callbacks);
  HonourStopRequest();
  DestroyAndFree(ob, type);
  if (t_dealloc_depth == 1) {
    for (;;) {
      if (WeakSlot* slot = t_deferred_slots) {
        t_deferred_slots = DeferredNextOf(slot);
        SetDeferredNext(slot, nullptr);
        (void)RunWeakSlotCallbacks(slot);
      } else if (t_deferred != nullptr) {
        Object* next = PopDeferred();
        HonourStopRequest();
        DestroyAndFree(next, next->type_info());
      } else {
        break;
      }
    }
  }
  --t_dealloc_depth;
}

void Rc::AbandonConstruction(Object* ob, const TypeInfo* type) noexcept {
  // First out of the weak table (a WeakRef to `this`), so that no Lock() can take a reference
  // from here on.
  WeakSlot* callbacks = nullptr;
  if (ob->flags_.load(std::memory_order_relaxed) & kFlagHasWeakRefs) callbacks = ClearWeakSlot(ob);
  // The Object base was constructed first and destroyed last by the unwinding, so its words
  // still hold the counts (its destructor is trivial). A constructor that took references to
  // its object and released them leaves (owner, local 1, shared 0); anything else means a
  // reference escaped and would outlive the memory: report it now, not as a use after free.
  uint64_t biased = ob->biased_.load(std::memory_order_relaxed);
  // Acquire: another thread's decrement of an escaped reference is seen here.
  int32_t shared = ob->shared_.load(std::memory_order_acquire);
  bool clean = OwnerOf(biased) == tls_tid && LocalOf(biased) == 1 && CountOf(shared) == 0 &&
               (StateOf(shared) == kStateDefault || StateOf(shared) == kStateMaybeWeak);
  if (!clean) {
    ReportMisuseOfType(ob, type->name,
                       "brc::Make: the constructor threw after handing out a reference to its "
                       "object (a constructor that throws may keep only WeakRefs to `this`)");
  }
  if (callbacks != nullptr) (void)RunWeakSlotCallbacks(callbacks);
}

bool Rc::IsImmortal(const Object* ob) noexcept {
  return Local(ob) == kLocalImmortal ||
         InSaturationBand(CountOf(ob->shared_.load(std::memory_order_relaxed)));
}

int64_t Rc::RefCount(const Object* ob) noexcept {
  if (IsImmortal(ob)) return kImmortalRefCount;
  int32_t shared = ob->shared_.load(std::memory_order_relaxed);
  if (IsPerThread(ob)) {
    // The shared word and this thread's slot: exact once a pass has folded the others' slots
    // (GetRefCount runs one).
    uint32_t id = Local(ob);
    int64_t mine = id < tls_slots.size ? tls_slots.slots[id] : 0;
    return CountOf(shared) + mine;
  }
  int64_t pending = StateOf(shared) == kStateQueued ? 1 : 0;
  return int64_t{Local(ob)} + CountOf(shared) - pending;
}

void Rc::CheckLayout() {
  static_assert(offsetof(Object, type_) == 0);
  static_assert(offsetof(Object, biased_) == 8);
  static_assert(offsetof(Object, shared_) == 16);
  static_assert(offsetof(Object, flags_) == 20);
}

}  // namespace brc::detail

namespace brc {

void detail::AbandonConstruction(Object* header, const TypeInfo* type) noexcept {
  detail::Rc::AbandonConstruction(header, type);
}

void MakeImmortal(Object* ob) noexcept {
  detail::Rc::CheckNotFreed(ob);
  if (detail::Rc::IsImmortal(ob)) return;
  BRC_STAT_INC(made_immortal);
  uint32_t owner = detail::Rc::Owner(ob);
  if (owner == detail::tls_tid) {
    // The owner may write its word: the fast paths then skip the object at the first test,
    // from every thread.
    detail::Rc::SetBiased(ob, detail::tls_tid, kLocalImmortal);
  } else if (owner == detail::kNoOwner) {
    // Merged: nobody writes the biased word of a merged object while the world runs (the
    // owner gave it up; a per-thread switch or the collector write it only with the world
    // stopped), so this thread may, and the object is free to count from every thread too.
    detail::Rc::SetBiased(ob, detail::kNoOwner, kLocalImmortal);
  }
  // Another thread's object, or one counted per thread: the saturated shared word makes it
  // immortal (never freed); other threads' counts still touch that word (or their slots).
  detail::Rc::Saturate(ob);
}

bool IsImmortal(const Object* ob) noexcept { return detail::Rc::IsImmortal(ob); }

int64_t GetRefCount(const Object* ob) noexcept {
  detail::Rc::CheckNotFreed(ob);
  if (detail::Rc::IsPerThread(ob)) return detail::PerThreadRefCount(ob);
  return detail::Rc::RefCount(ob);
}

}  // namespace brc
