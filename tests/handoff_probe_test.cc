// Adversarial probes of the hand-off buffers (lib/handoff.cc, lib/merge_queue.cc) written by a
// review of commit a9a33ad. Each case drives one path the review singled out and asserts what
// the contract (README "Hand-off", protocol.md, brc/hot.h, brc/stats.h) promises there: every
// object freed exactly once, counts exact where documented exact, no hang, no bit of pending
// work left set with nothing to do. Cases marked "defect" fail on a9a33ad (the two marked
// "regression" pass on b365256, before batching); the rest record what was checked and found
// sound.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <random>
#include <thread>
#include <vector>

#include "brc/detail/thread_local.h"
#include "brc/hot.h"
#include "handoff_util.h"
#include "test_util.h"

using brc::testing::HandoffBufferedForTesting;
using brc::testing::QueuedObjectsForTesting;
using brc_test::Counted;

namespace handoff_probe {

using brc_test::Owner;

constexpr std::size_t kEntries = 126;      // lib/thread_state.h, kHandoffEntries
constexpr uint32_t kPendingHandoff = 1u << 4;  // lib/thread_state.h

// The calling thread's hand-off bit in its pending word (it sends every Safepoint() to the
// slow path while set).
bool HandoffBitSet() {
  std::atomic<uint32_t>* p = brc::detail::tls_pending;
  return p != nullptr && (p->load() & kPendingHandoff) != 0;
}


}  // namespace handoff_probe

using handoff_probe::HandoffBitSet;
using handoff_probe::kEntries;
using handoff_probe::Owner;

// Defect: a push that empties every buffer outside FlushHandoffs (a full buffer, a drop for an
// owner that blocked meanwhile, a buffer given up in rotation) leaves kPendingHandoff set with
// handoff_held == 0; DrainQueue only calls FlushHandoffs when something is held, so nothing
// clears the bit and every later Safepoint() of the thread takes the slow path (its own mutex)
// until its next buffered drop or a stop of the world.
TEST_CASE("Probe handoff bit is cleared once nothing is buffered", "[handoff_probe]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  const int how = GENERATE(0, 1, 2);
  if (how == 0) {
    INFO("a full buffer pushed at once");
    Owner owner(&destroyed, static_cast<int>(kEntries));
    owner.made().clear();
    CHECK(HandoffBufferedForTesting() == 0);
    brc::Safepoint();
    brc::Safepoint();
    CHECK_FALSE(HandoffBitSet());
    owner.Safepoints();
    CHECK(brc_test::EventuallyTrue([&] { return destroyed.load() == static_cast<int>(kEntries); }));
  } else if (how == 1) {
    INFO("a drop for an owner that blocked pushes the buffer and merges at once");
    Owner owner(&destroyed, 4);
    std::vector<brc::Ref<Counted>> mine = std::move(owner.made());
    for (int i = 0; i < 3; ++i) mine[static_cast<std::size_t>(i)] = nullptr;
    CHECK(HandoffBufferedForTesting() == 3);
    owner.Block();
    mine.clear();  // hint false: the buffer goes, merged on the owner's behalf
    CHECK(HandoffBufferedForTesting() == 0);
    CHECK(destroyed.load() == 4);
    brc::Safepoint();
    brc::Safepoint();
    CHECK_FALSE(HandoffBitSet());
  } else {
    INFO("a blocking scope entered with a full buffer's leftovers already pushed");
    Owner owner(&destroyed, static_cast<int>(kEntries));
    owner.made().clear();
    { brc::BlockingScope blocking; }
    brc::Safepoint();
    CHECK_FALSE(HandoffBitSet());
    owner.Safepoints();
    CHECK(brc_test::EventuallyTrue([&] { return destroyed.load() == static_cast<int>(kEntries); }));
  }
}

