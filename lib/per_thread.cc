// Per-thread counts for hot shared objects (brc/hot.h says what and why; the fast paths are in
// brc/refcount.h). This file: the id pool, switching an object, the slots' slow paths, merge
// passes, the contention detector and the safepoint work that ties them together.
//
// Header of an object counted per thread (brc/object.h has the general layout):
//
//   biased_   owner half = kPerThreadOwner (2^31, never a thread id), local half = id
//   shared_   (count << 2) | kStateMaybeWeak: never merged, so no decrement through the shared
//             word frees it (the inline CAS frees only on reaching "zero, merged") and
//             try-incref never trusts a zero there
//   slots     thread T's share is T's slots[id] (int32, within ±kSlotLimit)
//
//   true count = count + Σ over threads of slots[id]
//
// Who touches what:
//  * slots: the bound thread (its counting, growing its array), and the thread holding the
//    world stopped (a pass reads and zeroes them: the other threads are parked or blocked, and
//    the stop's handshake orders their earlier writes before it).
//  * the pool (ids, the object of each id, the pass's scratch): only the thread holding the
//    world stopped. Stops are exclusive, so the stop is the pool's lock; `g_pool_busy` only
//    refuses re-entry from an Allocator called while the pool grows.
//  * the owner half of a switched object: written once, by the switch (world stopped), and back
//    to 0 by the pass that finds it dead (world stopped).
//
// Invariants:
//  * An object is counted per thread from its switch until a pass finds its sum zero; until
//    then it is not freed, whatever its count reads, so its id is stable.
//  * A slot only goes below zero through the slow path, which marks a pass due: a true count
//    that was positive at the last pass can reach zero only after some slot went below zero.
//  * An id returns to the pool only from the pass that found its object dead, after that pass
//    zeroed every slot: no stale count reaches the next object with the id.
#include "per_thread.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <new>
#include <utility>

#include "brc/detail/thread_local.h"
#include "brc/hot.h"
#include "brc/refcount.h"
#include "brc/stop_the_world.h"
#include "brc/testing.h"
#include "brc/thread.h"
#include "no_destroy.h"
#include "stop_the_world.h"

