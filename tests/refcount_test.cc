// Counting: every transition of protocol.md §2 on one thread and across threads, the lifetime
// scenarios, the saturation matrix and misuse reports.
#include <atomic>
#include <barrier>
#include <random>
#include <thread>
#include <vector>

#include "test_util.h"

using brc::testing::GetCounts;
using brc_test::Counted;
using brc_test::ExpectAbort;
using brc_test::RunAttached;

namespace {

// An object created (and so owned) by a thread that has since exited.
brc::Ref<Counted> MakeOnExitedThread(std::atomic<int>* destroyed) {
  brc::Ref<Counted> out;
  RunAttached([&] { out = brc::Make<Counted>(destroyed); });
  return out;
}

}  // namespace

// ---------------------------------------------------------------- lifetime scenarios

TEST_CASE("a second reference moves the count 1 -> 2 -> 1", "[refcount]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  auto a = brc::Make<Counted>(&destroyed);
  CHECK(brc::GetRefCount(a.get()) == 1);
  {
    brc::Ref<Counted> b = a;
    CHECK(brc::GetRefCount(a.get()) == 2);
    CHECK(GetCounts(a.get()).local == 2);  // the owner counted it locally
  }
  CHECK(brc::GetRefCount(a.get()) == 1);
  CHECK(destroyed == 0);
}

TEST_CASE("an object created and never stored is freed at once", "[refcount]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  brc::Make<Counted>(&destroyed);
  CHECK(destroyed == 1);
}

brc::Ref<Counted> Factory(std::atomic<int>* destroyed) {
  auto r = brc::Make<Counted>(destroyed, 5);
  return r;  // moved: no count traffic
}

TEST_CASE("an object returned from a function survives with count 1", "[refcount]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  brc::Stats before = brc::GetThreadStats();
  auto r = Factory(&destroyed);
  brc::Stats after = brc::GetThreadStats();
  CHECK(brc::GetRefCount(r.get()) == 1);
  CHECK(r->value == 5);
  CHECK(destroyed == 0);
  BRC_OP_CHECK(after.local_increfs == before.local_increfs);  // moves cost no count traffic
  BRC_OP_CHECK(after.local_decrefs == before.local_decrefs);
}

TEST_CASE("moves of Ref cost no count traffic", "[refcount]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  auto a = brc::Make<Counted>(&destroyed);
  brc::Stats before = brc::GetThreadStats();
  brc::Ref<Counted> b = std::move(a);
  brc::Ref<brc::Object> c = std::move(b);
  brc::Ref<brc::Object> d;
  d = std::move(c);
  brc::Stats after = brc::GetThreadStats();
  BRC_OP_CHECK(after.local_increfs == before.local_increfs);
  BRC_OP_CHECK(after.local_decrefs == before.local_decrefs);
  CHECK(a == nullptr);
  CHECK(brc::GetRefCount(d.get()) == 1);
}

TEST_CASE("owner drops its last reference while another thread holds one: ownership is "
          "released and the other thread frees exactly once",
          "[refcount][threads]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  auto mine = brc::Make<Counted>(&destroyed);
  Counted* raw = mine.get();
  brc::Ref<Counted> theirs;
  std::atomic<int> step{0};
  std::thread other([&] {
    brc::ThreadScope attach_other;
    theirs = brc::Ref<Counted>::NewRef(raw);  // non-owner increment: shared count 1
    step.store(1, std::memory_order_release);
    while (step.load(std::memory_order_acquire) != 2) std::this_thread::yield();
    CHECK(destroyed == 0);
    theirs.Reset();  // shared 1 -> 0 in the merged state: this thread frees
    CHECK(destroyed == 1);
  });
  while (step.load(std::memory_order_acquire) != 1) std::this_thread::yield();
  CHECK(GetCounts(raw).shared_count == 1);
  mine.Reset();  // local 1 -> 0 with shared != 0: merge, give up ownership
  brc::testing::Counts c = GetCounts(raw);
  CHECK(c.owner == 0);
  CHECK(c.local == 0);
  CHECK(c.state == brc::kStateMerged);
  CHECK(c.shared_count == 1);
  CHECK(destroyed == 0);
  step.store(2, std::memory_order_release);
  other.join();
  CHECK(destroyed == 1);
}