// Defect (regression): GetRefCount of an object counted per thread is documented exact
// (brc/hot.h: it stops the world to add the slots), and MergePerThreadCounts frees what has
// count zero. A stop that
// is not a collection leaves the stopper's own buffers as they are, so a drop the caller
// buffered before the switch still counts: GetRefCount reports one more than the true count and
// the pass does not free the dead object. (Before batching the entry was in the owner's queue,
// and the owner drained it before parking.)
TEST_CASE("Probe per-thread GetRefCount by the thread whose buffer holds a drop",
          "[handoff_probe][per_thread]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  Owner owner(&destroyed, 1, false, /*copies=*/2);
  brc::Ref<Counted> a = std::move(owner.made()[0]);
  brc::Ref<Counted> b = std::move(owner.made()[1]);  // the owner's local half holds both
  owner.made().clear();
  owner.Safepoints();
  b = nullptr;  // buffered here
  REQUIRE(HandoffBufferedForTesting() == 1);
  CHECK(brc::GetRefCount(a.get()) == 1);  // ordinary object: pending entry subtracted
  REQUIRE(brc::CountPerThread(a.get()).ok());
  CHECK(brc::GetRefCount(a.get()) == 1);
  a = nullptr;  // the true count is zero now
  // brc/hot.h: a merge pass frees the per-thread-counted objects whose count is zero, their
  // destructors running on this thread before it returns (the owner drains at its park).
  REQUIRE(brc::MergePerThreadCounts().ok());
  CHECK(destroyed.load() == 1);
  brc::Safepoint();  // pushes
  CHECK(brc_test::EventuallyTrue([&] {
    (void)brc::MergePerThreadCounts();
    return destroyed.load() == 1;
  }));
}

namespace handoff_probe {

struct Ring : brc::Object {
  static constexpr std::string_view kTypeName = "handoff_probe::Ring";
  explicit Ring(std::atomic<int>* d) : destroyed(d) {}
  ~Ring() { destroyed->fetch_add(1); }
  void Trace(brc::Visitor& v) const { v.Visit(next); }
  void Clear() { next = nullptr; }
  std::atomic<int>* destroyed;
  brc::Ref<Ring> next;
};

}  // namespace handoff_probe

// Defect (design gap): a collection's last drops of garbage owned by other attached threads
// (ClearAndRelease) land in the collecting thread's buffers, so after Collect() returns the
// garbage it reports collected is neither freed nor queued to its owner until the caller's next
// safepoint. A caller that then computes without safepoints keeps all of it alive.
TEST_CASE("Probe a collection leaves none of its garbage in its own buffers",
          "[handoff_probe][collector]") {
  brc_test::Manual manual;
  brc::ThreadScope attach;
  using handoff_probe::Ring;
  constexpr int kRing = 8;
  std::atomic<int> destroyed{0};
  std::atomic<bool> made{false}, done{false};
  std::atomic<uint32_t> owner_id{0};
  std::thread owner([&] {
    brc::ThreadScope attach_owner;
    owner_id.store(brc::CurrentThreadId());
    {
      brc::Ref<Ring> first = brc::Make<Ring>(&destroyed);
      brc::Ref<Ring> last = first;
      for (int i = 1; i < kRing; ++i) {
        last->next = brc::Make<Ring>(&destroyed);
        last = last->next;
      }
      last->next = first;
    }  // garbage now, owned here
    made.store(true);
    while (!done.load()) brc::Safepoint();
  });
  while (!made.load()) std::this_thread::yield();
  brc::CollectResult r = brc_test::Must(brc::Collect());
  CHECK(r.collected == kRing);
  std::size_t buffered = HandoffBufferedForTesting();
  CHECK(buffered == 0);
  CHECK(brc_test::EventuallyTrue([&] { return destroyed.load() == kRing; }));
  done.store(true);
  brc_test::JoinBlocking(owner);
}

namespace handoff_probe {

// Holds one reference; its destructor drops it.
struct Holder : brc::Object {
  explicit Holder(brc::Ref<Ring> r) : held(std::move(r)) {}
  brc::Ref<Ring> held;
};

}  // namespace handoff_probe

