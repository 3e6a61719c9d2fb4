// Per-thread counts for hot shared objects (brc/hot.h): switching, counting in slots, merge
// passes that free, thread exit, the collector, weak references, saturation of slots, the
// contention detector, configuration extremes, misuse, re-entrant destructors and allocation
// failure.
#include <atomic>
#include <random>
#include <thread>
#include <vector>

#include "brc/hot.h"
#include "test_util.h"

namespace {

using brc_test::Counted;
using brc_test::Must;
using brc_test::WorkerFailures;

// Every test leaves the default configuration behind.
struct DefaultConfig {
  explicit DefaultConfig(brc::PerThreadConfig c = {}) { REQUIRE(brc::SetPerThreadConfig(c).ok()); }
  ~DefaultConfig() { (void)brc::SetPerThreadConfig({}); }
};

brc::PerThreadConfig NoPacing() {
  brc::PerThreadConfig c;
  c.merge_interval = absl::ZeroDuration();
  return c;
}

struct Tracked : brc::Object {
  explicit Tracked(std::atomic<int>* destroyed) : destroyed(destroyed) {}
  ~Tracked() { destroyed->fetch_add(1, std::memory_order_relaxed); }
  void Trace(brc::Visitor& v) const { v.Visit(next); }
  void Clear() { next = nullptr; }
  std::atomic<int>* destroyed;
  brc::Ref<Tracked> next;
};

}  // namespace

TEST_CASE("An object switched by its owner counts in slots and is freed by a merge pass",
          "[per_thread]") {
  brc::ThreadScope attach;
  DefaultConfig config;
  std::atomic<int> destroyed{0};
  brc::Ref<Counted> a = brc::Make<Counted>(&destroyed);
  brc::Ref<Counted> extra = a;  // local count 2
  brc::Stats before = brc::GetStats();
  REQUIRE(brc::CountPerThread(a.get()).ok());
  REQUIRE(brc::IsCountedPerThread(a.get()));
  CHECK(brc::GetStats().per_thread_switched == before.per_thread_switched + 1);
  brc::testing::Counts c = brc::testing::GetCounts(a.get());
  CHECK(c.owner == brc::detail::kPerThreadOwner);
  CHECK(c.shared_count == 2);  // the owner's half, folded
  CHECK(c.state == brc::kStateMaybeWeak);
  CHECK(brc::GetRefCount(a.get()) == 2);
  // Counting is in this thread's slot now; the shared word does not move.
  {
    brc::Ref<Counted> more = a;
    CHECK(brc::testing::PerThreadSlotForTesting(a.get()) == 1);
    CHECK(brc::testing::GetCounts(a.get()).shared_count == 2);
    CHECK(brc::GetRefCount(a.get()) == 3);
  }
  CHECK(brc::testing::PerThreadSlotForTesting(a.get()) == 0);
  // Switching again, or an immortal object: nothing changes.
  REQUIRE(brc::CountPerThread(a.get()).ok());
  CHECK(brc::GetStats().per_thread_switched == before.per_thread_switched + 1);
  extra = nullptr;
  CHECK(brc::testing::PerThreadSlotForTesting(a.get()) == -1);
  brc::Object* raw = a.get();
  a = nullptr;  // true count zero: not freed by the decrement
  CHECK(destroyed.load() == 0);
  CHECK(brc::testing::PerThreadSlotForTesting(raw) == -2);
  REQUIRE(brc::MergePerThreadCounts().ok());
  CHECK(destroyed.load() == 1);
  brc::Stats after = brc::GetStats();
  CHECK(after.per_thread_freed == before.per_thread_freed + 1);
  CHECK(after.merge_passes > before.merge_passes);
  // A second pass finds nothing more.
  REQUIRE(brc::MergePerThreadCounts().ok());
  CHECK(destroyed.load() == 1);
}