// ---------------------------------------------------------------- transitions, one thread

TEST_CASE("owner increments and decrements touch only the local half", "[refcount]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  auto a = brc::Make<Counted>(&destroyed);
  brc::Stats before = brc::GetThreadStats();
  for (int i = 0; i < 10; ++i) brc::IncRef(a.get());
  CHECK(GetCounts(a.get()).local == 11);
  for (int i = 0; i < 10; ++i) brc::DecRef(a.get());
  brc::Stats after = brc::GetThreadStats();
  CHECK(GetCounts(a.get()).local == 1);
  CHECK(GetCounts(a.get()).shared_count == 0);
  BRC_OP_CHECK(after.local_increfs - before.local_increfs == 10);
  BRC_OP_CHECK(after.local_decrefs - before.local_decrefs == 10);
  BRC_OP_CHECK(after.shared_increfs == before.shared_increfs);
}

TEST_CASE("owner's count reaching zero with shared word 0 frees without a merge",
          "[refcount]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  brc::Stats before = brc::GetThreadStats();
  brc::Make<Counted>(&destroyed).Reset();
  brc::Stats after = brc::GetThreadStats();
  CHECK(destroyed == 1);
  CHECK(after.merges == before.merges);
  CHECK(after.frees - before.frees == 1);
}

TEST_CASE("owner's count reaching zero in the maybe-weak state merges, then frees",
          "[refcount]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  auto a = brc::Make<Counted>(&destroyed);
  brc::WeakRef<Counted> weak(a);
  CHECK(GetCounts(a.get()).state == brc::kStateMaybeWeak);
  brc::Stats before = brc::GetThreadStats();
  a.Reset();
  brc::Stats after = brc::GetThreadStats();
  CHECK(destroyed == 1);
  CHECK(after.merges - before.merges == 1);
  CHECK(weak.Lock() == nullptr);
}

// ---------------------------------------------------------------- transitions, across threads

TEST_CASE("non-owner increments and decrements use the shared word", "[refcount][threads]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  auto a = brc::Make<Counted>(&destroyed);
  RunAttached([&] {
    brc::Stats before = brc::GetThreadStats();
    brc::IncRef(a.get());
    brc::IncRef(a.get());
    CHECK(GetCounts(a.get()).shared_count == 2);
    brc::DecRef(a.get());
    brc::Stats after = brc::GetThreadStats();
    CHECK(GetCounts(a.get()).shared_count == 1);
    BRC_OP_CHECK(after.shared_increfs - before.shared_increfs == 2);
    BRC_OP_CHECK(after.shared_decrefs - before.shared_decrefs == 1);
    brc::DecRef(a.get());
  });
  CHECK(GetCounts(a.get()).local == 1);
  CHECK(GetCounts(a.get()).shared_count == 0);
  CHECK(GetCounts(a.get()).state == brc::kStateDefault);
}

TEST_CASE("a non-owner decrement below zero queues the object, and the owner's safepoint merges "
          "and frees it",
          "[refcount][threads]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  auto a = brc::Make<Counted>(&destroyed);
  Counted* raw = a.get();
  uint32_t me = brc::CurrentThreadId();
  RunAttached([&] {
    brc::Ref<Counted> moved = std::move(a);  // the owner's reference, now on this thread
    moved.Reset();                           // shared count 0 in the default state: queue
  });
  CHECK(destroyed == 0);
  CHECK(GetCounts(raw).state == brc::kStateQueued);
  CHECK(GetCounts(raw).shared_count == 0);
  CHECK(brc::testing::QueuedObjectsForTesting(me) == 1);
  CHECK(brc::GetRefCount(raw) == 0);  // the queue entry's pending decrement is counted
  brc::Safepoint();
  CHECK(destroyed == 1);
  CHECK(brc::testing::QueuedObjectsForTesting(me) == 0);
}

