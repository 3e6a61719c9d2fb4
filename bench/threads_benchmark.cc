// brc_bench, many threads: how counting scales, what false sharing costs, what a producer/consumer
// hand-off costs, and an allocation-heavy workload (binary trees) against counted and traced
// baselines. Names follow the report's naming contract (bench/report.py parses them):
//
//   BM_ScaleOwn/<plain|atomic|shared_ptr|brc>        every thread counts on its own object;
//                                                    the objects sit 128 bytes apart
//   BM_ScaleShared/<atomic|shared_ptr|brc>           every thread counts on one object (brc:
//                                                    thread 0 owns it, the others are non-owners)
//   BM_FalseSharing/<plain|atomic|shared_ptr|brc>    every thread counts on its own object, and
//                                                    neighbouring objects are adjacent in memory
//     items_per_second = increment+decrement pairs per second, all threads together
//   BM_Handoff/<brc|shared_ptr|new_delete>           T/2 producers make objects and hand them in
//                                                    batches to T/2 consumers, which drop them
//     items_per_second = objects made and dropped per second
//   BM_BinaryTrees/<contender>/depth:D               build a complete tree, count it, drop it;
//                                                    one thread; counter ns_per_node
//   BM_BinaryTreesPerThread/<contender>/depth:D      the same with one tree per thread;
//     items_per_second = nodes per second, all threads together
//   BM_ReadMostly/<atomic|brc_shared|brc_per_thread|brc_immortal>/temps:<0|1>
//                                                    64 objects of an idle owner; every thread
//                                                    takes and drops references to them in
//                                                    turn (temps:1: and makes and drops a
//                                                    private temporary per step)
//   tree contenders: plain, atomic (intrusive counts, new/delete), shared_ptr (make_shared),
//   brc (untracked node), brc_tracked (node with Trace/Clear, automatic collections on),
//   boehm (Boehm GC, GC_MALLOC'd nodes, no counting; when CMake found libgc).
// Every threaded benchmark measures real time; Google Benchmark names them
// ".../real_time/threads:T". Thread counts are 1, 2, 4, ... below the core count, the core count
// and twice it (oversubscribed); the hand-off uses even counts only. With BRC_BENCH_QUICK set
// (non-empty, not "0"): {1, cores, 2*cores}, hand-off {2, 2*cores}, tree depth 16 only.
//
// Counting discipline, as in refcount_benchmark.cc: the object is reached through Opaque()
// once, and Barrier() follows every increment and every decrement, so that each operation
// really loads and stores the count.
//
// brc threads attach (brc::ThreadScope) for as long as they touch objects, and wait for each
// other only inside a brc::BlockingScope, so that no waiting thread holds up a stop of the world.
// The run lengths come from --benchmark_min_time (refcount_benchmark.cc's main() makes it
// 0.2 s): a per-benchmark MinTime() would change the names Google Benchmark 1.7 prints.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "brc/brc.h"
#include "brc/testing.h"
#include "bench_util.h"

#ifdef BRC_BENCH_HAVE_BOEHM
// Thread support (GC_register_my_thread), without gc.h's macros that rename pthread_create:
// Google Benchmark's threads are registered by hand.
#define GC_THREADS
#define GC_NO_THREAD_REDIRECTS
#include <gc/gc.h>
#endif

namespace {

// ---------------------------------------------------------------------------------------------
// The counting discipline (bench_util.h).
using brc_bench::Barrier;
using brc_bench::Opaque;

constexpr std::size_t kCacheLine = 64;
// Objects meant not to share anything sit this far apart: some x86 cores fetch cache lines in
// adjacent pairs, so one line of distance is not always enough.
constexpr std::size_t kApart = 128;

// ---------------------------------------------------------------------------------------------
// Objects. The counted payloads are 48 bytes, like brc's: a 24-byte header and three words.

struct PlainObject {
  int64_t refcount = 1;
  int64_t a = 0, b = 0, c = 0, d = 0, e = 0;
};

struct AtomicObject {
  std::atomic<int64_t> refcount{1};
  int64_t a = 0, b = 0, c = 0, d = 0, e = 0;
};

struct PlainPayload {  // what a shared_ptr's control block points at
  int64_t a = 0, b = 0, c = 0;
};

struct Payload : brc::Object {
  explicit Payload(int64_t v = 0) : a(v) {}
  int64_t a, b = 0, c = 0;
};

// A brc object alone in its 128-byte block.
struct alignas(kApart) ApartPayload : brc::Object {
  int64_t a = 0, b = 0, c = 0;
};

// Any other object alone in its 128-byte block (make_unique and make_shared honour the
// alignment; for make_shared the whole control block, counts included, gets it).
template <class T>
struct alignas(kApart) Apart {
  T value;
};

static_assert(sizeof(PlainObject) == 48 && sizeof(AtomicObject) == 48 && sizeof(Payload) == 48);
static_assert(sizeof(ApartPayload) == kApart && sizeof(Apart<PlainObject>) == kApart);

// ---------------------------------------------------------------------------------------------
// The timed loops: one increment and one decrement per iteration.

void PlainPairs(benchmark::State& state, PlainObject* p) {
  for (auto _ : state) {
    ++p->refcount;
    Barrier();
    --p->refcount;
    Barrier();
  }
}

void AtomicPairs(benchmark::State& state, AtomicObject* p) {
  for (auto _ : state) {
    // Relaxed: whoever increments already holds a reference, so nothing needs ordering.
    p->refcount.fetch_add(1, std::memory_order_relaxed);
    Barrier();
    // Acq_rel, as std::shared_ptr: a decrement that might be the last must publish this
    // thread's writes to the object and see everyone else's before it could free it.
    p->refcount.fetch_sub(1, std::memory_order_acq_rel);
    Barrier();
  }
}

template <class T>
void SharedPtrPairs(benchmark::State& state, const std::shared_ptr<T>* p) {
  for (auto _ : state) {
    {
      std::shared_ptr<T> copy(*p);
      Barrier();
    }
    Barrier();
  }
}

void BrcPairs(benchmark::State& state, brc::Object* ob) {
  for (auto _ : state) {
    brc::IncRef(ob);
    Barrier();
    brc::DecRef(ob);
    Barrier();
  }
}

// brc's fast path is chosen by comparing the object's owner with the calling thread: check,
// before timing, that this thread takes the path the benchmark claims to measure.
void CheckOwner(benchmark::State& state, const brc::Object* ob, bool want_owner) {
  bool owner = brc::testing::GetCounts(ob).owner == brc::CurrentThreadId();
  if (owner != want_owner) {
    state.SkipWithError(want_owner ? "brc: the counting thread does not own its object"
                                   : "brc: a non-owner thread owns the shared object");
  }
}

// ---------------------------------------------------------------------------------------------
// What the threads of one run share. Google Benchmark calls a benchmark's Setup on the main
// thread before it starts the run's threads and Teardown after it joined them, so the run's
// state is published to the threads by their creation and needs no atomics of its own.

template <class Run>
struct PerRun {
  static void Setup(const benchmark::State& state) { Slot() = std::make_unique<Run>(state.threads()); }
  static void Teardown(const benchmark::State&) { Slot().reset(); }
  static Run& Get() { return *Slot(); }

