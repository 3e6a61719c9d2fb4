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
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "brc/object.h"
#include "brc/stats.h"
#include "gc_heap.h"
#include "internal_alloc.h"
#include "mutex.h"

namespace brc::detail {

enum class ThreadStatus : uint8_t {
  kExited,    // no thread holds this id: queuers merge on its behalf
  kAttached,  // a thread holds the id and may touch objects: queuers queue to it
  kBlocked,   // the thread is inside a BlockingScope: queuers merge on its behalf
};

struct ThreadState;

// Hand-off buffers (lib/handoff.cc): objects this thread dropped to zero whose owner is another
// thread, collected per destination so that they reach the owner's queue in one locked push.
// Each entry holds one reference, exactly like a queue entry (the object is in the queued
// state). At most kHandoffBuffers x kHandoffEntries objects wait in one thread's buffers.
inline constexpr int kHandoffBuffers = 4;
inline constexpr uint32_t kHandoffEntries = 126;
struct HandoffBuffer {
  uint32_t dest_tid = 0;  // the owner id the entries go to; 0 while the buffer is unused
  uint32_t count = 0;     // entries in use
  ThreadState* dest = nullptr;  // LookupThread(dest_tid)
  Object* entries[kHandoffEntries];
};

struct ThreadState {
  explicit ThreadState(uint32_t id) : tid(id) {
    heap.tid = id;
    leaf_heap.tid = id;
  }

  const uint32_t tid;

  // Guards status and queue. Merges done on behalf of this id also run under it, so the thread
  // that next attaches or unblocks with this id (it takes mu to change status) sees them done.
  Mutex mu;
  ThreadStatus status ABSL_GUARDED_BY(mu) = ThreadStatus::kExited;
  // Objects queued to this thread; each entry holds one reference (protocol.md §2).
  InternalVector<Object*> queue ABSL_GUARDED_BY(mu);
  // True while status is kAttached: stored under mu with every change of status (relaxed: the
  // lock orders it), read without the lock by threads deciding whether to buffer a drop for
  // this id (lib/handoff.cc). A stale read only delays the merge to the dropper's next
  // safepoint: the push itself reads status under mu.
  std::atomic<bool> accepts_queue{false};

  // kPendingMerge while the queue is non-empty: set by queuers and cleared by the owner, both
  // under mu. kPendingStop: set by a stop requester and cleared by this thread, both under mu.
  // Read relaxed at safepoints (what they announce is then read under a lock).
  std::atomic<uint32_t> pending{0};

  // The bound thread's counters while attached; guarded by the registry's lock.
  StatCounters* stats = nullptr;

  // Stop-the-world handshake (lib/stop_the_world.cc), both guarded by World().mu:
  // the running stop counted this thread and waits for it to park, block or exit;
  bool stop_counted = false;
  // the thread is parked at a safepoint (a new stop does not wait for it).
  bool parked = false;
  // Kernel thread id of the bound thread, for the watchdog's report. Written by the thread at
  // attach; read by a stop requester (relaxed: a diagnostic only).
  std::atomic<int64_t> os_tid{0};

  // The collector's heap of objects allocated under this id (lib/gc_heap.h). Owned by the bound
  // thread; read by the collector while the world is stopped. It outlives the thread, like the
  // id: the next thread given this id adopts it.
  GcHeap heap;
  // The leaf heap (lib/gc_heap.h): untracked objects while the default allocator is in use.
  // Same owner and lifetime rules; the collector only sweeps it.
  GcHeap leaf_heap;

  // This id's per-thread count slots (lib/per_thread.cc; brc/detail/thread_local.h says what
  // a slot holds). Written by the bound thread while it runs (it grows the array and mirrors it
  // in tls_slots), and by the thread holding the world stopped (a merge pass zeroes slots).
  // Like the heap, they pass to the next thread bound to the id (zeroed: a detaching thread
  // spills its slots into the shared words).
  int32_t* pt_slots = nullptr;
  uint32_t pt_size = 0;
  void* pt_block = nullptr;  // the allocation holding pt_slots (cache-line padded)
  std::size_t pt_block_bytes = 0;
  // The list of states that have slots, which merge passes walk: linked once, when the state
  // first gets slots (a lock-free push), never unlinked.
  ThreadState* pt_next = nullptr;
  std::atomic<bool> pt_linked{false};