TEST_CASE("a queued object that gains references survives the merge, unowned",
          "[refcount][threads]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  auto a = brc::Make<Counted>(&destroyed);
  brc::IncRef(a.get());  // local 2
  Counted* raw = a.get();
  brc::Ref<Counted> kept;
  RunAttached([&] {
    brc::Ref<Counted> moved = std::move(a);
    moved.Reset();                            // queued, pending -1
    kept = brc::Ref<Counted>::NewRef(raw);    // shared +1 while queued
  });
  CHECK(GetCounts(raw).state == brc::kStateQueued);
  brc::Safepoint();  // merge: 2 (local) + 1 (shared) - 1 (queued) = 2
  brc::testing::Counts c = GetCounts(raw);
  CHECK(c.state == brc::kStateMerged);
  CHECK(c.owner == 0);
  CHECK(c.shared_count == 2);
  CHECK(destroyed == 0);
  brc::DecRef(raw);  // the owner's own local reference, now counted in shared
  kept.Reset();
  CHECK(destroyed == 1);
}

TEST_CASE("an object of an exited owner is merged by the thread that would queue it",
          "[refcount][threads]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  auto a = MakeOnExitedThread(&destroyed);
  Counted* raw = a.get();
  brc::Stats before = brc::GetThreadStats();
  a.Reset();
  brc::Stats after = brc::GetThreadStats();
  CHECK(destroyed == 1);
  CHECK(after.merges_for_owner - before.merges_for_owner == 1);
  (void)raw;
}

TEST_CASE("increments and decrements from many threads balance exactly", "[refcount][threads]") {
  brc::ThreadScope attach;
  BRC_TEST_SEED(seed);
  const int threads = GENERATE(2, 4, 8);
  std::atomic<int> destroyed{0};
  auto a = brc::Make<Counted>(&destroyed);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      brc::ThreadScope attach_worker;
      std::mt19937 rng(seed + t);
      std::vector<brc::Ref<Counted>> held;
      for (int i = 0; i < 20000; ++i) {
        if (held.empty() || rng() % 2 == 0) {
          held.push_back(a);
        } else {
          held.pop_back();
        }
        if (i % 256 == 0) brc::Safepoint();
      }
    });
  }
  for (auto& t : pool) t.join();
  brc::Safepoint();
  CHECK(brc::GetRefCount(a.get()) == 1);
  CHECK(destroyed == 0);
  a.Reset();
  CHECK(destroyed == 1);
}

TEST_CASE("last references dropped concurrently by owner and non-owners free exactly once",
          "[refcount][threads]") {
  brc::ThreadScope attach;
  BRC_TEST_SEED(seed);
  constexpr int kRounds = 300;
  const int others = GENERATE(1, 3);
  std::mt19937 rng(seed);
  std::atomic<int> destroyed{0};
  std::vector<brc::Ref<Counted>> slots(others);
  std::barrier sync(others + 1);
  std::vector<std::thread> pool;
  std::vector<uint32_t> spins(kRounds);
  for (auto& s : spins) s = rng() % 64;
  for (int t = 0; t < others; ++t) {
    pool.emplace_back([&, t] {
      brc::ThreadScope attach_worker;
      for (int r = 0; r < kRounds; ++r) {
        sync.arrive_and_wait();  // slots filled
        for (uint32_t i = 0; i < spins[r] * static_cast<uint32_t>(t + 1); ++i) {
          std::atomic_signal_fence(std::memory_order_seq_cst);
        }
        slots[t].Reset();
        brc::Safepoint();  // a drop buffered for the owner reaches its queue
        sync.arrive_and_wait();  // all dropped
      }
    });
  }
  for (int r = 0; r < kRounds; ++r) {
    auto obj = brc::Make<Counted>(&destroyed);
    for (auto& s : slots) s = obj;  // owner increments; the copies go to other threads
    sync.arrive_and_wait();
    obj.Reset();
    sync.arrive_and_wait();
    brc::Safepoint();  // merge whatever was queued to this owner
    REQUIRE(destroyed == r + 1);
  }
  for (auto& t : pool) t.join();
}