 private:
  static std::unique_ptr<Run>& Slot() {
    static std::unique_ptr<Run> run;
    return run;
  }
};

// Waits until every thread of the run arrives. Inside a BlockingScope: an attached brc thread
// that waits must not hold up a stop of the world (a no-op on threads that are not attached).
void ArriveAndWait(std::barrier<>& barrier) {
  brc::BlockingScope blocking;
  barrier.arrive_and_wait();
}

// ---------------------------------------------------------------------------------------------
// Scenario 2a: every thread on its own object, objects far apart.

void BM_ScaleOwnPlain(benchmark::State& state) {
  auto object = std::make_unique<Apart<PlainObject>>();
  PlainObject* p = Opaque(&object->value);
  PlainPairs(state, p);
  if (p->refcount != 1) state.SkipWithError("plain counter unbalanced");
  state.SetItemsProcessed(state.iterations());
}

void BM_ScaleOwnAtomic(benchmark::State& state) {
  auto object = std::make_unique<Apart<AtomicObject>>();
  AtomicObject* p = Opaque(&object->value);
  AtomicPairs(state, p);
  // Relaxed: only this thread touched the counter.
  if (p->refcount.load(std::memory_order_relaxed) != 1) state.SkipWithError("atomic unbalanced");
  state.SetItemsProcessed(state.iterations());
}

void BM_ScaleOwnSharedPtr(benchmark::State& state) {
  auto sp = std::make_shared<Apart<PlainPayload>>();
  const std::shared_ptr<Apart<PlainPayload>>* p = Opaque(&sp);
  SharedPtrPairs(state, p);
  if (sp.use_count() != 1) state.SkipWithError("shared_ptr count unbalanced");
  state.SetItemsProcessed(state.iterations());
}

// Each thread makes its own object, so it counts as the owner (local half, no atomics).
void BM_ScaleOwnBrc(benchmark::State& state) {
  brc::ThreadScope attach;
  {
    brc::Ref<ApartPayload> ref = brc::Make<ApartPayload>();
    brc::Object* ob = Opaque(static_cast<brc::Object*>(ref.get()));
    CheckOwner(state, ob, /*want_owner=*/true);
    BrcPairs(state, ob);
    if (brc::GetRefCount(ob) != 1) state.SkipWithError("brc count unbalanced");
  }
  state.SetItemsProcessed(state.iterations());
}

// ---------------------------------------------------------------------------------------------
// Scenario 2b: every thread on one object.

struct AtomicSharedRun {
  explicit AtomicSharedRun(int threads) : done(threads) {}
  Apart<AtomicObject> object;
  std::barrier<> done;
};

void BM_ScaleSharedAtomic(benchmark::State& state) {
  AtomicSharedRun& run = PerRun<AtomicSharedRun>::Get();
  AtomicObject* p = Opaque(&run.object.value);
  AtomicPairs(state, p);
  ArriveAndWait(run.done);
  // Relaxed: the barrier orders every thread's last decrement before this load.
  if (state.thread_index() == 0 && p->refcount.load(std::memory_order_relaxed) != 1) {
    state.SkipWithError("atomic unbalanced");
  }
  state.SetItemsProcessed(state.iterations());
}

struct SharedPtrSharedRun {
  explicit SharedPtrSharedRun(int threads) : done(threads) {}
  std::shared_ptr<PlainPayload> object = std::make_shared<PlainPayload>();
  std::barrier<> done;
};

// All threads copy the same shared_ptr (concurrent copies of one const shared_ptr are allowed).
void BM_ScaleSharedSharedPtr(benchmark::State& state) {
  SharedPtrSharedRun& run = PerRun<SharedPtrSharedRun>::Get();
  const std::shared_ptr<PlainPayload>* p = Opaque(&run.object);
  SharedPtrPairs(state, p);
  ArriveAndWait(run.done);
  if (state.thread_index() == 0 && run.object.use_count() != 1) {
    state.SkipWithError("shared_ptr count unbalanced");
  }
  state.SetItemsProcessed(state.iterations());
}

struct BrcSharedRun {
  explicit BrcSharedRun(int threads) : done(threads) {}
  std::atomic<Payload*> published{nullptr};
  std::barrier<> done;
};

// Thread 0 makes the object and keeps the reference that holds it alive; it counts on the local
// half, every other thread on the shared word of the same object.
void BM_ScaleSharedBrc(benchmark::State& state) {
  BrcSharedRun& run = PerRun<BrcSharedRun>::Get();
  brc::ThreadScope attach;
  brc::Ref<Payload> ref;
  Payload* ob;
  if (state.thread_index() == 0) {
    ref = brc::Make<Payload>();
    ob = ref.get();
    // Release: the object's construction happens-before any other thread's count on it.
    run.published.store(ob, std::memory_order_release);
  } else {
    // Acquire: pairs with the release above.
    while ((ob = run.published.load(std::memory_order_acquire)) == nullptr) {
      brc::Safepoint();
      std::this_thread::yield();
    }
  }
  CheckOwner(state, ob, /*want_owner=*/state.thread_index() == 0);
  BrcPairs(state, Opaque(static_cast<brc::Object*>(ob)));
  ArriveAndWait(run.done);  // nobody counts on the object any more
  if (state.thread_index() == 0) {
    if (brc::GetRefCount(ob) != 1) state.SkipWithError("brc count unbalanced");
    ref = nullptr;
  }
  state.SetItemsProcessed(state.iterations());
}

// ---------------------------------------------------------------------------------------------
// Scenario 2c: every thread on its own object, neighbours adjacent in memory.

// 48-byte slots one after the other in one buffer aligned to a cache line.
class Slab {
 public:
  static constexpr std::size_t kSlotBytes = 48;

