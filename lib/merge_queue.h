// The merge queue (protocol.md §3): how an object whose shared count would go below zero
// reaches its owner. Internal to lib/.
#ifndef BRC_LIB_MERGE_QUEUE_H_
#define BRC_LIB_MERGE_QUEUE_H_

#include "brc/object.h"
#include "thread_state.h"

namespace brc::detail {

// `ob` was just put in the queued state by the caller, which hands its reference to the queue
// entry. Queues it to its owner, or, if the owner has exited or is blocked, merges it at once
// on the owner's behalf (and frees it if that was the last reference).
void QueueToOwner(Object* ob) noexcept;

// Hands the `n` references in `obs` (objects in the queued state, owned by `ts`'s id) to that
// owner in one locked step: appended to its queue, or merged on its behalf if it is blocked or
// exited (then freed here if that was the last reference). Overwrites `obs`. Any thread.
void PushToOwner(ThreadState* ts, Object** obs, uint32_t n) noexcept;

// The owner side: takes everything queued to `ts` (the caller's own state) at this moment and
// merges it, freeing what reaches zero. First pushes the caller's own hand-off buffers. Destructors run without the queue lock held; objects
// they (or other threads) queue meanwhile wait for the next call.
void DrainQueue(ThreadState* ts) noexcept;
// Nonzero while this thread merges a drained batch. A drain runs to its end before its thread
// parks for a stop (Rc::Dealloc's stop poll leaves it alone; a destructor may still call
// Safepoint() itself), so a stop finds what was queued before it merged. This thread only.
inline constinit thread_local int t_draining = 0;
// Depth of brc::ParkableFrees scopes on this thread: while nonzero, Rc::Dealloc honours a
// pending stop before each destructor. This thread only.
inline constinit thread_local int t_parkable_frees = 0;

// The caller's own state. Drains until the queue is empty and, in the same critical section,
// leaves kAttached for `next` (kBlocked or kExited), releasing a stop that waited for it.
void DrainAndLeaveAttached(ThreadState* ts, ThreadStatus next);
// The caller's own state, kBlocked. Back to kAttached, first waiting out a stop in progress.
void ReenterAttached(ThreadState* ts);

}  // namespace brc::detail

#endif  // BRC_LIB_MERGE_QUEUE_H_