TEST_CASE("Immortal objects are left alone by CountPerThread", "[per_thread]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  brc::Object* ob = brc::Make<Counted>(&destroyed).Release();
  brc::MakeImmortal(ob);
  REQUIRE(brc::CountPerThread(ob).ok());
  CHECK_FALSE(brc::IsCountedPerThread(ob));
  CHECK(brc::GetRefCount(ob) == brc::kImmortalRefCount);
  brc::testing::FreeImmortalForTesting(ob);
  CHECK(destroyed.load() == 1);
}

TEST_CASE("A merge pass adds every thread's slots, and the object dies only when the sum is zero",
          "[per_thread]") {
  brc::ThreadScope attach;
  DefaultConfig config(NoPacing());
  std::atomic<int> destroyed{0};
  brc::Ref<Counted> a = brc::Make<Counted>(&destroyed);
  REQUIRE(brc::CountPerThread(a.get()).ok());
  // A worker takes three references (its slot +3) and hands two of them over.
  std::vector<brc::Object*> handed;
  brc_test::RunAttached([&] {
    for (int i = 0; i < 3; ++i) handed.push_back(brc::Ref<Counted>(a).Release());
    CHECK(brc::testing::PerThreadSlotForTesting(a.get()) == 3);
    brc::DecRef(handed.back());  // one back: slot 2
    handed.pop_back();
    // Its exit runs a pass (its slots are not zero): the shared word takes them.
  });
  CHECK(brc::testing::GetCounts(a.get()).shared_count == 3);
  CHECK(brc::GetRefCount(a.get()) == 3);
  // This thread drops the two it was handed: its slot goes below zero, a pass is due.
  for (brc::Object* ob : handed) brc::DecRef(ob);
  CHECK(brc::testing::PerThreadSlotForTesting(a.get()) == -2);
  brc::Safepoint();  // the due pass: sum 3 - 2 = 1, alive
  CHECK(destroyed.load() == 0);
  CHECK(brc::testing::PerThreadSlotForTesting(a.get()) == 0);
  CHECK(brc::GetRefCount(a.get()) == 1);
  a = nullptr;
  brc::Safepoint();
  CHECK(destroyed.load() == 1);
}

TEST_CASE("An object owned by another live thread is switched with the world stopped",
          "[per_thread]") {
  brc::ThreadScope attach;
  DefaultConfig config(NoPacing());
  std::atomic<int> destroyed{0};
  std::atomic<brc::Object*> shared{nullptr};
  std::atomic<bool> done{false};
  std::atomic<int64_t> owner_sees{0};
  std::thread owner([&] {
    brc::ThreadScope t;
    brc::Ref<Counted> mine = brc::Make<Counted>(&destroyed);
    shared.store(brc::Ref<Counted>(mine).Release());  // owner's half 2
    while (!brc::IsCountedPerThread(mine.get())) brc::Safepoint();
    {
      brc::Ref<Counted> again = mine;  // the owner counts in its slot too now
      owner_sees.store(brc::testing::PerThreadSlotForTesting(mine.get()));
      while (!done.load()) brc::Safepoint();
    }
  });
  REQUIRE(brc_test::EventuallyTrue([&] { return shared.load() != nullptr; }));
  brc::Object* ob = shared.load();
  REQUIRE(brc::CountPerThread(ob).ok());
  REQUIRE(brc_test::EventuallyTrue([&] { return owner_sees.load() == 1; }));
  CHECK(brc::GetRefCount(ob) == 3);  // owner's two (one folded, one in its slot) + ours
  done.store(true);
  brc_test::JoinBlocking(owner);
  CHECK(destroyed.load() == 0);
  brc::DecRef(ob);
  REQUIRE(brc::MergePerThreadCounts().ok());
  CHECK(destroyed.load() == 1);
}

