// Adversarial probes of commit 99269c1 (a review): spin-then-sleep on both sides of a stop of
// the world (lib/thread_state.h SpinBriefly, ParkIfStopped; lib/stop_the_world.cc StopWorld)
// and brc::ParkableFrees (lib/refcount.cc HonourStopRequest), which lets a free park for a
// pending stop before each destructor. Each case says what it tries to break. The parked-free
// cases hold a free cascade at chosen objects until a stop has been requested of the freeing
// thread (brc::testing::StopRequestedForTesting), so the free after each hold parks, and the
// test's stops find the thread parked inside the library path under test, however the
// threads are scheduled. Then they check what must hold: nobody runs while the world is
// stopped, every object is freed exactly once, a collection run meanwhile takes nothing that
// is merely being freed, no hang. Waits are bounded: a hang aborts naming the probe and seed.
// This file: the spin and the stale stop bit; the frees in each library path:
// stw_probe_frees_test.cc; shared helpers: stw_probe_util.h.
#include <atomic>
#include <chrono>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "stw_probe_util.h"

using namespace stw_probe;  // NOLINT: test file

// ---- spin-then-sleep ----

// Tries: a thread parked for R1's stop spins on `stopper` with the lock released; R1 restarts
// and R2 (or R1 again, back to back) stops at once, finding it still `parked` and not counting
// it. The spinner must then go back to sleep under the lock, not run: the mutator's counter
// must not move inside any stop. On 2 cores each stop counts one thread (spin on).
TEST_CASE("Probe back-to-back stops by two requesters never let a spinning parked thread run",
          "[stw-probe]") {
  BRC_TEST_SEED(seed);
  constexpr int kStops = 1500;
  std::atomic<int> progress{0};
  std::atomic<bool> stop_mutator{false}, mutator_done{false};
  std::atomic<int> requesters_done{0};
  WorkerFailures failures;
  std::thread mutator([&] {
    brc::ThreadScope attach;
    while (!stop_mutator.load()) {
      brc::Safepoint();
      progress.fetch_add(1, std::memory_order_relaxed);
    }
    mutator_done.store(true);
  });
  auto requester = [&](uint32_t salt) {
    brc::ThreadScope attach;
    std::minstd_rand rng(seed * 2654435761u + salt);
    for (int i = 0; i < kStops; ++i) {
      int times = 1 + static_cast<int>(rng() % 2);  // 2: the same requester back to back
      for (int k = 0; k < times; ++k) {
        brc::StopTheWorld stop;
        int seen = progress.load();
        int yields = static_cast<int>(rng() % 8);
        for (int j = 0; j < yields; ++j) std::this_thread::yield();
        failures.Expect(progress.load() == seen);
      }
      if (rng() % 2 == 0) brc::Safepoint();
    }
    requesters_done.fetch_add(1);
  };
  std::thread r1(requester, 1u), r2(requester, 2u);
  if (!Await([&] { return requesters_done.load() == 2; }, 180)) Hung("two requesters", seed);
  r1.join();
  r2.join();
  stop_mutator.store(true);
  if (!Await([&] { return mutator_done.load(); })) Hung("the mutator", seed);
  mutator.join();
  CHECK(failures.count.load() == 0);
}

// Tries: counted threads that block (BlockingScope) or exit while the requester spins on
// `remaining` unlocked; threads attaching meanwhile; the requester must never see a stopped
// world with one of them still running. Generations of two short-lived mutators.
TEST_CASE("Probe counted threads that block or exit while the requester spins", "[stw-probe]") {
  BRC_TEST_SEED(seed);
  brc::ThreadScope attach;
  std::atomic<int> progress{0};
  WorkerFailures failures;
  for (int gen = 0; gen < 16; ++gen) {
    std::atomic<int> alive{2};
    std::vector<std::thread> threads;
    for (int t = 0; t < 2; ++t) {
      threads.emplace_back([&, t] {
        std::minstd_rand rng(seed + static_cast<uint32_t>(gen * 2 + t));
        {
          brc::ThreadScope attach_mutator;
          int rounds = 200 + static_cast<int>(rng() % 400);
          for (int i = 0; i < rounds; ++i) {
            brc::Safepoint();
            progress.fetch_add(1, std::memory_order_relaxed);
            if (rng() % 16 == 0) {
              brc::BlockingScope blocking;  // leaves kAttached: a counted stop stops waiting
              std::this_thread::yield();
            }
          }
        }  // exits: the detach releases a stop's count
        alive.fetch_sub(1);
      });
    }
    int stops = 0;
    while (alive.load() > 0 && stops < 5000) {
      ExpectFrozen(progress, &failures);
      ++stops;
      brc::Safepoint();
    }
    for (auto& t : threads) brc_test::JoinBlocking(t);
  }
  CHECK(failures.count.load() == 0);
}

