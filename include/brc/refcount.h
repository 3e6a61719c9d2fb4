// Biased reference counting: the inline fast paths and the public counting API.
//
// Every operation first compares the whole biased word (owner id | local count) against the
// immortal marker in the local half: an immortal object costs one load and one compare, from
// any thread. Then:
//  * Owner thread: a relaxed load and a relaxed store of the biased word. No read-modify-write
//    instruction, no fence. The increment has no range test (a count the owner took to zero
//    is published unowned before the free, so a late increment is not the owner's any more);
//    the decrement's one signed comparison sends a count reaching 1 (the merge), misuse and
//    counts of 2^31 and more to an out-of-line slow path.
//  * An object counted per thread (brc/hot.h): the thread's own slot, a load and a store.
//  * Other threads: one atomic add (increment) or one CAS (decrement) on the shared word.
//
// Every function here requires the calling thread to be attached (brc::ThreadScope). A count
// operation from a thread that is not attached, or from inside a BlockingScope, is a fatal
// error naming the object's type; on an immortal object it is a no-op that only BRC_DEBUG
// builds report.
#ifndef BRC_REFCOUNT_H_
#define BRC_REFCOUNT_H_

#include <atomic>
#include <cstdint>
#include <string_view>

#include "brc/detail/config.h"
#include "brc/detail/thread_local.h"
#include "brc/object.h"
#include "brc/stats.h"

namespace brc {
namespace detail {

// Report a misuse of `ob` (type name, address, the rule broken) and abort. Never allocates.
[[noreturn]] void ReportMisuse(const Object* ob, const char* rule) noexcept;
// The same for an object whose type record is not (or no longer) in its header.
[[noreturn]] void ReportMisuseOfType(const Object* ob, std::string_view type_name,
                                     const char* rule) noexcept;

// A per-thread slot's bound: beyond it the slot spills into the object's shared word.
inline constexpr int32_t kSlotLimit = 1 << 30;

struct Rc {
  // Called by Make before the object is published, so nobody else reads the header yet.
  // Tracked types also need TrackConstructed (lib/gc_heap.h), which sets their flags.
  static void SetType(Object* ob, const TypeInfo* type) noexcept { ob->type_ = type; }

  static BRC_ALWAYS_INLINE void CheckNotFreed(const Object* ob) noexcept {
#ifdef BRC_DEBUG
    // Relaxed: the flag was written by the freeing thread; a thread still using the object has
    // no ordering with that free anyway, which is exactly the bug being reported.
    if (BRC_UNLIKELY(ob->flags_.load(std::memory_order_relaxed) & kFlagFreed)) {
      ReportMisuse(ob, "use after free: reference count operation on a freed object");
    }
#else
    (void)ob;
#endif
  }

  // An immortal object's biased word: local half kLocalImmortal, whatever the owner half holds
  // (its owner's id, or 0). No other word reaches it: an owned count stays below it (the
  // owner's increment to it is saturation), and a per-thread-counted object's local half is
  // its id, below 2^30.
  static constexpr uint64_t kImmortalFloor = uint64_t{kLocalImmortal} << kLocalShift;

  // The thread id read again on the non-owner side: an atomic load is not merged with the
  // owner test's plain one, so the compiler compares that one straight from memory instead of
  // keeping the id in a register (one instruction less on the owner's path).
  static BRC_ALWAYS_INLINE uint32_t ReloadTid() noexcept {
    return __atomic_load_n(&tls_tid, __ATOMIC_RELAXED);
  }

  static BRC_ALWAYS_INLINE void CheckAttachedDebug(const Object* ob) noexcept {
#ifdef BRC_DEBUG
    // Release does not report an unattached thread's count on an immortal object (a no-op,
    // it changes nothing); BRC_DEBUG reports it like every other.
    if (BRC_UNLIKELY(tls_tid == kNotAttached)) ReportNotAttached(ob);
#else
    (void)ob;
#endif
  }

  // The owner's pair and an immortal pair (from any thread) cost about the same: each test
  // below is one compare, and the owner's increment needs no range test (measured on the
  // layouts tried: a third branch on the owner's path costs it half a cycle per pair).
  static BRC_ALWAYS_INLINE void IncRef(Object* ob) noexcept {
    CheckNotFreed(ob);
    CheckAttachedDebug(ob);
    // Relaxed: the biased word is written only by this thread if it is the owner; its owner
    // half can change only from this thread's id to something else (never to this id), so a
    // stale value is harmless.
    uint64_t biased = ob->biased_.load(std::memory_order_relaxed);
    if (biased >= kImmortalFloor) return;  // immortal: no counting, from any thread
    if (BRC_LIKELY(OwnerOf(biased) == tls_tid)) {
      // No range test: local >= 1 here (a count that reached 0 was published unowned before
      // the object was freed, so an increment of a dying object takes the shared path, which
      // reports it). Counts from 2^31 up keep counting; reaching kLocalImmortal saturates:
      // the object is immortal from then on.
      ob->biased_.store(biased + kLocalOne, std::memory_order_relaxed);
      BRC_OP_STAT_INC(local_increfs);
      return;
    }
    NonOwnerIncRef(ob, biased);
  }

