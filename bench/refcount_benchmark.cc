// brc_bench: the cost of a reference count operation and of an object's life, beside the
// baselines that bound it, all in one binary so that one run on one machine compares them.
//
// Counting (time per iteration = ns per increment+decrement pair, single thread unless noted):
//   BM_Pair/plain        ++/-- on a plain int64 field: the physical limit
//   BM_Pair/atomic       fetch_add(relaxed) + fetch_sub(acq_rel) on one std::atomic<int64_t>
//   BM_Pair/shared_ptr   copy + destroy a std::shared_ptr
//   BM_Pair/brc_owner    brc::IncRef + brc::DecRef by the owner (local half, no atomic)
//   BM_Pair/brc_nonowner the same on an object owned by another (live, blocked) thread
//   BM_Pair/brc_immortal the same on an immortal object
//   BM_Pair/brc_ref      copy + destroy a brc::Ref held by the owner (vs BM_Pair/shared_ptr)
//   .../threads:2      one counter hammered from both cores (CPU column = per thread)
//   BM_BranchProbe/taken:1 and /taken:3 (x86-64): 1000 turns of a loop with one, or three,
//                      taken branches per turn and nothing else. Not brc: a probe of the core's
//                      front end. Loops bound by taken branches (an immortal pair takes three
//                      per iteration, per-thread counting five) run at one speed on a quiet core
//                      and up to twice slower, in phases, while another virtual machine keeps
//                      the core's other hardware thread busy; the owner's pair (one taken
//                      branch, bound by its store) barely moves. The report prints the probe
//                      beside the rows that move with it.
// Every contender uses the same discipline: the object is reached through a pointer the
// compiler cannot see through (Opaque() once: see its comment), and a compiler barrier
// (benchmark::ClobberMemory) follows each increment and each decrement, so that every operation
// really loads and stores the count and nothing is folded or hoisted out of the loop.
//
// Object memory (brc's default per-thread heap, brc::MallocAllocator, brc::ScalableAllocator:
// /brc_heap, /malloc and /tbbmalloc):
//   BM_MakeDrop        Make + drop one 48-byte object
//   BM_MakeDropBatch   Make 1000 into a vector, then drop them all
//   BM_CrossThread     one thread makes objects, another drops them (objects go back to the
//                      owner's merge queue and are freed at its safepoints, as brc does)
//   BM_AllocatorRaw / BM_AllocatorCrossThreadRaw: the allocator alone, for reference
// with std::make_shared / std::shared_ptr baselines. The per_obj counter is seconds per object.
// Binary trees, the thread-scaling, false-sharing and hand-off scenarios are in
// threads_*.cc; the collector's in collector_benchmark.cc.
//
// By default the binary runs 5 repetitions of at least 0.2 s each and reports aggregates only
// (about 35 s on a 2-core VM); a --benchmark_repetitions, --benchmark_report_aggregates_only or
// --benchmark_min_time flag on the command line replaces that default. Read the median rows.
// The two-thread benchmarks (threads:2, CrossThread) need both cores to themselves: on a 2-core
// machine with anything else running they vary several-fold between runs.
#include <benchmark/benchmark.h>

#include <atomic>
#include <barrier>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "brc/brc.h"
#include "brc/testing.h"
#include "bench_util.h"

namespace {

using brc_bench::Barrier;
using brc_bench::Opaque;
using brc_bench::Use;

using brc_bench::AtomicObject;
using brc_bench::AtomicPairs;
using brc_bench::Payload;
using brc_bench::PlainObject;
using brc_bench::PlainPairs;
using brc_bench::PlainPayload;

// Checks, after a timed loop, that the loop took the refcount path the benchmark claims to
// measure (owner: local half only; non-owner: shared word only). Needs BRC_OP_STATS; the
// benchmarks also check the path once through the header before timing (CheckPath, below).
class PathCheck {
 public:
  PathCheck() : before_(brc::GetThreadStats()) {}

  void Expect(benchmark::State& state, uint64_t local_ops, uint64_t shared_ops) const {
#ifdef BRC_OP_STATS
    brc::Stats after = brc::GetThreadStats();
    uint64_t local = after.local_increfs - before_.local_increfs;
    uint64_t shared = after.shared_increfs - before_.shared_increfs;
    if (local != local_ops || shared != shared_ops) {
      std::string msg = "unexpected refcount path: local_increfs +" + std::to_string(local) +
                        " (want " + std::to_string(local_ops) + "), shared_increfs +" +
                        std::to_string(shared) + " (want " + std::to_string(shared_ops) + ")";
      state.SkipWithError(msg.c_str());
    }
#else
    (void)state, (void)local_ops, (void)shared_ops;
#endif
  }

