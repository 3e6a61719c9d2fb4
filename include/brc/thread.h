// Threads and the runtime: attaching, safepoints, and blocking regions.
//
// A thread must be attached before it creates objects or touches a count, and stays attached
// until it exits. While attached it owns the objects it creates; other threads that drop the
// last shared references to them queue those objects to it, and it merges them at its next
// safepoint. So an attached thread must reach a safepoint regularly: brc::Safepoint() in its
// loops, or the end of a BlockingScope, or thread exit. A thread that blocks (I/O, a lock, a
// condition variable, sleep) should do it inside a BlockingScope: meanwhile other threads merge
// its queued objects on its behalf, so a blocked owner pins no memory.
//
//   void Worker() {
//     brc::ThreadScope attach;      // attach for the thread's lifetime
//     for (...) {
//       ... work on objects ...
//       brc::Safepoint();           // drain objects queued to this thread
//     }
//     {
//       brc::BlockingScope blocking;  // must not touch any object in here
//       queue.wait_and_pop(item);
//     }
//   }                               // exit: drains, then detaches
#ifndef BRC_THREAD_H_
#define BRC_THREAD_H_

#include <atomic>
#include <cstdint>

#include "brc/detail/config.h"
#include "brc/detail/thread_local.h"

namespace brc {

// Attaches the calling thread (nested calls count; only the outermost detach detaches).
void AttachCurrentThread();
// Drains this thread's merge queue until it stays empty, then detaches. After the outermost
// detach the thread must do no count work: a Ref still alive here is a fatal error when it is
// dropped. A thread that exits while attached is detached automatically during its
// thread_local destruction.
void DetachCurrentThread();
bool IsAttached() noexcept;
// This thread's id (1, 2, ...), or 0 when not attached. Ids of exited threads are reused.
uint32_t CurrentThreadId() noexcept;

// RAII: attach for the scope.
class ThreadScope {
 public:
  ThreadScope() { AttachCurrentThread(); }
  ~ThreadScope() { DetachCurrentThread(); }
  ThreadScope(const ThreadScope&) = delete;
  ThreadScope& operator=(const ThreadScope&) = delete;
};

// RAII: the attached thread promises not to touch any object until the scope ends. On entry it
// drains its queue; while inside, other threads merge on its behalf instead of queueing to it.
// A count operation inside the scope is a fatal error. No-op on a thread that is not attached.
// (Opened by a destructor that runs during a queue drain, it leaves the rest of that batch
// queued, not merged, until the scope ends.)
class BlockingScope {
 public:
  BlockingScope();
  ~BlockingScope();
  BlockingScope(const BlockingScope&) = delete;
  BlockingScope& operator=(const BlockingScope&) = delete;

 private:
  bool active_;
};

// RAII: inside the scope, the calling thread's frees honour a pending stop of the world. A
// long free cascade (the last reference to a big tree or list dropped at once) reaches no
// safepoint, so a stop requested meanwhile (another thread's collection, say) waits for the
// whole cascade; inside this scope the thread instead parks before the next destructor it
// runs, as if that destructor had called Safepoint() first. Use it only around code that holds
// no lock another attached thread may wait for outside a BlockingScope: parked while holding
// it, this thread would keep that thread from parking and the stop from ever completing.
// (A free that runs a queue drain still completes the drain first.) Nests; no effect on a
// thread that is not attached.
class ParkableFrees {
 public:
  ParkableFrees() noexcept;
  ~ParkableFrees();
  ParkableFrees(const ParkableFrees&) = delete;
  ParkableFrees& operator=(const ParkableFrees&) = delete;
};

namespace detail {
inline constexpr uint32_t kPendingMerge = 1u << 0;
void SafepointSlow() noexcept;
}  // namespace detail

// Merges and frees what other threads queued to this thread. Cheap when there is nothing to
// do (one thread-local load and one relaxed load). No-op on a thread that is not attached.
BRC_ALWAYS_INLINE void Safepoint() noexcept {
  std::atomic<uint32_t>* pending = detail::tls_pending;
  // Relaxed: the bit only says "look"; the queue itself is handed over under its mutex.
  if (pending != nullptr && BRC_UNLIKELY(pending->load(std::memory_order_relaxed) != 0)) {
    detail::SafepointSlow();
  }
}

}  // namespace brc

#endif  // BRC_THREAD_H_