// Defect (regression): DrainQueue pushes the caller's buffers before it drains its own queue,
// not after.
// A collection drains once and then stops the world, so a drop made by a destructor that this
// drain runs stays in the collecting thread's buffer during the stop. Here that drop is the
// last reference to a head object owned by another thread: the head reads as count zero (dead,
// waiting), which the collector treats as a root, so the garbage ring it references survives
// the collection. Before batching the drop went to the owner's queue, which the owner drains
// before parking (or MergeParkedQueues merges).
TEST_CASE("Probe a drop made by the collection's own drain is seen by that collection",
          "[handoff_probe][collector]") {
  using handoff_probe::Holder;
  using handoff_probe::Ring;
  brc_test::Manual manual;
  brc::ThreadScope attach;
  constexpr int kRing = 5;
  std::atomic<int> destroyed{0};
  std::atomic<bool> made{false}, done{false};
  brc::Ref<Ring> head_for_main;
  std::thread owner([&] {
    brc::ThreadScope attach_owner;
    {
      brc::Ref<Ring> head = brc::Make<Ring>(&destroyed);
      brc::Ref<Ring> first = brc::Make<Ring>(&destroyed);
      brc::Ref<Ring> last = first;
      for (int i = 1; i < kRing; ++i) {
        last->next = brc::Make<Ring>(&destroyed);
        last = last->next;
      }
      last->next = first;
      head->next = std::move(first);  // head -> ring; the ring's only outside reference
      head_for_main = std::move(head);
    }
    made.store(true);
    while (!done.load()) brc::Safepoint();
  });
  while (!made.load()) std::this_thread::yield();
  // A holder owned here, whose last reference another thread drops: it lands in this thread's
  // queue (pushed by that thread's detach).
  brc::Ref<Holder> holder = brc::Make<Holder>(std::move(head_for_main));
  std::thread dropper([&] {
    brc::ThreadScope attach_dropper;
    brc::Ref<Holder> mine = std::move(holder);
    mine = nullptr;
  });
  dropper.join();  // no BlockingScope: it would drain this thread's queue now
  REQUIRE(QueuedObjectsForTesting(brc::CurrentThreadId()) == 1);
  // The collection's drain destroys the holder, which drops the head (buffered here).
  brc::CollectResult r = brc_test::Must(brc::Collect());
  CHECK(r.collected == kRing);
  // Later collections get it (an owner still parked from the previous stop keeps the head in
  // its queue, merged as dead by MergeParkedQueues, which keeps the ring for one more round).
  CHECK(brc_test::EventuallyTrue([&] {
    (void)brc::Collect();
    return destroyed.load() == kRing + 1;
  }, 30));
  done.store(true);
  brc_test::JoinBlocking(owner);
}

// Stats: handoff_pushes counts every push of a buffer, whether its entries were queued or (the
// owner blocked meanwhile) merged on the owner's behalf; queued and merges_for_owner stay exact.
// (Found: the help text once said "pushed to an owner's queue"; it now says both.)
TEST_CASE("Probe stats of pushes to an attached and to a blocked owner", "[handoff_probe][stats]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  constexpr int kObjects = static_cast<int>(kEntries) + 10;
  SECTION("attached: queued counts every entry, one push per buffer") {
    Owner owner(&destroyed, kObjects);
    brc::Stats before = brc::GetStats();
    owner.made().clear();
    brc::Safepoint();
    brc::Stats after = brc::GetStats();
    CHECK(after.queued - before.queued == kObjects);
    CHECK(after.handoff_pushes - before.handoff_pushes == 2);
    CHECK(after.merges_for_owner == before.merges_for_owner);
    owner.Safepoints();
    CHECK(brc_test::EventuallyTrue([&] { return destroyed.load() == kObjects; }));
  }
  SECTION("blocked before the push: merged on its behalf, nothing reaches a queue") {
    Owner owner(&destroyed, 10);
    owner.made().clear();
    brc::Stats before = brc::GetStats();
    owner.Block();
    brc::Safepoint();
    brc::Stats after = brc::GetStats();
    CHECK(destroyed.load() == 10);
    CHECK(after.queued == before.queued);
    CHECK(after.merges_for_owner - before.merges_for_owner == 10);
    CHECK(after.handoff_pushes - before.handoff_pushes == 1);
  }
}