 private:
  brc::Stats before_;
};

// The timed loop every brc contender runs: an increment and a decrement per iteration, with
// the same barriers as the baselines.
inline void CountPairs(benchmark::State& state, brc::Object* ob) {
  for (auto _ : state) {
    brc::IncRef(ob);
    Barrier();
    brc::DecRef(ob);
    Barrier();
  }
}

// One increment outside the timed loop, checked through the header, in every build: the owner's
// must land in the local half, a non-owner's in the shared half, an immortal object's nowhere.
enum class Path { kLocal, kShared, kNone };
void CheckPath(benchmark::State& state, brc::Object* ob, Path want) {
  brc::testing::Counts before = brc::testing::GetCounts(ob);
  brc::IncRef(ob);
  brc::testing::Counts after = brc::testing::GetCounts(ob);
  brc::DecRef(ob);
  Path got = after.local != before.local                 ? Path::kLocal
             : after.shared_count != before.shared_count ? Path::kShared
                                                         : Path::kNone;
  if (got != want) state.SkipWithError("the benchmark does not take the path it claims");
}

// ---------------------------------------------------------------------------------------------
// Counting, single thread.

void BM_PlainCounter(benchmark::State& state) {
  // On the heap like every other contender's object (a stack slot may get memory renaming).
  auto obj = std::make_unique<PlainObject>();
  PlainObject* p = obj.get();
  p = Opaque(p);
  PlainPairs(state, p);
  if (p->refcount != 1) state.SkipWithError("plain counter unbalanced");
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PlainCounter)->Name("BM_Pair/plain");


void BM_StdAtomic(benchmark::State& state) {
  auto obj = std::make_unique<AtomicObject>();
  AtomicObject* p = obj.get();
  p = Opaque(p);
  AtomicPairs(state, p);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_StdAtomic)->Name("BM_Pair/atomic");

void BM_SharedPtrCopy(benchmark::State& state) {
  auto sp = std::make_shared<PlainPayload>();
  std::shared_ptr<PlainPayload>* p = &sp;
  p = Opaque(p);
  for (auto _ : state) {
    {
      std::shared_ptr<PlainPayload> copy(*p);
      Barrier();
    }
    Barrier();
  }
  if (sp.use_count() != 1) state.SkipWithError("shared_ptr count unbalanced");
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_SharedPtrCopy)->Name("BM_Pair/shared_ptr");

void BM_BrcOwner(benchmark::State& state) {
  brc::ThreadScope attach;
  brc::Ref<Payload> ref = brc::Make<Payload>();
  brc::Object* ob = ref.get();
  ob = Opaque(ob);
  CheckPath(state, ob, Path::kLocal);
  PathCheck check;
  CountPairs(state, ob);
  check.Expect(state, state.iterations(), 0);
  if (brc::GetRefCount(ob) != 1) state.SkipWithError("brc count unbalanced");
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_BrcOwner)->Name("BM_Pair/brc_owner");

// An object made by another attached thread, which keeps owning it. The creator hands one
// reference over and then waits in a brc::BlockingScope until released: the shape of a producer
// that shares an object and blocks on its next input. While the benchmark counts, the object is
// owned by a live thread, so every operation here takes the shared-word atomic path. (Whether
// the owner is blocked or running does not change that path; it only decides who merges the
// object when the benchmark drops the last shared reference: here, the benchmark thread on the
// blocked owner's behalf.)
class ForeignObject {
 public:
  ForeignObject() {
    creator_ = std::thread([this] {
      brc::ThreadScope attach;
      brc::Ref<Payload> mine = brc::Make<Payload>();
      {
        std::lock_guard<std::mutex> lock(mu_);
        handed_ = brc::Ref<Payload>(mine).Release();  // owner-side copy: local half is now 2
        owner_id_ = brc::CurrentThreadId();
      }
      cv_.notify_all();
      {
        brc::BlockingScope blocked;  // touches no object until released
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return released_; });
      }
    });  // `mine` is dropped here, after the benchmark's reference
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return handed_ != nullptr; });
    ref_ = brc::Ref<Payload>::Adopt(handed_);
  }

  ~ForeignObject() {
    ref_ = nullptr;  // the caller's thread must still be attached here
    {
      std::lock_guard<std::mutex> lock(mu_);
      released_ = true;
    }
    cv_.notify_all();
    creator_.join();
  }

  Payload* get() const { return ref_.get(); }
  uint32_t owner_id() const { return owner_id_; }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  Payload* handed_ = nullptr;
  uint32_t owner_id_ = 0;
  bool released_ = false;
  brc::Ref<Payload> ref_;
  std::thread creator_;
};