  explicit Slab(std::size_t slots)
      : capacity_(slots),
        limit_(slots),
        base_(static_cast<char*>(std::aligned_alloc(
            kCacheLine, (slots * kSlotBytes + kCacheLine - 1) / kCacheLine * kCacheLine))) {
    if (base_ == nullptr) throw std::bad_alloc();
  }
  ~Slab() { std::free(base_); }
  Slab(const Slab&) = delete;
  Slab& operator=(const Slab&) = delete;

  // The next unused slot, or nullptr once `limit` slots were handed out.
  void* Take() noexcept {
    // Relaxed: the read-modify-write gives each slot to one caller whatever the order, and the
    // buffer was made before any thread that takes from it started.
    std::size_t i = next_.fetch_add(1, std::memory_order_relaxed);
    return i < limit_ ? base_ + i * kSlotBytes : nullptr;
  }
  // Starts over with the first `limit` slots. Only between runs, while no thread takes.
  bool Reset(std::size_t limit) noexcept {
    if (limit > capacity_) return false;
    limit_ = limit;
    next_.store(0, std::memory_order_relaxed);  // relaxed: the run's threads start afterwards
    return true;
  }
  bool Contains(const void* p) const noexcept {
    auto* c = static_cast<const char*>(p);
    return c >= base_ && c < base_ + capacity_ * kSlotBytes;
  }
  void* Slot(std::size_t i) const noexcept { return base_ + i * kSlotBytes; }

 private:
  const std::size_t capacity_;
  std::size_t limit_;  // written by Reset only, between runs
  char* const base_;
  std::atomic<std::size_t> next_{0};
};

// What every false-sharing run shares: each thread records where its count lives, and after a
// barrier every thread checks that the counts of neighbours are less than a cache line apart.
struct AdjacentRun {
  explicit AdjacentRun(int threads) : ready(threads), counts(threads, 0) {}

  // Records this thread's count address, waits for the others, returns whether all are adjacent.
  bool RecordAndCheck(const benchmark::State& state, const void* count) {
    counts[state.thread_index()] = reinterpret_cast<std::uintptr_t>(count);
    ArriveAndWait(ready);  // orders every thread's record before the reads below
    std::vector<std::uintptr_t> sorted = counts;
    std::sort(sorted.begin(), sorted.end());
    for (std::size_t i = 1; i < sorted.size(); ++i) {
      std::uintptr_t gap = sorted[i] - sorted[i - 1];
      if (gap == 0 || gap >= kCacheLine) return false;
    }
    return true;
  }

  std::barrier<> ready;
  std::vector<std::uintptr_t> counts;  // element i written only by thread i, before `ready`
};

constexpr const char* kNotAdjacent = "the objects of neighbouring threads are not adjacent";

template <class T>
struct ArrayAdjacentRun : AdjacentRun {
  explicit ArrayAdjacentRun(int threads) : AdjacentRun(threads), slab(threads) {
    static_assert(sizeof(T) == Slab::kSlotBytes);
    for (int i = 0; i < threads; ++i) objects.push_back(::new (slab.Take()) T());
  }
  Slab slab;
  std::vector<T*> objects;  // trivially destructible: the slab goes as a whole
};

void BM_FalseSharingPlain(benchmark::State& state) {
  auto& run = PerRun<ArrayAdjacentRun<PlainObject>>::Get();
  PlainObject* p = run.objects[state.thread_index()];
  if (!run.RecordAndCheck(state, &p->refcount)) state.SkipWithError(kNotAdjacent);
  p = Opaque(p);
  PlainPairs(state, p);
  if (p->refcount != 1) state.SkipWithError("plain counter unbalanced");
  state.SetItemsProcessed(state.iterations());
}

void BM_FalseSharingAtomic(benchmark::State& state) {
  auto& run = PerRun<ArrayAdjacentRun<AtomicObject>>::Get();
  AtomicObject* p = run.objects[state.thread_index()];
  if (!run.RecordAndCheck(state, &p->refcount)) state.SkipWithError(kNotAdjacent);
  p = Opaque(p);
  AtomicPairs(state, p);
  // Relaxed: only this thread touched this counter.
  if (p->refcount.load(std::memory_order_relaxed) != 1) state.SkipWithError("atomic unbalanced");
  state.SetItemsProcessed(state.iterations());
}

// A standard allocator that places std::allocate_shared's control blocks (counts and payload
// together) in consecutive slab slots; it frees nothing, the slab goes as a whole.
template <class T>
struct SlabStdAllocator {
  using value_type = T;
  explicit SlabStdAllocator(Slab* s) noexcept : slab(s) {}
  template <class U>
  SlabStdAllocator(const SlabStdAllocator<U>& other) noexcept : slab(other.slab) {}
  T* allocate(std::size_t n) {
    void* p = n * sizeof(T) <= Slab::kSlotBytes && alignof(T) <= 16 ? slab->Take() : nullptr;
    if (p == nullptr) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T*, std::size_t) noexcept {}
  template <class U>
  bool operator==(const SlabStdAllocator<U>& other) const noexcept {
    return slab == other.slab;
  }
  Slab* slab;
};

// The control blocks (one per thread) are made on the main thread; each thread then copies and
// destroys its own shared_ptr. A control block with this allocator in it is exactly 48 bytes
// (vtable pointer, two counts, the allocator, the 24-byte payload); allocate() refuses more.
struct SharedPtrAdjacentRun : AdjacentRun {
  explicit SharedPtrAdjacentRun(int threads) : AdjacentRun(threads), slab(threads) {
    for (int i = 0; i < threads; ++i) {
      objects.push_back(std::allocate_shared<PlainPayload>(SlabStdAllocator<PlainPayload>(&slab)));
    }
  }
  Slab slab;  // declared first: outlives the shared_ptrs
  std::vector<std::shared_ptr<PlainPayload>> objects;
};

void BM_FalseSharingSharedPtr(benchmark::State& state) {
  auto& run = PerRun<SharedPtrAdjacentRun>::Get();
  const int i = state.thread_index();
  const std::shared_ptr<PlainPayload>* sp = &run.objects[i];
  // Slot i holds thread i's whole control block (allocate_shared allocates once), counts
  // included; check that the payload indeed lies in it.
  auto* slot = static_cast<const char*>(run.slab.Slot(i));
  auto* payload = reinterpret_cast<const char*>(sp->get());
  bool in_slot = payload > slot && payload < slot + Slab::kSlotBytes;
  if (!run.RecordAndCheck(state, slot) || !in_slot) state.SkipWithError(kNotAdjacent);
  sp = Opaque(sp);
  SharedPtrPairs(state, sp);
  state.SetItemsProcessed(state.iterations());
}

// brc objects must be made by the thread that counts on them (to be its owner) and still be
// adjacent: while a false-sharing run lasts, this allocator hands out consecutive slab slots to
// 48-byte objects, whichever thread makes them, and passes every other request (brc's own
// memory) to the default allocator. It lives as long as the process: BRC_DEBUG's quarantine
// keeps a pointer to the allocator that made an object and frees through it later.
class SlabObjectAllocator final : public brc::Allocator {
 public:
  explicit SlabObjectAllocator(std::size_t capacity) : slab_(capacity) {}