// Sound: an entry buffered for an owner that exits and whose id a new thread takes goes to the
// new thread's queue (it inherits the dead thread's objects) and is freed exactly once.
TEST_CASE("Probe a buffered entry whose owner exits and whose id is reused", "[handoff_probe]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  std::vector<brc::Ref<Counted>> mine;
  uint32_t old_id;
  {
    Owner owner(&destroyed, 5);
    old_id = owner.tid();
    mine = std::move(owner.made());
    mine.clear();  // buffered: the owner is attached
    CHECK(HandoffBufferedForTesting() == 5);
    owner.ExitKeepingBuffers();
  }  // exited with the entries still here
  CHECK(HandoffBufferedForTesting() == 5);
  if (!GENERATE(true, false)) {
    INFO("the id stays free: the push merges on the exited owner's behalf");
    uint64_t merges = brc::GetStats().merges_for_owner;
    brc::Safepoint();
    CHECK(destroyed.load() == 5);
    CHECK(brc::GetStats().merges_for_owner - merges == 5);
    return;
  }
  // Threads take the lowest free id: attach (and hold) threads until one gets the old id.
  std::vector<std::unique_ptr<Owner>> holders;
  Owner* heir = nullptr;
  for (int i = 0; i < 256 && heir == nullptr; ++i) {
    holders.push_back(std::make_unique<Owner>(&destroyed, 0));
    if (holders.back()->tid() == old_id) heir = holders.back().get();
  }
  REQUIRE(heir != nullptr);
  CHECK(destroyed.load() == 0);
  brc::Safepoint();  // pushed to the heir's queue
  CHECK(HandoffBufferedForTesting() == 0);
  CHECK(QueuedObjectsForTesting(old_id) == 5);
  heir->Safepoints();
  CHECK(brc_test::EventuallyTrue([&] { return destroyed.load() == 5; }));
  holders.clear();
  CHECK(destroyed.load() == 5);
}

// Sound: WeakRef::Lock from a third thread refuses an object whose last reference waits in a
// buffer, and succeeds on one whose owner still holds a reference.
TEST_CASE("Probe WeakRef Lock from a third thread on buffered objects", "[handoff_probe][weak]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  Owner owner(&destroyed, 2, false, /*copies=*/2);
  brc::Ref<Counted> dead = std::move(owner.made()[0]);
  brc::Ref<Counted> dead2 = std::move(owner.made()[1]);
  brc::Ref<Counted> alive = std::move(owner.made()[2]);
  brc::Ref<Counted> alive2 = std::move(owner.made()[3]);  // two in the owner's half
  brc::WeakRef<Counted> w_dead(dead), w_alive(alive);
  owner.made().clear();
  dead = nullptr;
  dead2 = nullptr;
  alive2 = nullptr;
  REQUIRE(HandoffBufferedForTesting() == 2);  // one entry per object: dead2 went below zero
  bool dead_locked = true, alive_locked = false;
  brc_test::RunAttached([&] {
    dead_locked = w_dead.Lock() != nullptr;
    brc::Ref<Counted> r = w_alive.Lock();
    alive_locked = r != nullptr;
  });
  CHECK_FALSE(dead_locked);
  CHECK(alive_locked);
  brc::Safepoint();
  owner.Safepoints();
  CHECK(brc_test::EventuallyTrue([&] { return destroyed.load() == 1; }));
  CHECK(w_dead.Lock() == nullptr);
  alive = nullptr;
  brc::Safepoint();
  CHECK(brc_test::EventuallyTrue([&] { return destroyed.load() == 2; }));
}

// Sound: a stop pushes the stopping thread's buffers first (found: it once left them buffered,
// so counts read under the stop missed them), and drops made while this thread holds the world
// stopped go straight to the (parked) owner's queue.
TEST_CASE("Probe drops around a stop of the world held by the dropping thread",
          "[handoff_probe][stop]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  Owner owner(&destroyed, 20);
  std::vector<brc::Ref<Counted>> mine = std::move(owner.made());
  owner.Safepoints();  // it must park
  for (int i = 0; i < 10; ++i) mine[static_cast<std::size_t>(i)] = nullptr;
  CHECK(HandoffBufferedForTesting() == 10);
  {
    brc::StopTheWorld stop;
    CHECK(HandoffBufferedForTesting() == 0);  // pushed before the stop
    // The owner drained them before parking, or they wait in its queue.
    std::size_t before = QueuedObjectsForTesting(owner.tid());
    CHECK(before + static_cast<std::size_t>(destroyed.load()) == 10);
    for (int i = 10; i < 20; ++i) mine[static_cast<std::size_t>(i)] = nullptr;
    CHECK(HandoffBufferedForTesting() == 0);
    CHECK(QueuedObjectsForTesting(owner.tid()) == before + 10);
  }
  brc::Safepoint();
  CHECK(HandoffBufferedForTesting() == 0);
  CHECK(brc_test::EventuallyTrue([&] { return destroyed.load() == 20; }));
}