TEST_CASE("Threads counting one per-thread object concurrently keep its count exact",
          "[per_thread]") {
  BRC_TEST_SEED(seed);
  brc::ThreadScope attach;
  DefaultConfig config(NoPacing());
  std::atomic<int> destroyed{0};
  constexpr int kObjects = 8;
  std::vector<brc::Ref<Counted>> objs;
  for (int i = 0; i < kObjects; ++i) {
    objs.push_back(brc::Make<Counted>(&destroyed));
    REQUIRE(brc::CountPerThread(objs.back().get()).ok());
  }
  WorkerFailures failures;
  std::vector<std::thread> workers;
  for (int w = 0; w < 3; ++w) {
    workers.emplace_back([&, w] {
      brc::ThreadScope t;
      std::mt19937 rng(seed + w);
      std::vector<brc::Ref<Counted>> held;
      for (int step = 0; step < 20000; ++step) {
        int op = static_cast<int>(rng() % 4);
        if (op < 2) {
          held.push_back(objs[rng() % kObjects]);
        } else if (!held.empty()) {
          std::swap(held[rng() % held.size()], held.back());
          held.pop_back();
        }
        if (step % 512 == 0) brc::Safepoint();
      }
      failures.Expect(destroyed.load() == 0);
    });
  }
  for (auto& t : workers) brc_test::JoinBlocking(t);
  CHECK(failures.count.load() == 0);
  for (auto& o : objs) CHECK(brc::GetRefCount(o.get()) == 1);
  objs.clear();
  REQUIRE(brc::MergePerThreadCounts().ok());
  CHECK(destroyed.load() == kObjects);
}

TEST_CASE("A per-thread id is recycled only after its slots are zero", "[per_thread]") {
  brc::ThreadScope attach;
  DefaultConfig config(NoPacing());
  std::atomic<int> destroyed{0};
  brc::Ref<Counted> a = brc::Make<Counted>(&destroyed);
  REQUIRE(brc::CountPerThread(a.get()).ok());
  uint32_t id = brc::testing::GetCounts(a.get()).local;
  brc::Ref<Counted> b = brc::Make<Counted>(&destroyed);
  brc_test::RunAttached([&] {
    // A worker's +1 and a later -1 on `a` through other references.
    brc::Object* taken = brc::Ref<Counted>(a).Release();
    brc::DecRef(taken);
  });
  a = nullptr;
  REQUIRE(brc::MergePerThreadCounts().ok());
  CHECK(destroyed.load() == 1);
  REQUIRE(brc::CountPerThread(b.get()).ok());
  CHECK(brc::testing::GetCounts(b.get()).local == id);  // the freed id, reused
  CHECK(brc::testing::PerThreadSlotForTesting(b.get()) == 0);
  CHECK(brc::GetRefCount(b.get()) == 1);
  b = nullptr;
  REQUIRE(brc::MergePerThreadCounts().ok());
  CHECK(destroyed.load() == 2);
}

TEST_CASE("Weak references to a per-thread object lock until a pass frees it", "[per_thread]") {
  brc::ThreadScope attach;
  DefaultConfig config;
  std::atomic<int> destroyed{0};
  std::atomic<int> callbacks{0};
  brc::Ref<Counted> a = brc::Make<Counted>(&destroyed);
  brc::WeakRef<Counted> weak(a, [&] { callbacks.fetch_add(1); });
  REQUIRE(brc::CountPerThread(a.get()).ok());
  CHECK(weak.Lock().get() == a.get());
  brc_test::RunAttached([&] { CHECK(weak.Lock().get() != nullptr); });
  a = nullptr;
  // Dropped, not yet merged: documented to still lock (it is not freed).
  {
    brc::Ref<Counted> back = weak.Lock();
    CHECK(back.get() != nullptr);
  }
  REQUIRE(brc::MergePerThreadCounts().ok());
  CHECK(destroyed.load() == 1);
  CHECK(callbacks.load() == 1);
  CHECK(weak.Lock().get() == nullptr);
}