  void* Allocate(std::size_t size, std::size_t align) noexcept override {
    if (size == sizeof(Payload) && align == alignof(Payload)) {
      if (void* p = slab_.Take()) return p;
    }
    return brc::DefaultAllocator().Allocate(size, align);
  }
  void Deallocate(void* p, std::size_t size, std::size_t align) noexcept override {
    if (slab_.Contains(p)) return;  // slots are reused by the next run
    brc::DefaultAllocator().Deallocate(p, size, align);
  }
  std::string_view Name() const noexcept override { return "slab"; }
  bool Reset(std::size_t slots) noexcept { return slab_.Reset(slots); }

 private:
  Slab slab_;
};

int Cores() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

SlabObjectAllocator& SlabAllocatorForRuns() {
  // Enough slots for the largest thread count registered (2 * cores); never destroyed.
  static SlabObjectAllocator* const allocator = new SlabObjectAllocator(2 * Cores());
  return *allocator;
}

// Installs the slab allocator for one run (no brc object may be alive then) and restores the
// default afterwards (every object of the run was freed when its thread dropped it).
struct BrcAdjacentRun : AdjacentRun {
  explicit BrcAdjacentRun(int threads) : AdjacentRun(threads) {
    if (!SlabAllocatorForRuns().Reset(threads)) {
      status = absl::ResourceExhaustedError("more threads than slab slots");
      return;
    }
    status = brc::SetAllocator(&SlabAllocatorForRuns());
  }
  ~BrcAdjacentRun() {
    if (!status.ok()) return;
    absl::Status s = brc::SetAllocator(&brc::DefaultAllocator());
    if (!s.ok()) {
      std::fprintf(stderr, "brc_bench: restoring the default allocator failed: %s\n",
                   s.ToString().c_str());
      std::abort();
    }
  }
  absl::Status status;
};

void BM_FalseSharingBrc(benchmark::State& state) {
  auto& run = PerRun<BrcAdjacentRun>::Get();
  brc::ThreadScope attach;
  {
    brc::Ref<Payload> ref;
    if (run.status.ok()) ref = brc::Make<Payload>();
    // Every thread reaches the barrier in RecordAndCheck, even when the run is broken.
    bool adjacent = run.RecordAndCheck(state, ref.get());
    if (!run.status.ok()) {
      state.SkipWithError(("SetAllocator: " + run.status.ToString()).c_str());
    } else if (!adjacent) {
      state.SkipWithError(kNotAdjacent);
    } else {
      CheckOwner(state, ref.get(), /*want_owner=*/true);
    }
    brc::Object* ob = Opaque(static_cast<brc::Object*>(ref.get()));
    BrcPairs(state, ob);  // runs no iteration after an error
    if (ob != nullptr && brc::GetRefCount(ob) != 1) state.SkipWithError("brc count unbalanced");
  }  // the owner drops its object: freed here, into the slab
  state.SetItemsProcessed(state.iterations());
}

// ---------------------------------------------------------------------------------------------
// Scenario 3: hand-off. Threads [0, T/2) produce, thread T/2 + i consumes what producer i makes,
// through a queue of its own.

constexpr int kHandoffBatch = 512;

// A bounded queue of whole batches between one producer and one consumer, under a mutex. Both
// sides poll (and yield) rather than sleep, so a brc producer keeps reaching safepoints while it
// waits. Emptied vectors travel back to the producer, so that no side allocates vector storage.
template <class T>
class BatchQueue {
 public:
  static constexpr std::size_t kMaxBatches = 8;

  // On success `batch` is replaced by an empty vector with room for a batch.
  bool TryPush(std::vector<T>& batch) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (full_.size() >= kMaxBatches) return false;
      full_.push_back(std::move(batch));
      batch.clear();  // moved-from: valid, now certainly empty
      if (!spares_.empty()) {
        batch = std::move(spares_.back());
        spares_.pop_back();
      }
    }
    batch.reserve(kHandoffBatch);
    return true;
  }
  // `out` must be empty; on success it holds the next batch and its old storage became a spare.
  bool TryPop(std::vector<T>& out) {
    std::lock_guard<std::mutex> lock(mu_);
    if (full_.empty()) return false;
    spares_.push_back(std::move(out));
    out = std::move(full_.front());
    full_.pop_front();
    return true;
  }

 private:
  std::mutex mu_;
  std::deque<std::vector<T>> full_;
  std::vector<std::vector<T>> spares_;
};

struct NoScope {};

struct BrcHandoff {
  using Item = brc::Ref<Payload>;
  using Attach = brc::ThreadScope;
  static Item Make(int64_t i) { return brc::Make<Payload>(i); }
  static void Poll() noexcept { brc::Safepoint(); }
};