  static BRC_ALWAYS_INLINE void DecRef(Object* ob) noexcept {
    CheckNotFreed(ob);
    CheckAttachedDebug(ob);
    uint64_t biased = ob->biased_.load(std::memory_order_relaxed);  // relaxed: as in IncRef
    if (biased >= kImmortalFloor) return;  // immortal: as in IncRef
    if (BRC_LIKELY(OwnerOf(biased) == tls_tid)) {
      // local in [2, 2^31) (so it stays >= 1) <=> the signed word is >= 2 * 2^32. 1 (merge),
      // 0 (misuse) and counts of 2^31 and more take the slow path.
      if (BRC_LIKELY(static_cast<int64_t>(biased) >= static_cast<int64_t>(2 * kLocalOne))) {
        ob->biased_.store(biased - kLocalOne, std::memory_order_relaxed);
        BRC_OP_STAT_INC(local_decrefs);
        return;
      }
      DecRefSlow(ob);
      return;
    }
    NonOwnerDecRef(ob, biased);
  }

  // Not the owner, or not attached. Immortal objects never get here.
  static BRC_ALWAYS_INLINE void NonOwnerIncRef(Object* ob, uint64_t biased) noexcept {
    if (OwnerOf(biased) == kPerThreadOwner) {
      // Counted per thread: this thread's own slot, no atomic (lib/per_thread.cc). Slots stay
      // in [-kSlotLimit, kSlotLimit]; the slow path spills them into the shared word. A thread
      // that is not attached (or is blocked) has no slots (size 0): the slow path reports it.
      uint32_t id = LocalOf(biased);
      PerThreadSlots s = tls_slots;
      if (BRC_LIKELY(id < s.size) && BRC_LIKELY(s.slots[id] < kSlotLimit)) {
        ++s.slots[id];
        return;
      }
      SlotIncRefSlow(ob);
      return;
    }
    if (BRC_LIKELY(ReloadTid() != kNotAttached)) {
      // Relaxed: the caller already holds a reference, so no other memory needs ordering.
      int32_t old = ob->shared_.fetch_add(kSharedOne, std::memory_order_relaxed);
      BRC_OP_STAT_INC(shared_increfs);
      // Saturation band reached, or the count was exactly "zero, merged" (object being freed).
      if (BRC_UNLIKELY(old >= ((kSharedSaturationMin - 1) << kSharedShift) || old == kStateMerged)) {
        SharedIncRefEdge(ob, old);
      }
      return;
    }
    IncRefSlow(ob);  // not attached: reported
  }

  static BRC_ALWAYS_INLINE void NonOwnerDecRef(Object* ob, uint64_t biased) noexcept {
    if (OwnerOf(biased) == kPerThreadOwner) {
      // A slot that would go below zero (below its value at the last merge pass) takes the
      // slow path: only then can the object's true count reach zero, so only then is a merge
      // pass due.
      uint32_t id = LocalOf(biased);
      PerThreadSlots s = tls_slots;
      if (BRC_LIKELY(id < s.size) && BRC_LIKELY(s.slots[id] > 0)) {
        --s.slots[id];
        return;
      }
      SlotDecRefSlow(ob);
      return;
    }
    if (BRC_LIKELY(ReloadTid() != kNotAttached)) {
      int32_t old = ob->shared_.load(std::memory_order_relaxed);
      // Common case: shared count in [1, saturation). Subtract with one CAS. Release publishes
      // this thread's writes to the object to whoever frees it; acquire makes the others'
      // writes visible here in case this decrement frees it.
      if (BRC_LIKELY(old >= kSharedOne && old < (kSharedSaturationMin << kSharedShift)) &&
          ob->shared_.compare_exchange_strong(old, old - kSharedOne, std::memory_order_acq_rel,
                                              std::memory_order_relaxed)) {
        BRC_OP_STAT_INC(shared_decrefs);
        if (BRC_UNLIKELY(old - kSharedOne == kStateMerged)) Dealloc(ob);
        return;
      }
      SharedDecRef(ob);
      return;
    }
    DecRefSlow(ob);  // not attached: reported
  }

