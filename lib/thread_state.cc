// The thread registry: hands out thread ids, maps them to ThreadState, and keeps the counters
// of exited threads.
//
// Ids index a two-level table (1024 chunks of 1024 states, chunks allocated on demand and
// never freed), so LookupThread is two acquire loads and no lock: a thread queueing an object
// finds its owner's state without touching a global lock. Everything else (attaching,
// exiting, summing statistics) is rare and runs under the registry lock.
#include "no_destroy.h"
#include "thread_state.h"

#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <memory>
#include <thread>

#include "brc/detail/thread_local.h"

namespace brc::detail {

constinit thread_local ThreadState* t_state = nullptr;

namespace {

constexpr uint32_t kChunkBits = 10;
constexpr uint32_t kChunkSize = 1u << kChunkBits;
constexpr uint32_t kNumChunks = 1024;

struct Chunk {
  // Each slot is written once, under the registry lock, before its id is handed out.
  std::array<std::atomic<ThreadState*>, kChunkSize> slots{};
};

class Registry {
 public:
  ThreadState* Register(StatCounters* stats) {
    MutexLock lock(&mu_);
    if (!free_ids_.empty()) {
      // Lowest free id first keeps the table dense. Its state exists already.
      auto it = std::min_element(free_ids_.begin(), free_ids_.end());
      uint32_t tid = *it;
      *it = free_ids_.back();
      free_ids_.pop_back();
      ThreadState* ts = SlotFor(tid).load(std::memory_order_relaxed);
      ts->stats = stats;
      return ts;
    }
    BRC_CHECK(next_id_ < kChunkSize * kNumChunks, "more than 2^20 threads attached at once");
    uint32_t tid = next_id_;
    // Everything that may throw std::bad_alloc comes first, so a failure changes nothing:
    // room for every id to be freed again (Unregister runs at thread exit and must not
    // allocate), the chunk, the state.
    free_ids_.reserve(tid);
    std::atomic<ThreadState*>& slot = SlotFor(tid);
    // Relaxed: only this function writes slots, under mu_.
    ThreadState* ts = slot.load(std::memory_order_relaxed);
    if (ts == nullptr) {
      ts = new ThreadState(tid);  // never freed: its id outlives any one thread
      // Release pairs with the acquire in Lookup.
      slot.store(ts, std::memory_order_release);
    }
    ++next_id_;
    ts->stats = stats;
    return ts;
  }

  void Unregister(ThreadState* ts) {
    MutexLock lock(&mu_);
    StatCounters& c = *ts->stats;
    // Relaxed: only the exiting thread (the caller) writes its counters.
#define BRC_FOLD_(name, help)                                  \
  retired_.name += c.name.load(std::memory_order_relaxed);     \
  c.name.store(0, std::memory_order_relaxed);
    BRC_STAT_FIELDS(BRC_FOLD_)
#undef BRC_FOLD_
    ts->stats = nullptr;
    free_ids_.push_back(ts->tid);  // never allocates: Register reserved room for every id
  }

  // fn runs without the registry lock: it may allocate, and the allocator is user code that
  // may itself need the registry (SetAllocator sums statistics under it). States are never
  // freed and each slot is written once, so reading them unlocked is safe; a thread registered
  // after the snapshot of next_id_ is not visited (its callers handle that: a stop is already
  // published when they look, and a new thread waits for its restart).
  void ForEach(absl::FunctionRef<void(ThreadState*)> fn) {
    uint32_t end;
    {
      MutexLock lock(&mu_);
      end = next_id_;
    }
    for (uint32_t tid = 1; tid < end; ++tid) {
      // Acquire pairs with the release stores in Register (as in Lookup).
      Chunk* chunk = chunks_[tid >> kChunkBits].load(std::memory_order_acquire);
      if (chunk == nullptr) continue;
      ThreadState* ts = chunk->slots[tid & (kChunkSize - 1)].load(std::memory_order_acquire);
      if (ts != nullptr) fn(ts);
    }
  }

  ThreadState* Lookup(uint32_t tid) noexcept {
    BRC_CHECK(tid != 0 && tid < kChunkSize * kNumChunks, "thread id out of range");
    // Acquire pairs with the release stores in Register: the chunk and the state are fully
    // constructed before their pointers are seen.
    Chunk* chunk = chunks_[tid >> kChunkBits].load(std::memory_order_acquire);
    BRC_CHECK(chunk != nullptr, "lookup of a thread id that was never handed out");
    ThreadState* ts = chunk->slots[tid & (kChunkSize - 1)].load(std::memory_order_acquire);
    BRC_CHECK(ts != nullptr, "lookup of a thread id that was never handed out");
    return ts;
  }

  Stats Sum() {
    MutexLock lock(&mu_);
    Stats s = retired_;
    for (uint32_t tid = 1; tid < next_id_; ++tid) {
      ThreadState* ts = SlotFor(tid).load(std::memory_order_relaxed);
      if (ts == nullptr || ts->stats == nullptr) continue;
      // Relaxed: a snapshot; the owning thread keeps counting meanwhile.
#define BRC_SUM_(name, help) s.name += ts->stats->name.load(std::memory_order_relaxed);
      BRC_STAT_FIELDS(BRC_SUM_)
#undef BRC_SUM_
    }
    return s;
  }