struct SharedPtrHandoff {
  using Item = std::shared_ptr<PlainPayload>;
  using Attach = NoScope;
  static Item Make(int64_t i) {
    Item item = std::make_shared<PlainPayload>();
    item->a = i;
    return item;
  }
  static void Poll() noexcept {}
};

// Raw new/delete of the same 48 bytes: the allocator's floor for any hand-off.
struct NewDeleteHandoff {
  using Item = std::unique_ptr<PlainObject>;
  using Attach = NoScope;
  static Item Make(int64_t i) {
    Item item(new PlainObject());
    item->a = i;
    return item;
  }
  static void Poll() noexcept {}
};

template <class C>
struct HandoffRun {
  explicit HandoffRun(int threads) {
    for (int i = 0; i < threads / 2; ++i) {
      queues.push_back(std::make_unique<BatchQueue<typename C::Item>>());
    }
  }
  std::vector<std::unique_ptr<BatchQueue<typename C::Item>>> queues;
};

// One iteration: a producer makes a batch and pushes it; a consumer pops a batch and drops it.
// Google Benchmark gives every thread the same iteration count, so each consumer pops exactly
// what its producer pushes. For brc a consumer's drop is a non-owner decrement to zero: the
// object is queued back to its producer and freed at the producer's next Safepoint() (after
// the loop: when its ThreadScope ends, or by the consumer on its behalf once it has detached).
template <class C>
void BM_Handoff(benchmark::State& state) {
  using Item = typename C::Item;
  auto& run = PerRun<HandoffRun<C>>::Get();
  [[maybe_unused]] typename C::Attach attach;
  const int pairs = state.threads() / 2;
  const int index = state.thread_index();
  if (state.threads() % 2 != 0) {
    state.SkipWithError("the hand-off needs an even thread count");
    for (auto _ : state) {
    }
    return;
  }
  std::vector<Item> batch;
  batch.reserve(kHandoffBatch);
  if (index < pairs) {
    BatchQueue<Item>& queue = *run.queues[index];
    int64_t made = 0;
    for (auto _ : state) {
      for (int i = 0; i < kHandoffBatch; ++i) batch.push_back(C::Make(made++));
      while (!queue.TryPush(batch)) {
        C::Poll();
        std::this_thread::yield();
      }
      C::Poll();
    }
  } else {
    BatchQueue<Item>& queue = *run.queues[index - pairs];
    for (auto _ : state) {
      while (!queue.TryPop(batch)) {
        C::Poll();
        std::this_thread::yield();
      }
      batch.clear();  // the drops
      C::Poll();
    }
    // Only consumers count, so each object is counted once.
    state.SetItemsProcessed(state.iterations() * kHandoffBatch);
  }
}

// ---------------------------------------------------------------------------------------------
// Scenario 5: read-mostly sharing, the shape of an interpreter's modules, classes and globals.
// kReadMostlyObjects objects are made by an owner thread that then waits (in a BlockingScope)
// and never counts; every benchmark thread is a non-owner that takes and drops a reference to
// each object in turn; with temps:1 it also makes and drops a private temporary per step (an
// interpreter's intermediate value). Contenders:
//   atomic           std::atomic counts on the same objects (temporaries: new/delete)
//   brc_shared       brc, non-owners on the shared word (per-thread counting off)
//   brc_per_thread   brc, the objects switched with brc::CountPerThread by their owner
//   brc_immortal     brc, the objects immortal: no counting at all, what counting can reach
//     items_per_second = reference pairs per second, all threads together

constexpr int kReadMostlyObjects = 64;  // a power of two

struct AtomicReadMostlyRun {
  explicit AtomicReadMostlyRun(int) {}
  std::vector<Apart<AtomicObject>> objects{kReadMostlyObjects};
};

void BM_ReadMostlyAtomic(benchmark::State& state) {
  auto& run = PerRun<AtomicReadMostlyRun>::Get();
  Apart<AtomicObject>* objects = Opaque(run.objects.data());
  const bool temps = state.range(0) != 0;
  uint32_t i = static_cast<uint32_t>(state.thread_index()) * 7;
  for (auto _ : state) {
    AtomicObject* p = &objects[i++ & (kReadMostlyObjects - 1)].value;
    p->refcount.fetch_add(1, std::memory_order_relaxed);
    Barrier();
    if (temps) {
      auto* t = Opaque(new AtomicObject);
      t->refcount.fetch_add(1, std::memory_order_relaxed);
      Barrier();
      if (t->refcount.fetch_sub(1, std::memory_order_acq_rel) == 1) delete t;
    }
    p->refcount.fetch_sub(1, std::memory_order_acq_rel);
    Barrier();
  }
  state.SetItemsProcessed(state.iterations());
}

enum class ReadMostlyMode { kShared, kPerThread, kDetected, kImmortal };

template <ReadMostlyMode kMode>
struct BrcReadMostlyRun {
  explicit BrcReadMostlyRun(int) {
    if constexpr (kMode == ReadMostlyMode::kDetected) {
      brc::PerThreadConfig c;
      c.detect_contention = true;
      (void)brc::SetPerThreadConfig(c);
    }
    owner = std::thread([this] {
      brc::ThreadScope attach;
      std::vector<brc::Ref<Payload>> mine;
      for (int i = 0; i < kReadMostlyObjects; ++i) {
        mine.push_back(brc::Make<Payload>());
        if constexpr (kMode == ReadMostlyMode::kPerThread) {
          if (!brc::CountPerThread(mine.back().get()).ok()) failed = true;
        } else if constexpr (kMode == ReadMostlyMode::kImmortal) {
          brc::MakeImmortal(mine.back().get());
        }
        objects.push_back(mine.back().get());
      }
      {
        std::lock_guard<std::mutex> lock(mu);
        ready = true;
      }
      cv.notify_all();
      {
        brc::BlockingScope blocked;  // counts nothing until the run ends
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [this] { return done; });
      }
      switched = 0;
      for (auto& r : mine) switched += brc::IsCountedPerThread(r.get()) ? 1 : 0;
      if constexpr (kMode == ReadMostlyMode::kImmortal) {
        for (auto& r : mine) brc::testing::FreeImmortalForTesting(r.Release());
      }
      mine.clear();
      (void)brc::MergePerThreadCounts();  // frees the ones counted per thread
    });
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [this] { return ready; });
  }
  ~BrcReadMostlyRun() {
    {
      std::lock_guard<std::mutex> lock(mu);
      done = true;
    }
    cv.notify_all();
    owner.join();
    (void)brc::SetPerThreadConfig({});
  }
  std::mutex mu;
  std::condition_variable cv;
  bool ready = false, done = false, failed = false;
  int switched = 0;
  std::vector<brc::Object*> objects;  // written by the owner before `ready`
  std::thread owner;
};

