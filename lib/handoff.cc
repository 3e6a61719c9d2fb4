// Hand-off buffers: a thread that drops objects owned by other threads sends them back in
// batches, one locked push per batch instead of one per object.
//
// The shape is producer makes, consumer drops. Each drop of the last reference by a thread that
// is not the owner is a decrement that would take the shared count below zero, so the object
// goes to its owner's merge queue (protocol.md §3), which is guarded by the owner's mutex.
// Instead of taking that mutex per object, the dropping thread appends the object to a small
// buffer of its own for that owner (kHandoffBuffers buffers of kHandoffEntries, inline in its
// ThreadState: no allocation, a bounded number of waiting objects) and pushes a whole buffer
// under one lock (PushToOwner, lib/merge_queue.cc):
//  * when the buffer fills;
//  * when all buffers are in use by other owners (one is given up, in rotation);
//  * at the thread's next Safepoint() (kPendingHandoff says there is something to push), and
//    before it parks for a stop of the world;
//  * when it blocks or detaches (DrainAndLeaveAttached pushes them until none is left);
//  * when it drains its own queue (DrainQueue), which every collection does before it stops
//    the world, so a collection sees the collector thread's drops in the owners' queues.
//
// Who runs what: only the thread owning the buffers (attached, not blocked) reads or writes
// them. A buffered entry is a reference like a queue entry: the object stays in the queued
// state, its count includes the entry, WeakRef::Lock and GetRefCount see it as queued, and the
// collector treats it as an outside reference (the object survives that collection). An owner
// that blocks or exits is not waited for: a drop for an owner that is not attached (as far as a
// relaxed read of ThreadState::accepts_queue can tell) is pushed at once, which merges it on
// the owner's behalf, and a buffered entry whose owner blocked or exited meanwhile is merged
// on its behalf by the push, under its mutex.
//
// What changes for users: an object dropped by another thread for an attached owner reaches the
// owner's queue at the dropper's next safepoint (or block, or detach) rather than at once, so
// the owner frees it at its first safepoint after that one.
#include "handoff.h"

#include <algorithm>
#include <atomic>
#include <cstring>

#include "brc/stats.h"
#include "merge_queue.h"

namespace brc::detail {
namespace {

// Pushes `b`'s entries to their owner and leaves `b` unused. The entries are copied out and
// the buffer emptied first: the push may run destructors (merging on a blocked or exited
// owner's behalf), which may drop objects into these same buffers. The copy is 1 KiB of stack
// per nested level; nesting goes through Rc::Dealloc, whose depth is capped.
void PushBuffer(ThreadState* self, HandoffBuffer& b) noexcept {
  uint32_t n = b.count;
  if (n == 0) {
    b.dest_tid = 0;  // an assigned but empty buffer is simply given up
    b.dest = nullptr;
    return;
  }
  Object* entries[kHandoffEntries];
  std::memcpy(entries, b.entries, n * sizeof(Object*));
  ThreadState* dest = b.dest;
  b.count = 0;
  b.dest_tid = 0;
  b.dest = nullptr;
  self->handoff_held -= n;
  if (self->handoff_held == 0) {
    // Nothing buffered any more: this thread's safepoints need not look. Relaxed: as in
    // BufferHandoff. Cleared before the push, whose destructors may buffer (and set it) again.
    self->pending.fetch_and(~kPendingHandoff, std::memory_order_relaxed);
  }
  BRC_STAT_INC(handoff_pushes);
  PushToOwner(dest, entries, n);
}

}  // namespace

void BufferHandoff(ThreadState* self, uint32_t owner, Object* ob) noexcept {
  for (;;) {
    HandoffBuffer* unused = nullptr;
    for (HandoffBuffer& b : self->handoff) {
      if (b.dest_tid == owner) {
        // An owner that is blocked or gone gets nothing buffered: the object is merged on its
        // behalf now, as before batching (its memory is not held for a thread that may not
        // come back). Relaxed: a hint (see ThreadState::accepts_queue).
        if (!b.dest->accepts_queue.load(std::memory_order_relaxed)) {
          ThreadState* dest = b.dest;
          PushBuffer(self, b);  // what waits for it goes too; the buffer is given up
          PushToOwner(dest, &ob, 1);
          return;
        }
        b.entries[b.count++] = ob;
        if (self->handoff_held++ == 0) {
          // Relaxed: the bit only sends this thread's next Safepoint() to the slow path.
          self->pending.fetch_or(kPendingHandoff, std::memory_order_relaxed);
        }
        if (b.count == kHandoffEntries) PushBuffer(self, b);
        return;
      }
      if (unused == nullptr && b.dest_tid == 0) unused = &b;
    }
    if (unused != nullptr) {
      unused->dest_tid = owner;
      unused->dest = LookupThread(owner);
      continue;  // appends above
    }
    // Every buffer serves another owner: push one, in rotation, and look again (the push may
    // have run destructors that changed the buffers).
    PushBuffer(self, self->handoff[self->handoff_victim++ % kHandoffBuffers]);
  }
}

void FlushHandoffs(ThreadState* self) noexcept {
  // The last PushBuffer that empties the buffers clears kPendingHandoff.
  while (self->handoff_held != 0) {
    for (HandoffBuffer& b : self->handoff) PushBuffer(self, b);
  }
}

}  // namespace brc::detail