// ---------------------------------------------------------------- saturation matrix

TEST_CASE("saturation: owner increment overflow makes the object immortal", "[saturation]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  auto a = brc::Make<Counted>(&destroyed);
  brc::testing::SetCountsForTesting(a.get(), brc::kLocalImmortal - 1, 0, brc::kStateDefault);
  brc::Stats before = brc::GetThreadStats();
  brc::IncRef(a.get());
  // The owner's increment has no range test (brc/refcount.h): reaching the marker is the
  // saturation, and no statistic counts it.
  CHECK(brc::GetThreadStats().saturated == before.saturated);
  CHECK(GetCounts(a.get()).local == brc::kLocalImmortal);
  CHECK(brc::IsImmortal(a.get()));
  CHECK(brc::GetRefCount(a.get()) == brc::kImmortalRefCount);
  for (int i = 0; i < 1000; ++i) brc::DecRef(a.get());  // sticky
  CHECK(brc::IsImmortal(a.get()));
  CHECK(destroyed == 0);
  Counted* raw = a.Release();
  brc::testing::FreeImmortalForTesting(raw);
  CHECK(destroyed == 1);
}

TEST_CASE("saturation: non-owner increment overflow saturates the shared half",
          "[saturation][threads]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  auto a = MakeOnExitedThread(&destroyed);
  brc::testing::SetCountsForTesting(a.get(), 1, brc::kSharedSaturationMin - 1,
                                    brc::kStateDefault);
  brc::Stats before = brc::GetThreadStats();
  brc::IncRef(a.get());
  CHECK(brc::GetThreadStats().saturated - before.saturated == 1);
  CHECK(GetCounts(a.get()).shared_count == brc::kSharedSaturated);  // re-centred in the band
  CHECK(brc::IsImmortal(a.get()));
  SECTION("decrements of a saturated object leave it saturated") {
    for (int i = 0; i < 1000; ++i) brc::DecRef(a.get());
    CHECK(GetCounts(a.get()).shared_count == brc::kSharedSaturated);
  }
  SECTION("racing increments stay in the band") {
    std::vector<std::thread> pool;
    for (int t = 0; t < 4; ++t) {
      pool.emplace_back([&] {
        brc::ThreadScope attach_worker;
        for (int i = 0; i < 10000; ++i) brc::IncRef(a.get());
      });
    }
    for (auto& t : pool) t.join();
    CHECK(brc::IsImmortal(a.get()));
    CHECK(GetCounts(a.get()).shared_count >= brc::kSharedSaturationMin);
  }
  CHECK(destroyed == 0);
  brc::testing::FreeImmortalForTesting(a.Release());
  CHECK(destroyed == 1);
}

TEST_CASE("saturation: a merge whose sum overflows saturates instead of wrapping",
          "[saturation][threads]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  auto a = MakeOnExitedThread(&destroyed);
  // The exited owner's half holds 3.9e9 references; the shared half is at zero.
  brc::testing::SetCountsForTesting(a.get(), 0xE8000000u, 0, brc::kStateDefault);
  brc::DecRef(a.get());  // non-owner at zero: merged on the exited owner's behalf
  brc::testing::Counts c = GetCounts(a.get());
  CHECK(c.state == brc::kStateMerged);
  CHECK(c.shared_count == brc::kSharedSaturated);
  CHECK(brc::IsImmortal(a.get()));
  CHECK(destroyed == 0);
  brc::testing::FreeImmortalForTesting(a.Release());
}