template <ReadMostlyMode kMode>
void BM_ReadMostlyBrc(benchmark::State& state) {
  auto& run = PerRun<BrcReadMostlyRun<kMode>>::Get();
  brc::ThreadScope attach;
  if (run.failed) state.SkipWithError("CountPerThread failed");
  brc::Object* const* objects = Opaque(run.objects.data());
  const bool temps = state.range(0) != 0;
  uint32_t i = static_cast<uint32_t>(state.thread_index()) * 7;
  for (auto _ : state) {
    brc::Object* ob = objects[i++ & (kReadMostlyObjects - 1)];
    brc::IncRef(ob);
    Barrier();
    if (temps) {
      brc::Ref<Payload> t = brc::Make<Payload>();
      Opaque(t.get());
      Barrier();
    }
    brc::DecRef(ob);
    Barrier();
    if ((i & 255) == 0) brc::Safepoint();  // where the detector's switch happens
  }
  if (state.thread_index() == 0) {
    int per_thread = 0;
    for (int k = 0; k < kReadMostlyObjects; ++k) {
      per_thread += brc::IsCountedPerThread(run.objects[k]) ? 1 : 0;
    }
    state.counters["per_thread"] = per_thread;
  }
  state.SetItemsProcessed(state.iterations());
}

// ---------------------------------------------------------------------------------------------
// Scenario 4: binary trees. Each contender builds a complete tree of depth D with the same
// recursion, counts its nodes, and drops it.

constexpr int64_t TreeNodes(int depth) { return (int64_t{1} << (depth + 1)) - 1; }

template <class Make>
std::invoke_result_t<Make&> BuildTree(int depth, Make& make) {
  auto node = make();
  if (depth > 0) {
    node->left = BuildTree(depth - 1, make);
    node->right = BuildTree(depth - 1, make);
  }
  return node;
}

template <class P>
auto* RawNode(const P& p) {
  if constexpr (std::is_pointer_v<P>) {
    return p;
  } else {
    return p.get();
  }
}

template <class Node>
int64_t CountNodes(const Node* node) {
  return node->left ? 1 + CountNodes(RawNode(node->left)) + CountNodes(RawNode(node->right)) : 1;
}

// plain and atomic: an intrusive count in the node and a small owning handle.
struct PlainCount {
  int64_t n = 1;
  void Inc() noexcept { ++n; }
  bool Dec() noexcept { return --n == 0; }
};

struct AtomicCount {
  std::atomic<int64_t> n{1};
  // Relaxed: the caller already holds a reference.
  void Inc() noexcept { n.fetch_add(1, std::memory_order_relaxed); }
  // Acq_rel: the last decrement must see every other holder's writes before the delete.
  bool Dec() noexcept { return n.fetch_sub(1, std::memory_order_acq_rel) == 1; }
};

template <class Node>
class CountedRef {
 public:
  CountedRef() noexcept = default;
  static CountedRef Adopt(Node* node) noexcept {
    CountedRef r;
    r.node_ = node;
    return r;
  }
  CountedRef(const CountedRef& other) noexcept : node_(other.node_) {
    if (node_ != nullptr) node_->count.Inc();
  }
  CountedRef(CountedRef&& other) noexcept : node_(std::exchange(other.node_, nullptr)) {}
  CountedRef& operator=(CountedRef other) noexcept {
    std::swap(node_, other.node_);
    return *this;
  }
  ~CountedRef() {
    if (node_ != nullptr && node_->count.Dec()) delete node_;
  }
  Node* get() const noexcept { return node_; }
  Node* operator->() const noexcept { return node_; }
  explicit operator bool() const noexcept { return node_ != nullptr; }

 private:
  Node* node_ = nullptr;
};

template <class Count>
struct CountedNode {
  Count count;
  CountedRef<CountedNode> left, right;
};

struct SharedTreeNode {
  std::shared_ptr<SharedTreeNode> left, right;
};

struct BrcTreeNode : brc::Object {  // a leaf type as far as the collector goes: not tracked
  brc::Ref<BrcTreeNode> left, right;
};

struct TrackedTreeNode : brc::Object {  // tracked: lives in the collector's heap
  brc::Ref<TrackedTreeNode> left, right;
  void Trace(brc::Visitor& v) const {
    v.Visit(left);
    v.Visit(right);
  }
  void Clear() {
    left = nullptr;
    right = nullptr;
  }
};

struct AttachNothing {
  bool ok() const { return true; }
};

struct AttachBrc {
  brc::ThreadScope scope;
  bool ok() const { return true; }
};

// Google Benchmark lines a run's threads up when they enter and when they leave the timed loop.
// A brc thread waiting there while attached would hold up the stop of the world that an
// automatic collection on a thread still in its loop requests, and that thread would never
// arrive: a deadlock. So brc threads pass those two points inside a BlockingScope, left at the
// top of the first iteration and re-entered at the end of the last one.
class BrcLoopGuard {
 public:
  BrcLoopGuard() { blocking_.emplace(); }
  void IterationStart() {
    if (blocking_) blocking_.reset();
  }
  void IterationEnd(const benchmark::State& state) {
    if (++done_ >= state.max_iterations || state.error_occurred()) blocking_.emplace();
  }

 private:
  std::optional<brc::BlockingScope> blocking_;
  benchmark::IterationCount done_ = 0;
};

struct NoLoopGuard {
  void IterationStart() {}
  void IterationEnd(const benchmark::State&) {}
};

struct PlainTrees {
  using Node = CountedNode<PlainCount>;
  using Attach = AttachNothing;
  using LoopGuard = NoLoopGuard;
  static CountedRef<Node> MakeNode() { return CountedRef<Node>::Adopt(new Node()); }
};