TEST_CASE("Collections count per-thread objects with their slots summed", "[per_thread]") {
  brc::ThreadScope attach;
  brc_test::Manual manual;
  DefaultConfig config;
  std::atomic<int> destroyed{0};
  SECTION("a garbage cycle of per-thread objects is collected") {
    brc::Ref<Tracked> a = brc::Make<Tracked>(&destroyed);
    brc::Ref<Tracked> b = brc::Make<Tracked>(&destroyed);
    a->next = b;
    b->next = a;
    REQUIRE(brc::CountPerThread(a.get()).ok());
    REQUIRE(brc::CountPerThread(b.get()).ok());
    brc::Ref<Tracked> extra = a;  // in this thread's slot
    extra = nullptr;
    a = nullptr;
    b = nullptr;
    brc::CollectResult r = Must(brc::Collect());
    CHECK(r.unreachable == 2);
    CHECK(destroyed.load() == 2);
  }
  SECTION("references held in another thread's slot keep a per-thread object alive") {
    brc::Ref<Tracked> a = brc::Make<Tracked>(&destroyed);
    a->next = a;  // a self-cycle: garbage if nothing else held it
    REQUIRE(brc::CountPerThread(a.get()).ok());
    std::atomic<bool> holding{false}, release{false};
    std::thread t([&] {
      brc::ThreadScope ts;
      brc::Ref<Tracked> mine = a;  // in the worker's slot
      holding.store(true);
      while (!release.load()) brc::Safepoint();
    });
    REQUIRE(brc_test::EventuallyTrue([&] { return holding.load(); }));
    Tracked* raw = a.get();
    a = nullptr;
    Must(brc::Collect());
    Must(brc::CollectYoung());
    CHECK(destroyed.load() == 0);
    CHECK(raw->next.get() == raw);
    release.store(true);
    brc_test::JoinBlocking(t);
    // The worker's exit folded its slot; the self-cycle is now garbage.
    brc::CollectResult r = Must(brc::Collect());
    CHECK(r.unreachable == 1);
    CHECK(destroyed.load() == 1);
  }
}

TEST_CASE("Slots spill into the shared word at their limits instead of wrapping",
          "[per_thread]") {
  brc::ThreadScope attach;
  DefaultConfig config;
  std::atomic<int> destroyed{0};
  brc::Ref<Counted> a = brc::Make<Counted>(&destroyed);
  REQUIRE(brc::CountPerThread(a.get()).ok());
  int32_t shared0 = brc::testing::GetCounts(a.get()).shared_count;
  REQUIRE(brc::testing::SetPerThreadSlotForTesting(a.get(), brc::detail::kSlotLimit));
  brc::IncRef(a.get());  // would pass the limit: the slot spills
  CHECK(brc::testing::PerThreadSlotForTesting(a.get()) == 0);
  // The spill saturated nothing: 2^30 + 1 does not fit in the shared word (30 bits), so the
  // object is immortal now (leak, never wrap).
  CHECK(brc::IsImmortal(a.get()));
  (void)shared0;
  brc::Ref<Counted> b = brc::Make<Counted>(&destroyed);
  REQUIRE(brc::CountPerThread(b.get()).ok());
  REQUIRE(brc::testing::SetPerThreadSlotForTesting(b.get(), -brc::detail::kSlotLimit));
  brc::DecRef(b.get());  // would pass the lower limit: spills, the shared word saturates
  CHECK(brc::testing::PerThreadSlotForTesting(b.get()) == 0);
  CHECK(brc::IsImmortal(b.get()));
  REQUIRE(brc::MergePerThreadCounts().ok());
  CHECK(destroyed.load() == 0);  // immortal: never freed
  // Smaller values stay in the slot and are merged exactly.
  brc::Ref<Counted> c = brc::Make<Counted>(&destroyed);
  REQUIRE(brc::CountPerThread(c.get()).ok());
  REQUIRE(brc::testing::SetPerThreadSlotForTesting(c.get(), 1000));
  REQUIRE(brc::MergePerThreadCounts().ok());
  CHECK(brc::testing::GetCounts(c.get()).shared_count == 1001);
  REQUIRE(brc::testing::SetPerThreadSlotForTesting(c.get(), -1000));
  REQUIRE(brc::MergePerThreadCounts().ok());
  CHECK(brc::GetRefCount(c.get()) == 1);
  brc::testing::FreeImmortalForTesting(a.Release());  // immortal: freed by hand
  brc::testing::FreeImmortalForTesting(b.Release());
  CHECK(destroyed.load() == 2);
  // Every object a test drops while it is counted per thread is freed by a pass: run it before
  // `destroyed` goes out of scope.
  c = nullptr;
  REQUIRE(brc::MergePerThreadCounts().ok());
  CHECK(destroyed.load() == 3);
}