TEST_CASE("saturation: a non-owner decrement past the negative limit saturates",
          "[saturation][threads]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  auto a = MakeOnExitedThread(&destroyed);
  brc::testing::SetCountsForTesting(a.get(), 0xF0000000u, brc::kSharedNegativeLimit,
                                    brc::kStateDefault);
  brc::DecRef(a.get());
  CHECK(brc::IsImmortal(a.get()));
  CHECK(GetCounts(a.get()).shared_count == brc::kSharedSaturated);
  brc::testing::FreeImmortalForTesting(a.Release());
}

TEST_CASE("saturation: decrement to zero frees exactly once", "[saturation]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  auto a = brc::Make<Counted>(&destroyed);
  for (int i = 0; i < 100; ++i) brc::IncRef(a.get());
  for (int i = 0; i < 100; ++i) brc::DecRef(a.get());
  CHECK(destroyed == 0);
  a.Reset();
  CHECK(destroyed == 1);
}

TEST_CASE("MakeImmortal: from the owner and from another thread", "[saturation]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  auto a = brc::Make<Counted>(&destroyed);
  auto b = brc::Make<Counted>(&destroyed);
  Counted* raw_a = a.get();
  Counted* raw_b = b.get();
  brc::MakeImmortal(raw_a);
  CHECK(GetCounts(raw_a).local == brc::kLocalImmortal);
  RunAttached([&] {
    brc::MakeImmortal(raw_b);
    CHECK(brc::IsImmortal(raw_b));
  });
  CHECK(brc::IsImmortal(raw_b));
  CHECK(brc::GetThreadStats().made_immortal >= 1);
  for (int i = 0; i < 10; ++i) {
    brc::DecRef(raw_a);
    brc::DecRef(raw_b);
  }
  a.Reset();
  b.Reset();
  CHECK(destroyed == 0);
  brc::testing::FreeImmortalForTesting(raw_a);
  brc::testing::FreeImmortalForTesting(raw_b);
  CHECK(destroyed == 2);
}

// ---------------------------------------------------------------- misuse

TEST_CASE("misuse: increment from zero is reported with the type", "[misuse]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  SECTION("owner") {
    // A count the owner took to zero is published unowned and merged before the free, so the
    // owner's own increment (which has no range test) takes the shared path and is reported.
    auto a = brc::Make<Counted>(&destroyed);
    ExpectAbort(
        [&] {
          brc::testing::SetCountsForTesting(a.get(), 0, 0, brc::kStateMerged);
          brc::IncRef(a.get());
        },
        "increment of an object whose reference count is zero");
  }
  SECTION("owner, from the dying object's destructor") {
    struct Resurrects : brc::Object {
      ~Resurrects() { brc::IncRef(this); }
    };
    ExpectAbort([&] { (void)brc::Make<Resurrects>(); },
                "increment of an object whose reference count is zero");
  }
  SECTION("non-owner") {
    auto a = MakeOnExitedThread(&destroyed);
    ExpectAbort(
        [&] {
          brc::testing::SetCountsForTesting(a.get(), 0, 0, brc::kStateMerged);
          brc::IncRef(a.get());
        },
        "Counted");
  }
}

TEST_CASE("misuse: a negative count is reported with the type", "[misuse]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  SECTION("owner decrement at zero") {
    auto a = brc::Make<Counted>(&destroyed);
    ExpectAbort(
        [&] {
          brc::testing::SetCountsForTesting(a.get(), 0, 0, brc::kStateDefault);
          brc::DecRef(a.get());
        },
        "negative reference count");
  }
  SECTION("non-owner decrement of a merged zero count") {
    auto a = MakeOnExitedThread(&destroyed);
    ExpectAbort(
        [&] {
          brc::testing::SetCountsForTesting(a.get(), 0, 0, brc::kStateMerged);
          brc::DecRef(a.get());
        },
        "brc_test::Counted");
  }
  SECTION("owner reaches zero while the shared half is negative") {
    auto a = brc::Make<Counted>(&destroyed);
    ExpectAbort(
        [&] {
          brc::testing::SetCountsForTesting(a.get(), 1, -1, brc::kStateDefault);
          brc::DecRef(a.get());
        },
        "negative reference count");
  }
}