 private:
  std::atomic<ThreadState*>& SlotFor(uint32_t tid) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::atomic<Chunk*>& c = chunks_[tid >> kChunkBits];
    Chunk* chunk = c.load(std::memory_order_relaxed);  // relaxed: written only under mu_
    if (chunk == nullptr) {
      chunk = new Chunk();  // never freed
      c.store(chunk, std::memory_order_release);  // pairs with the acquire in Lookup
    }
    return chunk->slots[tid & (kChunkSize - 1)];
  }

  Mutex mu_;
  std::vector<uint32_t> free_ids_ ABSL_GUARDED_BY(mu_);
  uint32_t next_id_ ABSL_GUARDED_BY(mu_) = 1;  // id 0 means "no owner"
  Stats retired_ ABSL_GUARDED_BY(mu_);
  std::array<std::atomic<Chunk*>, kNumChunks> chunks_{};
};

Registry& TheRegistry() {
  static NoDestroy<Registry> registry;  // never destroyed: threads may outlive main
  return registry.get();
}

}  // namespace

ThreadState* RegisterCurrentThread() {
  ThreadState* ts = TheRegistry().Register(&tls_stats);
  for (;;) {
    {
      MutexLock lock(&ts->mu);
      BRC_CHECK(ts->status == ThreadStatus::kExited, "a fresh thread id was still in use");
      BRC_CHECK(ts->queue.empty(), "an exited thread id still had queued objects");
      // A thread cannot join a stopped world: it waits for the restart.
      if (!WorldStoppedByOther(ts->tid)) {
        ts->status = ThreadStatus::kAttached;
        ts->accepts_queue.store(true, std::memory_order_relaxed);  // relaxed: under mu
        AdoptHeaps(ts);  // an exited thread's heaps are this thread's now
        ts->os_tid.store(static_cast<int64_t>(syscall(SYS_gettid)), std::memory_order_relaxed);
        break;
      }
    }
    WaitForWorldRestart(ts->tid);
  }
  return ts;
}

WorldState& World() {
  static NoDestroy<WorldState> world;  // never destroyed: threads may outlive main
  return world.get();
}

void WaitForWorldRestart(uint32_t tid) {
  WorldState& w = World();
  std::unique_lock<std::mutex> lock(w.mu);
  w.restarted.wait(lock, [&] {
    uint32_t s = w.stopper.load(std::memory_order_relaxed);  // relaxed: read under w.mu
    return s == 0 || s == tid;
  });
}

void LeavingAttachedUnderLock(ThreadState* ts) {
  WorldState& w = World();
  std::lock_guard<std::mutex> lock(w.mu);
  if (ts->stop_counted) {
    ts->stop_counted = false;
    // The stop no longer waits for this thread: its bit goes too (relaxed, under ts->mu like
    // the requester's fetch_or). Left set, it would announce a stop to nobody: a free inside
    // brc::ParkableFrees under this thread's own later stop ran safepoint work there (merge
    // passes freeing objects with the world held stopped; found by review).
    ts->pending.fetch_and(~kPendingStop, std::memory_order_relaxed);
    // Relaxed: under w.mu, which the requester takes before it relies on the count.
    if (w.remaining.fetch_sub(1, std::memory_order_relaxed) == 1) w.all_parked.notify_one();
  }
}

void ParkIfStopped(ThreadState* ts) {
  {
    MutexLock lock(&ts->mu);
    // Relaxed: the bit only announces the stop; WorldState is read under its mutex below.
    ts->pending.fetch_and(~kPendingStop, std::memory_order_relaxed);
  }
  WorldState& w = World();
  std::unique_lock<std::mutex> lock(w.mu);
  auto stopped_by_other = [&] {
    uint32_t s = w.stopper.load(std::memory_order_relaxed);  // relaxed: read under w.mu
    return s != 0 && s != ts->tid;
  };
  if (!stopped_by_other()) return;
  // `parked` and the wait share one critical section per wake-up, so a stop that begins
  // before this thread runs again finds it parked and does not wait for it.
  ts->parked = true;
  if (ts->stop_counted) {
    ts->stop_counted = false;
    // Relaxed: under w.mu, which the requester takes before it relies on the count.
    if (w.remaining.fetch_sub(1, std::memory_order_relaxed) == 1) w.all_parked.notify_one();
  }
  if (w.spin) {
    // Spin a little before sleeping (SpinBriefly), outside the lock. Still `parked`: a stop
    // that begins meanwhile does not wait for this thread, which is why leaving is decided
    // under the lock below, never on the unlocked read (a new stop may begin in between).
    lock.unlock();
    SpinBriefly([&] {
      // Relaxed: only a hint to stop spinning; the restart is confirmed under w.mu below.
      uint32_t s = w.stopper.load(std::memory_order_relaxed);
      return s == 0 || s == ts->tid;
    });
    lock.lock();
  }
  w.restarted.wait(lock, [&] { return !stopped_by_other(); });
  ts->parked = false;
}

unsigned MachineCores() noexcept {
  static const unsigned cores = [] {
    // The CPUs this process may run on (taskset, cpusets), not every CPU of the machine.
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
      return std::max(1u, static_cast<unsigned>(CPU_COUNT(&set)));
    }
    return std::max(1u, std::thread::hardware_concurrency());
  }();
  return cores;
}

void ForEachThreadState(absl::FunctionRef<void(ThreadState*)> fn) { TheRegistry().ForEach(fn); }

void UnregisterCurrentThread(ThreadState* ts) { TheRegistry().Unregister(ts); }

ThreadState* LookupThread(uint32_t tid) noexcept { return TheRegistry().Lookup(tid); }

Stats SumStats() { return TheRegistry().Sum(); }

}  // namespace brc::detail
