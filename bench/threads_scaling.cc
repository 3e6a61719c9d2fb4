// brc_bench, many threads: counting on an own object, on one shared object, and on own objects
// adjacent in memory (false sharing). See threads_benchmark.cc for the names and conventions.
#include "threads_common.h"

namespace brc_threads_bench {
namespace {

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

}  // namespace

void RegisterScaling(const std::vector<int>& counting) {
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
}

}  // namespace brc_threads_bench