TEST_CASE("The contention detector switches an object at the next safepoint", "[per_thread]") {
  brc::ThreadScope attach;
  brc::PerThreadConfig cfg;
  CHECK_FALSE(cfg.detect_contention);  // off by default
  cfg.detect_contention = true;
  cfg.contention_threshold = 3;
  DefaultConfig config(cfg);
  std::atomic<int> destroyed{0};
  brc::Ref<Counted> a = brc::Make<Counted>(&destroyed);
  brc::Stats before = brc::GetStats();
  brc::testing::ResetContentionForTesting();  // an earlier object at this address may be noted
  brc::testing::NoteContentionForTesting(a.get());
  brc::testing::NoteContentionForTesting(a.get());
  brc::Safepoint();
  CHECK_FALSE(brc::IsCountedPerThread(a.get()));  // two lost races: below the threshold
  brc::testing::NoteContentionForTesting(a.get());
  CHECK_FALSE(brc::IsCountedPerThread(a.get()));  // nominated, switched at the safepoint
  CHECK(brc::GetRefCount(a.get()) == 2);          // the nomination holds a reference
  brc::Safepoint();
  CHECK(brc::IsCountedPerThread(a.get()));
  CHECK(brc::GetRefCount(a.get()) == 1);
  brc::Stats after = brc::GetStats();
  CHECK(after.per_thread_detected == before.per_thread_detected + 1);
  SECTION("detection off") {
    brc::Ref<Counted> b = brc::Make<Counted>(&destroyed);
    cfg.detect_contention = false;
    REQUIRE(brc::SetPerThreadConfig(cfg).ok());
    for (int i = 0; i < 10; ++i) brc::testing::NoteContentionForTesting(b.get());
    brc::Safepoint();
    CHECK_FALSE(brc::IsCountedPerThread(b.get()));
  }
  SECTION("a nominee whose thread detaches first is dropped: detaching never stops the world") {
    brc::Ref<Counted> b = brc::Make<Counted>(&destroyed);
    brc_test::RunAttached([&] {
      brc::testing::ResetContentionForTesting();
      for (int i = 0; i < 3; ++i) brc::testing::NoteContentionForTesting(b.get());
    });
    CHECK_FALSE(brc::IsCountedPerThread(b.get()));
    CHECK(brc::GetRefCount(b.get()) == 1);  // the nominee's reference went back
  }
  a = nullptr;
  REQUIRE(brc::MergePerThreadCounts().ok());
}

TEST_CASE("Contended non-owner counting ends up per thread and stays exact", "[per_thread]") {
  BRC_TEST_SEED(seed);
  brc::ThreadScope attach;
  brc::PerThreadConfig cfg;
  cfg.detect_contention = true;
  cfg.contention_threshold = 16;
  DefaultConfig config(cfg);
  std::atomic<int> destroyed{0};
  brc::Ref<Counted> a = brc::Make<Counted>(&destroyed);
  std::vector<std::thread> workers;
  for (int w = 0; w < 2; ++w) {
    workers.emplace_back([&] {
      brc::ThreadScope t;
      for (int i = 0; i < 200000; ++i) {
        brc::IncRef(a.get());
        brc::DecRef(a.get());
        if (i % 1024 == 0) brc::Safepoint();
      }
    });
  }
  for (auto& t : workers) brc_test::JoinBlocking(t);
  // Whether it was switched depends on the schedule (two cores race, one may not): only the
  // count is asserted.
  INFO("switched: " << brc::IsCountedPerThread(a.get()));
  CHECK(brc::GetRefCount(a.get()) == 1);
  a = nullptr;
  REQUIRE(brc::MergePerThreadCounts().ok());
  CHECK(destroyed.load() == 1);
}

