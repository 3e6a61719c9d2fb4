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

}  // namespace