namespace brc::detail {
namespace {

// Ids fit in the local half below kLocalImmortal.
constexpr uint32_t kMaxIds = uint32_t{1} << 30;
constexpr std::size_t kCacheLineBytes = 64;

// A status that cannot throw: building the message may need memory, and these statuses are
// returned exactly when memory ran out (and with the world stopped, where nothing may throw).
absl::Status Error(absl::StatusCode code, const char* message) noexcept {
  try {
    return absl::Status(code, message);
  } catch (const std::bad_alloc&) {
    return absl::Status(code, "");
  }
}

// ---- configuration (brc/hot.h) ----
// Written by SetPerThreadConfig, read anywhere: relaxed, each value stands alone.
std::atomic<bool> g_detect{false};
std::atomic<uint32_t> g_threshold{64};
std::atomic<int64_t> g_interval_ns{1'000'000};
std::atomic<int64_t> g_max_objects{int64_t{1} << 20};

// ---- the pool: world stopped (see the file comment) ----
struct Pool {
  // Changes only with the world stopped, and under mu, which a detaching thread takes to read
  // `objects` while the world runs. Nothing under mu reaches a safepoint.
  Mutex mu;
  InternalVector<Object*> objects;  // id -> object, nullptr while the id is free
  InternalVector<int64_t> sums;     // a pass's per-id sums; same size, all zero between passes
  InternalVector<uint32_t> free_ids;  // capacity >= objects.size(): a pass never allocates
  uint32_t live = 0;
};
Pool& ThePool() {
  static NoDestroy<Pool> pool;  // never destroyed: threads may outlive main
  return pool.get();
}
// A pass's dead list, kept between passes so that a pass need not allocate: a switch grows it
// to hold every object counted per thread. A pass takes it (swaps it out under the lock) for
// its whole run, destructors included, so a pass nested in those destructors finds less room
// and leaves what it cannot hold for the next pass. The lock is never held across a safepoint.
struct DeadSpare {
  Mutex mu;
  InternalVector<Object*> list ABSL_GUARDED_BY(mu);
};
DeadSpare& Spare() {
  static NoDestroy<DeadSpare> spare;
  return spare.get();
}
bool g_pool_busy = false;  // world stopped: the stopper is growing the pool's vectors
// Objects counted per thread now, for hints read while the world runs (relaxed).
std::atomic<uint32_t> g_live{0};

// States with slots, linked through pt_next (a lock-free push; read with the world stopped).
std::atomic<ThreadState*> g_slot_states{nullptr};

// ---- merge-pass schedule ----
// A pass is due: set by any thread whose slot went below zero (relaxed: it only sends threads
// to look at their safepoint); cleared by a pass (world stopped).
std::atomic<bool> g_due{false};
// steady_clock nanoseconds of the last pass; written by passes, read to pace them (relaxed).
std::atomic<int64_t> g_last_pass_ns{0};

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// brc::testing::FailPerThreadAllocationsForTesting: every allocation below fails (relaxed: a
// test switch, set while nothing races with it).
std::atomic<bool> g_fail_for_testing{false};
void ThrowIfFailingForTesting() {
  if (g_fail_for_testing.load(std::memory_order_relaxed)) throw std::bad_alloc();
}

// ---- per thread ----
// The contention detector's table: lost decrement races per object, direct-mapped by address.
// A different object landing on an entry replaces it, so only an object that keeps losing
// races on this thread reaches the threshold. This thread only.
struct Contention {
  const Object* ob;
  uint32_t lost;
};
constexpr int kContentionEntries = 128;
constinit thread_local Contention t_contention[kContentionEntries] = {};
// Objects the detector picked, each holding one reference, switched at the next safepoint.
constexpr int kMaxNominees = 8;
constinit thread_local Object* t_nominees[kMaxNominees] = {};
constinit thread_local int t_nominee_count = 0;
// Growing the slot array calls the Allocator, which may count: counting meanwhile takes the
// shared word instead of recursing into another growth.
constinit thread_local bool t_growing = false;

void SetOwnPending() noexcept {
  if (std::atomic<uint32_t>* p = tls_pending) {
    // Relaxed: the bit only sends this thread into SafepointSlow.
    if (!(p->load(std::memory_order_relaxed) & kPendingPerThread)) {
      p->fetch_or(kPendingPerThread, std::memory_order_relaxed);
    }
  }
}

void NoteDue() noexcept {
  // Relaxed: see g_due.
  if (!g_due.load(std::memory_order_relaxed)) g_due.store(true, std::memory_order_relaxed);
  SetOwnPending();
}

// Adds `delta` to the shared count of a per-thread-counted object, saturating (leak, never
// wrap) when the sum leaves the 30-bit range. Any thread. Relaxed: this moves counts between
// the thread's slot and the word and orders nothing; the free happens in a pass, after a stop.
void AddToShared(Object* ob, int64_t delta) noexcept {
  std::atomic<int32_t>& shared = Rc::shared(ob);
  int32_t old = shared.load(std::memory_order_relaxed);
  int32_t desired;
  do {
    int64_t count = CountOf(old);
    if (InSaturationBand(static_cast<int32_t>(count))) return;  // immortal: sticky
    int64_t sum = count + delta;
    if (sum >= kSharedSaturationMin || sum <= kSharedNegativeLimit) {
      desired = Word(kSharedSaturated, StateOf(old));
    } else {
      desired = Word(static_cast<int32_t>(sum), StateOf(old));
    }
  } while (!shared.compare_exchange_weak(old, desired, std::memory_order_relaxed,
                                         std::memory_order_relaxed));
  if (CountOf(desired) == kSharedSaturated) BRC_STAT_INC(saturated);
}

// Makes this thread's slot array cover `id`. False when it cannot (out of memory, or called
// from the Allocator while growing): the caller counts through the shared word instead.
bool GrowSlots(uint32_t id) noexcept {
  ThreadState* ts = t_state;
  // With the world stopped by this thread (the collector taking its references, say) the
  // Allocator, which is user code, must not run: count through the shared word then.
  if (ts == nullptr || t_growing || ThisThreadStoppedTheWorld()) return false;
  // Whole cache lines of slots, with a line of padding on each side: every thread writes its
  // slots on every count, and a neighbour's allocation in the same line would be false
  // sharing (measured: a slot pair four times slower).
  constexpr uint32_t kPerLine = kCacheLineBytes / sizeof(int32_t);
  uint32_t size = std::max<uint32_t>({id + 1, 2 * ts->pt_size, kPerLine});
  size = (size + kPerLine - 1) / kPerLine * kPerLine;
  std::size_t bytes = sizeof(int32_t) * size + 3 * kCacheLineBytes;
  t_growing = true;
  char* block;
  try {
    ThrowIfFailingForTesting();
    block = static_cast<char*>(InternalAllocate(bytes));
  } catch (const std::bad_alloc&) {
    t_growing = false;
    return false;
  }
  t_growing = false;
  auto* fresh = reinterpret_cast<int32_t*>(
      (reinterpret_cast<uintptr_t>(block) + 2 * kCacheLineBytes - 1) & ~uintptr_t{kCacheLineBytes - 1});
  // The Allocator ran user code, which may have counted meanwhile (through the shared word:
  // t_growing), so the array is read only now. No stop can read it between here and the
  // publication below: this thread is running, not parked.
  std::fill(fresh, fresh + size, 0);
  std::copy(ts->pt_slots, ts->pt_slots + ts->pt_size, fresh);
  void* old_block = ts->pt_block;
  std::size_t old_bytes = ts->pt_block_bytes;
  ts->pt_slots = fresh;
  ts->pt_size = size;
  ts->pt_block = block;
  ts->pt_block_bytes = bytes;
  tls_slots = PerThreadSlots{fresh, size};
  if (old_block != nullptr) InternalDeallocate(old_block, old_bytes);
  // Relaxed exchange: only this thread links its state; the push below is what publishes it.
  if (!ts->pt_linked.exchange(true, std::memory_order_relaxed)) {
    ThreadState* head = g_slot_states.load(std::memory_order_relaxed);
    do {
      ts->pt_next = head;
      // Release: pt_next is written before the state is reachable from the list; a pass reads
      // the list with the world stopped, which orders it anyway.
    } while (!g_slot_states.compare_exchange_weak(head, ts, std::memory_order_release,
                                                  std::memory_order_relaxed));
  }
  return true;
}

// ---- the pool ----

// Switches `ob`. World stopped by this thread; g_pool_busy is set by the caller.
absl::Status SwitchStopped(Object* ob) {
  if (Rc::IsImmortal(ob) || Rc::IsPerThread(ob)) return absl::OkStatus();
  if (Rc::flags(ob).load(std::memory_order_relaxed) & kFlagDead) {
    return Error(absl::StatusCode::kFailedPrecondition,
        "brc::CountPerThread: the object is dead (its count reached zero) and waits to be freed");
  }
  Pool& pool = ThePool();
  MutexLock lock(&pool.mu);
  if (int64_t{pool.live} >= g_max_objects.load(std::memory_order_relaxed)) {
    return Error(absl::StatusCode::kResourceExhausted,
        "brc::CountPerThread: PerThreadConfig::max_objects objects are counted per thread");
  }
  uint32_t id;
  if (!pool.free_ids.empty()) {
    id = pool.free_ids.back();
    pool.free_ids.pop_back();
  } else {
    id = static_cast<uint32_t>(pool.objects.size());
    if (id >= kMaxIds) {
      return Error(absl::StatusCode::kResourceExhausted,
                   "brc::CountPerThread: out of per-thread ids");
    }
    // Everything that may throw first, so that a failure changes nothing.
    try {
      // Each against its own capacity: after a failure part-way, the next switch grows the
      // ones still short (a push below must never allocate with the world stopped).
      auto grow = [&](auto& v) {
        if (v.capacity() >= id + 1) return;
        ThrowIfFailingForTesting();
        v.reserve(std::max<std::size_t>(2 * v.capacity(), std::max<std::size_t>(id + 1, 64)));
      };
      grow(pool.objects);
      grow(pool.sums);
      grow(pool.free_ids);
    } catch (const std::bad_alloc&) {
      return Error(absl::StatusCode::kResourceExhausted,
          "brc::CountPerThread: out of memory for the per-thread id tables");
    }
    pool.objects.push_back(nullptr);  // fits
    pool.sums.push_back(0);           // fits
  }
  {
    DeadSpare& spare = Spare();
    MutexLock lock(&spare.mu);
    if (spare.list.capacity() < pool.live + 1) {
      try {
        ThrowIfFailingForTesting();
        spare.list.reserve(std::max<std::size_t>(2 * spare.list.capacity(), pool.live + 1));
      } catch (const std::bad_alloc&) {
        pool.free_ids.push_back(id);  // fits: capacity >= objects.size()
        return Error(absl::StatusCode::kResourceExhausted,
            "brc::CountPerThread: out of memory for the per-thread id tables");
      }
    }
  }
  pool.objects[id] = ob;
  ++pool.live;
  g_live.store(pool.live, std::memory_order_relaxed);
  // Fold the owner's half into the shared word. A queued state means a merge-queue entry
  // still holds one reference that the count includes; its drain later subtracts it through
  // the shared word (Rc::ExplicitMerge sees the object counted per thread).
  uint64_t biased = Rc::biased(ob).load(std::memory_order_relaxed);
  int64_t local = OwnerOf(biased) == kNoOwner ? 0 : LocalOf(biased);
  int32_t shared = Rc::shared(ob).load(std::memory_order_relaxed);
  int64_t total = int64_t{CountOf(shared)} + local;
  int32_t word = total >= kSharedSaturationMin ? Word(kSharedSaturated, kStateMaybeWeak)
                                               : Word(static_cast<int32_t>(total), kStateMaybeWeak);
  // Relaxed stores: the world is stopped; the restart publishes them.
  Rc::SetBiased(ob, kPerThreadOwner, id);
  Rc::shared(ob).store(word, std::memory_order_relaxed);
  BRC_STAT_INC(per_thread_switched);
  return absl::OkStatus();
}

// Switches `obs` under one stop (or the caller's). Statuses in `out` when given.
absl::Status SwitchAll(Object* const* obs, int n, bool detected) {
  ThreadState* self = t_state;
  if (self == nullptr || self->blocking_depth > 0) {
    return Error(absl::StatusCode::kFailedPrecondition,
        "brc::CountPerThread: the calling thread is not attached (or is in a BlockingScope)");
  }
  if (StopInProgressOnThisThread()) {
    return Error(absl::StatusCode::kFailedPrecondition,
        "brc::CountPerThread from the stop-the-world watchdog handler");
  }
  bool stop_here = !ThisThreadStoppedTheWorld();
  if (!stop_here && g_pool_busy) {
    return Error(absl::StatusCode::kFailedPrecondition,
        "brc::CountPerThread re-entered from an Allocator while the per-thread tables grow");
  }
  if (stop_here) StopWorld(self);
  g_pool_busy = true;
  absl::Status first;
  for (int i = 0; i < n; ++i) {
    absl::Status s = SwitchStopped(obs[i]);
    if (s.ok() && detected && Rc::IsPerThread(obs[i])) BRC_STAT_INC(per_thread_detected);
    if (!s.ok() && first.ok()) first = s;
  }
  g_pool_busy = false;
  if (stop_here) RestartWorld();
  return first;
}

// A pass on this thread: stop (unless held), fold, restart, drop the dead.
absl::Status RunPass() noexcept {
  ThreadState* self = t_state;
  if (self == nullptr || self->blocking_depth > 0 || StopInProgressOnThisThread()) {
    return Error(absl::StatusCode::kFailedPrecondition,
        "brc::MergePerThreadCounts: the calling thread is not attached (or is in a "
        "BlockingScope, or runs the stop-the-world watchdog handler)");
  }
  bool stop_here = !ThisThreadStoppedTheWorld();
  if (!stop_here && g_pool_busy) {
    return Error(absl::StatusCode::kFailedPrecondition,
        "brc::MergePerThreadCounts re-entered from an Allocator while the per-thread tables grow");
  }
  if (stop_here) StopWorld(self);
  InternalVector<Object*> dead;
  {
    DeadSpare& spare = Spare();
    MutexLock lock(&spare.mu);
    dead.swap(spare.list);
  }
  FoldPerThreadCounts(&dead);
  if (stop_here) RestartWorld();
  for (Object* ob : dead) Rc::DecRef(ob);
  // Those destructors may have dropped the last references to other per-thread-counted
  // objects (a chain of them, each holding the next): another pass frees those, as long as
  // passes keep finding dead objects. One stop per link: chains of such objects are unusual.
  while (stop_here && !dead.empty() && g_due.load(std::memory_order_relaxed)) {
    dead.clear();
    StopWorld(self);
    FoldPerThreadCounts(&dead);
    RestartWorld();
    for (Object* ob : dead) Rc::DecRef(ob);
  }
  dead.clear();
  {
    // Give the room back, unless a nested pass or a switch left a larger list meanwhile.
    DeadSpare& spare = Spare();
    MutexLock lock(&spare.mu);
    if (spare.list.capacity() < dead.capacity()) spare.list.swap(dead);
  }
  return absl::OkStatus();
}

}  // namespace

// ---- slow paths (brc/refcount.h) ----

void Rc::SlotIncRefSlow(Object* ob) noexcept {
  if (tls_tid == kNotAttached) ReportNotAttached(ob);  // no slots while not attached or blocked
  uint32_t id = Local(ob);
  if (id >= tls_slots.size && !GrowSlots(id)) {
    AddToShared(ob, 1);
    BRC_OP_STAT_INC(shared_increfs);
    return;
  }
  int32_t& slot = tls_slots.slots[id];
  if (slot < kSlotLimit) {
    ++slot;  // reached after a growth
  } else {
    AddToShared(ob, int64_t{slot} + 1);  // spill, never wrap
    slot = 0;
  }
  BRC_OP_STAT_INC(local_increfs);
}

void Rc::SlotDecRefSlow(Object* ob) noexcept {
  if (tls_tid == kNotAttached) ReportNotAttached(ob);
  uint32_t id = Local(ob);
  if (id >= tls_slots.size && !GrowSlots(id)) {
    PerThreadSharedDecRef(ob);
    return;
  }
  int32_t& slot = tls_slots.slots[id];
  if (slot > -kSlotLimit) {
    --slot;
  } else {
    AddToShared(ob, int64_t{slot} - 1);
    slot = 0;
  }
  BRC_OP_STAT_INC(local_decrefs);
  NoteDue();  // the slot went below its value at the last pass
}

void Rc::PerThreadSharedDecRef(Object* ob) noexcept {
  AddToShared(ob, -1);
  BRC_OP_STAT_INC(shared_decrefs);
  NoteDue();
}

void Rc::NoteContention(Object* ob) noexcept {
  if (!g_detect.load(std::memory_order_relaxed)) return;  // relaxed: a setting
  // A detaching thread will not reach another safepoint: its nominees would outlive it.
  if (t_state == nullptr || t_state->detaching) return;
  Contention& e = t_contention[(reinterpret_cast<uintptr_t>(ob) >> 5) % kContentionEntries];
  if (e.ob != ob) e = Contention{ob, 0};
  if (++e.lost < g_threshold.load(std::memory_order_relaxed)) return;
  e = Contention{nullptr, 0};
  if (t_nominee_count == kMaxNominees || IsImmortal(ob) || IsPerThread(ob)) return;
  for (int i = 0; i < t_nominee_count; ++i) {
    if (t_nominees[i] == ob) return;
  }
  // The caller is dropping a reference it still holds: the nominee's own reference keeps the
  // object alive until the safepoint switches it.
  IncRef(ob);
  t_nominees[t_nominee_count++] = ob;
  SetOwnPending();
}

// ---- passes ----

std::size_t PerThreadObjectCount() noexcept { return g_live.load(std::memory_order_relaxed); }

void FoldPerThreadCounts(InternalVector<Object*>* dead) noexcept {
  BRC_STAT_INC(merge_passes);
  g_last_pass_ns.store(NowNs(), std::memory_order_relaxed);
  g_due.store(false, std::memory_order_relaxed);
  Pool& pool = ThePool();
  MutexLock lock(&pool.mu);
  if (pool.live == 0) return;
  const std::size_t n = pool.objects.size();
  // Thread by thread (each array is read once, in order), into the per-id sums.
  for (ThreadState* ts = g_slot_states.load(std::memory_order_acquire); ts != nullptr;
       ts = ts->pt_next) {
    int32_t* slots = ts->pt_slots;
    std::size_t m = std::min<std::size_t>(ts->pt_size, n);
    for (std::size_t id = 0; id < m; ++id) {
      if (slots[id] != 0) {
        pool.sums[id] += slots[id];
        slots[id] = 0;
      }
    }
  }
  bool left_dead = false;
  for (std::size_t id = 0; id < n; ++id) {
    int64_t sum = pool.sums[id];
    pool.sums[id] = 0;
    Object* ob = pool.objects[id];
    if (ob == nullptr) continue;
    // Relaxed loads and stores: the world is stopped; the restart publishes them.
    int32_t shared = Rc::shared(ob).load(std::memory_order_relaxed);
    int32_t count = CountOf(shared);
    if (InSaturationBand(count)) continue;  // immortal: never dead
    int64_t total = int64_t{count} + sum;
    if (total >= kSharedSaturationMin) {
      Rc::shared(ob).store(Word(kSharedSaturated, StateOf(shared)), std::memory_order_relaxed);
      BRC_STAT_INC(saturated);
      continue;
    }
    if (total < 0) {
      ReportMisuse(ob, "negative reference count found by a merge pass of per-thread counts "
                       "(more releases than references)");
    }
    if (total > 0 || dead->size() == dead->capacity()) {
      left_dead |= total == 0;
      Rc::shared(ob).store(Word(static_cast<int32_t>(total), StateOf(shared)),
                           std::memory_order_relaxed);
      continue;
    }
    // Dead: an ordinary merged object again, holding one reference for the caller to drop,
    // marked dead first so that no Lock() takes it back meanwhile. Every slot of `id` is zero
    // now, so the id can serve the next object.
    Rc::flags(ob).fetch_or(kFlagDead, std::memory_order_relaxed);
    Rc::SetBiased(ob, kNoOwner, 0);
    Rc::shared(ob).store(Word(1, kStateMerged), std::memory_order_relaxed);
    pool.objects[id] = nullptr;
    pool.free_ids.push_back(static_cast<uint32_t>(id));  // fits: reserved by the switch
    --pool.live;
    dead->push_back(ob);
    BRC_STAT_INC(per_thread_freed);
  }
  g_live.store(pool.live, std::memory_order_relaxed);
  if (left_dead) g_due.store(true, std::memory_order_relaxed);
}

int64_t PerThreadRefCount(const Object* ob) noexcept {
  ThreadState* self = t_state;
  if (self == nullptr || self->blocking_depth > 0 || StopInProgressOnThisThread()) {
    return Rc::RefCount(ob);
  }
  bool stop_here = !ThisThreadStoppedTheWorld();
  if (stop_here) StopWorld(self);
  int64_t total = Rc::RefCount(ob);  // the shared count and this thread's slot
  if (Rc::IsPerThread(ob) && !Rc::IsImmortal(ob)) {         // still: the stop may have run destructors, not a pass
    uint32_t id = Rc::Local(ob);
    for (ThreadState* ts = g_slot_states.load(std::memory_order_acquire); ts != nullptr;
         ts = ts->pt_next) {
      if (ts != self && id < ts->pt_size) total += ts->pt_slots[id];
    }
  }
  if (stop_here) RestartWorld();
  return total;
}

void ForgetPerThread(Object* ob) noexcept {
  ThreadState* self = t_state;
  bool stop_here = !ThisThreadStoppedTheWorld();
  if (stop_here) StopWorld(self);
  uint32_t id = Rc::Local(ob);
  for (ThreadState* ts = g_slot_states.load(std::memory_order_acquire); ts != nullptr;
       ts = ts->pt_next) {
    if (id < ts->pt_size) ts->pt_slots[id] = 0;
  }
  Pool& pool = ThePool();
  MutexLock lock(&pool.mu);
  if (id < pool.objects.size() && pool.objects[id] == ob) {
    pool.objects[id] = nullptr;
    pool.free_ids.push_back(id);  // fits: reserved by the switch
    --pool.live;
    g_live.store(pool.live, std::memory_order_relaxed);
  }
  Rc::SetBiased(ob, kNoOwner, kLocalImmortal);
  if (stop_here) RestartWorld();
}

// ---- safepoints and thread lifecycle ----

namespace {

void SwitchNominees() noexcept {
  int n = t_nominee_count;
  if (n == 0) return;
  Object* obs[kMaxNominees];
  std::copy(t_nominees, t_nominees + n, obs);
  t_nominee_count = 0;
  // A failure (out of ids or memory) leaves the object as it was: the detector may pick it
  // again later. Nothing to report: the switch is an optimisation.
  (void)SwitchAll(obs, n, /*detected=*/true);
  for (int i = 0; i < n; ++i) Rc::DecRef(obs[i]);
}

// Drops the nominees' references, copied out first: a destructor run by a drop may nominate
// again (into the emptied list), so this loops until the list stays empty.
void DropNominees() noexcept {
  while (t_nominee_count > 0) {
    Object* obs[kMaxNominees];
    int n = std::exchange(t_nominee_count, 0);
    std::copy(t_nominees, t_nominees + n, obs);
    for (int i = 0; i < n; ++i) Rc::DecRef(obs[i]);
  }
}

bool PassAllowedNow() noexcept {
  return NowNs() - g_last_pass_ns.load(std::memory_order_relaxed) >=
         g_interval_ns.load(std::memory_order_relaxed);
}

}  // namespace

void PerThreadSafepoint(ThreadState* ts) noexcept {
  // Relaxed: the bit is this thread's own note (or a hand-over, which carries no data).
  ts->pending.fetch_and(~kPendingPerThread, std::memory_order_relaxed);
  SwitchNominees();
  if (!g_due.load(std::memory_order_relaxed)) return;
  if (PassAllowedNow()) {
    (void)RunPass();
  } else {
    SetOwnPending();  // look again at the next safepoint
  }
}

namespace {

// Hands a due pass to every other attached thread: their next safepoint runs it.
void HandOverPass(ThreadState* ts) noexcept {
  ForEachThreadState([&](ThreadState* other) {
    if (other == ts) return;
    MutexLock lock(&other->mu);
    // Blocked threads too: one may be joining this one, and it looks at its pending word at
    // its first safepoint after the BlockingScope.
    if (other->status == ThreadStatus::kExited) return;
    // Relaxed: as SetOwnPending.
    other->pending.fetch_or(kPendingPerThread, std::memory_order_relaxed);
  });
}

}  // namespace

void PerThreadLeaving(ThreadState* ts, bool blocking) noexcept {
  // Neither leaving path stops the world: a thread often detaches or blocks just as another
  // thread waits for it (joins it) without a BlockingScope, and a stop would wait for that
  // one forever. Nominees are dropped unswitched (the detector may pick them again).
  DropNominees();
  if (!blocking && ts->pt_slots != nullptr) {
    // Spill this thread's slots into the shared words (atomic adds, safe with the world
    // running: objects counted per thread are freed only by a pass, which cannot run while
    // this thread runs), so that the next thread bound to the id starts from zero and no pass
    // has to read this one's slots.
    bool negative = false;
    Pool& pool = ThePool();
    MutexLock lock(&pool.mu);
    std::size_t m = std::min<std::size_t>(ts->pt_size, pool.objects.size());
    for (std::size_t id = 0; id < m; ++id) {
      int32_t v = ts->pt_slots[id];
      if (v == 0) continue;
      negative |= v < 0;
      if (Object* ob = pool.objects[id]) AddToShared(ob, v);
      ts->pt_slots[id] = 0;
    }
    if (negative) g_due.store(true, std::memory_order_relaxed);
  }
  if (!g_due.load(std::memory_order_relaxed)) return;
  // The pass this thread would have run at its next safepoint: someone else's now.
  HandOverPass(ts);
}

void PerThreadDetachedDrain(ThreadState* ts) noexcept {
  // Destructors run by the detaching thread's last drain may have dropped references (their
  // slots stay in the state and later passes fold them); a pass they made due goes to others.
  if (g_due.load(std::memory_order_relaxed)) HandOverPass(ts);
}

void PerThreadAttached(ThreadState* ts) noexcept {
  // A pass may be due (handed over while this thread was blocked or not attached): look at
  // the next safepoint.
  if (g_due.load(std::memory_order_relaxed)) {
    ts->pending.fetch_or(kPendingPerThread, std::memory_order_relaxed);  // relaxed: a hint
  }
  tls_slots = PerThreadSlots{ts->pt_slots, ts->pt_size};
}

void PerThreadDetached() noexcept { tls_slots = PerThreadSlots{nullptr, 0}; }

}  // namespace brc::detail