struct AtomicTrees {
  using Node = CountedNode<AtomicCount>;
  using Attach = AttachNothing;
  using LoopGuard = NoLoopGuard;
  static CountedRef<Node> MakeNode() { return CountedRef<Node>::Adopt(new Node()); }
};

struct SharedPtrTrees {
  using Attach = AttachNothing;
  using LoopGuard = NoLoopGuard;
  static std::shared_ptr<SharedTreeNode> MakeNode() { return std::make_shared<SharedTreeNode>(); }
};

struct BrcTrees {
  using Attach = AttachBrc;
  using LoopGuard = BrcLoopGuard;
  static brc::Ref<BrcTreeNode> MakeNode() { return brc::Make<BrcTreeNode>(); }
};

// brc::ParkableFrees around the timed loop as well: with one tree per thread, another thread's
// automatic collection would otherwise wait for this thread's whole drop of a tree (131k frees
// and more) before it could stop the world. The loop holds no lock, as the scope requires.
class BrcParkableLoopGuard : public BrcLoopGuard {
 private:
  brc::ParkableFrees parkable_;
};

struct BrcTrackedTrees {
  using Attach = AttachBrc;
  using LoopGuard = BrcParkableLoopGuard;
  // A safepoint per node: the allocation path does not park, and with one tree per thread the
  // other threads' automatic collections wait for this one to reach a safepoint.
  static brc::Ref<TrackedTreeNode> MakeNode() {
    brc::Safepoint();
    return brc::Make<TrackedTreeNode>();
  }
};

#ifdef BRC_BENCH_HAVE_BOEHM
struct GcNode {
  GcNode* left;
  GcNode* right;
};

// GC_INIT once, on the main thread (Setup callbacks run there). Thread registration is switched
// on only for the per-thread runs, which come after every single-thread one.
void InitBoehm() {
  static std::once_flag once;
  std::call_once(once, [] { GC_INIT(); });
}
void BoehmSetup(const benchmark::State&) { InitBoehm(); }
void BoehmThreadsSetup(const benchmark::State&) {
  InitBoehm();
  static std::once_flag once;
  std::call_once(once, [] { GC_allow_register_threads(); });
}

// Registers a Google Benchmark thread with the collector (its stack becomes a root, and it is
// stopped during collections); the main thread is registered already.
class AttachBoehm {
 public:
  AttachBoehm() {
    if (GC_thread_is_registered()) {
      ok_ = true;
      return;
    }
    GC_stack_base base;
    ok_ = registered_ = GC_get_stack_base(&base) == GC_SUCCESS &&
                        GC_register_my_thread(&base) == GC_SUCCESS;
  }
  ~AttachBoehm() {
    if (registered_) GC_unregister_my_thread();
  }
  AttachBoehm(const AttachBoehm&) = delete;
  AttachBoehm& operator=(const AttachBoehm&) = delete;
  bool ok() const { return ok_; }

 private:
  bool ok_ = false;
  bool registered_ = false;
};

// Nodes are never freed by hand: the collector reclaims a tree once nothing points to it.
struct BoehmTrees {
  using Attach = AttachBoehm;
  using LoopGuard = NoLoopGuard;
  static GcNode* MakeNode() {
    void* p = GC_MALLOC(sizeof(GcNode));  // zeroed
    if (p == nullptr) throw std::bad_alloc();
    return static_cast<GcNode*>(p);
  }
};
#endif  // BRC_BENCH_HAVE_BOEHM

// ns_per_node is wall-clock time around the timed loop, not the CPU-time column: Boehm marks on
// helper threads, whose CPU time the benchmark thread's clock does not see.
template <class Tree>
void BM_BinaryTrees(benchmark::State& state) {
  const int depth = static_cast<int>(state.range(0));
  const int64_t nodes = TreeNodes(depth);
  typename Tree::Attach attach;
  if (!attach.ok()) state.SkipWithError("could not attach the thread");
  auto make = &Tree::MakeNode;
  auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    auto root = BuildTree(depth, make);
    if (CountNodes(RawNode(root)) != nodes) state.SkipWithError("wrong tree size");
  }  // the tree is dropped at the end of each iteration
  std::chrono::duration<double, std::nano> wall = std::chrono::steady_clock::now() - start;
  state.SetItemsProcessed(state.iterations() * nodes);
  if (state.iterations() > 0) {
    state.counters["ns_per_node"] =
        wall.count() / (static_cast<double>(state.iterations()) * static_cast<double>(nodes));
  }
}

template <class Tree>
void BM_BinaryTreesPerThread(benchmark::State& state) {
  const int depth = static_cast<int>(state.range(0));
  const int64_t nodes = TreeNodes(depth);
  typename Tree::Attach attach;
  if (!attach.ok()) state.SkipWithError("could not attach the thread");
  auto make = &Tree::MakeNode;
  {
    typename Tree::LoopGuard guard;  // ends before the thread detaches
    for (auto _ : state) {
      guard.IterationStart();
      {
        auto root = BuildTree(depth, make);
        if (CountNodes(RawNode(root)) != nodes) state.SkipWithError("wrong tree size");
      }
      guard.IterationEnd(state);
    }
  }
  state.SetItemsProcessed(state.iterations() * nodes);
}

// ---------------------------------------------------------------------------------------------
// Registration.

bool QuickMode() { return brc_bench::QuickRun(); }

// 1, 2, 4, ... below the core count, the core count, twice it.
std::vector<int> CountingThreads() {
  const int cores = Cores();
  std::set<int> t = {1, cores, 2 * cores};
  if (!QuickMode()) {
    for (int n = 2; n < cores; n *= 2) t.insert(n);
  }
  return {t.begin(), t.end()};
}

// Even counts only (half produce, half consume): 2, 4, ... up to the cores, and twice the cores.
std::vector<int> HandoffThreads() {
  const int cores = Cores();
  std::set<int> t = {2, 2 * cores};
  if (!QuickMode()) {
    for (int n = 4; n < cores; n *= 2) t.insert(n);
    if (cores % 2 == 0) t.insert(cores);
  }
  return {t.begin(), t.end()};
}

using BenchFn = void (*)(benchmark::State&);
using HookFn = void (*)(const benchmark::State&);

