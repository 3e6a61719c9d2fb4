// Per-thread counts, the library side (the public side is brc/hot.h; the counting fast paths
// are in brc/refcount.h, the slow paths and the pool in lib/per_thread.cc).
#ifndef BRC_LIB_PER_THREAD_H_
#define BRC_LIB_PER_THREAD_H_

#include <cstdint>

#include "brc/object.h"
#include "internal_alloc.h"
#include "thread_state.h"

namespace brc::detail {

// World stopped by the caller (a collection's stop, a merge pass): adds every thread's slots
// into the shared words of their objects and zeroes them. An object whose sum is zero leaves
// per-thread counting as an ordinary merged object holding one reference, marked dead (no
// Lock() revives it), appended to `dead`; the caller drops those references once the world
// runs again. If `dead` has no room, such an object stays as it is (count zero) and the next
// pass looks again. Never allocates.
void FoldPerThreadCounts(InternalVector<Object*>* dead) noexcept;
// Room the caller should reserve in `dead` before the stop (the number of objects counted per
// thread). World stopped or not: a hint only.
std::size_t PerThreadObjectCount() noexcept;

// GetRefCount of an object counted per thread: its shared count plus every thread's slot,
// read with the world stopped (by this call, or by the caller already). Where this thread
// cannot stop the world (not attached, blocked, the watchdog handler), the shared count plus
// this thread's slot.
int64_t PerThreadRefCount(const Object* ob) noexcept;

// brc::testing::FreeImmortalForTesting of an immortal object counted per thread: its id goes
// back to the pool (its slots zeroed) before the object is freed. Attached thread.
void ForgetPerThread(Object* ob) noexcept;

// Safepoint work (kPendingPerThread): switch nominated objects, run a due merge pass.
// `ts` is the calling, attached thread's state.
void PerThreadSafepoint(ThreadState* ts) noexcept;
// A thread about to leave kAttached (detach, or entering a BlockingScope when `blocking`):
// drops its nominees, spills its slots into the shared words when it detaches, and hands a
// due pass to the attached threads. Never stops the world.
void PerThreadLeaving(ThreadState* ts, bool blocking) noexcept;
// After the detaching thread's final queue drain (it is exited now and counts nothing): a pass
// that drain made due goes to the other threads.
void PerThreadDetachedDrain(ThreadState* ts) noexcept;
// Attach: the thread's TLS mirror of its state's slots. Detach: cleared.
void PerThreadAttached(ThreadState* ts) noexcept;
void PerThreadDetached() noexcept;

}  // namespace brc::detail

#endif  // BRC_LIB_PER_THREAD_H_