// ---- public API (brc/hot.h) ----

namespace brc {

absl::Status CountPerThread(Object* ob) {
  detail::Rc::CheckNotFreed(ob);
  if (detail::Rc::IsImmortal(ob) || detail::Rc::IsPerThread(ob)) {
    if (detail::t_state == nullptr || detail::t_state->blocking_depth > 0) {
      return detail::Error(absl::StatusCode::kFailedPrecondition,
          "brc::CountPerThread: the calling thread is not attached (or is in a BlockingScope)");
    }
    return absl::OkStatus();
  }
  return detail::SwitchAll(&ob, 1, /*detected=*/false);
}

bool IsCountedPerThread(const Object* ob) noexcept { return detail::Rc::IsPerThread(ob); }

absl::Status MergePerThreadCounts() { return detail::RunPass(); }

absl::Status SetPerThreadConfig(const PerThreadConfig& config) {
  if (config.contention_threshold < 1 || config.contention_threshold > (1 << 20)) {
    return absl::InvalidArgumentError(
        "SetPerThreadConfig: contention_threshold must be in [1, 2^20]");
  }
  if (config.merge_interval < absl::ZeroDuration() ||
      config.merge_interval > absl::Seconds(10)) {
    return absl::InvalidArgumentError(
        "SetPerThreadConfig: merge_interval must be in [0, 10 s] (and finite)");
  }
  if (config.max_objects < 1 || config.max_objects > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError("SetPerThreadConfig: max_objects must be in [1, 2^30]");
  }
  // Relaxed: each setting stands alone.
  detail::g_detect.store(config.detect_contention, std::memory_order_relaxed);
  detail::g_threshold.store(static_cast<uint32_t>(config.contention_threshold),
                            std::memory_order_relaxed);
  detail::g_interval_ns.store(absl::ToInt64Nanoseconds(config.merge_interval),
                              std::memory_order_relaxed);
  detail::g_max_objects.store(config.max_objects, std::memory_order_relaxed);
  return absl::OkStatus();
}

PerThreadConfig GetPerThreadConfig() {
  PerThreadConfig c;
  c.detect_contention = detail::g_detect.load(std::memory_order_relaxed);
  c.contention_threshold = static_cast<int>(detail::g_threshold.load(std::memory_order_relaxed));
  c.merge_interval = absl::Nanoseconds(detail::g_interval_ns.load(std::memory_order_relaxed));
  c.max_objects = detail::g_max_objects.load(std::memory_order_relaxed);
  return c;
}

}  // namespace brc