// Tries: the watchdog's deadline falling inside (and right after) the requester's spin, with a
// timeout far below kStopSpin: the handler runs while the stop is still in progress (never with
// the world reported stopped), names the lagging thread, and the stop still completes once it
// parks.
TEST_CASE("Probe the watchdog firing during the requester's spin", "[stw-probe]") {
  BRC_TEST_SEED(seed);
  brc::ThreadScope attach;
  std::atomic<int> reports{0};
  std::atomic<int> reported_stopped{0};
  std::atomic<uint32_t> lagging_id{0};
  REQUIRE(brc::SetStopWatchdog(absl::Microseconds(5), [&](const brc::LaggingThread& t) {
            if (brc::IsWorldStoppedByThisThread()) reported_stopped.fetch_add(1);
            lagging_id.store(t.id);
            reports.fetch_add(1);
          }).ok());
  std::atomic<uint32_t> mutator_id{0};
  std::atomic<bool> ready{false}, done{false}, timed_out{false};
  std::thread mutator([&] {
    brc::ThreadScope attach_mutator;
    mutator_id.store(brc::CurrentThreadId());
    ready.store(true);
    // No safepoint until the stop was requested and the watchdog reported this thread.
    auto end = Clock::now() + std::chrono::seconds(60);
    while (!StopRequestedForTesting() || reports.load() == 0) {
      if (Clock::now() > end) {
        timed_out.store(true);
        break;
      }
      std::this_thread::yield();
    }
    brc::Safepoint();  // parks
    done.store(true);
  });
  if (!Await([&] { return ready.load(); })) Hung("the watchdog mutator start", seed);
  {
    brc::StopTheWorld stop;
    CHECK(brc::IsWorldStoppedByThisThread());
  }
  JoinWithin(mutator, done, "the watchdog mutator", seed);
  REQUIRE(brc::SetStopWatchdog(absl::Seconds(1)).ok());
  CHECK_FALSE(timed_out.load());
  CHECK(reports.load() >= 1);
  CHECK(reported_stopped.load() == 0);
  CHECK(lagging_id.load() == mutator_id.load());
}

// ---- ParkableFrees ----

// Tries: a thread counted by another's stop calls StopTheWorld itself without reaching a
// safepoint: it waits as a blocked thread, then holds the world stopped with the first stop's
// kPendingStop bit still set (nothing clears it on that path). A ParkableFrees free inside its
// own stop then runs SafepointSlow on the stopper: it must free at once, keep the world
// stopped, and not park or stop again.
TEST_CASE("Probe a ParkableFrees free on the thread holding the world stopped after its stop "
          "waited for another",
          "[stw-probe]") {
  BRC_TEST_SEED(seed);
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  std::atomic<bool> ready{false}, done{false}, timed_out{false};
  std::atomic<int> freed_in_stop{-1}, still_stopped{-1};
  std::thread other([&] {
    brc::ThreadScope attach_other;
    brc::Ref<brc_test::Counted> mine = brc::Make<brc_test::Counted>(&destroyed);
    ready.store(true);
    auto end = Clock::now() + std::chrono::seconds(60);
    while (!StopRequestedForTesting()) {  // counted by the main thread's stop; no safepoint
      if (Clock::now() > end) {
        timed_out.store(true);
        break;
      }
      std::this_thread::yield();
    }
    {
      brc::StopTheWorld stop;  // the main thread's stop is running: waits as blocked first
      {
        brc::ParkableFrees parkable;
        mine = nullptr;
      }
      freed_in_stop.store(destroyed.load());
      still_stopped.store(brc::IsWorldStoppedByThisThread() ? 1 : 0);
    }
    brc::Safepoint();
    done.store(true);
  });
  if (!Await([&] { return ready.load(); })) Hung("the second requester start", seed);
  {
    brc::StopTheWorld stop;
    if (seed % 2 == 0) {
      for (int i = 0; i < 100; ++i) std::this_thread::yield();
    }
  }
  JoinWithin(other, done, "the second requester", seed);
  CHECK_FALSE(timed_out.load());
  CHECK(freed_in_stop.load() == 1);
  CHECK(still_stopped.load() == 1);
}

