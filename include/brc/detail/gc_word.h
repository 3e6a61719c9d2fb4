// The cycle collector's per-object state, kept inside the 24-byte header of a tracked object:
// no word in front of it, so a tracked object costs the same header as a leaf.
//
// flags_ (32 bits), shared with the object's own flags (brc/object.h):
//
//   bit  0-3     4        5         6           7         8 .. 31
//        object  tracked  garbage   finalized   frozen    mark epoch (24 bits)
//        flags
//
// The mark epoch is the number of the last collection that examined the object (and found it
// reachable, or garbage): 0 from construction until the first collection examines it, which
// is what "young" means (no bit of its own, so promotion costs nothing: a collection that
// examines an object gives it an epoch); 1 after an epoch wrap-around (every 16M collections).
//
// The scratch count of a collection (references from other examined objects) lives in the low
// half of biased_, where the owner id is, while the world is stopped: the collector zeroes it
// for each object it examines, counts into it, and puts the owner back before the world
// restarts. The owner need not be saved: every tracked object is owned by the thread whose heap
// page holds it (Make allocates in the creating thread's heap and makes that thread the owner;
// an id and its heap pass together to the next thread bound to the id), or by nobody once its
// count is merged, and merged <=> owner 0 (refcount.cc gives up ownership only together with
// publishing merged). So the owner is 0 when the shared word's state is merged, else the id of
// the page's heap (RestoreOwner). Under BRC_DEBUG each collection checks this before it zeroes.
// Nobody else reads the owner while the world is stopped: parked threads run nothing, and a
// thread inside a BlockingScope or not attached may not touch counts.
//
// Who writes the collector's bits:
//  * tracked: the constructing thread at the end of Make (TrackConstructed, one fetch_or that
//    also sets kFlagGcHeap); cleared first thing by Dealloc.
//  * garbage, finalized, frozen, epoch: the collector while the world is stopped (its parallel
//    marking workers claim the epoch with a CAS); garbage is cleared after the restart with a
//    fetch_and, since other threads may then set object flags.
//  * the freeing thread zeroes the whole word when the block goes back to its page, so a walk of
//    the page with the world stopped skips free blocks.
// Plain (relaxed load + store) writes are used only where no other thread can write the word:
// with the world stopped, and in Dealloc (the count is zero: nobody holds a reference with which
// to make a WeakRef, and kFlagDead was set before the count reached zero).
#ifndef BRC_DETAIL_GC_WORD_H_
#define BRC_DETAIL_GC_WORD_H_

#include <atomic>
#include <cstdint>

#include "brc/object.h"

namespace brc::detail {

// (Constants rather than an enum, so that they combine with ObjectFlag bits.)
inline constexpr uint32_t kGcTracked = 1u << 4;    // constructed, not being destroyed: traced
inline constexpr uint32_t kGcGarbage = 1u << 5;    // in the running collection's garbage set
inline constexpr uint32_t kGcFinalized = 1u << 6;  // Finalize() has run; sticky: never twice
inline constexpr uint32_t kGcFrozen = 1u << 7;     // excluded from collections by brc::Freeze()
inline constexpr uint32_t kGcFlagMask = (1u << 8) - 1;  // every flag, the object's included
inline constexpr int kGcEpochShift = 8;
inline constexpr uint32_t kGcEpochLimit = 1u << 24;  // collections' epochs: 2 .. limit - 1

}  // namespace brc::detail

#endif  // BRC_DETAIL_GC_WORD_H_