  // Written and read only by the thread bound to this id.
  // The drained batch: swapped with `queue` under mu, so both keep their capacity and a
  // queuer rarely grows the queue while holding the lock.
  InternalVector<Object*> batch;
  // Objects this thread dropped for other owners, not yet pushed (lib/handoff.cc). Invariant:
  // all empty whenever this thread is parked for a stop, blocked or exited (every way of
  // leaving kAttached flushes them), so a stopped world finds every such reference in some
  // queue, except in the stopper's own buffers, which a collection flushes before it stops.
  HandoffBuffer handoff[kHandoffBuffers];
  uint32_t handoff_held = 0;    // entries in all buffers; kPendingHandoff is set while > 0
  uint32_t handoff_victim = 0;  // the buffer given up next when all are in use
  // The pacing of the cache-decay look (lib/gc_heap.cc, DecayLookCanWait): the thread's
  // allocation count at its previous safepoint, and the busy safepoints since the last look.
  uint64_t decay_allocs_seen = 0;
  uint32_t decay_busy_skips = 0;
  int attach_depth = 0;
  int blocking_depth = 0;
  bool detaching = false;  // inside the outermost DetachCurrentThread's drain
};

// The state of the calling thread while attached (or blocked), else nullptr. This thread only.
// constinit: no dynamic initialisation, so an access is a plain TLS load (no init-function
// check on every allocation and free).
extern constinit thread_local ThreadState* t_state;

// Fast paths of the leaf heap (lib/gc_heap.h) for the allocator: pop a free block of the
// calling thread's leaf heap, or nullptr; push a block freed by the page's own thread.
inline void* TryAllocateLeafLocal(ThreadState* ts, std::size_t size) noexcept {
  GcPage* head = ts->leaf_heap.lists[GcLeafListFor(size)];
  if (head == nullptr) return nullptr;
  char* b = TryPopLocal(head);
  if (b != nullptr) ++head->used;
  return b;
}
inline bool TryFreeLeafLocal(ThreadState* ts, void* mem) noexcept {
  GcPage* p = GcPageOf(static_cast<Object*>(mem));
  // Not this thread's page, or the page would become empty: the out-of-line path decides.
  if (p->heap != &ts->leaf_heap || p->used <= 1) return false;
  auto* b = static_cast<GcFreeBlock*>(mem);
  b->next = p->local_free;
  p->local_free = b;
  --p->used;
  return true;
}

// Bits of ThreadState::pending.
inline constexpr uint32_t kPendingStop = 1u << 1;  // a stop waits for this thread to park
// Per-thread counting work (lib/per_thread.cc): a merge pass is due, or the contention detector
// nominated objects. Set by the thread itself or by another thread handing a due pass over
// (fetch_or); cleared by the thread itself.
inline constexpr uint32_t kPendingPerThread = 1u << 2;
// Heap work (lib/gc_heap.h, ReclaimAtSafepoint): dirty pages, large pages freed by others,
// exited threads' pages to clean. Set by any thread (fetch_or); cleared by the thread itself.
inline constexpr uint32_t kPendingReclaim = 1u << 3;
// Entries wait in this thread's hand-off buffers (lib/handoff.cc). Set and cleared by the
// thread itself (fetch_or / fetch_and: other threads set other bits of the word meanwhile).
inline constexpr uint32_t kPendingHandoff = 1u << 4;
// A cache of empty pages above kDecayKeepPages may decay (lib/gc_heap.h, "Cache decay"). Set
// by the thread that puts the page in the cache (fetch_or); cleared by the thread itself. Apart
// from kPendingReclaim so that a safepoint can tell "nothing but a decay waits" from the bits
// alone (DecayLookCanWait).
inline constexpr uint32_t kPendingDecay = 1u << 5;

// The stop-the-world state shared by the requester (lib/stop_the_world.cc) and every thread
// changing status (lib/merge_queue.cc). Lock order: registry lock -> ThreadState::mu -> mu.
// std::mutex even outside TSan builds: it is never on a hot path and it pairs with
// std::condition_variable.
struct WorldState {
  std::mutex mu;
  std::condition_variable all_parked;  // the requester waits here for remaining == 0
  std::condition_variable restarted;   // parked and waiting threads wait here for stopper == 0
  // Counted threads not yet parked, blocked or exited. Written under mu only (by the requester
  // and by each counted thread as it parks or leaves); atomic so that the requester's spin
  // (SpinBriefly) can read it without the lock, relaxed, confirming under mu.
  std::atomic<int> remaining{0};
  // Whether this stop's waiters spin before they sleep (SpinBriefly): the requester sets it
  // under mu when it and the threads it counted fit on the machine's cores. Read under mu.
  bool spin = false;
  // Id of the thread holding the world stopped, 0 when it runs. Written under mu; read under
  // mu or, by a thread about to enter kAttached, under its own ThreadState::mu (acquire, pairs
  // with the release store made before the requester took that ThreadState::mu).
  std::atomic<uint32_t> stopper{0};
};
WorldState& World();

// True while another thread holds the world stopped: `tid` must not (re)enter kAttached.
inline bool WorldStoppedByOther(uint32_t tid) noexcept {
  uint32_t s = World().stopper.load(std::memory_order_acquire);
  return s != 0 && s != tid;
}
// Blocks until no other thread holds the world stopped.
void WaitForWorldRestart(uint32_t tid);
// Spin-then-sleep. A young collection stops the world for tens of microseconds, and waking a
// thread that sleeps on a condition variable takes about as long again (a futex wake, then the
// scheduler), on both sides of every stop: the requester waiting for the others to park, and
// the parked threads waiting for the restart. So each first spins for at most kStopSpin,
// polling the condition, and only then sleeps. Only when every thread involved has a core of
// its own (WorldState::spin): a spinning thread on a shared core would take the time of the
// very thread it waits for. Returns done() at the end.
inline constexpr std::chrono::microseconds kStopSpin{50};
template <class Done>
bool SpinBriefly(Done done) {
  const auto start = std::chrono::steady_clock::now();
  for (uint32_t i = 1;; ++i) {
    if (done()) return true;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
    if ((i & 63) == 0 && std::chrono::steady_clock::now() - start >= kStopSpin) return done();
  }
}
// The CPUs this process may run on (its affinity mask at the first call; at least 1).
unsigned MachineCores() noexcept;
// Called by a thread leaving kAttached (to kBlocked or kExited), with ts->mu held: if the
// running stop counted it, it no longer waits for it (wakes the requester when it was last).
void LeavingAttachedUnderLock(ThreadState* ts) ABSL_EXCLUSIVE_LOCKS_REQUIRED(ts->mu);
// Parks the calling (attached) thread if another thread holds the world stopped, until it
// restarts. Called at safepoints after the queue was drained.
void ParkIfStopped(ThreadState* ts);
// Every ThreadState ever created (exited ids included), under the registry lock.
void ForEachThreadState(absl::FunctionRef<void(ThreadState*)> fn);

// Binds the calling thread to the lowest free id, marks it attached and returns its state.
ThreadState* RegisterCurrentThread();
// Marks the state exited, folds the thread's counters into the retired totals and frees the id.
// The caller has drained the queue and set status under mu.
void UnregisterCurrentThread(ThreadState* ts);
// The state for `tid`, which must have been handed out before (any object's non-zero owner).
ThreadState* LookupThread(uint32_t tid) noexcept;
// Sum of every attached thread's counters and the retired ones.
Stats SumStats();

}  // namespace brc::detail

#endif  // BRC_LIB_THREAD_STATE_H_
