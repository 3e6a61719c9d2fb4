// Per-thread runtime state and the registry that maps thread ids to it.
//
// Layer: thread. It knows nothing of counting; lib/merge_queue.cc builds attach, detach,
// safepoints and blocking regions on top of it.
//
// A ThreadState belongs to a thread id, not to a thread: ids are reused after a thread exits
// (lowest free id first), and the state object is never freed, so a pointer obtained from
// Lookup() stays valid forever. That is what lets a thread queue an object to an owner that is
// exiting at the same moment: it locks the state and finds it kExited, and merges instead.
#ifndef BRC_LIB_THREAD_STATE_H_
#define BRC_LIB_THREAD_STATE_H_

#include <atomic>
#include <cstdint>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "brc/object.h"
#include "brc/stats.h"
#include "mutex.h"

namespace brc::detail {

enum class ThreadStatus : uint8_t {
  kExited,    // no thread holds this id: queuers merge on its behalf
  kAttached,  // a thread holds the id and may touch objects: queuers queue to it
  kBlocked,   // the thread is inside a BlockingScope: queuers merge on its behalf
};

struct ThreadState {
  explicit ThreadState(uint32_t id) : tid(id) {}

  const uint32_t tid;

  // Guards status and queue. Merges done on behalf of this id also run under it, so the thread
  // that next attaches or unblocks with this id (it takes mu to change status) sees them done.
  Mutex mu;
  ThreadStatus status ABSL_GUARDED_BY(mu) = ThreadStatus::kExited;
  // Objects queued to this thread; each entry holds one reference (protocol.md §2).
  std::vector<Object*> queue ABSL_GUARDED_BY(mu);

  // kPendingMerge while the queue is non-empty. Set by queuers and cleared by the owner, both
  // under mu; read relaxed at safepoints (the queue contents themselves move under mu).
  std::atomic<uint32_t> pending{0};

  // The bound thread's counters while attached; guarded by the registry's lock.
  StatCounters* stats = nullptr;

  // Written and read only by the thread bound to this id.
  // The drained batch: swapped with `queue` under mu, so both keep their capacity and a
  // queuer rarely grows the queue while holding the lock.
  std::vector<Object*> batch;
  int attach_depth = 0;
  int blocking_depth = 0;
};

// The state of the calling thread while attached (or blocked), else nullptr. This thread only.
extern thread_local ThreadState* t_state;

// Binds the calling thread to the lowest free id, marks it attached and returns its state.
ThreadState* RegisterCurrentThread();
// Marks the state exited, folds the thread's counters into the retired totals and frees the id.
// The caller has drained the queue and set status under mu.
void UnregisterCurrentThread(ThreadState* ts);
// The state for `tid`, which must have been handed out before (any object's non-zero owner_).
ThreadState* LookupThread(uint32_t tid) noexcept;
// Sum of every attached thread's counters and the retired ones.
Stats SumStats();

}  // namespace brc::detail

#endif  // BRC_LIB_THREAD_STATE_H_