  // Slow paths, lib/refcount.cc.
  [[noreturn]] static void ReportNotAttached(const Object* ob) noexcept;
  static BRC_NOINLINE void IncRefSlow(Object* ob) noexcept;
  static BRC_NOINLINE void DecRefSlow(Object* ob) noexcept;
  static BRC_NOINLINE void SharedIncRefEdge(Object* ob, int32_t old) noexcept;
  static BRC_NOINLINE void SharedDecRef(Object* ob) noexcept;
  // Per-thread counting (lib/per_thread.cc): a slot out of range or at its limit, and a
  // decrement through the shared word (never frees: zero is only seen by a merge pass).
  static BRC_NOINLINE void SlotIncRefSlow(Object* ob) noexcept;
  static BRC_NOINLINE void SlotDecRefSlow(Object* ob) noexcept;
  static void PerThreadSharedDecRef(Object* ob) noexcept;
  // A non-owner's decrement lost a race on the shared word: the contention detector's input.
  static void NoteContention(Object* ob) noexcept;
  static bool IsPerThread(const Object* ob) noexcept {
    return Owner(ob) == kPerThreadOwner;
  }
  static void MergeZeroLocal(Object* ob) noexcept;
  // Merge the halves, adding `extra` to the total; the object becomes unowned. The caller is the
  // owner, holds the owner's queue lock while the owner is exited or blocked, or runs with the
  // world stopped. Returns true when the total reached zero: the caller must Dealloc.
  static bool ExplicitMerge(Object* ob, int32_t extra) noexcept;
  static bool TryIncRef(Object* ob) noexcept;
  static void SetMaybeWeak(Object* ob) noexcept;
  static bool Saturate(Object* ob) noexcept;
  static void Dealloc(Object* ob) noexcept;
  static bool IsImmortal(const Object* ob) noexcept;
  static int64_t RefCount(const Object* ob) noexcept;
  static void AbandonConstruction(Object* ob, const TypeInfo* type) noexcept;

  // Raw access for brc/testing.h and the weak-reference table.
  static std::atomic<uint64_t>& biased(Object* ob) { return ob->biased_; }
  static std::atomic<int32_t>& shared(Object* ob) { return ob->shared_; }
  static std::atomic<uint8_t>& flags(Object* ob) { return ob->flags_; }
  static std::atomic<uint8_t>& gc_bits(Object* ob) { return ob->gc_bits_; }
  static std::atomic<uint16_t>& gc_epoch(Object* ob) { return ob->gc_epoch_; }
  static const std::atomic<uint8_t>& gc_bits(const Object* ob) { return ob->gc_bits_; }
  static const std::atomic<uint16_t>& gc_epoch(const Object* ob) { return ob->gc_epoch_; }
  static const std::atomic<uint64_t>& biased(const Object* ob) { return ob->biased_; }
  // Relaxed loads of one half (see Object::biased_ for who may write it).
  static uint32_t Owner(const Object* ob) {
    return OwnerOf(ob->biased_.load(std::memory_order_relaxed));
  }
  static uint32_t Local(const Object* ob) {
    return LocalOf(ob->biased_.load(std::memory_order_relaxed));
  }
  // A whole-word store: the caller is the only thread that may write the word now.
  static void SetBiased(Object* ob, uint32_t owner, uint32_t local) {
    ob->biased_.store(Biased(owner, local), std::memory_order_relaxed);
  }
  static const std::atomic<int32_t>& shared(const Object* ob) { return ob->shared_; }
  static const std::atomic<uint8_t>& flags(const Object* ob) { return ob->flags_; }
  static void CheckLayout();
};

}  // namespace detail

// Take a strong reference. `ob` must be alive (the caller holds or borrows a reference).
BRC_ALWAYS_INLINE void IncRef(Object* ob) noexcept { detail::Rc::IncRef(ob); }
// Drop a strong reference; frees the object when it was the last one.
BRC_ALWAYS_INLINE void DecRef(Object* ob) noexcept { detail::Rc::DecRef(ob); }

// Make `ob` immortal: it is never freed and counting on it becomes a no-op. Any thread.
void MakeImmortal(Object* ob) noexcept;
bool IsImmortal(const Object* ob) noexcept;

// The current reference count, for diagnostics (like Python's sys.getrefcount). Exact when
// called by the owner with no concurrent non-owner activity; otherwise a racy snapshot.
// Immortal objects report kImmortalRefCount. One known overcount: an object whose owner gave
// it up while it still waited in the owner's merge queue (or in the dropping thread's hand-off
// buffer) reports one more until that queue is drained.
inline constexpr int64_t kImmortalRefCount = INT64_MAX;
int64_t GetRefCount(const Object* ob) noexcept;

}  // namespace brc

#endif  // BRC_REFCOUNT_H_