// The stale bit of the case above, read through the testing API that promises "a stop of the
// world is waiting for the calling thread to park": inside its own stop nobody waits for it.
TEST_CASE("Probe StopRequestedForTesting is false inside the caller's own stop after it "
          "waited for another",
          "[stw-probe]") {
  BRC_TEST_SEED(seed);
  brc::ThreadScope attach;
  std::atomic<bool> ready{false}, done{false}, timed_out{false};
  std::atomic<int> requested_in_own_stop{-1};
  std::thread other([&] {
    brc::ThreadScope attach_other;
    ready.store(true);
    auto end = Clock::now() + std::chrono::seconds(60);
    while (!StopRequestedForTesting()) {
      if (Clock::now() > end) {
        timed_out.store(true);
        break;
      }
      std::this_thread::yield();
    }
    {
      brc::StopTheWorld stop;
      requested_in_own_stop.store(StopRequestedForTesting() ? 1 : 0);
    }
    brc::Safepoint();
    done.store(true);
  });
  if (!Await([&] { return ready.load(); })) Hung("the second requester start", seed);
  { brc::StopTheWorld stop; }
  JoinWithin(other, done, "the second requester", seed);
  CHECK_FALSE(timed_out.load());
  CHECK(requested_in_own_stop.load() == 0);
}

namespace stw_probe {

// A leaf whose destructor notes whether it ran on a thread holding the world stopped.
struct StopNoting : brc::Object {
  static constexpr std::string_view kTypeName = "stw_probe::StopNoting";
  explicit StopNoting(std::atomic<int>* in_stop, std::atomic<int>* destroyed)
      : in_stop(in_stop), destroyed(destroyed) {}
  ~StopNoting() {
    if (brc::IsWorldStoppedByThisThread()) in_stop->fetch_add(1);
    destroyed->fetch_add(1);
  }
  std::atomic<int>* in_stop;
  std::atomic<int>* destroyed;
};

}  // namespace stw_probe

// Tries: the stale kPendingStop of the two cases above, left by a thread that was counted by a
// stop and blocked instead of parking, with a merge pass due on that thread. Its user code then
// stops the world and, inside, drops one unrelated leaf in a ParkableFrees scope: the free
// runs SafepointSlow on the stopper, which runs the due pass under the user's stop and frees
// the pass's dead objects there. Their destructors then run with the world held stopped by
// this thread (one that stops the world itself would abort: stops do not nest). Without
// ParkableFrees they run at the thread's next safepoint, after the stop.
TEST_CASE("Probe a stale stop bit does not run other objects' destructors inside the "
          "caller's own stop",
          "[stw-probe]") {
  BRC_TEST_SEED(seed);
  brc::ThreadScope attach;
  brc::PerThreadConfig config;
  config.merge_interval = absl::ZeroDuration();  // a due pass may run at any safepoint
  REQUIRE(brc::SetPerThreadConfig(config).ok());
  std::atomic<int> in_stop{0}, destroyed{0}, leaf_destroyed{0};
  std::atomic<bool> ready{false}, done{false}, timed_out{false}, switch_failed{false};
  std::thread other([&] {
    brc::ThreadScope attach_other;
    brc::Ref<StopNoting> hot = brc::Make<StopNoting>(&in_stop, &destroyed);
    if (!brc::CountPerThread(hot.get()).ok()) switch_failed.store(true);
    brc::Ref<brc_test::Counted> leaf = brc::Make<brc_test::Counted>(&leaf_destroyed);
    ready.store(true);
    auto end = Clock::now() + std::chrono::seconds(60);
    while (!StopRequestedForTesting()) {  // counted by the main thread's stop
      if (Clock::now() > end) {
        timed_out.store(true);
        break;
      }
      std::this_thread::yield();
    }
    { brc::BlockingScope blocking; }  // leaves the stop's count without parking: the bit stays
    hot = nullptr;  // its slot goes below zero: a pass is due on this thread (to free it)
    {
      brc::StopTheWorld stop;
      brc::ParkableFrees parkable;
      leaf = nullptr;  // an unrelated free
    }
    brc::Safepoint();  // without the stale bit the pass runs here, after the stop
    (void)brc::MergePerThreadCounts();
    done.store(true);
  });
  if (!Await([&] { return ready.load(); })) Hung("the stale-bit thread start", seed);
  { brc::StopTheWorld stop; }
  JoinWithin(other, done, "the stale-bit thread", seed);
  REQUIRE(brc::SetPerThreadConfig({}).ok());
  CHECK_FALSE(timed_out.load());
  CHECK_FALSE(switch_failed.load());
  CHECK(leaf_destroyed.load() == 1);
  CHECK(destroyed.load() == 1);
  CHECK(in_stop.load() == 0);
}