benchmark::internal::Benchmark* Threaded(const std::string& name, BenchFn fn,
                                         const std::vector<int>& threads) {
  benchmark::internal::Benchmark* b = benchmark::RegisterBenchmark(name.c_str(), fn);
  for (int t : threads) b->Threads(t);
  return b->UseRealTime();
}

template <class Run>
void WithRun(benchmark::internal::Benchmark* b) {
  b->Setup(&PerRun<Run>::Setup)->Teardown(&PerRun<Run>::Teardown);
}

template <class Tree>
void RegisterSingleTrees(const std::string& contender, HookFn setup = nullptr) {
  auto* b = benchmark::RegisterBenchmark(("BM_BinaryTrees/" + contender).c_str(),
                                         &BM_BinaryTrees<Tree>);
  b->ArgName("depth")->Unit(benchmark::kMillisecond);
  if (QuickMode()) {
    b->Arg(16);
  } else {
    b->DenseRange(16, 20);
  }
  if (setup != nullptr) b->Setup(setup);
}

template <class Tree>
void RegisterPerThreadTrees(const std::string& contender, HookFn setup = nullptr) {
  auto* b = Threaded("BM_BinaryTreesPerThread/" + contender, &BM_BinaryTreesPerThread<Tree>,
                     CountingThreads());
  b->ArgName("depth")->Unit(benchmark::kMillisecond)->Arg(16);
  if (!QuickMode()) b->Arg(20);
  if (setup != nullptr) b->Setup(setup);
}

[[maybe_unused]] const bool kRegistered = [] {
  const std::vector<int> counting = CountingThreads();
  Threaded("BM_ScaleOwn/plain", &BM_ScaleOwnPlain, counting);
  Threaded("BM_ScaleOwn/atomic", &BM_ScaleOwnAtomic, counting);
  Threaded("BM_ScaleOwn/shared_ptr", &BM_ScaleOwnSharedPtr, counting);
  Threaded("BM_ScaleOwn/brc", &BM_ScaleOwnBrc, counting);

  WithRun<AtomicSharedRun>(Threaded("BM_ScaleShared/atomic", &BM_ScaleSharedAtomic, counting));
  WithRun<SharedPtrSharedRun>(
      Threaded("BM_ScaleShared/shared_ptr", &BM_ScaleSharedSharedPtr, counting));
  WithRun<BrcSharedRun>(Threaded("BM_ScaleShared/brc", &BM_ScaleSharedBrc, counting));

  WithRun<ArrayAdjacentRun<PlainObject>>(
      Threaded("BM_FalseSharing/plain", &BM_FalseSharingPlain, counting));
  WithRun<ArrayAdjacentRun<AtomicObject>>(
      Threaded("BM_FalseSharing/atomic", &BM_FalseSharingAtomic, counting));
  WithRun<SharedPtrAdjacentRun>(
      Threaded("BM_FalseSharing/shared_ptr", &BM_FalseSharingSharedPtr, counting));
  WithRun<BrcAdjacentRun>(Threaded("BM_FalseSharing/brc", &BM_FalseSharingBrc, counting));

  for (int temps : {0, 1}) {
    auto arg = [&](benchmark::internal::Benchmark* b) { b->ArgName("temps")->Arg(temps); };
    auto* a = Threaded("BM_ReadMostly/atomic", &BM_ReadMostlyAtomic, counting);
    arg(a);
    WithRun<AtomicReadMostlyRun>(a);
    using M = ReadMostlyMode;
    auto* b1 = Threaded("BM_ReadMostly/brc_shared", &BM_ReadMostlyBrc<M::kShared>, counting);
    arg(b1);
    WithRun<BrcReadMostlyRun<M::kShared>>(b1);
    auto* b2 =
        Threaded("BM_ReadMostly/brc_per_thread", &BM_ReadMostlyBrc<M::kPerThread>, counting);
    arg(b2);
    WithRun<BrcReadMostlyRun<M::kPerThread>>(b2);
    // No contender with contention detection on: a switch stops the world from a Safepoint(),
    // and Google Benchmark's threads wait for each other at the end of the timed loop outside
    // any brc::BlockingScope, which such a stop would wait for forever (README, "Contention
    // detection"). The detector is exercised by the tests and the stress program instead.
    auto* b4 = Threaded("BM_ReadMostly/brc_immortal", &BM_ReadMostlyBrc<M::kImmortal>, counting);
    arg(b4);
    WithRun<BrcReadMostlyRun<M::kImmortal>>(b4);
  }

  const std::vector<int> handoff = HandoffThreads();
  WithRun<HandoffRun<BrcHandoff>>(Threaded("BM_Handoff/brc", &BM_Handoff<BrcHandoff>, handoff));
  WithRun<HandoffRun<SharedPtrHandoff>>(
      Threaded("BM_Handoff/shared_ptr", &BM_Handoff<SharedPtrHandoff>, handoff));
  WithRun<HandoffRun<NewDeleteHandoff>>(
      Threaded("BM_Handoff/new_delete", &BM_Handoff<NewDeleteHandoff>, handoff));

  // Every single-thread tree benchmark is registered (and so runs) before any per-thread one:
  // Boehm switches to thread registration only for the latter.
  RegisterSingleTrees<PlainTrees>("plain");
  RegisterSingleTrees<AtomicTrees>("atomic");
  RegisterSingleTrees<SharedPtrTrees>("shared_ptr");
  RegisterSingleTrees<BrcTrees>("brc");
  RegisterSingleTrees<BrcTrackedTrees>("brc_tracked");
#ifdef BRC_BENCH_HAVE_BOEHM
  RegisterSingleTrees<BoehmTrees>("boehm", &BoehmSetup);
#endif
  RegisterPerThreadTrees<PlainTrees>("plain");
  RegisterPerThreadTrees<AtomicTrees>("atomic");
  RegisterPerThreadTrees<SharedPtrTrees>("shared_ptr");
  RegisterPerThreadTrees<BrcTrees>("brc");
  RegisterPerThreadTrees<BrcTrackedTrees>("brc_tracked");
#ifdef BRC_BENCH_HAVE_BOEHM
  RegisterPerThreadTrees<BoehmTrees>("boehm", &BoehmThreadsSetup);
#endif
  return true;
}();

}  // namespace
