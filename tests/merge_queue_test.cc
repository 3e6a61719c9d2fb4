// The merge queue: safepoints, thread exit with queued objects, blocked owners.
#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "test_util.h"

using brc::testing::GetCounts;
using brc::testing::QueuedObjectsForTesting;
using brc_test::Counted;

namespace {

// A one-shot signal usable from a BlockingScope (it touches no brc object).
class Event {
 public:
  void Set() {
    std::lock_guard<std::mutex> lock(mu_);
    set_ = true;
    cv_.notify_all();
  }
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return set_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool set_ = false;
};

}  // namespace

TEST_CASE("thread exit merges objects still queued to it", "[queue][threads]") {
  std::atomic<int> destroyed{0};
  constexpr int kObjects = 50;
  std::vector<brc::Ref<Counted>> handed;
  Event made, dropped;
  uint32_t owner_tid = 0;
  std::thread owner([&] {
    brc::ThreadScope attach;
    owner_tid = brc::CurrentThreadId();
    for (int i = 0; i < kObjects; ++i) handed.push_back(brc::Make<Counted>(&destroyed));
    made.Set();
    dropped.Wait();  // no safepoint meanwhile: everything stays queued
    CHECK(QueuedObjectsForTesting(owner_tid) == kObjects);
    CHECK(destroyed == 0);
  });  // ThreadScope's end drains the queue
  {
    brc::ThreadScope attach;
    made.Wait();
    handed.clear();  // non-owner decrements at shared 0: buffered for the owner
    brc::Safepoint();  // pushes the buffer: queued to the owner
    dropped.Set();
  }
  owner.join();
  CHECK(destroyed == kObjects);
  CHECK(QueuedObjectsForTesting(owner_tid) == 0);
}

TEST_CASE("a blocked owner pins nothing: others merge on its behalf", "[queue][threads]") {
  std::atomic<int> destroyed{0};
  constexpr int kObjects = 100;
  std::vector<brc::Ref<Counted>> handed;
  brc::Ref<Counted> kept_by_owner;
  Event made, blocked, release;
  uint32_t owner_tid = 0;
  std::thread owner([&] {
    brc::ThreadScope attach;
    owner_tid = brc::CurrentThreadId();
    for (int i = 0; i < kObjects; ++i) handed.push_back(brc::Make<Counted>(&destroyed));
    kept_by_owner = handed[0];  // local 2 on object 0
    made.Set();
    {
      brc::BlockingScope blocking;
      blocked.Set();
      release.Wait();
    }
    // Object 0 was merged on this thread's behalf: it is unowned now, and the owner's
    // remaining reference is counted in the shared half. Dropping it frees the object.
    CHECK(GetCounts(kept_by_owner.get()).owner == 0);
    kept_by_owner.Reset();
    CHECK(destroyed == kObjects);
  });
  {
    brc::ThreadScope attach;
    made.Wait();
    blocked.Wait();
    brc::Stats before = brc::GetThreadStats();
    handed.clear();
    brc::Stats after = brc::GetThreadStats();
    CHECK(destroyed == kObjects - 1);  // freed here, not pinned by the blocked owner
    CHECK(after.merges_for_owner - before.merges_for_owner == kObjects);
    CHECK(QueuedObjectsForTesting(owner_tid) == 0);
    release.Set();
  }
  owner.join();
  CHECK(destroyed == kObjects);
}

TEST_CASE("entering a BlockingScope drains the queue first", "[queue][threads]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  auto a = brc::Make<Counted>(&destroyed);
  brc_test::RunAttached([&] { brc::Ref<Counted> moved = std::move(a); });
  CHECK(QueuedObjectsForTesting(brc::CurrentThreadId()) == 1);
  { brc::BlockingScope blocking; }
  CHECK(destroyed == 1);
}

TEST_CASE("objects queued from many threads are all merged exactly once", "[queue][threads]") {
  brc::ThreadScope attach;
  BRC_TEST_SEED(seed);
  const int droppers = GENERATE(2, 4);
  constexpr int kPerThread = 2000;
  std::atomic<int> destroyed{0};
  std::vector<std::vector<brc::Ref<Counted>>> batches(droppers);
  for (auto& batch : batches) {
    for (int i = 0; i < kPerThread; ++i) {
      auto obj = brc::Make<Counted>(&destroyed);
      if (i % 3 == 0) batch.push_back(obj);  // some with an extra owner reference
      batch.push_back(std::move(obj));
    }
  }
  std::atomic<int> done{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < droppers; ++t) {
    pool.emplace_back([&, t] {
      brc::ThreadScope attach_worker;
      std::mt19937 rng(seed + t);
      auto& batch = batches[t];
      std::shuffle(batch.begin(), batch.end(), rng);
      batch.clear();
      done.fetch_add(1);
    });
  }
  // The owner keeps reaching safepoints while the others drop.
  while (done.load() < droppers) brc::Safepoint();
  for (auto& t : pool) t.join();
  brc::Safepoint();
  CHECK(destroyed == droppers * kPerThread);
}