void BM_BrcNonOwner(benchmark::State& state) {
  brc::ThreadScope attach;
  {
    ForeignObject foreign;
    if (foreign.owner_id() == brc::CurrentThreadId()) {
      state.SkipWithError("the foreign object is owned by the benchmark thread");
    }
    brc::Object* ob = foreign.get();
    ob = Opaque(ob);
    CheckPath(state, ob, Path::kShared);
    PathCheck check;
    CountPairs(state, ob);
    check.Expect(state, 0, state.iterations());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_BrcNonOwner)->Name("BM_Pair/brc_nonowner");

void BM_BrcImmortal(benchmark::State& state) {
  brc::ThreadScope attach;
  brc::Object* ob = brc::Make<Payload>().Release();
  brc::MakeImmortal(ob);  // by its owner: the local half becomes the immortal marker
  ob = Opaque(ob);
  CheckPath(state, ob, Path::kNone);
  PathCheck check;
  CountPairs(state, ob);
  check.Expect(state, 0, 0);
  // Immortal objects are never freed; free it anyway so that no object is alive when an
  // allocation benchmark switches allocators.
  brc::testing::FreeImmortalForTesting(ob);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_BrcImmortal)->Name("BM_Pair/brc_immortal");

#if defined(__x86_64__)
// The front-end probe (see the top of the file). `turns` turns of: load, compare, a taken
// branch (`taken` 3: twice more), then the loop's own taken branch; the shape of an immortal
// pair with the counting removed.
template <int kTaken>
void BranchTurns(const uint64_t* word, int64_t turns) {
  if constexpr (kTaken == 3) {
    asm volatile(
        "1:\n\t"
        "mov (%[w]), %%rax\n\t"
        "cmp $1, %%rax\n\t"
        "jae 2f\n\t"
        "nop\n\t"
        "2:\n\t"
        "mov (%[w]), %%rax\n\t"
        "cmp $1, %%rax\n\t"
        "jae 3f\n\t"
        "nop\n\t"
        "3:\n\t"
        "dec %[n]\n\t"
        "jnz 1b\n\t"
        : [n] "+r"(turns)
        : [w] "r"(word)
        : "rax", "cc", "memory");
  } else {
    asm volatile(
        "1:\n\t"
        "mov (%[w]), %%rax\n\t"
        "cmp $1, %%rax\n\t"
        "jb 2f\n\t"
        "mov (%[w]), %%rax\n\t"
        "cmp $1, %%rax\n\t"
        "jb 2f\n\t"
        "dec %[n]\n\t"
        "jnz 1b\n\t"
        "2:\n\t"
        : [n] "+r"(turns)
        : [w] "r"(word)
        : "rax", "cc", "memory");
  }
}

template <int kTaken>
void BM_BranchProbe(benchmark::State& state) {
  static const uint64_t word = 2;  // >= 1: every compare sends its branch the same way
  const uint64_t* w = Opaque(&word);
  for (auto _ : state) BranchTurns<kTaken>(w, 1000);
  state.SetItemsProcessed(state.iterations() * 1000);
}
BENCHMARK(BM_BranchProbe<1>)->Name("BM_BranchProbe/taken:1");
BENCHMARK(BM_BranchProbe<3>)->Name("BM_BranchProbe/taken:3");
#endif

void BM_BrcRefCopy(benchmark::State& state) {
  brc::ThreadScope attach;
  brc::Ref<Payload> ref = brc::Make<Payload>();
  brc::Ref<Payload>* p = &ref;
  p = Opaque(p);
  for (auto _ : state) {
    {
      brc::Ref<Payload> copy(*p);
      Barrier();
    }
    Barrier();
  }
  if (brc::GetRefCount(ref.get()) != 1) state.SkipWithError("brc count unbalanced");
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_BrcRefCopy)->Name("BM_Pair/brc_ref");

// ---------------------------------------------------------------------------------------------
// Counting, both cores on one counter. The CPU-time column is per thread.

void BM_StdAtomicContended(benchmark::State& state) {
  static AtomicObject shared_obj;
  AtomicObject* p = &shared_obj;
  p = Opaque(p);
  AtomicPairs(state, p);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_StdAtomicContended)->Threads(2);

// Thread 0 owns the object and counts on the local half; thread 1 counts on the shared word of
// the same object (the same cache line). Thread 0 holds the reference that keeps it alive.
void BM_BrcOwnerAndNonOwner(benchmark::State& state) {
  static std::atomic<Payload*> published{nullptr};
  static std::barrier<> done(2);
  brc::ThreadScope attach;
  brc::Ref<Payload> ref;
  Payload* ob;
  if (state.thread_index() == 0) {
    ref = brc::Make<Payload>();
    ob = ref.get();
    published.store(ob, std::memory_order_release);
  } else {
    while ((ob = published.load(std::memory_order_acquire)) == nullptr) std::this_thread::yield();
  }
  ob = Opaque(ob);
  CountPairs(state, ob);
  done.arrive_and_wait();  // thread 1 is finished with the object
  if (state.thread_index() == 0) {
    published.store(nullptr, std::memory_order_relaxed);
    ref = nullptr;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_BrcOwnerAndNonOwner)->Threads(2);

// ---------------------------------------------------------------------------------------------
// Object memory.

// Installs an allocator for one benchmark and restores the default afterwards. Declare it
// before the brc::ThreadScope, so that the thread has detached (and drained its merge queue)
// before the default comes back: SetAllocator requires that no object be alive.
class AllocatorScope {
 public:
  AllocatorScope(benchmark::State& state, brc::Allocator& allocator) {
    absl::Status s = brc::SetAllocator(&allocator);
    ok_ = s.ok();
    if (!ok_) state.SkipWithError(("SetAllocator: " + s.ToString()).c_str());
  }
  ~AllocatorScope() {
    if (!ok_) return;
    absl::Status s = brc::SetAllocator(&brc::DefaultAllocator());
    if (!s.ok()) {
      std::fprintf(stderr, "brc_bench: restoring the default allocator failed: %s\n",
                   s.ToString().c_str());
      std::abort();
    }
  }
  AllocatorScope(const AllocatorScope&) = delete;
  AllocatorScope& operator=(const AllocatorScope&) = delete;
  bool ok() const { return ok_; }

 private:
  bool ok_;
};

constexpr int kBatch = 1000;

void SetPerObject(benchmark::State& state, int64_t objects_per_iteration) {
  state.SetItemsProcessed(state.iterations() * objects_per_iteration);
  state.counters["per_obj"] =
      benchmark::Counter(static_cast<double>(objects_per_iteration),
                         benchmark::Counter::kIsIterationInvariantRate |
                             benchmark::Counter::kInvert);
}

// (a) Make + drop, one object at a time.
void BM_MakeDrop(benchmark::State& state, brc::Allocator* allocator) {
  AllocatorScope use(state, *allocator);
  if (!use.ok()) return;
  brc::ThreadScope attach;
  int64_t i = 0;
  for (auto _ : state) {
    brc::Ref<Payload> r = brc::Make<Payload>(i++);
    Payload* p = r.get();
    Use(p);
    Barrier();
  }
  SetPerObject(state, 1);
}
BENCHMARK_CAPTURE(BM_MakeDrop, brc_heap, &brc::DefaultAllocator());
BENCHMARK_CAPTURE(BM_MakeDrop, malloc, &brc::MallocAllocator());
BENCHMARK_CAPTURE(BM_MakeDrop, tbbmalloc, &brc::ScalableAllocator());

void BM_MakeDropSharedPtr(benchmark::State& state) {
  int64_t i = 0;
  for (auto _ : state) {
    auto sp = std::make_shared<PlainPayload>();
    sp->a = i++;
    PlainPayload* p = sp.get();
    Use(p);
    Barrier();
  }
  SetPerObject(state, 1);
}
BENCHMARK(BM_MakeDropSharedPtr);

// The allocator alone (the virtual call included), 48 bytes.
void BM_AllocatorRaw(benchmark::State& state, brc::Allocator* allocator) {
  for (auto _ : state) {
    void* p = allocator->Allocate(sizeof(Payload), alignof(Payload));
    Use(p);
    Barrier();
    allocator->Deallocate(p, sizeof(Payload), alignof(Payload));
  }
  SetPerObject(state, 1);
}
BENCHMARK_CAPTURE(BM_AllocatorRaw, malloc, &brc::MallocAllocator());
BENCHMARK_CAPTURE(BM_AllocatorRaw, tbbmalloc, &brc::ScalableAllocator());

// (b) Batch: 1000 objects alive at once, then all dropped.
void BM_MakeDropBatch(benchmark::State& state, brc::Allocator* allocator) {
  AllocatorScope use(state, *allocator);
  if (!use.ok()) return;
  brc::ThreadScope attach;
  std::vector<brc::Ref<Payload>> objects;
  objects.reserve(kBatch);
  for (auto _ : state) {
    for (int i = 0; i < kBatch; ++i) objects.push_back(brc::Make<Payload>(i));
    Barrier();
    objects.clear();
    Barrier();
  }
  SetPerObject(state, kBatch);
}
BENCHMARK_CAPTURE(BM_MakeDropBatch, brc_heap, &brc::DefaultAllocator());
BENCHMARK_CAPTURE(BM_MakeDropBatch, malloc, &brc::MallocAllocator());
BENCHMARK_CAPTURE(BM_MakeDropBatch, tbbmalloc, &brc::ScalableAllocator());

void BM_MakeDropBatchSharedPtr(benchmark::State& state) {
  std::vector<std::shared_ptr<PlainPayload>> objects;
  objects.reserve(kBatch);
  for (auto _ : state) {
    for (int i = 0; i < kBatch; ++i) objects.push_back(std::make_shared<PlainPayload>());
    Barrier();
    objects.clear();
    Barrier();
  }
  SetPerObject(state, kBatch);
}
BENCHMARK(BM_MakeDropBatchSharedPtr);

// A bounded single-producer single-consumer hand-off of whole batches under a mutex. Both sides
// spin (with yield) instead of sleeping, so that the brc producer never needs to enter a
// BlockingScope, which would change who merges and frees the objects.
template <class T>
class BatchQueue {
 public:
  static constexpr size_t kMaxBatches = 8;

  bool TryPush(std::vector<T>& batch) {
    std::lock_guard<std::mutex> lock(mu_);
    if (batches_.size() >= kMaxBatches) return false;
    batches_.push_back(std::move(batch));
    batch = TakeSpareLocked();
    return true;
  }
  // Empties `out` (destroying what it held outside the lock) and fills it with the next batch.
  bool TryPop(std::vector<T>& out) {
    std::lock_guard<std::mutex> lock(mu_);
    if (batches_.empty()) return false;
    std::swap(out, batches_.front());
    batches_.pop_front();
    return true;
  }
  // The consumer returns drained vectors so that neither side allocates vector storage.
  void GiveBack(std::vector<T>&& empty) {
    std::lock_guard<std::mutex> lock(mu_);
    spares_.push_back(std::move(empty));
  }
  void Close() { closed_.store(true, std::memory_order_release); }
  bool closed() const { return closed_.load(std::memory_order_acquire); }

 private:
  std::vector<T> TakeSpareLocked() {
    std::vector<T> v;
    if (!spares_.empty()) {
      v = std::move(spares_.back());
      spares_.pop_back();
    }
    v.clear();
    v.reserve(kBatch);
    return v;
  }

  std::mutex mu_;
  std::deque<std::vector<T>> batches_;
  std::vector<std::vector<T>> spares_;
  std::atomic<bool> closed_{false};
};

// Runs `drop(batch)` on a consumer thread for every batch the producer pushes, until closed.
template <class T, class Setup, class Drop>
std::thread StartConsumer(BatchQueue<T>& queue, Setup setup, Drop drop) {
  return std::thread([&queue, setup, drop] {
    auto scope = setup();
    std::vector<T> batch;
    batch.reserve(kBatch);
    for (;;) {
      if (queue.TryPop(batch)) {
        drop(batch);
        std::vector<T> empty;
        std::swap(empty, batch);
        queue.GiveBack(std::move(empty));
        batch.reserve(kBatch);
      } else if (queue.closed()) {
        if (!queue.TryPop(batch)) break;
        drop(batch);
      } else {
        std::this_thread::yield();
      }
    }
    (void)scope;
  });
}

// (c) Cross-thread: the benchmark thread makes objects in batches and hands them to a consumer
// thread, which drops them. Each drop is a non-owner decrement to zero, so the object is queued
// back to its owner (one lock per object) and merged and freed there at the next Safepoint():
// brc frees on the owner thread while it is attached.
void BM_CrossThread(benchmark::State& state, brc::Allocator* allocator) {
  AllocatorScope use(state, *allocator);
  if (!use.ok()) return;
  brc::ThreadScope attach;
  BatchQueue<brc::Ref<Payload>> queue;
  std::thread consumer = StartConsumer(
      queue, [] { return std::make_unique<brc::ThreadScope>(); },
      [](std::vector<brc::Ref<Payload>>& batch) { batch.clear(); });
  std::vector<brc::Ref<Payload>> batch;
  batch.reserve(kBatch);
  for (auto _ : state) {
    for (int i = 0; i < kBatch; ++i) batch.push_back(brc::Make<Payload>(i));
    while (!queue.TryPush(batch)) {
      brc::Safepoint();
      std::this_thread::yield();
    }
    brc::Safepoint();
  }
  queue.Close();
  consumer.join();
  brc::Safepoint();  // free what the consumer queued last
  SetPerObject(state, kBatch);
}
BENCHMARK_CAPTURE(BM_CrossThread, brc_heap, &brc::DefaultAllocator())->UseRealTime();
BENCHMARK_CAPTURE(BM_CrossThread, malloc, &brc::MallocAllocator())->UseRealTime();
BENCHMARK_CAPTURE(BM_CrossThread, tbbmalloc, &brc::ScalableAllocator())->UseRealTime();

// The allocator alone across threads: allocate here, free on the consumer.
void BM_AllocatorCrossThreadRaw(benchmark::State& state, brc::Allocator* allocator) {
  BatchQueue<void*> queue;
  std::thread consumer = StartConsumer(
      queue, [] { return 0; },
      [allocator](std::vector<void*>& batch) {
        for (void* p : batch) allocator->Deallocate(p, sizeof(Payload), alignof(Payload));
        batch.clear();
      });
  std::vector<void*> batch;
  batch.reserve(kBatch);
  for (auto _ : state) {
    for (int i = 0; i < kBatch; ++i) {
      void* p = allocator->Allocate(sizeof(Payload), alignof(Payload));
      std::memset(p, 0, sizeof(Payload));
      batch.push_back(p);
    }
    while (!queue.TryPush(batch)) std::this_thread::yield();
  }
  queue.Close();
  consumer.join();
  SetPerObject(state, kBatch);
}
BENCHMARK_CAPTURE(BM_AllocatorCrossThreadRaw, malloc, &brc::MallocAllocator())->UseRealTime();
BENCHMARK_CAPTURE(BM_AllocatorCrossThreadRaw, tbbmalloc, &brc::ScalableAllocator())
    ->UseRealTime();

bool HasFlag(int argc, char** argv, const char* prefix) {
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], prefix, std::strlen(prefix)) == 0) return true;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  // Defaults for this suite: 5 repetitions; the console shows aggregates only, a --benchmark_out
  // file keeps every repetition (bench/report.py computes medians and spread from them). Flags
  // given by the caller win.
  static char kRepetitions[] = "--benchmark_repetitions=5";
  static char kAggregatesOnly[] = "--benchmark_display_aggregates_only=true";
  static char kMinTime[] = "--benchmark_min_time=0.2";
  std::vector<char*> args(argv, argv + argc);
  if (!HasFlag(argc, argv, "--benchmark_repetitions")) {
    args.insert(args.begin() + 1, kRepetitions);
    if (!HasFlag(argc, argv, "--benchmark_report_aggregates_only") &&
        !HasFlag(argc, argv, "--benchmark_display_aggregates_only")) {
      args.insert(args.begin() + 1, kAggregatesOnly);
    }
  }
  if (!HasFlag(argc, argv, "--benchmark_min_time")) args.insert(args.begin() + 1, kMinTime);
  int n = static_cast<int>(args.size());
  args.push_back(nullptr);
  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