namespace {

// A destructor that, run by a push merging on an exited owner's behalf, re-enters everything:
// a stop held by this thread with GetRefCount on a buffered object, a per-thread switch and a
// merge pass, a collection, and a nested blocking scope.
struct ReenterAll : brc::Object {
  ReenterAll(std::atomic<int>* d, brc::Ref<Counted> o, int kind)
      : destroyed(d), other(std::move(o)), kind(kind) {}
  ~ReenterAll() {
    Counted* raw = other.get();
    brc::Ref<Counted> keep = other;
    other = nullptr;
    if (kind == 1) {
      brc::StopTheWorld stop;
      if (brc::GetRefCount(raw) != 1) bad->fetch_add(1);
    } else if (kind == 2) {
      if (!brc::CountPerThread(raw).ok()) bad->fetch_add(1);
      (void)brc::MergePerThreadCounts();
    } else if (kind == 3) {
      if (!brc::Collect().ok()) bad->fetch_add(1);
    } else if (kind == 4) {
      brc::BlockingScope blocking;
    }
    keep = nullptr;
    brc::Safepoint();
    destroyed->fetch_add(1);
  }
  std::atomic<int>* destroyed;
  brc::Ref<Counted> other;
  int kind;
  static inline std::atomic<int>* bad = nullptr;
};

}  // namespace

TEST_CASE("Probe destructors run by a push for an exited owner re-enter stops and passes",
          "[handoff_probe][reentrancy]") {
  brc_test::Manual manual;
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0}, others{0}, bad{0};
  ReenterAll::bad = &bad;
  constexpr int kObjects = static_cast<int>(kEntries) + 7;
  Owner third(&others, kObjects);  // owns what the destructors drop
  third.Safepoints();
  std::vector<brc::Ref<ReenterAll>> handed;
  brc_test::RunAttached([&] {  // the maker exits: every push merges on its behalf
    for (std::size_t i = 0; i < static_cast<std::size_t>(kObjects); ++i) {
      handed.push_back(brc::Make<ReenterAll>(&destroyed, std::move(third.made()[i]),
                                             static_cast<int>(i % 5)));
    }
  });
  third.made().clear();
  handed.clear();
  brc::Safepoint();
  CHECK(destroyed.load() == kObjects);
  CHECK(bad.load() == 0);
  CHECK(brc_test::EventuallyTrue([&] {
    (void)brc::MergePerThreadCounts();
    return others.load() == kObjects;
  }));
  ReenterAll::bad = nullptr;
}

// Sound: a thread whose thread_local (made after it attached) drops objects at exit pushes them
// in its exit detach: the owner finds them all queued once the thread is joined.
TEST_CASE("Probe drops by a thread_local destructor at thread exit are pushed",
          "[handoff_probe][threads]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  constexpr int kObjects = 30;
  struct Holder {
    std::vector<brc::Ref<Counted>> refs;
  };
  std::vector<brc::Ref<Counted>> mine;
  for (int i = 0; i < kObjects; ++i) mine.push_back(brc::Make<Counted>(&destroyed, i));
  std::thread t([&] {
    brc::AttachCurrentThread();  // no matching detach: the exit guard detaches
    thread_local Holder holder;
    holder.refs = std::move(mine);
  });
  t.join();  // not in a BlockingScope: pushes to a blocked owner would merge on its behalf
  CHECK(QueuedObjectsForTesting(brc::CurrentThreadId()) == kObjects);
  CHECK(destroyed.load() == 0);
  brc::Safepoint();
  CHECK(destroyed.load() == kObjects);
}