namespace brc::testing {

int32_t PerThreadSlotForTesting(const Object* ob) {
  if (!detail::Rc::IsPerThread(ob)) {
    detail::ReportMisuse(ob, "PerThreadSlotForTesting: the object is not counted per thread");
  }
  uint32_t id = detail::Rc::Local(ob);
  return id < detail::tls_slots.size ? detail::tls_slots.slots[id] : 0;
}

bool SetPerThreadSlotForTesting(Object* ob, int32_t value) {
  if (!detail::Rc::IsPerThread(ob)) {
    detail::ReportMisuse(ob, "SetPerThreadSlotForTesting: the object is not counted per thread");
  }
  uint32_t id = detail::Rc::Local(ob);
  if (id >= detail::tls_slots.size && !detail::GrowSlots(id)) return false;
  detail::tls_slots.slots[id] = value;
  return true;
}

void NoteContentionForTesting(Object* ob) { detail::Rc::NoteContention(ob); }

void FailPerThreadAllocationsForTesting(bool fail) {
  detail::g_fail_for_testing.store(fail, std::memory_order_relaxed);
}

void ResetContentionForTesting() {
  std::fill(std::begin(detail::t_contention), std::end(detail::t_contention),
            detail::Contention{nullptr, 0});
}

}  // namespace brc::testing
