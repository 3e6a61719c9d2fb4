// Tests for brc/collector.h, collections racing with other threads: cycles whose nodes other
// threads own (exited or alive) or that hang from an object queued for merging, two threads
// collecting at once, collections while threads build and rewire cyclic graphs, GetReferrers
// while a collection runs, a thread exiting with a BlockingScope open, and an object queued to
// the collecting thread during its stop.
#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "brc/stop_the_world.h"
#include "collector_util.h"
#include "test_util.h"

namespace brc_collector_test {
namespace {

using brc_test::WorkerFailures;

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

// Regression tests for bugs found in review (this one and the next).
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
}  // namespace brc_collector_test