// Sound: a buffered push whose queue cannot grow, reached from the pre-park flush while another
// thread stops the world: the push's own stop waits as a blocked thread, then merges. Bounded.
TEST_CASE("Probe a failing push at the park of a stop does not deadlock",
          "[handoff_probe][oom][stop]") {
  struct Failing final : brc::Allocator {
    void* Allocate(std::size_t size, std::size_t align) noexcept override {
      return fail.load() ? nullptr : brc::MallocAllocator().Allocate(size, align);
    }
    void Deallocate(void* p, std::size_t size, std::size_t align) noexcept override {
      brc::MallocAllocator().Deallocate(p, size, align);
    }
    std::string_view Name() const noexcept override { return "handoff-probe-failing"; }
    std::atomic<bool> fail{false};
  };
  static Failing failing;
  REQUIRE(brc::SetAllocator(&failing).ok());
  BRC_TEST_SEED(seed);
  {
    brc::ThreadScope attach;
    for (int round = 0; round < 6; ++round) {
      INFO("round " << round);
      std::atomic<int> destroyed{0};
      constexpr int kObjects = 12;
      Owner owner(&destroyed, kObjects, /*release_queue=*/true);
      owner.Safepoints();
      std::vector<Counted*> raw;
      for (auto& r : owner.made()) raw.push_back(r.Release());
      owner.made().clear();
      std::atomic<bool> dropped{false}, go{false}, done{false};
      std::thread dropper([&] {
        brc::ThreadScope attach_dropper;
        for (Counted* c : raw) brc::Ref<Counted>::Adopt(c);  // buffered
        dropped.store(true);
        while (!go.load()) std::this_thread::yield();
        if ((seed + static_cast<uint32_t>(round)) % 2 == 0) std::this_thread::yield();
        while (!done.load()) brc::Safepoint();  // the flush fails and stops the world itself
      });
      while (!dropped.load()) std::this_thread::yield();
      failing.fail.store(true);
      go.store(true);
      {
        brc::StopTheWorld stop;
        CHECK(destroyed.load() <= kObjects);
      }
      bool freed = brc_test::EventuallyTrue([&] { return destroyed.load() == kObjects; }, 30);
      failing.fail.store(false);
      CHECK(freed);
      done.store(true);
      brc_test::JoinBlocking(dropper);
    }
  }
  REQUIRE(brc::SetAllocator(&brc::DefaultAllocator()).ok());
}

namespace handoff_probe {

constexpr int kMagic = 0x5eed;

struct Tagged : brc::Object {
  explicit Tagged(std::atomic<int>* d) : destroyed(d) {}
  ~Tagged() {
    value = -1;
    destroyed->fetch_add(1, std::memory_order_relaxed);
  }
  std::atomic<int>* destroyed;
  int value = kMagic;
};

}  // namespace handoff_probe

