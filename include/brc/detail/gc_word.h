// The cycle collector's per-object state, kept inside the 24-byte header of a tracked object:
// no word in front of it, so a tracked object costs the same header as a leaf.
//
// The last four bytes of the header (brc/object.h):
//
//   byte  20        21                                     22 .. 23
//         flags_    gc_bits_                               gc_epoch_
//         (object)  bit 2 was young, 3 on path,            mark epoch (16 bits)
//                   4 tracked, 5 garbage, 6 finalized,
//                   7 frozen
//
// The mark epoch is the number of the last collection that examined the object (and found it
// reachable, or garbage): 0 from construction until the first collection examines it, which
// is what "young" means (no bit of its own, so promotion costs nothing: a collection that
// examines an object gives it an epoch); 1 after an epoch wrap-around (every 65,534
// collections, one walk of the heap). The collector's bits and epoch are a word apart from the
// object flags, which any thread sets with fetch_or (a WeakRef made by a thread in a
// BlockingScope while the world is stopped): the collector's plain stores cannot lose them.
//
// The scratch count of a collection (references from other examined objects) lives in the low
// half of biased_, where the owner id is, while the world is stopped: the collector adds to
// the owner id as its base, and puts the owner back before the world restarts. The owner need
// not be saved: every tracked object is owned by the thread whose heap page holds it (Make
// allocates in the creating thread's heap and makes that thread the owner; an id and its heap
// pass together to the next thread bound to the id), or by nobody once its count is merged,
// and merged <=> owner 0 (refcount.cc gives up ownership only together with publishing merged).
// So the owner is 0 when the shared word's state is merged, else the id of the page's heap.
// Under BRC_DEBUG each collection checks this before it counts. Nobody else reads the owner
// while the world is stopped: parked threads run nothing, a thread inside a BlockingScope or
// not attached may not touch counts, and the collector calls no user code (an Allocator) while
// any scratch is in use.
//
// Who writes gc_bits_ and gc_epoch_ (relaxed loads and stores: never two writers at once):
//  * tracked: the constructing thread at the end of Make (TrackConstructed); cleared first
//    thing by Dealloc (count zero: nobody else holds the object).
//  * was young, on path, garbage, finalized, frozen, the epoch: the collector while the world
//    is stopped (with several marking workers, only the worker holding the object's part of
//    the heap: lib/collector_mark.cc, "Parts"), and the collector clearing garbage after the
//    restart while it holds a reference to the object.
//  * the freeing thread zeroes both when the block goes back to its page, so a walk of the page
//    with the world stopped skips free blocks.
#ifndef BRC_DETAIL_GC_WORD_H_
#define BRC_DETAIL_GC_WORD_H_

#include <atomic>
#include <cstdint>

#include "brc/object.h"

namespace brc::detail {

// Only while the world is stopped (lib/collector_mark.cc): marked (or entered by the acyclic
// check) in a full collection while young, so that a collection that fails can make it young
// again; and on the acyclic check's depth-first path now.
inline constexpr uint8_t kGcWasYoung = 1u << 2;
inline constexpr uint8_t kGcOnPath = 1u << 3;
inline constexpr uint8_t kGcTracked = 1u << 4;    // constructed, not being destroyed: traced
inline constexpr uint8_t kGcGarbage = 1u << 5;    // in the running collection's garbage set
inline constexpr uint8_t kGcFinalized = 1u << 6;  // Finalize() has run; sticky: never twice
inline constexpr uint8_t kGcFrozen = 1u << 7;     // excluded from collections by brc::Freeze()
inline constexpr uint32_t kGcEpochLimit = 1u << 16;  // collections' epochs: 3 .. limit - 1
inline constexpr uint16_t kGcEpochOld = 1;  // examined before the last wrap-around
// Garbage whose last collector reference is being dropped: old, but its death is no shrinking
// of the old heap for the schedule (the collection counted it already).
inline constexpr uint16_t kGcEpochCollected = 2;
inline constexpr uint16_t kGcEpochFirst = 3;  // the first collection's epoch

}  // namespace brc::detail

#endif  // BRC_DETAIL_GC_WORD_H_