TEST_CASE("Per-thread configuration rejects values out of range", "[per_thread]") {
  DefaultConfig config;
  auto bad = [](auto edit) {
    brc::PerThreadConfig c;
    edit(c);
    absl::Status s = brc::SetPerThreadConfig(c);
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
  };
  bad([](auto& c) { c.contention_threshold = 0; });
  bad([](auto& c) { c.contention_threshold = -1; });
  bad([](auto& c) { c.contention_threshold = (1 << 20) + 1; });
  bad([](auto& c) { c.contention_threshold = INT32_MAX; });
  bad([](auto& c) { c.merge_interval = absl::Nanoseconds(-1); });
  bad([](auto& c) { c.merge_interval = absl::InfiniteDuration(); });
  bad([](auto& c) { c.merge_interval = -absl::InfiniteDuration(); });
  bad([](auto& c) { c.merge_interval = absl::Seconds(11); });
  bad([](auto& c) { c.max_objects = 0; });
  bad([](auto& c) { c.max_objects = -1; });
  bad([](auto& c) { c.max_objects = (int64_t{1} << 30) + 1; });
  bad([](auto& c) { c.max_objects = INT64_MAX; });
  brc::PerThreadConfig good;
  good.contention_threshold = 1 << 20;
  good.merge_interval = absl::Seconds(10);
  good.max_objects = int64_t{1} << 30;
  REQUIRE(brc::SetPerThreadConfig(good).ok());
  brc::PerThreadConfig got = brc::GetPerThreadConfig();
  CHECK(got.contention_threshold == good.contention_threshold);
  CHECK(got.merge_interval == good.merge_interval);
  CHECK(got.max_objects == good.max_objects);
}