// Sound (seeded stress): makers, droppers, WeakRef::Lock from third threads, collections,
// per-thread switches and merge passes, stops held by droppers, Freeze and Unfreeze, blocking
// scopes, threads detaching and re-attaching (ids reused), with and without allocation failures.
// Every object is destroyed exactly once, and no Lock() hands out a destroyed one.
TEST_CASE("Probe mixed hand-off stress with weak locks switches and stops",
          "[handoff_probe][threads]") {
  using handoff_probe::Tagged;
  BRC_TEST_SEED(seed);
  brc_test::Manual manual;
  // With `oom`, one allocation in 8 fails (objects, queue growth, collector and per-thread
  // tables alike): pushes then merge with the world stopped, Make throws, calls return errors.
  struct Flaky final : brc::Allocator {
    void* Allocate(std::size_t size, std::size_t align) noexcept override {
      if (on.load() && (n.fetch_add(1) * 2654435761u) % 8 == 0) return nullptr;
      return brc::MallocAllocator().Allocate(size, align);
    }
    void Deallocate(void* p, std::size_t size, std::size_t align) noexcept override {
      brc::MallocAllocator().Deallocate(p, size, align);
    }
    std::string_view Name() const noexcept override { return "handoff-probe-flaky"; }
    std::atomic<bool> on{false};
    std::atomic<uint32_t> n{0};
  };
  static Flaky flaky;
  const bool oom = GENERATE(false, true);
  INFO((oom ? "allocations fail now and then" : "no allocation failure"));
  if (oom) {
    REQUIRE(brc::SetAllocator(&flaky).ok());
    flaky.n.store(seed);
    flaky.on.store(true);
  }
  constexpr int kThreads = 3;
  constexpr int kRounds = 4000;
  std::atomic<int> made{0}, destroyed{0};
  std::mutex mu;  // guards box and weaks; nothing under it counts or reaches a safepoint
  std::vector<brc::Ref<Tagged>> box;
  std::vector<brc::WeakRef<Tagged>> weaks;
  brc_test::WorkerFailures failures;
  std::vector<std::thread> pool;
  for (int t = 0; t < kThreads; ++t) {
    pool.emplace_back([&, t] {
      std::mt19937 rng(seed * 31 + static_cast<uint32_t>(t));
      // Four lives: each detach frees the id (objects this thread made are merged on its
      // behalf from then on, entries buffered for it by others are merged by their pushes),
      // and the next attach may take another thread's old id.
      for (int r = 0; r < kRounds; ++r) {
        if (r % (kRounds / 4) == 0) {
          if (brc::IsAttached()) brc::DetachCurrentThread();
          brc::AttachCurrentThread();
        }
        uint32_t action = rng() % 100;
        if (action < 30) {
          std::vector<brc::Ref<Tagged>> fresh;
          std::vector<brc::WeakRef<Tagged>> fresh_weak;
          uint32_t n = 1 + rng() % 8;
          for (uint32_t i = 0; i < n; ++i) {
            try {
              fresh.push_back(brc::Make<Tagged>(&destroyed));
            } catch (const std::bad_alloc&) {
              failures.Expect(oom);
              continue;
            }
            made.fetch_add(1);
            if (rng() % 2) fresh.push_back(fresh.back());  // a second local reference
            if (rng() % 3 == 0) {
              try {
                fresh_weak.emplace_back(fresh.back());
              } catch (const std::bad_alloc&) {
                failures.Expect(oom);
              }
            }
          }
          std::lock_guard<std::mutex> lock(mu);
          for (auto& f : fresh) box.push_back(std::move(f));
          if (weaks.size() < 512) {
            for (auto& w : fresh_weak) weaks.push_back(std::move(w));
          }
        } else if (action < 60) {
          std::vector<brc::Ref<Tagged>> take;
          {
            std::lock_guard<std::mutex> lock(mu);
            for (uint32_t i = 0, n = rng() % 12; i < n && !box.empty(); ++i) {
              std::size_t k = rng() % box.size();
              take.push_back(std::move(box[k]));
              box[k] = std::move(box.back());
              box.pop_back();
            }
          }
          take.clear();  // drops: buffered, queued or merged
        } else if (action < 75) {
          brc::WeakRef<Tagged> w;
          {
            std::lock_guard<std::mutex> lock(mu);
            if (!weaks.empty()) w = weaks[rng() % weaks.size()];
          }
          if (brc::Ref<Tagged> got = w.Lock()) failures.Expect(got->value == handoff_probe::kMagic);
        } else if (action < 85) {
          brc::Safepoint();
        } else if (action < 90) {
          brc::BlockingScope blocking;
          std::this_thread::yield();
        } else if (action < 93) {
          brc::Ref<Tagged> pick;
          {
            std::lock_guard<std::mutex> lock(mu);
            if (!box.empty()) pick = std::move(box[rng() % box.size()]);
          }
          if (pick != nullptr) {
            if (rng() % 2) {
              failures.Expect(brc::CountPerThread(pick.get()).ok() || oom);
            } else {
              brc::StopTheWorld stop;
              failures.Expect(brc::GetRefCount(pick.get()) >= 1);
            }
          }
          // pick (moved out of the box) is dropped here: one fewer reference, as counted
        } else if (action < 96) {
          failures.Expect(brc::MergePerThreadCounts().ok() || oom);
        } else if (action < 98) {
          failures.Expect((rng() % 2 ? brc::Collect() : brc::CollectYoung()).ok() || oom);
        } else if (action < 99) {
          failures.Expect((rng() % 2 ? brc::Freeze() : brc::Unfreeze()).ok() || oom);
        }
      }
      brc::DetachCurrentThread();
    });
  }
  for (auto& p : pool) p.join();
  brc::ThreadScope attach;
  {
    std::lock_guard<std::mutex> lock(mu);
    box.clear();
    weaks.clear();
  }
  flaky.on.store(false);
  CHECK(failures.count == 0);
  CHECK(brc_test::EventuallyTrue([&] {
    (void)brc::MergePerThreadCounts();
    return destroyed.load() >= made.load();
  }));
  CHECK(destroyed.load() == made.load());
  (void)brc::Unfreeze();
  if (oom) REQUIRE(brc::SetAllocator(&brc::DefaultAllocator()).ok());
}