TEST_CASE("misuse: counting on a thread that is not attached is fatal and names the type",
          "[misuse]") {
  std::atomic<int> destroyed{0};
  brc::ThreadScope attach;
  auto a = brc::Make<Counted>(&destroyed);
  ExpectAbort(
      [&] {
        brc::DetachCurrentThread();
        brc::IncRef(a.get());
      },
      "not attached");
  ExpectAbort(
      [&] {
        brc::DetachCurrentThread();
        brc::DecRef(a.get());
      },
      "Counted");
  ExpectAbort(
      [&] {
        brc::DetachCurrentThread();
        brc::Make<Counted>(&destroyed);
      },
      "brc::Make<brc_test::Counted> called on a thread that is not attached");
  brc::Object* immortal = brc::Make<Counted>(&destroyed).Release();
  brc::MakeImmortal(immortal);
#ifdef BRC_DEBUG
  // BRC_DEBUG checks attachment before anything else, immortal objects included.
  ExpectAbort(
      [&] {
        brc::DetachCurrentThread();
        brc::IncRef(immortal);
      },
      "not attached");
  ExpectAbort(
      [&] {
        brc::DetachCurrentThread();
        brc::DecRef(immortal);
      },
      "not attached");
#else
  // Release: counting an immortal object is a no-op from any thread, the first test of the
  // fast path (README, "Immortal objects"); an unattached thread's no-op is not reported.
  brc::DetachCurrentThread();
  brc::IncRef(immortal);
  brc::DecRef(immortal);
  brc::DecRef(immortal);
  brc::AttachCurrentThread();
  CHECK(brc::IsImmortal(immortal));
#endif
  brc::testing::FreeImmortalForTesting(immortal);
}

TEST_CASE("misuse: counting inside a BlockingScope is fatal", "[misuse]") {
  std::atomic<int> destroyed{0};
  brc::ThreadScope attach;
  auto a = brc::Make<Counted>(&destroyed);
  ExpectAbort(
      [&] {
        brc::BlockingScope blocking;
        brc::Ref<Counted> copy = a;
      },
      "inside a brc::BlockingScope");
}

// ---------------------------------------------------------------- large counts, long chains

TEST_CASE("owner counts of 2^31 and more are exact (slow path) until saturation",
          "[saturation]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  auto a = brc::Make<Counted>(&destroyed);
  brc::testing::SetCountsForTesting(a.get(), 0x80000000u, 0, brc::kStateDefault);
  brc::IncRef(a.get());
  CHECK(GetCounts(a.get()).local == 0x80000001u);
  brc::DecRef(a.get());
  brc::DecRef(a.get());
  CHECK(GetCounts(a.get()).local == 0x7FFFFFFFu);
  CHECK_FALSE(brc::IsImmortal(a.get()));
  brc::testing::SetCountsForTesting(a.get(), 1, 0, brc::kStateDefault);
  a.Reset();
  CHECK(destroyed == 1);
}

TEST_CASE("dropping a million-node chain frees every node with constant stack", "[refcount]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  constexpr int kNodes = 1'000'000;
  {
    brc::Ref<brc_test::Node> head;
    for (int i = 0; i < kNodes; ++i) {
      auto node = brc::Make<brc_test::Node>(&destroyed);
      node->next = std::move(head);
      head = std::move(node);
    }
  }  // recursion would need ~100 MB of stack here; the deferred list needs none
  CHECK(destroyed == kNodes);
}