TEST_CASE("CountPerThread refuses misuse with a clear status", "[per_thread]") {
  std::atomic<int> destroyed{0};
  brc::Object* ob = nullptr;
  {
    brc::ThreadScope attach;
    ob = brc::Make<Counted>(&destroyed).Release();
  }
  // Not attached (the object's owner exited: it is merged, still alive).
  absl::Status s = brc::CountPerThread(ob);
  CHECK(s.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(brc::MergePerThreadCounts().code() == absl::StatusCode::kFailedPrecondition);
  brc::ThreadScope attach;
  {
    brc::BlockingScope blocked;
    CHECK(brc::CountPerThread(ob).code() == absl::StatusCode::kFailedPrecondition);
  }
  SECTION("max_objects") {
    brc::PerThreadConfig c;
    c.max_objects = 1;
    DefaultConfig config(c);
    brc::Ref<Counted> first = brc::Make<Counted>(&destroyed);
    REQUIRE(brc::CountPerThread(first.get()).ok());
    absl::Status full = brc::CountPerThread(ob);
    CHECK(full.code() == absl::StatusCode::kResourceExhausted);
    CHECK_FALSE(brc::IsCountedPerThread(ob));
    first = nullptr;
    REQUIRE(brc::MergePerThreadCounts().ok());
    REQUIRE(brc::CountPerThread(ob).ok());  // the id came back
  }
  brc::DecRef(ob);
  REQUIRE(brc::MergePerThreadCounts().ok());
  CHECK(destroyed.load() >= 1);
}

TEST_CASE("Destructors run by a merge pass may call any API, and chains are freed",
          "[per_thread]") {
  brc::ThreadScope attach;
  DefaultConfig config(NoPacing());
  struct Link : brc::Object {
    Link(std::atomic<int>* d, int depth) : destroyed(d), depth(depth) {}
    ~Link() {
      destroyed->fetch_add(1);
      // Re-entry: a new object switched, a nested pass, a collection, a nested scope.
      if (depth % 100 == 0) {
        brc::ThreadScope nested;
        brc::Ref<Counted> fresh = brc::Make<Counted>(destroyed);
        (void)brc::CountPerThread(fresh.get());
        (void)brc::MergePerThreadCounts();
        (void)brc::Collect();
      }
      next = nullptr;  // drops the next link's last reference (a slot going below zero)
    }
    std::atomic<int>* destroyed;
    int depth;
    brc::Ref<Link> next;
  };
  std::atomic<int> destroyed{0};
  constexpr int kChain = 1000;
  brc::Ref<Link> head;
  for (int i = kChain - 1; i >= 0; --i) {
    brc::Ref<Link> l = brc::Make<Link>(&destroyed, i);
    l->next = std::move(head);
    REQUIRE(brc::CountPerThread(l.get()).ok());
    head = std::move(l);
  }
  head = nullptr;
  REQUIRE(brc::MergePerThreadCounts().ok());
  REQUIRE(brc::MergePerThreadCounts().ok());  // the fresh objects made by the destructors
  // Every link, plus the Counted objects the re-entrant destructors made and dropped.
  CHECK(destroyed.load() == kChain + kChain / 100);
}

TEST_CASE("Out of memory: a switch changes nothing, a slot that cannot grow counts shared",
          "[per_thread]") {
  brc::ThreadScope attach;
  DefaultConfig config(NoPacing());
  std::atomic<int> destroyed{0};
  struct Failing {
    Failing() { brc::testing::FailPerThreadAllocationsForTesting(true); }
    ~Failing() { brc::testing::FailPerThreadAllocationsForTesting(false); }
  };
  // Use up the free ids earlier tests left, so that switches soon need the tables to grow.
  std::vector<brc::Ref<Counted>> fillers;
  for (int i = 0; i < 4096; ++i) {
    fillers.push_back(brc::Make<Counted>(&destroyed));
    REQUIRE(brc::CountPerThread(fillers.back().get()).ok());
  }
  std::vector<brc::Ref<Counted>> more;
  for (int i = 0; i < 40000; ++i) more.push_back(brc::Make<Counted>(&destroyed));
  {
    Failing failing;
    // Some switch among these needs a growth and fails with ResourceExhausted, leaving its
    // object as it was.
    absl::Status s;
    for (std::size_t i = 0; i < more.size() && s.ok(); ++i) {
      s = brc::CountPerThread(more[i].get());
      if (!s.ok()) {
        CHECK(s.code() == absl::StatusCode::kResourceExhausted);
        CHECK_FALSE(brc::IsCountedPerThread(more[i].get()));
        CHECK(brc::GetRefCount(more[i].get()) == 1);
      }
    }
    CHECK_FALSE(s.ok());
    // A thread whose slots cannot grow counts through the shared word, exactly.
    brc_test::RunAttached([&] {
      brc::Object* ob = fillers.back().get();
      int32_t shared = brc::testing::GetCounts(ob).shared_count;
      brc::Ref<Counted> c = fillers.back();
      CHECK(brc::testing::GetCounts(ob).shared_count == shared + 1);
      CHECK(brc::testing::PerThreadSlotForTesting(ob) == 0);
      c = nullptr;
      CHECK(brc::testing::GetCounts(ob).shared_count == shared);
    });
  }
  int before = destroyed.load();
  std::size_t n = fillers.size() + more.size();
  fillers.clear();
  more.clear();
  REQUIRE(brc::MergePerThreadCounts().ok());
  CHECK(destroyed.load() == before + static_cast<int>(n));
}
