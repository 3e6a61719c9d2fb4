// Tests for brc/collector.h: cycles found and freed, finalizers (once, resurrection, new
// garbage, exceptions), weak references, freezing, scheduling, nesting rules, configuration,
// parallel marking and collections racing with mutators.
#include "brc/collector.h"

#include <atomic>
#include <cmath>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "brc/stop_the_world.h"
#include "test_util.h"

namespace {

using brc_test::WorkerFailures;

// A tracked node: up to two edges, a destruction counter and an optional finalizer action.
struct GNode : brc::Object {
  static constexpr std::string_view kTypeName = "GNode";
  explicit GNode(std::atomic<int>* destroyed = nullptr, int value = 0)
      : destroyed(destroyed), value(value) {}
  ~GNode() {
    if (destroyed != nullptr) destroyed->fetch_add(1, std::memory_order_relaxed);
  }
  void Trace(brc::Visitor& v) const {
    v.Visit(a);
    v.Visit(b);
  }
  void Clear() {
    a = nullptr;
    b = nullptr;
  }
  std::atomic<int>* destroyed;
  int value;
  brc::Ref<GNode> a;
  brc::Ref<GNode> b;
};

// A tracked node with a finalizer that runs a test-provided action.
struct FNode : brc::Object {
  static constexpr std::string_view kTypeName = "FNode";
  explicit FNode(std::atomic<int>* destroyed, std::function<void(FNode*)> action = nullptr)
      : destroyed(destroyed), action(std::move(action)) {}
  ~FNode() { destroyed->fetch_add(1, std::memory_order_relaxed); }
  void Trace(brc::Visitor& v) const { v.Visit(next); }
  void Clear() { next = nullptr; }
  void Finalize() {
    ++finalized;
    if (action) action(this);
  }
  std::atomic<int>* destroyed;
  std::function<void(FNode*)> action;
  int finalized = 0;
  brc::Ref<FNode> next;
};

// Automatic collections off for the test (explicit Collect() still runs), restored after.
struct ManualCollections {
  ManualCollections() { brc::DisableCollector(); }
  ~ManualCollections() { brc::EnableCollector(); }
};

brc::CollectResult MustCollect() {
  absl::StatusOr<brc::CollectResult> r = brc::Collect();
  INFO(r.status().ToString());
  REQUIRE(r.ok());
  return *r;
}

// Builds a ring of n GNodes (through `a`) and returns one member.
brc::Ref<GNode> Ring(int n, std::atomic<int>* destroyed) {
  brc::Ref<GNode> first = brc::Make<GNode>(destroyed, 0);
  brc::Ref<GNode> prev = first;
  for (int i = 1; i < n; ++i) {
    brc::Ref<GNode> node = brc::Make<GNode>(destroyed, i);
    prev->a = node;
    prev = node;
  }
  prev->a = first;
  return first;
}

TEST_CASE("A dropped three-node ring lives until a collection frees it", "[collector]") {
  brc::ThreadScope attach;
  ManualCollections manual;
  std::atomic<int> destroyed{0};
  brc::Ref<GNode> ring = Ring(3, &destroyed);
  CHECK(brc::IsTracked(ring.get()));
  MustCollect();
  CHECK(destroyed.load() == 0);  // still referenced from here
  ring = nullptr;
  CHECK(destroyed.load() == 0);  // counting alone cannot free a cycle
  brc::CollectResult r = MustCollect();
  CHECK(destroyed.load() == 3);
  CHECK(r.unreachable == 3);
  CHECK(r.collected == 3);
  CHECK(r.uncollectable == 0);
  CHECK(r.scanned >= 3);
  CHECK(r.total_time >= r.time_stopped);
}

TEST_CASE("Leaf types are not tracked, tracked ones are until they die", "[collector]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  brc::Ref<brc_test::Counted> leaf = brc::Make<brc_test::Counted>(&destroyed);
  CHECK_FALSE(brc::IsTracked(leaf.get()));
  brc::Ref<GNode> node = brc::Make<GNode>(&destroyed);
  CHECK(brc::IsTracked(node.get()));
}

TEST_CASE("A tracked object costs the 24-byte header of a leaf, nothing more", "[collector]") {
  struct Empty : brc::Object {
    void Trace(brc::Visitor&) const {}
    void Clear() {}
  };
  struct OneRef : brc::Object {
    void Trace(brc::Visitor& v) const { v.Visit(next); }
    void Clear() { next = nullptr; }
    brc::Ref<OneRef> next;
  };
  struct alignas(16) Aligned : brc::Object {
    void Trace(brc::Visitor&) const {}
    void Clear() {}
  };
  // The collector's state lives in the header (brc/detail/gc_word.h): no word in front.
  CHECK(sizeof(brc::Object) == 24);
  CHECK(brc::testing::TrackedBlockSizeForTesting(sizeof(Empty), alignof(Empty)) == 32);
  // Header + one reference: 32 bytes, a 32-byte block (it was 48 with a collector word).
  CHECK(sizeof(OneRef) == 32);
  CHECK(brc::testing::TrackedBlockSizeForTesting(sizeof(OneRef), alignof(OneRef)) == 32);
  CHECK(brc::testing::TrackedBlockSizeForTesting(sizeof(Aligned), alignof(Aligned)) == 32);
  // Any node: its size rounded up to the next class (multiples of 16 up to 128).
  CHECK(brc::testing::TrackedBlockSizeForTesting(sizeof(GNode), alignof(GNode)) ==
        (sizeof(GNode) + 15) / 16 * 16);
  // And the objects are usable, at the sizes claimed.
  brc::ThreadScope attach;
  ManualCollections manual;
  brc::Ref<OneRef> a = brc::Make<OneRef>();
  brc::Ref<Aligned> b = brc::Make<Aligned>();
  CHECK(reinterpret_cast<uintptr_t>(b.get()) % 16 == 0);
  a->next = a;
  a = nullptr;
  CHECK(MustCollect().collected >= 1);
}

TEST_CASE("Acyclic garbage is freed by counting so memory stays bounded with collection off",
          "[collector]") {
  brc::ThreadScope attach;
  ManualCollections manual;
  constexpr int kElements = 1'000'000;
  std::atomic<int> destroyed{0};
  uint64_t pages_after_first = 0;
  uint64_t collections_before = brc::GetCollectorStats().collections;
  for (int iter = 0; iter < 4; ++iter) {
    brc::Ref<GNode> head;
    for (int i = 0; i < kElements; ++i) {
      brc::Ref<GNode> n = brc::Make<GNode>(&destroyed, i);
      n->a = std::move(head);
      head = std::move(n);
    }
    head = nullptr;  // a million-deep chain, freed with constant stack
    CHECK(destroyed.load() == kElements * (iter + 1));
    uint64_t pages = brc::testing::CollectorHeapPagesForTesting();
    if (iter == 0) pages_after_first = pages;
    // A million live nodes fill more than 700 pages of 64 KiB; once they are freed the thread
    // keeps its empty pages for reuse (at most its peak), so later iterations reuse them
    // instead of growing the heap. A BRC_DEBUG build's quarantine keeps up to 65,536 freed
    // nodes (64-byte blocks) in use across iterations, which can raise the peak once by that.
    const uint64_t quarantined_pages =
        brc::testing::QuarantineCapacityForTesting() * 64 / (64 << 10) + 2;
    CHECK(pages <= pages_after_first + 8 + 2 * quarantined_pages);
  }
  // Given back on request (BRC_DEBUG builds keep 65,536 freed objects quarantined: about 50
  // pages).
  brc::ReleaseFreeMemory();
  CHECK(brc::testing::CollectorHeapPagesForTesting() < 200);
  CHECK(brc::GetCollectorStats().collections == collections_before);  // counting did it all
}

TEST_CASE("A cycle whose nodes are owned by different threads is collected", "[collector]") {
  brc::ThreadScope attach;
  ManualCollections manual;
  std::atomic<int> destroyed{0};
  // Variant 1: the owners have exited.
  {
    brc::Ref<GNode> x;
    brc::Ref<GNode> y;
    brc_test::RunAttached([&] { x = brc::Make<GNode>(&destroyed, 1); });
    brc_test::RunAttached([&] { y = brc::Make<GNode>(&destroyed, 2); });
    x->a = y;
    y->a = x;
    x = nullptr;
    y = nullptr;
    MustCollect();
    CHECK(destroyed.load() == 2);
  }
  // Variant 2: the owners are alive, polling safepoints, and each drops its own reference.
  {
    std::atomic<bool> done{false};
    std::atomic<int> built{0};
    brc::Ref<GNode> shared_a, shared_b;
    auto owner = [&](brc::Ref<GNode>* slot, int v) {
      brc::ThreadScope attach;
      *slot = brc::Make<GNode>(&destroyed, v);
      built.fetch_add(1);
      while (!done.load()) brc::Safepoint();
    };
    std::thread t1(owner, &shared_a, 3);
    std::thread t2(owner, &shared_b, 4);
    while (built.load() < 2) std::this_thread::yield();
    {
      brc::StopTheWorld stop;  // the owners are parked while the cycle is wired
      shared_a->b = shared_b;
      shared_b->b = shared_a;
      shared_a = nullptr;
      shared_b = nullptr;
    }
    brc::CollectResult r = MustCollect();
    CHECK(r.collected == 2);
    // The collector's last decrements queued the nodes to their owners, which free them at
    // their next safepoint.
    CHECK(brc_test::EventuallyTrue([&] { return destroyed.load() == 4; }));
    done.store(true);
    t1.join();
    t2.join();
  }
}

TEST_CASE("A cycle reachable only from an object queued for merging is collected",
          "[collector]") {
  brc::ThreadScope attach;
  ManualCollections manual;
  std::atomic<int> destroyed{0};
  std::atomic<bool> done{false};
  std::atomic<bool> handed{false};
  std::atomic<bool> go{false};
  std::atomic<uint32_t> owner_id{0};
  brc::Ref<GNode> holder;
  std::thread owner([&] {
    brc::ThreadScope attach;
    owner_id.store(brc::CurrentThreadId());
    brc::Ref<GNode> x = brc::Make<GNode>(&destroyed, 100);  // owned here
    x->a = Ring(5, &destroyed);                              // x -> a 5-ring
    holder = std::move(x);  // the only reference now belongs to the main thread
    handed.store(true);
    // No safepoint until the main thread has checked that x waits in the queue.
    while (!go.load()) std::this_thread::yield();
    while (!done.load()) brc::Safepoint();
  });
  while (!handed.load()) std::this_thread::yield();
  // A non-owner dropping the last reference queues x to its owner, which still counts it.
  holder = nullptr;
  brc::Safepoint();  // pushes this thread's hand-off buffer to the owner's queue
  CHECK(destroyed.load() == 0);
  CHECK(brc::testing::QueuedObjectsForTesting(owner_id.load()) == 1);
  go.store(true);
  brc::CollectResult r = MustCollect();
  // The owner merged x while the world was stopping; its destructor dropped the ring's last
  // outside reference, and the ring was found unreachable in the same collection.
  CHECK(r.collected == 5);
  // The ring's nodes belong to the owner thread: freed at its next safepoint.
  CHECK(brc_test::EventuallyTrue([&] { return destroyed.load() == 6; }));
  done.store(true);
  owner.join();
}

TEST_CASE("A finalizer that resurrects its own object - it survives and is finalized once",
          "[collector][finalizer]") {
  brc::ThreadScope attach;
  ManualCollections manual;
  std::atomic<int> destroyed{0};
  brc::Ref<FNode> saved;
  brc::Ref<FNode> a = brc::Make<FNode>(&destroyed, [&](FNode* self) {
    saved = brc::Ref<FNode>::NewRef(self);  // resurrection
  });
  brc::Ref<FNode> b = brc::Make<FNode>(&destroyed);
  a->next = b;
  b->next = a;
  FNode* raw_a = a.get();
  FNode* raw_b = b.get();
  a = nullptr;
  b = nullptr;
  brc::CollectResult r = MustCollect();
  CHECK(r.unreachable == 2);
  CHECK(r.resurrected == 2);  // a, and b which a reaches
  CHECK(r.collected == 0);
  CHECK(destroyed.load() == 0);
  REQUIRE(saved.get() == raw_a);
  // Nothing it reaches was cleared.
  CHECK(saved->next.get() == raw_b);
  CHECK(raw_b->next.get() == raw_a);
  CHECK(raw_a->finalized == 1);
  CHECK(raw_b->finalized == 1);
  // Dropped again: collected this time, without a second Finalize().
  saved = nullptr;
  r = MustCollect();
  CHECK(r.collected == 2);
  CHECK(r.finalized == 0);
  CHECK(destroyed.load() == 2);
}

TEST_CASE("A finalizer that resurrects another member of the cycle", "[collector][finalizer]") {
  brc::ThreadScope attach;
  ManualCollections manual;
  std::atomic<int> destroyed{0};
  brc::Ref<FNode> saved;
  // Ring a -> b -> c -> a; a's finalizer keeps c.
  brc::Ref<FNode> a = brc::Make<FNode>(&destroyed);
  brc::Ref<FNode> b = brc::Make<FNode>(&destroyed);
  brc::Ref<FNode> c = brc::Make<FNode>(&destroyed);
  a->action = [&, raw_c = c.get()](FNode*) { saved = brc::Ref<FNode>::NewRef(raw_c); };
  a->next = b;
  b->next = c;
  c->next = a;
  a = b = c = nullptr;
  brc::CollectResult r = MustCollect();
  CHECK(r.resurrected == 3);  // c, and a and b through it
  CHECK(destroyed.load() == 0);
  REQUIRE(saved != nullptr);
  REQUIRE(saved->next != nullptr);
  REQUIRE(saved->next->next != nullptr);
  CHECK(saved->next->next->next.get() == saved.get());  // the ring is intact
  saved = nullptr;
  r = MustCollect();
  CHECK(r.collected == 3);
  CHECK(r.finalized == 0);  // each finalizer ran once, in the first collection
  CHECK(destroyed.load() == 3);
}

TEST_CASE("A finalizer that creates new garbage does not make collections loop",
          "[collector][finalizer]") {
  brc::ThreadScope attach;
  ManualCollections manual;
  std::atomic<int> destroyed{0};
  std::atomic<int> made{0};
  brc::Ref<FNode> a = brc::Make<FNode>(&destroyed, [&](FNode*) {
    // A fresh 4-cycle, dropped at once: garbage for a later collection.
    Ring(4, nullptr);
    made.fetch_add(4);
  });
  a->next = a;
  a = nullptr;
  brc::CollectResult r = MustCollect();
  CHECK(r.collected == 1);
  CHECK(r.finalized == 1);
  CHECK(destroyed.load() == 1);
  // The finalizer's garbage waits for the next collection, which does not finalize again.
  r = MustCollect();
  CHECK(r.collected == 4);
  CHECK(r.finalized == 0);
}

TEST_CASE("A finalizer that throws is reported and the collection completes",
          "[collector][finalizer]") {
  brc::ThreadScope attach;
  ManualCollections manual;
  std::vector<std::string> reports;
  brc::SetCollectorErrorHandler([&](std::string_view m) { reports.emplace_back(m); });
  std::atomic<int> destroyed{0};
  brc::Ref<FNode> a = brc::Make<FNode>(&destroyed, [](FNode*) {
    throw std::runtime_error("finalizer failed on purpose");
  });
  brc::Ref<FNode> b = brc::Make<FNode>(&destroyed);
  a->next = b;
  b->next = a;
  a = b = nullptr;
  brc::CollectResult r = MustCollect();
  brc::SetCollectorErrorHandler(nullptr);
  CHECK(r.errors == 1);
  CHECK(r.collected == 2);
  CHECK(destroyed.load() == 2);
  REQUIRE(reports.size() == 1);
  CHECK(reports[0].find("FNode") != std::string::npos);
  CHECK(reports[0].find("finalizer failed on purpose") != std::string::npos);
  CHECK(reports[0].find("std::runtime_error") != std::string::npos);
}

TEST_CASE("Weak references to garbage are cleared before finalizers and callbacks run",
          "[collector][weak]") {
  brc::ThreadScope attach;
  ManualCollections manual;
  std::atomic<int> destroyed{0};
  brc::Ref<FNode> a = brc::Make<FNode>(&destroyed);
  brc::Ref<FNode> b = brc::Make<FNode>(&destroyed);
  a->next = b;
  b->next = a;
  brc::WeakRef<FNode> weak_b(b);
  std::vector<std::string> events;
  bool locked_in_callback = true;
  bool expired_in_finalizer = false;
  brc::WeakRef<FNode> weak_a_cb(a, [&] {
    events.push_back("callback");
    locked_in_callback = weak_b.Lock() != nullptr;
  });
  a->action = [&](FNode*) {
    events.push_back("finalizer");
    expired_in_finalizer = weak_b.expired();
  };
  a = b = nullptr;
  brc::CollectResult r = MustCollect();
  CHECK(r.collected == 2);
  CHECK(r.weak_callbacks == 1);
  CHECK(destroyed.load() == 2);
  CHECK(events == std::vector<std::string>{"callback", "finalizer"});
  CHECK_FALSE(locked_in_callback);
  CHECK(expired_in_finalizer);
  CHECK(weak_b.Lock() == nullptr);
}

TEST_CASE("A weak-reference callback that locks its own weak reference gets null",
          "[collector][weak]") {
  brc::ThreadScope attach;
  ManualCollections manual;
  std::atomic<int> destroyed{0};
  brc::Ref<GNode> ring = Ring(2, &destroyed);
  auto weak = std::make_shared<brc::WeakRef<GNode>>();
  int calls = 0;
  bool got_object = true;
  *weak = brc::WeakRef<GNode>(ring, [&calls, &got_object, weak_copy = std::weak_ptr(weak)] {
    ++calls;
    got_object = weak_copy.lock()->Lock() != nullptr;
  });
  ring = nullptr;
  MustCollect();
  CHECK(calls == 1);
  CHECK_FALSE(got_object);
  CHECK(destroyed.load() == 2);
  // The same holds when counting alone frees the target.
  brc::Ref<GNode> single = brc::Make<GNode>(&destroyed);
  calls = 0;
  got_object = true;
  *weak = brc::WeakRef<GNode>(single, [&calls, &got_object, weak_copy = std::weak_ptr(weak)] {
    ++calls;
    got_object = weak_copy.lock()->Lock() != nullptr;
  });
  single = nullptr;
  CHECK(calls == 1);
  CHECK_FALSE(got_object);
}

TEST_CASE("Frozen objects are not scanned and not freed", "[collector]") {
  brc::ThreadScope attach;
  ManualCollections manual;
  std::atomic<int> destroyed{0};
  brc::Ref<GNode> ring = Ring(10, &destroyed);
  absl::StatusOr<uint64_t> frozen = brc::Freeze();
  REQUIRE(frozen.ok());
  CHECK(*frozen >= 10);
  ring = nullptr;
  brc::CollectResult r = MustCollect();
  CHECK(destroyed.load() == 0);
  CHECK(r.collected == 0);
  CHECK(r.scanned == 0);  // everything alive was frozen, and nothing new was made
  absl::StatusOr<uint64_t> thawed = brc::Unfreeze();
  REQUIRE(thawed.ok());
  CHECK(*thawed == *frozen);
  r = MustCollect();
  CHECK(r.collected == 10);
  CHECK(destroyed.load() == 10);
}

TEST_CASE("Allocation triggers collections and their number stays bounded as the heap grows",
          "[collector][schedule]") {
  brc::ThreadScope attach;
  MustCollect();  // a clean slate for the schedule
  constexpr uint64_t kThreshold = 1000;
  constexpr double kRatio = 0.5;
  // The schedule before young collections: every collection full, each waiting for ratio x
  // the survivors.
  REQUIRE(brc::SetCollectorConfig({.young_threshold = kThreshold, .full_ratio = kRatio,
                                   .generational = false}).ok());
  brc::EnableCollector();
  std::atomic<int> destroyed{0};
  uint64_t before = brc::GetCollectorStats().automatic_collections;
  // Garbage cycles only: the live heap stays small, so collections come every ~threshold.
  for (int i = 0; i < 20'000; ++i) Ring(2, &destroyed);
  uint64_t garbage_runs = brc::GetCollectorStats().automatic_collections - before;
  CHECK(garbage_runs >= 40000 / kThreshold / 2);
  CHECK(destroyed.load() > 30000);  // they found and freed the cycles
  // A growing live heap of N objects: each collection waits for ratio x the survivors, so the
  // count grows like log(N), not like N / threshold.
  brc::CollectorStats s0 = brc::GetCollectorStats();
  std::vector<brc::Ref<GNode>> live;
  constexpr int kLive = 200'000;
  for (int i = 0; i < kLive; ++i) live.push_back(brc::Make<GNode>());
  brc::CollectorStats s1 = brc::GetCollectorStats();
  uint64_t growth_runs = s1.automatic_collections - s0.automatic_collections;
  INFO("collections while the heap grew to " << kLive << ": " << growth_runs);
  CHECK(growth_runs >= 1);
  CHECK(s1.young_collections == s0.young_collections);
  // Survivors s_k after collection k satisfy s_{k+1} >= s_k (1 + ratio) once s_k x ratio
  // exceeds the threshold: at most log(N/threshold)/log(1+ratio) + threshold*... runs.
  double bound = kThreshold / kRatio / kThreshold + std::log(double(kLive) / kThreshold) /
                 std::log(1 + kRatio) + 4;
  CHECK(static_cast<double>(growth_runs) <= bound);
  REQUIRE(brc::SetCollectorConfig({}).ok());
}

TEST_CASE("Generational schedule: young collections every threshold, full ones when the old "
          "heap grew by the ratio, total work linear in allocations",
          "[collector][schedule][young]") {
  brc::ThreadScope attach;
  MustCollect();  // a clean slate for the schedule
  constexpr uint64_t kThreshold = 1000;
  constexpr double kRatio = 0.5;
  REQUIRE(brc::SetCollectorConfig({.young_threshold = kThreshold, .full_ratio = kRatio}).ok());
  brc::EnableCollector();
  // Every object each automatic collection examined, by kind.
  struct Work {
    std::atomic<uint64_t> young{0}, full{0}, promoted{0}, wrong_kind{0};
  };
  auto work = std::make_shared<Work>();
  uint64_t cb = brc::AddCollectCallback([work](brc::CollectPhase phase,
                                               const brc::CollectResult& r) {
    if (phase != brc::CollectPhase::kStop || !r.automatic) return;
    (r.kind == brc::CollectKind::kYoung ? work->young : work->full) += r.scanned;
    work->promoted += r.promoted;
    if (r.kind == brc::CollectKind::kFull && r.promoted != 0) ++work->wrong_kind;
  });
  brc::CollectorStats s0 = brc::GetCollectorStats();
  std::vector<brc::Ref<GNode>> live;
  std::atomic<int> destroyed{0};
  constexpr int kLive = 200'000;
  for (int i = 0; i < kLive; ++i) {
    live.push_back(brc::Make<GNode>());
    if (i % 4 == 0) Ring(2, &destroyed);  // young garbage along the way
  }
  brc::CollectorStats s1 = brc::GetCollectorStats();
  REQUIRE(brc::RemoveCollectCallback(cb));
  uint64_t allocated = kLive + 2 * (kLive / 4);
  uint64_t young = s1.young_collections - s0.young_collections;
  uint64_t full = s1.full_collections - s0.full_collections;
  INFO("young " << young << " full " << full << " examined by young " << work->young.load()
                << " by full " << work->full.load());
  CHECK(young >= allocated / kThreshold / 2);
  CHECK(full >= 1);
  // Full collections come when the old heap grew by the ratio: about log(N)/log(1 + ratio).
  CHECK(static_cast<double>(full) <= std::log(double(kLive) / kThreshold) / std::log(1 + kRatio) + 4);
  // Young collections examine each allocation about once; full ones the old heap at sizes
  // growing by (1 + ratio): at most (1 + ratio) / ratio x N in all.
  CHECK(work->young.load() <= allocated + 2 * kThreshold * (young + full));
  CHECK(static_cast<double>(work->full.load()) <= (1 + kRatio) / kRatio * kLive + 4.0 * kThreshold);
  CHECK(work->wrong_kind.load() == 0);
  CHECK(s1.promoted - s0.promoted == work->promoted.load());
  CHECK(destroyed.load() >= kLive / 4 * 2 - 2 * static_cast<int>(kThreshold));  // young cycles freed
  REQUIRE(brc::SetCollectorConfig({}).ok());
}

TEST_CASE("Collect from a finalizer or a callback or Clear() is refused with the reason",
          "[collector][nesting]") {
  brc::ThreadScope attach;
  ManualCollections manual;
  std::atomic<int> destroyed{0};
  absl::Status from_finalizer, from_callback, from_clear, from_weak;
  brc::Ref<FNode> a = brc::Make<FNode>(&destroyed, [&](FNode*) {
    from_finalizer = brc::Collect().status();
  });
  brc::WeakRef<FNode> w(a, [&] { from_weak = brc::Collect().status(); });
  a->next = a;
  uint64_t id = brc::AddCollectCallback([&](brc::CollectPhase, const brc::CollectResult&) {
    from_callback = brc::Collect().status();
  });
  a = nullptr;
  MustCollect();
  brc::RemoveCollectCallback(id);
  CHECK(from_finalizer.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(std::string(from_finalizer.message()).find("Finalize") != std::string::npos);
  CHECK(std::string(from_finalizer.message()).find("FNode") != std::string::npos);
  CHECK(from_callback.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(from_weak.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(destroyed.load() == 1);

  struct ClearCollects : brc::Object {
    void Trace(brc::Visitor& v) const { v.Visit(self); }
    void Clear() {
      *status = brc::Collect().status();
      self = nullptr;
    }
    absl::Status* status;
    brc::Ref<ClearCollects> self;
  };
  brc::Ref<ClearCollects> c = brc::Make<ClearCollects>();
  c->status = &from_clear;
  c->self = c;
  c = nullptr;
  MustCollect();
  CHECK(from_clear.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(std::string(from_clear.message()).find("Clear") != std::string::npos);
  // Within a stop, too.
  {
    brc::StopTheWorld stop;
    CHECK(brc::Collect().status().code() == absl::StatusCode::kFailedPrecondition);
  }
}

TEST_CASE("Collect while another thread collects waits for it and then runs", "[collector]") {
  brc::ThreadScope attach;
  ManualCollections manual;
  std::atomic<int> destroyed{0};
  std::atomic<int> in_finalizer{0};
  std::atomic<bool> release{false};
  brc::Ref<FNode> a = brc::Make<FNode>(&destroyed, [&](FNode*) {
    in_finalizer.store(1);
    while (!release.load()) std::this_thread::yield();  // hold the collection open
  });
  a->next = a;
  a = nullptr;
  std::thread first([&] {
    brc::ThreadScope attach;
    MustCollect();
  });
  // This thread is attached: it must reach safepoints while it waits, or the collection's
  // stop would wait for it.
  CHECK(brc_test::EventuallyTrue([&] { return in_finalizer.load() != 0; }));
  std::thread second([&] {
    brc::ThreadScope attach;
    Ring(3, &destroyed);  // garbage for the second collection
    absl::StatusOr<brc::CollectResult> r = brc::Collect();  // waits for the first
    in_finalizer.store(r.ok() && r->collected == 3 ? 2 : 3);
  });
  for (int i = 0; i < 1000; ++i) {
    brc::Safepoint();
    std::this_thread::yield();
  }
  release.store(true);
  brc_test::JoinBlocking(first);  // the collections stop the world: this thread must not hold
  brc_test::JoinBlocking(second);  // them up while it waits
  CHECK(in_finalizer.load() == 2);
  CHECK(destroyed.load() == 4);
}

TEST_CASE("Collector configuration errors return a status", "[collector]") {
  auto config = [](uint64_t threshold, double ratio, int workers) {
    return brc::CollectorConfig{
        .young_threshold = threshold, .full_ratio = ratio, .workers = workers};
  };
  CHECK(brc::SetCollectorConfig(config(0, 0.25, 1)).code() == absl::StatusCode::kInvalidArgument);
  CHECK(brc::SetCollectorConfig(config((uint64_t{1} << 40) + 1, 0.25, 1)).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(brc::SetCollectorConfig(config(UINT64_MAX, 0.25, 1)).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(brc::SetCollectorConfig(config(100, -1.0, 1)).code() == absl::StatusCode::kInvalidArgument);
  CHECK(brc::SetCollectorConfig(config(100, -0.0, 1)).ok());
  CHECK(brc::SetCollectorConfig(config(100, 1e7, 1)).code() == absl::StatusCode::kInvalidArgument);
  CHECK(brc::SetCollectorConfig(config(100, INFINITY, 1)).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(brc::SetCollectorConfig(config(100, std::nan(""), 1)).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(brc::SetCollectorConfig(config(100, 0.25, 0)).code() == absl::StatusCode::kInvalidArgument);
  CHECK(brc::SetCollectorConfig(config(100, 0.25, -1)).code() == absl::StatusCode::kInvalidArgument);
  CHECK(brc::SetCollectorConfig(config(100, 0.25, 1000)).code() == absl::StatusCode::kInvalidArgument);
  // A refused configuration changes nothing.
  CHECK(brc::GetCollectorConfig().young_threshold == 100);
  REQUIRE(brc::SetCollectorConfig(config(1u << 20, 1e6, 2)).ok());  // the extremes allowed
  REQUIRE(brc::SetCollectorConfig(config(100, 0.5, 2)).ok());
  CHECK(brc::GetCollectorConfig().young_threshold == 100);
  CHECK(brc::GetCollectorConfig().full_ratio == 0.5);
  CHECK(brc::GetCollectorConfig().workers == 2);
  REQUIRE(brc::SetCollectorConfig({}).ok());
  brc::ThreadScope attach;
  brc::DisableCollector();
  CHECK_FALSE(brc::IsCollectorEnabled());
  brc::EnableCollector();
  CHECK(brc::IsCollectorEnabled());
}

TEST_CASE("GetReferents and GetReferrers follow Trace", "[collector]") {
  brc::ThreadScope attach;
  brc::Ref<GNode> x = brc::Make<GNode>();
  brc::Ref<GNode> y = brc::Make<GNode>();
  brc::Ref<GNode> z = brc::Make<GNode>();
  x->a = z;
  y->b = z;
  std::vector<brc::Ref<brc::Object>> referents = brc::GetReferents(x.get());
  REQUIRE(referents.size() == 1);
  CHECK(referents[0].get() == z.get());
  std::vector<brc::Ref<brc::Object>> referrers = brc::GetReferrers(z.get());
  CHECK(referrers.size() == 2);
  bool has_x = false, has_y = false;
  for (auto& r : referrers) {
    has_x |= r.get() == x.get();
    has_y |= r.get() == y.get();
  }
  CHECK(has_x);
  CHECK(has_y);
}

TEST_CASE("Collection statistics record each collection and its pauses", "[collector]") {
  brc::ThreadScope attach;
  ManualCollections manual;
  brc::CollectorStats before = brc::GetCollectorStats();
  Ring(7, nullptr);
  MustCollect();
  brc::CollectorStats after = brc::GetCollectorStats();
  CHECK(after.collections == before.collections + 1);
  CHECK(after.collected == before.collected + 7);
  uint64_t pauses_before = 0, pauses_after = 0;
  for (uint64_t n : before.pause_histogram) pauses_before += n;
  for (uint64_t n : after.pause_histogram) pauses_after += n;
  CHECK(pauses_after == pauses_before + 1);
  CHECK(after.max_pause >= before.max_pause);
}

TEST_CASE("Parallel marking finds the same garbage as serial marking", "[collector][parallel]") {
  BRC_TEST_SEED(seed);
  brc::ThreadScope attach;
  ManualCollections manual;
  for (int workers : {1, 2, 4}) {
    INFO("workers " << workers);
    REQUIRE(brc::SetCollectorConfig({.workers = workers}).ok());
    std::mt19937 rng(seed);
    std::atomic<int> destroyed{0};
    std::vector<brc::Ref<GNode>> roots;
    std::vector<GNode*> all;
    // 60,000 nodes (enough pages for several workers) in random graphs; a random third of
    // the rings stay rooted.
    int garbage_nodes = 0;
    for (int ring = 0; ring < 3000; ++ring) {
      brc::Ref<GNode> r = Ring(20, &destroyed);
      // Cross edges into earlier rooted rings keep garbage pointing at live objects.
      if (!roots.empty()) r->b = roots[rng() % roots.size()];
      if (rng() % 3 == 0) {
        roots.push_back(r);
      } else {
        garbage_nodes += 20;
      }
    }
    brc::CollectResult r = MustCollect();
    CHECK(r.collected == static_cast<uint64_t>(garbage_nodes));
    CHECK(destroyed.load() == garbage_nodes);
    roots.clear();
    r = MustCollect();
    CHECK(destroyed.load() == 60000);
  }
  REQUIRE(brc::SetCollectorConfig({}).ok());
}

// Its Trace reports one reference twice: one more than it holds.
struct Liar : brc::Object {
  static constexpr std::string_view kTypeName = "Liar";
  void Trace(brc::Visitor& v) const {
    v.Visit(other);
    v.Visit(other);
  }
  void Clear() { other = nullptr; }
  brc::Ref<GNode> other;
};

TEST_CASE("A Trace that reports a reference its object does not hold is reported",
          "[collector][misuse]") {
  // Counting collections check every Trace against the counts: a heap with a cycle (here a
  // ring of two GNodes) always counts.
  brc_test::ExpectAbort(
      [] {
        brc::ThreadScope attach;
        brc::Ref<Liar> liar = brc::Make<Liar>();
        liar->other = brc::Make<GNode>();
        liar->other->a = brc::Make<GNode>();
        liar->other->a->a = liar->other;
        (void)brc::Collect();
      },
      "reports more references to this object than its reference count");
#ifdef BRC_DEBUG
  // BRC_DEBUG counts after every acyclic check too, so an acyclic heap is checked as well.
  brc_test::ExpectAbort(
      [] {
        brc::ThreadScope attach;
        brc::Ref<Liar> liar = brc::Make<Liar>();
        liar->other = brc::Make<GNode>();
        (void)brc::Collect();
      },
      "reports more references to this object than its reference count");
#endif
}

TEST_CASE("Collections while other threads build and rewire cyclic graphs",
          "[collector][concurrent]") {
  BRC_TEST_SEED(seed);
  brc::ThreadScope attach;
  ManualCollections manual;
  constexpr int kThreads = 3;
  constexpr int kSteps = 20'000;
  std::atomic<int> destroyed{0};
  std::atomic<int> created{0};
  WorkerFailures failures;
  std::vector<std::thread> threads;
  std::atomic<int> finished{0};
  // A shared slot table lets threads take references to each other's objects.
  constexpr int kSlots = 64;
  std::vector<brc::Ref<GNode>> slots(kSlots);
  std::mutex slots_mu;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      brc::ThreadScope attach;
      std::mt19937 rng(seed + static_cast<uint32_t>(t));
      std::vector<brc::Ref<GNode>> mine;
      for (int step = 0; step < kSteps; ++step) {
        switch (rng() % 5) {
          case 0:
          case 1: {
            mine.push_back(brc::Make<GNode>(&destroyed, step));
            created.fetch_add(1, std::memory_order_relaxed);
            break;
          }
          case 2:
            if (mine.size() >= 2) {  // rewire: cycles among this thread's objects
              auto& x = mine[rng() % mine.size()];
              x->a = mine[rng() % mine.size()];
            }
            break;
          case 3: {  // share with / take from other threads
            brc::Ref<GNode> got;
            {
              std::lock_guard<std::mutex> lock(slots_mu);
              auto& s = slots[rng() % kSlots];
              if (!mine.empty() && rng() % 2) {
                s = mine[rng() % mine.size()];
              } else {
                got = s;
              }
            }
            if (got && !mine.empty()) {
              std::lock_guard<std::mutex> lock(slots_mu);  // the edge write races otherwise
              got->b = mine[rng() % mine.size()];
            }
            break;
          }
          case 4:
            if (!mine.empty()) {
              std::swap(mine[rng() % mine.size()], mine.back());
              mine.pop_back();
            }
            break;
        }
        if (mine.size() > 200) mine.erase(mine.begin(), mine.begin() + 100);
        brc::Safepoint();
      }
      mine.clear();
      finished.fetch_add(1);
    });
  }
  int collections = 0;
  while (finished.load() < kThreads) {
    absl::StatusOr<brc::CollectResult> r = brc::Collect();
    CHECK(r.ok());
    ++collections;
  }
  for (auto& t : threads) t.join();
  {
    std::lock_guard<std::mutex> lock(slots_mu);
    for (auto& s : slots) s = nullptr;
  }
  MustCollect();
  INFO("collections during the run: " << collections);
  CHECK(failures.count.load() == 0);
  CHECK(destroyed.load() == created.load());  // nothing lost, nothing freed twice
  CHECK(brc::GetStats().live_objects() >= 0);
}

}  // namespace

namespace {

// Regression tests for bugs found in review.

struct SelfWeak : brc::Object {
  static constexpr std::string_view kTypeName = "SelfWeak";
  explicit SelfWeak(brc::WeakRef<SelfWeak>* out) {
    // A WeakRef to itself, made in the constructor (before Make finishes).
    *out = brc::WeakRef<SelfWeak>(brc::Ref<SelfWeak>::NewRef(this));
  }
  void Trace(brc::Visitor&) const {}
  void Clear() {}
};

TEST_CASE("A WeakRef made in a tracked constructor is cleared when the object dies",
          "[collector][weak]") {
  brc::ThreadScope attach;
  brc::WeakRef<SelfWeak> first, second;
  brc::Ref<SelfWeak> a = brc::Make<SelfWeak>(&first);
  SelfWeak* raw = a.get();
  a = nullptr;
  CHECK(first.expired());
  // The next object of the same size class reuses the block: the old WeakRef must not see it.
  brc::Ref<SelfWeak> b = brc::Make<SelfWeak>(&second);
  // (BRC_DEBUG keeps freed blocks in its quarantine instead of reusing them.)
  if (brc::testing::QuarantineCapacityForTesting() == 0) CHECK(b.get() == raw);
  CHECK(first.Lock() == nullptr);
  CHECK(second.Lock().get() == b.get());
}

TEST_CASE("A WeakRef that a finalizer makes to a garbage member is cleared too",
          "[collector][weak][finalizer]") {
  brc::ThreadScope attach;
  ManualCollections manual;
  std::atomic<int> destroyed{0};
  brc::WeakRef<FNode> made_late;
  brc::Ref<FNode> a = brc::Make<FNode>(&destroyed);
  brc::Ref<FNode> b = brc::Make<FNode>(&destroyed);
  a->action = [&, raw_b = b.get()](FNode*) {
    made_late = brc::WeakRef<FNode>(brc::Ref<FNode>::NewRef(raw_b));  // not a resurrection
  };
  a->next = b;
  b->next = a;
  a = b = nullptr;
  brc::CollectResult r = MustCollect();
  CHECK(r.collected == 2);
  CHECK(r.uncollectable == 0);
  CHECK(destroyed.load() == 2);
  CHECK(made_late.Lock() == nullptr);
}

TEST_CASE("A weak-reference callback whose WeakRef died before it ran is not called",
          "[collector][weak]") {
  brc::ThreadScope attach;
  ManualCollections manual;
  std::atomic<int> destroyed{0};
  brc::Ref<GNode> a = brc::Make<GNode>(&destroyed);
  brc::Ref<GNode> b = brc::Make<GNode>(&destroyed);
  a->a = b;
  b->a = a;
  // Whichever callback runs first destroys the other's WeakRef, which cancels its callback.
  int calls = 0;
  std::unique_ptr<brc::WeakRef<GNode>> wa, wb;
  wa = std::make_unique<brc::WeakRef<GNode>>(a, [&] { ++calls; wb.reset(); });
  wb = std::make_unique<brc::WeakRef<GNode>>(b, [&] { ++calls; wa.reset(); });
  a = b = nullptr;
  brc::CollectResult r = MustCollect();
  CHECK(destroyed.load() == 2);
  CHECK(calls == 1);
  CHECK(r.weak_callbacks == 1);
}

TEST_CASE("GetReferrers never hands out a member of a running collection's garbage set",
          "[collector]") {
  brc::ThreadScope attach;
  ManualCollections manual;
  std::atomic<int> destroyed{0};
  brc::Ref<GNode> x = brc::Make<GNode>(&destroyed);  // alive; referenced by garbage b
  std::atomic<int> stage{0};
  std::vector<brc::Ref<brc::Object>> referrers;
  brc::Ref<FNode> a = brc::Make<FNode>(&destroyed, [&](FNode*) {
    stage.store(1);
    // Hold the collection between its stops while another thread looks for x's referrers.
    CHECK(brc_test::EventuallyTrue([&] { return stage.load() == 2; }));
  });
  // Garbage: a -> a (with the finalizer), and b <-> c, where b also references x.
  brc::Ref<GNode> b = brc::Make<GNode>(&destroyed);
  brc::Ref<GNode> c = brc::Make<GNode>(&destroyed);
  b->a = c;
  c->a = b;
  b->b = x;
  a->next = a;
  a = nullptr;
  b = c = nullptr;
  std::thread looker([&] {
    brc::ThreadScope attach;
    while (stage.load() != 1) brc::Safepoint();
    referrers = brc::GetReferrers(x.get());
    stage.store(2);
  });
  MustCollect();
  brc_test::JoinBlocking(looker);
  CHECK(referrers.empty());  // b is garbage: not handed out
  CHECK(destroyed.load() == 3);
}

TEST_CASE("Large tracked objects freed by another thread do not pile up", "[collector][heap]") {
  struct Big : brc::Object {
    void Trace(brc::Visitor&) const {}
    void Clear() {}
    char payload[256 << 10];
  };
  brc::ThreadScope attach;
  ManualCollections manual;
  std::atomic<Big*> slot{nullptr};
  std::atomic<bool> done{false};
  // Pages other tests left in other (exited) threads' heaps, when several run in one process.
  const uint64_t baseline = brc::testing::CollectorHeapPagesForTesting();
  uint64_t max_pages = 0;
  std::thread owner([&] {
    brc::ThreadScope attach;
    for (int i = 0; i < 200; ++i) {
      slot.store(brc::Make<Big>().Release());
      while (slot.load() != nullptr) brc::Safepoint();  // the main thread drops it
      max_pages = std::max(max_pages, brc::testing::CollectorHeapPagesForTesting());
    }
    done.store(true);
  });
  while (!done.load()) {
    if (Big* big = slot.load()) {
      slot.store(nullptr);
      brc::Ref<Big>::Adopt(big);  // dropped here, on a thread that does not own its page
    }
    brc::Safepoint();
  }
  brc_test::JoinBlocking(owner);
  INFO("peak collector pages: " << max_pages << ", before the test: " << baseline);
  // Each large page is released at the owner's next large allocation (BRC_DEBUG's quarantine
  // holds on to freed objects, pages included, for a while).
  uint64_t quarantined = std::min<uint64_t>(200, brc::testing::QuarantineCapacityForTesting());
  CHECK(max_pages < baseline + 20 + quarantined);
}

TEST_CASE("A thread that exits with a thread_local BlockingScope open detaches cleanly",
          "[collector][thread]") {
  std::atomic<int> destroyed{0};
  brc::Ref<GNode> kept;
  std::thread t([&] {
    thread_local std::optional<brc::BlockingScope> blocking;  // constructed before attaching
    (void)blocking.has_value();
    brc::AttachCurrentThread();
    kept = brc::Make<GNode>(&destroyed);
    blocking.emplace();
    // Exits with the scope open and without detaching.
  });
  t.join();
  brc::ThreadScope attach;
  kept = nullptr;  // its owner has exited: freed at once
  CHECK(destroyed.load() == 1);
}

}  // namespace

namespace {

TEST_CASE("Allocations of short-lived threads count toward the automatic schedule",
          "[collector][schedule]") {
  brc::ThreadScope attach;
  MustCollect();
  REQUIRE(brc::SetCollectorConfig({.young_threshold = 500}).ok());
  brc::EnableCollector();
  std::atomic<int> destroyed{0};
  uint64_t before = brc::GetCollectorStats().automatic_collections;
  // Each thread makes fewer tracked objects than one reporting batch, then exits.
  for (int t = 0; t < 100; ++t) {
    std::thread worker([&] {
      brc::ThreadScope attach;
      for (int i = 0; i < 10; ++i) Ring(2, &destroyed);
    });
    brc_test::JoinBlocking(worker);
  }
  // 2000 allocations were counted at the threads' exits; the next batch here collects.
  for (int i = 0; i < 100; ++i) brc::Make<GNode>();
  CHECK(brc::GetCollectorStats().automatic_collections > before);
  CHECK(destroyed.load() >= 1000);
  REQUIRE(brc::SetCollectorConfig({}).ok());
}

}  // namespace

namespace {

// An allocator that fails on demand (otherwise malloc), for the out-of-memory paths.
class FailingAllocator final : public brc::Allocator {
 public:
  void* Allocate(std::size_t size, std::size_t align) noexcept override {
    if (fail.load()) return nullptr;
    return brc::MallocAllocator().Allocate(size, align);
  }
  void Deallocate(void* p, std::size_t size, std::size_t align) noexcept override {
    brc::MallocAllocator().Deallocate(p, size, align);
  }
  std::string_view Name() const noexcept override { return "failing"; }
  std::atomic<bool> fail{false};
};

TEST_CASE("A queue that cannot grow merges on the owner's behalf with the world stopped",
          "[collector][oom]") {
  static FailingAllocator failing;  // outlives every object it makes
  REQUIRE(brc::SetAllocator(&failing).ok());
  {
    brc::ThreadScope attach;
    std::atomic<int> destroyed{0};
    std::atomic<bool> handed{false};
    std::atomic<bool> done{false};
    brc_test::Counted* raw = nullptr;
    std::thread owner([&] {
      brc::ThreadScope attach;
      brc::testing::ReleaseQueueMemoryForTesting();  // the next queueing must allocate
      raw = brc::Make<brc_test::Counted>(&destroyed).Release();
      handed.store(true);
      while (!done.load()) brc::Safepoint();
    });
    while (!handed.load()) std::this_thread::yield();
    uint64_t merges = brc::GetStats().merges_for_owner;
    failing.fail.store(true);
    brc::Ref<brc_test::Counted>::Adopt(raw);  // dropped by a non-owner: buffered for the owner
    brc::Safepoint();  // the buffer's push must queue, cannot
    failing.fail.store(false);
    // Merged (and freed) at once instead of queued: nothing lost, nothing pinned.
    CHECK(destroyed.load() == 1);
    CHECK(brc::GetStats().merges_for_owner == merges + 1);
    done.store(true);
    brc_test::JoinBlocking(owner);
  }
  REQUIRE(brc::SetAllocator(&brc::DefaultAllocator()).ok());
}

TEST_CASE("A collection that runs out of memory reports it and changes nothing",
          "[collector][oom]") {
  static FailingAllocator failing;
  REQUIRE(brc::SetAllocator(&failing).ok());
  {
    brc::ThreadScope attach;
    ManualCollections manual;
    std::atomic<int> destroyed{0};
    brc::Ref<GNode> live = Ring(4, &destroyed);
    Ring(3, &destroyed);  // garbage
    failing.fail.store(true);
    absl::StatusOr<brc::CollectResult> r = brc::Collect();
    // (A leaf needs memory from the allocator; a tracked node may still find a free block in
    // its page.)
    CHECK_THROWS_AS(brc::Make<brc_test::Counted>(&destroyed), std::bad_alloc);
    failing.fail.store(false);
    CHECK(r.status().code() == absl::StatusCode::kResourceExhausted);
    CHECK(destroyed.load() == 0);
    CHECK(live->a->a->a->a.get() == live.get());  // untouched
    // With memory back, the next collection finds the garbage as if nothing had happened.
    brc::CollectResult again = MustCollect();
    CHECK(again.collected == 3);
    CHECK(destroyed.load() == 3);
    live = nullptr;
    again = MustCollect();
    CHECK(again.collected == 4);
  }
  REQUIRE(brc::SetAllocator(&brc::DefaultAllocator()).ok());
}

}  // namespace

namespace {

// Found by the collector stress program: an object the collecting thread owns, queued to it by
// another thread while the stop was pending, was reported uncollectable after its Clear().
struct FourEdges : brc::Object {
  explicit FourEdges(std::atomic<int>* d) : destroyed(d) {}
  ~FourEdges() { destroyed->fetch_add(1); }
  void Trace(brc::Visitor& v) const {
    v.Visit(a);
    v.Visit(b);
    v.Visit(c);
    v.Visit(d);
  }
  void Clear() { a = b = c = d = nullptr; }
  std::atomic<int>* destroyed;
  brc::Ref<FourEdges> a, b, c, d;
};

TEST_CASE("An object queued to the collecting thread during the stop is counted as collected",
          "[collector]") {
  brc::ThreadScope attach;
  ManualCollections manual;
  std::atomic<int> destroyed{0};
  std::atomic<bool> ready{false}, stop_requested{false}, done{false};
  // The watchdog runs on this thread while the stop waits for `other`: it tells it to act.
  REQUIRE(brc::SetStopWatchdog(absl::Milliseconds(1), [&](const brc::LaggingThread&) {
            stop_requested.store(true);
          }).ok());
  brc::Ref<FourEdges> x = brc::Make<FourEdges>(&destroyed);
  x->a = x;
  brc::Ref<FourEdges> r1 = x, r2 = x;
  FourEdges* raw = x.get();
  std::thread other([&] {
    brc::ThreadScope attach;
    brc::Ref<FourEdges> mine1 = std::move(r1), mine2 = std::move(r2);
    ready.store(true);
    while (!stop_requested.load()) {
    }  // no safepoint: the pending stop waits for this thread
    mine2.Reset();  // shared half 0: queued to the collecting thread, which drained already
    raw->b = mine1;
    raw->c = mine1;
    raw->d = std::move(mine1);
    brc::Safepoint();  // parks
    while (!done.load()) brc::Safepoint();
  });
  while (!ready.load()) {
  }
  x = nullptr;
  brc::CollectResult r = MustCollect();
  done.store(true);
  brc_test::JoinBlocking(other);
  REQUIRE(brc::SetStopWatchdog(absl::Seconds(1)).ok());
  CHECK(r.unreachable == 1);
  CHECK(r.uncollectable == 0);
  CHECK(r.collected == 1);
  CHECK(destroyed.load() == 1);
}

}  // namespace