TEST_CASE("queueing races with the owner's exit: nothing lost, nothing freed twice",
          "[queue][threads]") {
  BRC_TEST_SEED(seed);
  std::mt19937 rng(seed);
  constexpr int kRounds = 60;
  constexpr int kObjects = 200;
  std::atomic<int> destroyed{0};
  for (int r = 0; r < kRounds; ++r) {
    std::vector<brc::Ref<Counted>> handed;
    std::atomic<bool> go{false};
    uint32_t exit_delay = rng() % 200;
    std::thread owner([&] {
      brc::ThreadScope attach;
      for (int i = 0; i < kObjects; ++i) handed.push_back(brc::Make<Counted>(&destroyed));
      go.store(true, std::memory_order_release);
      for (uint32_t i = 0; i < exit_delay; ++i) brc::Safepoint();
    });
    std::thread dropper([&] {
      brc::ThreadScope attach;
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      while (!handed.empty()) handed.pop_back();
    });
    owner.join();
    dropper.join();
    REQUIRE(destroyed == (r + 1) * kObjects);
  }
}

namespace {
// Runs a hook, then reaches a safepoint, from its destructor: runtime code called from
// destructors may do both.
struct HookInDestructor : brc::Object {
  HookInDestructor(std::atomic<int>* d, std::function<void()> hook)
      : destroyed(d), hook(std::move(hook)) {}
  ~HookInDestructor() {
    if (hook) hook();
    brc::Safepoint();
    destroyed->fetch_add(1);
  }
  std::atomic<int>* destroyed;
  std::function<void()> hook;
};
}  // namespace

TEST_CASE("a destructor that reaches a safepoint during a drain merges nothing twice",
          "[queue][threads]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  constexpr int kBatch = 20;
  // Objects another thread will drop (queueing them to this thread) while this thread is in
  // the middle of draining its first batch: the destructor of the batch's first object asks
  // for the drop, waits for it, then reaches a safepoint, which drains re-entrantly.
  std::vector<brc::Ref<Counted>> late;
  for (int i = 0; i < kBatch; ++i) late.push_back(brc::Make<Counted>(&destroyed));
  std::atomic<int> phase{0};  // 1: drop `late` now; 2: dropped
  std::thread dropper([&] {
    brc::ThreadScope attach_dropper;
    while (phase.load() != 1) std::this_thread::yield();
    late.clear();  // non-owner drops at shared 0: buffered for the draining owner
    brc::Safepoint();  // pushed: queued to it
    phase.store(2);
  });
  std::vector<brc::Ref<HookInDestructor>> first;
  first.push_back(brc::Make<HookInDestructor>(&destroyed, [&] {
    phase.store(1);
    while (phase.load() != 2) std::this_thread::yield();
  }));
  for (int i = 1; i < kBatch; ++i) {
    first.push_back(brc::Make<HookInDestructor>(&destroyed, nullptr));
  }
  brc_test::RunAttached([&] { first.clear(); });  // all queued to this thread
  CHECK(QueuedObjectsForTesting(brc::CurrentThreadId()) == kBatch);
  brc::Safepoint();
  dropper.join();
  CHECK(destroyed == 2 * kBatch);
  CHECK(QueuedObjectsForTesting(brc::CurrentThreadId()) == 0);
}

TEST_CASE("a thread that exits while attached is detached at exit", "[queue][threads]") {
  std::atomic<int> destroyed{0};
  brc::Stats before = brc::GetStats();
  brc::Ref<Counted> kept;
  uint32_t tid = 0;
  std::thread t([&] {
    brc::AttachCurrentThread();  // never detached by hand
    tid = brc::CurrentThreadId();
    kept = brc::Make<Counted>(&destroyed);
  });
  t.join();
  brc::Stats after = brc::GetStats();  // must not read the exited thread's freed counters
  CHECK(after.allocations - before.allocations == 1);
  brc::ThreadScope attach;
  kept.Reset();  // owner exited: merged here, not pinned
  CHECK(destroyed == 1);
  CHECK(QueuedObjectsForTesting(tid) == 0);
}
