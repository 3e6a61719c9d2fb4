// Tests for brc/stop_the_world.h: parking at safepoints, blocked threads, two requesters at
// once, the watchdog, and joining a stopped world.
#include "brc/stop_the_world.h"

#include <pthread.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "brc/brc.h"
#include "test_util.h"

namespace {

using brc_test::WorkerFailures;

// Mutator threads that count their loop iterations and poll a safepoint after each.
struct Mutators {
  explicit Mutators(int n) {
    for (int i = 0; i < n; ++i) {
      threads.emplace_back([this] {
        brc::ThreadScope attach;
        ready.fetch_add(1);
        while (!done.load(std::memory_order_relaxed)) {
          progress.fetch_add(1, std::memory_order_relaxed);
          brc::Safepoint();
        }
      });
    }
    while (ready.load() < n) std::this_thread::yield();
  }
  ~Mutators() {
    done.store(true);
    for (auto& t : threads) t.join();
  }
  std::atomic<bool> done{false};
  std::atomic<int> ready{0};
  std::atomic<uint64_t> progress{0};
  std::vector<std::thread> threads;
};

TEST_CASE("StopTheWorld parks every attached thread until it restarts", "[stw]") {
  brc::ThreadScope attach;
  Mutators m(3);
  for (int round = 0; round < 20; ++round) {
    uint64_t before;
    {
      brc::StopTheWorld stop;
      CHECK(brc::IsWorldStoppedByThisThread());
      before = m.progress.load();
      // Nobody runs while the world is stopped: the counter cannot move.
      for (int i = 0; i < 1000; ++i) std::this_thread::yield();
      CHECK(m.progress.load() == before);
      CHECK(stop.time_to_stop() >= absl::ZeroDuration());
    }
    CHECK_FALSE(brc::IsWorldStoppedByThisThread());
    // And everyone runs again afterwards.
    while (m.progress.load() < before + 3) std::this_thread::yield();
  }
}

TEST_CASE("A thread inside a BlockingScope does not delay a stop and waits to leave it",
          "[stw]") {
  brc::ThreadScope attach;
  std::atomic<int> phase{0};
  std::atomic<bool> left_scope{false};
  std::thread blocked([&] {
    brc::ThreadScope attach;
    {
      brc::BlockingScope blocking;
      phase.store(1);
      while (phase.load() < 2) std::this_thread::yield();  // stays blocked for the whole stop
    }
    left_scope.store(true);
  });
  while (phase.load() < 1) std::this_thread::yield();
  {
    brc::StopTheWorld stop;  // must not wait for the blocked thread
    phase.store(2);          // it now tries to leave the scope, which must wait for the restart
    for (int i = 0; i < 2000; ++i) std::this_thread::yield();
    CHECK_FALSE(left_scope.load());
  }
  blocked.join();
  CHECK(left_scope.load());
}

TEST_CASE("A thread cannot attach while the world is stopped", "[stw]") {
  brc::ThreadScope attach;
  std::atomic<bool> attached{false};
  std::thread late;
  {
    brc::StopTheWorld stop;
    late = std::thread([&] {
      brc::ThreadScope attach;
      attached.store(true);
    });
    for (int i = 0; i < 2000; ++i) std::this_thread::yield();
    CHECK_FALSE(attached.load());
  }
  late.join();
  CHECK(attached.load());
}

TEST_CASE("Two threads requesting a stop at once both get one in turn", "[stw]") {
  BRC_TEST_SEED(seed);
  brc::ThreadScope attach;
  Mutators m(2);
  constexpr int kRounds = 200;
  std::atomic<int> inside{0};
  WorkerFailures failures;
  std::atomic<int> go{0};
  auto requester = [&](uint32_t s) {
    brc::ThreadScope attach;
    std::mt19937 rng(s);
    go.fetch_add(1);
    while (go.load() < 2) std::this_thread::yield();
    for (int i = 0; i < kRounds; ++i) {
      {
        brc::StopTheWorld stop;
        failures.Expect(inside.fetch_add(1) == 0);  // never two stops at once
        for (int k = static_cast<int>(rng() % 50); k > 0; --k) std::this_thread::yield();
        inside.fetch_sub(1);
      }
      brc::Safepoint();
    }
  };
  std::thread a(requester, seed);
  std::thread b(requester, seed + 1);
  brc_test::JoinBlocking(a);  // they stop the world: this thread must not hold them up
  brc_test::JoinBlocking(b);
  CHECK(failures.count.load() == 0);
}

TEST_CASE("A thread that exits or blocks while a stop waits for it releases the stop", "[stw]") {
  brc::ThreadScope attach;
  for (int round = 0; round < 50; ++round) {
    std::atomic<bool> go{false};
    std::thread exiting([&] {
      brc::ThreadScope attach;
      while (!go.load()) brc::Safepoint();
      // Exits without another safepoint: detaching must release the stop.
    });
    std::thread blocking([&] {
      brc::ThreadScope attach;
      while (!go.load()) brc::Safepoint();
      brc::BlockingScope blocked;  // entering it releases the stop
    });
    go.store(true);
    { brc::StopTheWorld stop; }
    exiting.join();
    blocking.join();
  }
  SUCCEED("no deadlock");
}

TEST_CASE("The watchdog names a thread that does not reach a safepoint", "[stw]") {
  brc::ThreadScope attach;
  std::mutex mu;
  std::vector<brc::LaggingThread> reports;
  REQUIRE(brc::SetStopWatchdog(absl::Milliseconds(20), [&](const brc::LaggingThread& t) {
            std::lock_guard<std::mutex> lock(mu);
            reports.push_back(t);
          }).ok());
  std::atomic<bool> started{false};
  std::atomic<bool> release{false};
  std::atomic<uint32_t> id{0};
  std::thread slow([&] {
    pthread_setname_np(pthread_self(), "brc-slowpoke");
    brc::ThreadScope attach;
    id.store(brc::CurrentThreadId());
    started.store(true);
    // Busy without a safepoint until the watchdog has spoken.
    while (!release.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    brc::Safepoint();
  });
  while (!started.load()) std::this_thread::yield();
  std::thread releaser([&] {
    for (;;) {
      {
        std::lock_guard<std::mutex> lock(mu);
        if (!reports.empty()) break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    release.store(true);
  });
  { brc::StopTheWorld stop; }
  releaser.join();
  slow.join();
  REQUIRE(brc::SetStopWatchdog(absl::Seconds(1)).ok());
  std::lock_guard<std::mutex> lock(mu);
  REQUIRE_FALSE(reports.empty());
  CHECK(reports[0].id == id.load());
  CHECK(reports[0].name == "brc-slowpoke");
  CHECK(reports[0].os_tid > 0);
  CHECK(reports[0].waited >= absl::Milliseconds(20));
}

TEST_CASE("SetStopWatchdog rejects a timeout that is not positive", "[stw]") {
  CHECK(brc::SetStopWatchdog(absl::ZeroDuration()).code() == absl::StatusCode::kInvalidArgument);
  CHECK(brc::SetStopWatchdog(absl::Milliseconds(-5)).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(brc::SetStopWatchdog(absl::Seconds(1)).ok());
}

TEST_CASE("Stopping the world twice on one thread or unattached is reported", "[stw]") {
  brc_test::ExpectAbort(
      [] {
        brc::ThreadScope attach;
        brc::StopTheWorld a;
        brc::StopTheWorld b;
      },
      "stops do not nest");
  brc_test::ExpectAbort([] { brc::StopTheWorld a; }, "not attached");
}

TEST_CASE("Objects dropped by other threads are merged before the world stops", "[stw]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  std::vector<brc::Ref<brc_test::Counted>> objs;
  for (int i = 0; i < 100; ++i) objs.push_back(brc::Make<brc_test::Counted>(&destroyed));
  std::atomic<bool> done{false};
  std::atomic<bool> dropped{false};
  // The owner stays attached at safepoints; another thread drops the last references, which
  // queues them to it; a stop makes it drain before parking.
  std::thread owner([&] {
    brc::ThreadScope attach;
    std::vector<brc::Ref<brc_test::Counted>> mine;
    for (int i = 0; i < 100; ++i) mine.push_back(brc::Make<brc_test::Counted>(&destroyed));
    std::thread dropper([&, moved = std::move(mine)]() mutable {
      brc::ThreadScope attach;
      moved.clear();
      dropped.store(true);
    });
    dropper.join();
    while (!done.load()) brc::Safepoint();
  });
  while (!dropped.load()) std::this_thread::yield();
  {
    brc::StopTheWorld stop;
    CHECK(destroyed.load() == 100);
  }
  done.store(true);
  owner.join();
  objs.clear();
  CHECK(destroyed.load() == 200);
}

// ---- a stop during a free cascade ----

// A node of a chain or a tree whose destructor counts the frees and, at the `holds` chosen
// counts (`first_hold`, then every kHoldStep more), holds the cascade there until a stop that
// the test requests has reached this thread: so each of the test's stops finds the cascade
// under way, however the threads are scheduled.
struct CascadeNode : brc::Object {
  static constexpr std::string_view kTypeName = "CascadeNode";
  static constexpr int kHoldStep = 2000;
  struct Shared {
    std::atomic<int> destroyed{0};
    std::atomic<int> holds_reached{0};
    int first_hold = 0;
    int holds = 0;
    std::atomic<bool> timed_out{false};
  };
  CascadeNode(Shared* s, int index) : s(s), index(index) {}
  ~CascadeNode() {
    int n = s->destroyed.fetch_add(1) + 1;
    int k = (n - s->first_hold) / kHoldStep;
    if (n < s->first_hold || (n - s->first_hold) % kHoldStep != 0 || k >= s->holds) return;
    s->holds_reached.store(k + 1);
    // Bounded: a library that never requests the stop fails the test, it does not hang it.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!brc::testing::StopRequestedForTesting()) {
      if (std::chrono::steady_clock::now() > deadline) {
        s->timed_out.store(true);
        break;
      }
      std::this_thread::yield();
    }
  }
  Shared* s;
  int index;
  brc::Ref<CascadeNode> left, right;
};

struct TrackedCascadeNode : CascadeNode {
  static constexpr std::string_view kTypeName = "TrackedCascadeNode";
  using CascadeNode::CascadeNode;
  void Trace(brc::Visitor& v) const {
    v.Visit(left);
    v.Visit(right);
  }
  void Clear() {
    left = nullptr;
    right = nullptr;
  }
};

template <class T>
brc::Ref<CascadeNode> BuildCascadeTree(CascadeNode::Shared* s, int depth, int* next_index) {
  brc::Ref<T> n = brc::Make<T>(s, (*next_index)++);
  if (depth > 0) {
    n->left = BuildCascadeTree<T>(s, depth - 1, next_index);
    n->right = BuildCascadeTree<T>(s, depth - 1, next_index);
  }
  return n;
}

template <class T>
brc::Ref<CascadeNode> BuildCascadeChain(CascadeNode::Shared* s, int n) {
  brc::Ref<CascadeNode> head;
  for (int i = n - 1; i >= 0; --i) {
    brc::Ref<T> node = brc::Make<T>(s, i);
    node->left = std::move(head);
    head = std::move(node);
  }
  return head;
}

// Another thread drops `build`'s structure (`total` nodes) inside a brc::ParkableFrees scope; this thread runs `stops` stops of
// the world (in `in_stop`: StopTheWorld or collections), each once the drop is held at its
// next hold point. No stop may wait for the rest of the cascade: the dropper parks before its
// next free. `in_stop` returns the frees counted by its last stop, with the world stopped.
template <class Build, class InStop>
void StopDuringCascade(int total, int stops, Build build, InStop in_stop) {
  brc::ThreadScope attach;
  CascadeNode::Shared s;
  s.first_hold = 1000;
  s.holds = stops;
  std::atomic<bool> built{false}, drop{false};
  std::thread dropper([&] {
    brc::ThreadScope attach;
    brc::Ref<CascadeNode> root = build(&s);
    built.store(true);
    {
      brc::BlockingScope wait;  // must not hold up a collection the main thread runs meanwhile
      while (!drop.load()) std::this_thread::yield();
    }
    {
      brc::ParkableFrees parkable;
      root = nullptr;  // the cascade
    }
    brc::Safepoint();
  });
  // This thread waits at safepoints: the dropper's destructors may stop the world themselves.
  while (!built.load()) brc::Safepoint();
  drop.store(true);
  auto wait_for_hold = [&](int k) {
    while (s.holds_reached.load() < k && !s.timed_out.load()) brc::Safepoint();
  };
  int destroyed_in_stop = in_stop(&s, wait_for_hold);
  brc_test::JoinBlocking(dropper);
  CHECK_FALSE(s.timed_out.load());
  INFO("freed when the last stop held: " << destroyed_in_stop << " of " << total);
  CHECK(destroyed_in_stop == s.first_hold + (stops - 1) * CascadeNode::kHoldStep);
  CHECK(s.destroyed.load() == total);  // every node freed exactly once, after the stops too
}

// The frees counted with the world stopped; nothing more is freed while it stays stopped.
int CountInStop(CascadeNode::Shared* s) {
  brc::StopTheWorld stop;
  int seen = s->destroyed.load();
  for (int i = 0; i < 1000; ++i) std::this_thread::yield();
  CHECK(s->destroyed.load() == seen);
  return seen;
}

TEST_CASE("Inside ParkableFrees a stop does not wait for another thread's whole free cascade",
          "[stw]") {
  auto just_count = [](CascadeNode::Shared* s, auto wait_for_hold) {
    wait_for_hold(1);
    return CountInStop(s);
  };
  SECTION("a tree of leaf objects (recursive frees)") {
    int next = 0;
    StopDuringCascade(
        (1 << 16) - 1, 1,
        [&](CascadeNode::Shared* s) { return BuildCascadeTree<CascadeNode>(s, 15, &next); },
        just_count);
  }
  SECTION("a chain of 200,000 leaf objects (deferred frees)") {
    StopDuringCascade(
        200000, 1,
        [](CascadeNode::Shared* s) { return BuildCascadeChain<CascadeNode>(s, 200000); },
        just_count);
  }
  // The dying nodes are no longer tracked, and the live ones they still reference count as
  // referenced from outside: collections run while the dropper is parked collect nothing.
  SECTION("a tree of tracked objects, young and full collections while the dropper is parked") {
    brc_test::Manual manual;
    int next = 0;
    StopDuringCascade(
        (1 << 16) - 1, 3,
        [&](CascadeNode::Shared* s) {
          return BuildCascadeTree<TrackedCascadeNode>(s, 15, &next);
        },
        [](CascadeNode::Shared* s, auto wait_for_hold) {
          wait_for_hold(1);
          CHECK(brc_test::Must(brc::CollectYoung()).collected == 0);
          wait_for_hold(2);
          CHECK(brc_test::Must(brc::Collect()).collected == 0);
          wait_for_hold(3);
          return CountInStop(s);
        });
  }
  SECTION("a chain of 200,000 tracked objects (deferred frees), collected meanwhile") {
    brc_test::Manual manual;
    StopDuringCascade(
        200000, 2,
        [](CascadeNode::Shared* s) { return BuildCascadeChain<TrackedCascadeNode>(s, 200000); },
        [](CascadeNode::Shared* s, auto wait_for_hold) {
          wait_for_hold(1);
          CHECK(brc_test::Must(brc::Collect()).collected == 0);
          wait_for_hold(2);
          return CountInStop(s);
        });
  }
}

// Destructors along the cascade that collect, stop the world themselves, open a nested
// ParkableFrees and a BlockingScope, while the main thread's stops keep parking the dropper.
struct ReentrantCascadeNode : TrackedCascadeNode {
  static constexpr std::string_view kTypeName = "ReentrantCascadeNode";
  using TrackedCascadeNode::TrackedCascadeNode;
  ~ReentrantCascadeNode() {
    if (index % 997 != 0) return;
    brc::ParkableFrees nested;
    switch ((index / 997) % 4) {
      case 0:
        (void)brc::Collect();  // refused or run: either is fine, nothing may break
        break;
      case 1: {
        brc::StopTheWorld stop;
        break;
      }
      case 2: {
        brc::BlockingScope blocking;
        break;
      }
      default:
        brc::Safepoint();
    }
  }
};

TEST_CASE("ParkableFrees with destructors that collect, stop the world and block", "[stw]") {
  brc_test::Manual manual;
  StopDuringCascade(
      50000, 3,
      [](CascadeNode::Shared* s) { return BuildCascadeChain<ReentrantCascadeNode>(s, 50000); },
      [](CascadeNode::Shared* s, auto wait_for_hold) {
        wait_for_hold(1);
        CHECK(brc_test::Must(brc::Collect()).collected == 0);
        wait_for_hold(2);
        CHECK(brc_test::Must(brc::CollectYoung()).collected == 0);
        wait_for_hold(3);
        return CountInStop(s);
      });
}

TEST_CASE("Without ParkableFrees a free cascade ends before its thread parks, so a lock held "
          "across it cannot hold up a stop",
          "[stw]") {
  brc::ThreadScope attach;
  constexpr int kTotal = 100000;
  CascadeNode::Shared s;
  s.first_hold = 1000;
  s.holds = 1;
  std::mutex table_mu;  // a user's lock, held across the drop
  std::atomic<bool> locked{false}, done{false};
  std::thread dropper([&] {
    brc::ThreadScope attach;
    brc::Ref<CascadeNode> root = BuildCascadeChain<CascadeNode>(&s, kTotal);
    {
      std::lock_guard<std::mutex> lock(table_mu);
      locked.store(true);
      root = nullptr;  // the cascade, under the lock
    }
    while (!done.load()) brc::Safepoint();
  });
  // An attached thread that waits for the lock without a BlockingScope: it can only park once
  // the dropper let go of the lock, which it would never do if it parked inside the cascade.
  std::thread waiter([&] {
    brc::ThreadScope attach;
    while (!locked.load()) std::this_thread::yield();
    { std::lock_guard<std::mutex> lock(table_mu); }
    while (!done.load()) brc::Safepoint();
  });
  while (s.holds_reached.load() < 1 && !s.timed_out.load()) std::this_thread::yield();
  {
    brc::StopTheWorld stop;
    CHECK(s.destroyed.load() == kTotal);  // the whole cascade ran before the dropper parked
  }
  done.store(true);
  dropper.join();
  waiter.join();
  CHECK_FALSE(s.timed_out.load());
}

TEST_CASE("ParkableFrees on a thread that is not attached does nothing", "[stw]") {
  brc::ParkableFrees outer;
  {
    brc::ParkableFrees nested;
    CHECK_FALSE(brc::IsAttached());
  }
  brc::ThreadScope attach;
  brc::ParkableFrees inside;  // and inside an attached thread, with no stop pending: frees as usual
  std::atomic<int> destroyed{0};
  brc::Ref<brc_test::Counted> c = brc::Make<brc_test::Counted>(&destroyed);
  c = nullptr;
  CHECK(destroyed.load() == 1);
}

}  // namespace
