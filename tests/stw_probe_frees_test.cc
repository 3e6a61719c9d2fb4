// Adversarial probes of brc::ParkableFrees (commit 99269c1), continued from stw_probe_test.cc:
// a free parked (for another thread's stop) inside each library path that frees: a collection's
// own phases, a merge-on-behalf push (from a safepoint, a BlockingScope, a detach), the hand-off
// push's out-of-memory stop, a throwing constructor, weak callbacks with Lock() racing, reentrant
// destructors on two threads, a merge pass's frees, and a dropped reference held in flight.

#include <atomic>
#include <chrono>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "stw_probe_util.h"

using namespace stw_probe;  // NOLINT: test file

// Tries: the collecting thread itself inside ParkableFrees, parked by another thread's stops in
// the middle of its own collection, in each phase that frees with the world running: Clear()
// (leaf children dropped), the final decrements (garbage destructors), Finalize() (a finalizer
// dropping its child), weak callbacks (dropping what they captured). It holds the collection
// lock while parked; the other thread stops the world and runs merge passes meanwhile. The
// collection must still collect the whole ring, each object freed once.
TEST_CASE("Probe ParkableFrees on a collecting thread parked in each freeing phase",
          "[stw-probe]") {
  const int where = GENERATE(0, 1, 2, 3);
  const char* names[] = {"Clear()", "final decrements", "Finalize()", "weak callbacks"};
  INFO("parked in " << names[where]);
  BRC_TEST_SEED(seed);
  brc_test::Manual manual;
  brc::ThreadScope attach;
  (void)Must(brc::Collect());  // whatever earlier cases left
  constexpr int kRing = 64;
  Shared nodes, kids, captured;
  Holds holds({8, 24, 40});
  holds.tid.store(brc::CurrentThreadId());
  if (where == 0) nodes.on_clear = &holds;
  if (where == 1) nodes.on_destroy = &holds;
  if (where == 2) nodes.on_finalize = &holds;
  std::vector<brc::WeakRef<TItem>> weaks;
  {
    std::vector<brc::Ref<TItem>> ring;
    for (int i = 0; i < kRing; ++i) {
      ring.push_back(brc::Make<TItem>(&nodes, i));
      ring.back()->child = brc::Make<Item>(&kids, i);
    }
    for (int i = 0; i < kRing; ++i) ring[i]->next = ring[(i + 1) % kRing];
    if (where == 3) {
      for (int i = 0; i < kRing; ++i) {
        brc::Ref<Item> keep = brc::Make<Item>(&captured, i);
        weaks.emplace_back(ring[i], [&holds, i, keep]() mutable {
          holds.At(i);
          keep = nullptr;  // the last reference: a free inside the callback
        });
      }
    }
  }
  WorkerFailures failures;
  std::atomic<bool> helper_done{false};
  std::thread helper([&] {
    brc::ThreadScope attach_helper;
    for (int k = 1; k <= 3; ++k) {
      if (!holds.Reached(k)) {
        failures.Expect(false);
        break;
      }
      ExpectFrozen(nodes.destroyed, &failures);
      failures.Expect(brc::MergePerThreadCounts().ok());
    }
    helper_done.store(true);
  });
  brc::CollectResult r;
  {
    brc::ParkableFrees parkable;
    r = Must(brc::Collect());
  }
  JoinWithin(helper, helper_done, "the collecting-thread probe's helper", seed);
  weaks.clear();
  CHECK_FALSE(holds.timed_out.load());
  CHECK(failures.count.load() == 0);
  CHECK(r.collected == static_cast<uint64_t>(kRing));
  CHECK(nodes.destroyed.load() == kRing);
  CHECK(kids.destroyed.load() == kRing);
  CHECK(captured.destroyed.load() == (where == 3 ? kRing : 0));
}

// Tries: a free parked inside PushToOwner's merge on behalf of a blocked owner. The push merged
// all its entries to zero under the owner's lock and frees them one by one: while the pusher
// is parked at the second, the rest are dead (count zero, merged) yet still tracked, on its
// stack. Collections run meanwhile must take none of them (double free), nor clear their
// children. Reached three ways: a safepoint's flush, entering a BlockingScope, and the drain of
// a detaching thread (ThreadScope's end), whose flush runs before the drain proper.
TEST_CASE("Probe a free parked in a merge-on-behalf push leaves the rest of the push alone",
          "[stw-probe]") {
  const int how = GENERATE(0, 1, 2);
  const char* names[] = {"Safepoint()", "a BlockingScope", "the detach drain"};
  INFO("the push from " << names[how]);
  BRC_TEST_SEED(seed);
  brc_test::Manual manual;
  brc::ThreadScope attach;
  (void)Must(brc::Collect());
  LiveCycle cycle;  // collections below take the counting path
  constexpr int kN = 100;  // one hand-off buffer (126 entries), pushed whole
  Shared nodes, kids;
  Holds holds({0, 20, 40});
  nodes.on_destroy = &holds;
  std::vector<TItem*> raw(kN, nullptr);
  std::atomic<int> owner_cmd{0};
  std::atomic<bool> made{false}, blocked{false}, owner_done{false};
  std::thread owner([&] {
    brc::ThreadScope attach_owner;
    for (int i = 0; i < kN; ++i) {
      brc::Ref<TItem> t = brc::Make<TItem>(&nodes, i);
      t->child = brc::Make<Item>(&kids, i);
      raw[static_cast<std::size_t>(i)] = t.Release();
    }
    made.store(true);
    while (owner_cmd.load() == 0) {
      brc::Safepoint();
      std::this_thread::yield();
    }
    {
      brc::BlockingScope blocking;
      blocked.store(true);
      while (owner_cmd.load() == 1) std::this_thread::yield();
    }
    owner_done.store(true);
  });
  std::atomic<bool> dropped{false}, dropper_done{false}, not_buffered{false};
  std::thread dropper([&] {
    brc::ParkableFrees parkable;  // outlives the ThreadScope: covers the detach too
    {
      brc::ThreadScope attach_dropper;
      holds.tid.store(brc::CurrentThreadId());
      (void)Await([&] { return made.load(); });
      std::vector<brc::Ref<TItem>> refs;
      for (TItem* t : raw) refs.push_back(brc::Ref<TItem>::Adopt(t));
      refs.clear();  // the owner is attached: buffered
      if (brc::testing::HandoffBufferedForTesting() != static_cast<std::size_t>(kN)) {
        not_buffered.store(true);
      }
      dropped.store(true);
      // No safepoint until the owner blocked (a safepoint would push the buffer).
      auto end = Clock::now() + std::chrono::seconds(60);
      while (!blocked.load() && Clock::now() < end) std::this_thread::yield();
      if (how == 0) brc::Safepoint();
      if (how == 1) brc::BlockingScope blocking;
    }
    dropper_done.store(true);
  });
  if (!Await([&] { return dropped.load(); })) Hung("the dropper", seed);
  uint64_t merges_before = brc::GetStats().merges_for_owner;
  owner_cmd.store(1);
  std::vector<brc::CollectResult> results;
  WorkerFailures failures;
  for (int k = 1; k <= 3; ++k) {
    INFO("hold " << k);
    if (!holds.Reached(k)) break;
    results.push_back(Must(k == 2 ? brc::CollectYoung() : brc::Collect()));
    ExpectFrozen(nodes.destroyed, &failures);
  }
  JoinWithin(dropper, dropper_done, "the merge-on-behalf dropper", seed);
  owner_cmd.store(2);
  JoinWithin(owner, owner_done, "the blocked owner", seed);
  CHECK_FALSE(not_buffered.load());
  CHECK(brc::GetStats().merges_for_owner >= merges_before + kN);  // the merge-on-behalf path
  CHECK_FALSE(holds.timed_out.load());
  CHECK(results.size() == 3u);
  for (const brc::CollectResult& r : results) CHECK(r.collected == 0u);
  CHECK(failures.count.load() == 0);
  CHECK(nodes.destroyed.load() == kN);
  CHECK(kids.destroyed.load() == kN);
}

// Tries: ParkableFrees frees after the hand-off push's out-of-memory path, which stops the
// world itself (StopWorld from PushToOwner, perhaps waiting as blocked for another stop), merges
// on the owner's behalf, restarts, and only then frees: those frees park for the main thread's
// stops. Seeded: the main thread's first stop is requested before or after the push fails.
TEST_CASE("Probe ParkableFrees frees after a failing hand-off push stopped the world",
          "[stw-probe][oom]") {
  struct Failing final : brc::Allocator {
    void* Allocate(std::size_t size, std::size_t align) noexcept override {
      return fail.load() ? nullptr : brc::MallocAllocator().Allocate(size, align);
    }
    void Deallocate(void* p, std::size_t size, std::size_t align) noexcept override {
      brc::MallocAllocator().Deallocate(p, size, align);
    }
    std::string_view Name() const noexcept override { return "stw-probe-failing"; }
    std::atomic<bool> fail{false};
  };
  static Failing failing;
  REQUIRE(brc::SetAllocator(&failing).ok());
  BRC_TEST_SEED(seed);
  {
    brc::ThreadScope attach;
    constexpr int kN = 40;
    Shared items;
    Holds holds({0, 10});
    items.on_destroy = &holds;
    std::vector<Item*> raw(kN, nullptr);
    std::atomic<bool> made{false}, owner_stop{false}, owner_done{false};
    std::thread owner([&] {
      brc::ThreadScope attach_owner;
      brc::testing::ReleaseQueueMemoryForTesting();  // the push must grow the queue
      for (int i = 0; i < kN; ++i) raw[static_cast<std::size_t>(i)] = brc::Make<Item>(&items, i).Release();
      made.store(true);
      while (!owner_stop.load()) brc::Safepoint();  // the queue stays without memory
      owner_done.store(true);
    });
    std::atomic<bool> dropped{false}, go{false}, dropper_done{false};
    std::thread dropper([&] {
      brc::ThreadScope attach_dropper;
      holds.tid.store(brc::CurrentThreadId());
      (void)Await([&] { return made.load(); });
      brc::ParkableFrees parkable;
      {
        std::vector<brc::Ref<Item>> refs;
        for (Item* it : raw) refs.push_back(brc::Ref<Item>::Adopt(it));
      }  // buffered for the owner
      dropped.store(true);
      auto end = Clock::now() + std::chrono::seconds(60);
      while (!go.load() && Clock::now() < end) std::this_thread::yield();
      brc::Safepoint();  // the push fails: stop, merge on the owner's behalf, restart, free
      dropper_done.store(true);
    });
    if (!Await([&] { return dropped.load(); })) Hung("the OOM dropper", seed);
    uint64_t push_failures = brc::GetStats().queue_push_failures;
    failing.fail.store(true);
    go.store(true);
    WorkerFailures failures;
    if (seed % 2 == 1) {
      brc::StopTheWorld early;  // may find the push's own stop waiting for this one
    }
    bool first = holds.Reached(1);
    failing.fail.store(false);  // the frees have begun: the merge is done
    if (first) {
      ExpectFrozen(items.destroyed, &failures);
      if (holds.Reached(2)) (void)Must(brc::Collect());
    }
    JoinWithin(dropper, dropper_done, "the OOM dropper", seed);
    owner_stop.store(true);
    JoinWithin(owner, owner_done, "the OOM owner", seed);
    CHECK(first);
    CHECK(brc::GetStats().queue_push_failures > push_failures);  // the push's own stop ran
    CHECK_FALSE(holds.timed_out.load());
    CHECK(failures.count.load() == 0);
    CHECK(items.destroyed.load() == kN);
  }
  REQUIRE(brc::SetAllocator(&brc::DefaultAllocator()).ok());
}

namespace stw_probe {

// A tracked type whose constructor drops a chain (parkable frees: it parks while its own
// object is allocated in the collector's heap, constructed halfway and not yet tracked), then
// throws.
struct Thrower : brc::Object {
  static constexpr std::string_view kTypeName = "stw_probe::Thrower";
  Thrower(Shared* s, int n, brc::Ref<Item> keep_arg) : keep(std::move(keep_arg)) {
    brc::Ref<Item> chain = Chain(s, n);
    chain = nullptr;  // the cascade, parked at the holds
    throw std::runtime_error("stw_probe: constructor throws");
  }
  void Trace(brc::Visitor& v) const { v.Visit(keep); }
  void Clear() { keep = nullptr; }
  brc::Ref<Item> keep;  // constructed before the throw: released by the unwinding
};

}  // namespace stw_probe

// Tries: parked frees inside brc::Make of a tracked type whose constructor frees a chain (the
// recursive part and the deferred part past depth 64) and then throws (AbandonConstruction):
// collections and stops run while the half-built object sits in the collector's heap.
TEST_CASE("Probe ParkableFrees frees inside a throwing constructor of a tracked type",
          "[stw-probe]") {
  BRC_TEST_SEED(seed);
  brc_test::Manual manual;
  brc::ThreadScope attach;
  (void)Must(brc::Collect());
  LiveCycle cycle;  // collections below take the counting path
  constexpr int kChain = 300;
  Shared items, kept;
  Holds holds({10, 200});  // 10: recursive frees; 200: deferred ones
  items.on_destroy = &holds;
  std::atomic<bool> threw{false}, done{false};
  std::thread maker([&] {
    brc::ThreadScope attach_maker;
    holds.tid.store(brc::CurrentThreadId());
    brc::ParkableFrees parkable;
    try {
      (void)brc::Make<Thrower>(&items, kChain, brc::Make<Item>(&kept, 0));
    } catch (const std::runtime_error&) {
      threw.store(true);
    }
    done.store(true);
  });
  std::vector<brc::CollectResult> results;
  WorkerFailures failures;
  for (int k = 1; k <= 2; ++k) {
    if (!holds.Reached(k)) break;
    results.push_back(Must(k == 1 ? brc::CollectYoung() : brc::Collect()));
    ExpectFrozen(items.destroyed, &failures);
  }
  JoinWithin(maker, done, "the throwing maker", seed);
  CHECK(threw.load());
  CHECK_FALSE(holds.timed_out.load());
  CHECK(results.size() == 2u);
  for (const brc::CollectResult& r : results) CHECK(r.collected == 0u);
  CHECK(failures.count.load() == 0);
  CHECK(items.destroyed.load() == kChain);
  CHECK(kept.destroyed.load() == 1);
}

// Tries: WeakRef::Lock from a stopped world while the freeing thread is parked in the middle
// of a chain's frees: after an object's weak callback (its slot cleared) and before its
// destructor, and with objects on the deferred list (their slots cleared, callbacks deferred).
// Lock must refuse every object whose clearing began or whose destructor ran; an object it
// grants (still referenced by a dying one) must survive the grant and be freed once.
TEST_CASE("Probe WeakRef Lock racing a parked free", "[stw-probe]") {
  BRC_TEST_SEED(seed);
  brc::ThreadScope attach;
  constexpr int kChain = 300;
  Shared items;
  std::vector<std::atomic<bool>> dead(kChain), cleared(kChain);
  items.dead = &dead;
  Holds holds({10, 150});  // in the weak callbacks: 10 inline, 150 deferred
  std::vector<brc::WeakRef<Item>> weaks;
  std::atomic<bool> made{false}, go{false}, done{false};
  std::thread freer([&] {
    brc::ThreadScope attach_freer;
    holds.tid.store(brc::CurrentThreadId());
    brc::Ref<Item> head = Chain(&items, kChain);
    {
      Item* it = head.get();
      for (int i = 0; i < kChain; ++i, it = it->next.get()) {
        weaks.emplace_back(brc::Ref<Item>::NewRef(it), [&, i] {
          cleared[static_cast<std::size_t>(i)].store(true);
          holds.At(i);
        });
      }
    }
    made.store(true);
    auto end = Clock::now() + std::chrono::seconds(60);
    while (!go.load() && Clock::now() < end) brc::Safepoint();
    {
      brc::ParkableFrees parkable;
      head = nullptr;
    }
    done.store(true);
  });
  if (!Await([&] { return made.load(); })) Hung("the chain maker", seed);
  go.store(true);
  int granted = 0, wrong = 0;
  for (int k = 1; k <= 2; ++k) {
    if (!holds.Reached(k)) break;
    brc::StopTheWorld stop;
    for (int i = 0; i < kChain; ++i) {
      auto u = static_cast<std::size_t>(i);
      bool was_cleared = cleared[u].load() || dead[u].load();
      brc::Ref<Item> r = weaks[u].Lock();
      if (r != nullptr) {
        ++granted;
        if (was_cleared || dead[u].load()) ++wrong;
      }
    }  // dropped in the stop: queued to the parked owner, not freed here
  }
  JoinWithin(freer, done, "the parked freer", seed);
  (void)Await([&] { return items.destroyed.load() == kChain; });
  INFO("granted " << granted);
  CHECK_FALSE(holds.timed_out.load());
  CHECK(wrong == 0);
  CHECK(items.destroyed.load() == kChain);
  weaks.clear();
}

namespace stw_probe {

// A tracked chain node whose destructor, at seeded indices, re-enters the library: stops the
// world, collects (young or full), runs a merge pass, reaches a safepoint, blocks, or opens a
// nested ParkableFrees around a further drop.
struct Reentrant : brc::Object {
  static constexpr std::string_view kTypeName = "stw_probe::Reentrant";
  Reentrant(Shared* s, int index, int action) : s(s), index(index), action(action) {}
  ~Reentrant() {
    s->destroyed.fetch_add(1);
    switch (action) {
      case 1: {
        brc::StopTheWorld stop;
        break;
      }
      case 2:
        (void)brc::Collect();
        break;
      case 3:
        (void)brc::CollectYoung();
        break;
      case 4:
        (void)brc::MergePerThreadCounts();
        break;
      case 5:
        brc::Safepoint();
        break;
      case 6: {
        brc::BlockingScope blocking;
        break;
      }
      case 7: {
        brc::ParkableFrees nested;
        next = nullptr;
        break;
      }
      default:
        break;
    }
  }
  void Trace(brc::Visitor& v) const { v.Visit(next); }
  void Clear() { next = nullptr; }
  Shared* s;
  int index;
  int action;
  brc::Ref<Reentrant> next;
};

}  // namespace stw_probe

// Tries: two threads dropping long tracked chains inside ParkableFrees at once, their
// destructors stopping the world and collecting (each thread's frees park for the other's
// stops, and for collections that trace the other's half-freed chain), with the main thread
// stopping the world too. Every node freed exactly once, nothing collected twice, no hang.
TEST_CASE("Probe two ParkableFrees cascades whose destructors stop the world and collect",
          "[stw-probe]") {
  BRC_TEST_SEED(seed);
  brc_test::Manual manual;
  brc::ThreadScope attach;
  LiveCycle cycle;  // collections take the counting path
  constexpr int kChain = 20000;
  Shared a, b;
  std::atomic<int> finished{0};
  std::atomic<bool> built_a{false}, built_b{false}, go{false};
  auto run = [&](Shared* s, std::atomic<bool>* built, uint32_t salt) {
    brc::ThreadScope attach_dropper;
    std::minstd_rand rng(seed * 2246822519u + salt);
    brc::Ref<Reentrant> head;
    for (int i = kChain - 1; i >= 0; --i) {
      int action = rng() % 211 == 0 ? 1 + static_cast<int>(rng() % 7) : 0;
      brc::Ref<Reentrant> node = brc::Make<Reentrant>(s, i, action);
      node->next = std::move(head);
      head = std::move(node);
    }
    built->store(true);
    auto end = Clock::now() + std::chrono::seconds(60);
    while (!go.load() && Clock::now() < end) brc::Safepoint();
    {
      brc::ParkableFrees parkable;
      head = nullptr;
    }
    brc::Safepoint();
    finished.fetch_add(1);
  };
  std::thread ta(run, &a, &built_a, 1u), tb(run, &b, &built_b, 2u);
  if (!Await([&] { return built_a.load() && built_b.load(); }, 120)) Hung("the builders", seed);
  go.store(true);
  std::minstd_rand rng(seed);
  int stops = 0;
  auto end = Clock::now() + std::chrono::seconds(180);
  while (finished.load() < 2) {
    if (Clock::now() > end) Hung("two reentrant cascades", seed);
    if (rng() % 3 == 0) (void)brc::Collect();
    { brc::StopTheWorld stop; }
    ++stops;
    brc::Safepoint();
  }
  brc_test::JoinBlocking(ta);
  brc_test::JoinBlocking(tb);
  (void)Must(brc::Collect());
  INFO("main-thread stops: " << stops);
  CHECK(a.destroyed.load() == kChain);
  CHECK(b.destroyed.load() == kChain);
}

// Tries: frees parked inside a merge pass (the dead per-thread-counted objects it drops after
// its restart), while the main thread runs its own merge passes, a collection and a stop. The
// pass's dead list is private to the parked thread; another pass must not find those objects
// dead again.
TEST_CASE("Probe ParkableFrees frees inside a merge pass of per-thread counts", "[stw-probe]") {
  BRC_TEST_SEED(seed);
  brc_test::Manual manual;
  brc::ThreadScope attach;
  LiveCycle cycle;  // collections take the counting path
  constexpr int kN = 30;
  Shared items;
  Holds holds({3, 17});
  items.on_destroy = &holds;
  std::atomic<bool> switched{false}, done{false}, switch_failed{false};
  std::thread passer([&] {
    brc::ThreadScope attach_passer;
    holds.tid.store(brc::CurrentThreadId());
    std::vector<brc::Ref<Item>> refs;
    for (int i = 0; i < kN; ++i) {
      refs.push_back(brc::Make<Item>(&items, i));
      if (!brc::CountPerThread(refs.back().get()).ok()) switch_failed.store(true);
    }
    switched.store(true);
    brc::ParkableFrees parkable;
    refs.clear();  // counted per thread: freed only by a pass
    (void)brc::MergePerThreadCounts();
    brc::Safepoint();
    done.store(true);
  });
  WorkerFailures failures;
  int held = 0;
  for (int k = 1; k <= 2; ++k) {
    if (!holds.Reached(k)) break;
    ++held;
    failures.Expect(brc::MergePerThreadCounts().ok());
    (void)Must(brc::Collect());
    ExpectFrozen(items.destroyed, &failures);
  }
  JoinWithin(passer, done, "the merge-pass freer", seed);
  (void)brc::MergePerThreadCounts();
  CHECK(switched.load());
  CHECK_FALSE(switch_failed.load());
  CHECK(held == 2);
  CHECK_FALSE(holds.timed_out.load());
  CHECK(failures.count.load() == 0);
  CHECK(items.destroyed.load() == kN);
}

// Tries: a drop caught in flight. A thread drops the last outside reference to a tracked
// two-object cycle whose owner has blocked: BufferHandoff first pushes the buffer it already
// holds for that owner (PushBuffer, merged on the owner's behalf), and a free of that push
// parks, while the dropped reference is on the stack, in no queue and no buffer (the object
// reads "queued"). The collection run meanwhile must count that pending entry exactly: it finds
// the cycle garbage, and the cycle's members are each freed once (by the collector's last
// decrement or by the in-flight merge, whichever comes last).
TEST_CASE("Probe a collection while a parked thread holds a dropped reference in flight",
          "[stw-probe]") {
  BRC_TEST_SEED(seed);
  brc_test::Manual manual;
  brc::ThreadScope attach;
  (void)Must(brc::Collect());
  constexpr int kFill = 20;
  Shared fill, cycle;
  Holds holds({0});
  fill.on_destroy = &holds;
  std::vector<TItem*> raw(kFill, nullptr);
  TItem* head = nullptr;
  std::atomic<int> owner_cmd{0};
  std::atomic<bool> made{false}, blocked{false}, owner_done{false};
  std::thread owner([&] {
    brc::ThreadScope attach_owner;
    for (int i = 0; i < kFill; ++i) raw[static_cast<std::size_t>(i)] = brc::Make<TItem>(&fill, i).Release();
    brc::Ref<TItem> a = brc::Make<TItem>(&cycle, 0);
    a->next = brc::Make<TItem>(&cycle, 1);
    a->next->next = a;
    head = a.Release();
    made.store(true);
    while (owner_cmd.load() == 0) brc::Safepoint();
    {
      brc::BlockingScope blocking;
      blocked.store(true);
      while (owner_cmd.load() == 1) std::this_thread::yield();
    }
    owner_done.store(true);
  });
  std::atomic<bool> dropped{false}, dropper_done{false};
  std::thread dropper([&] {
    brc::ThreadScope attach_dropper;
    holds.tid.store(brc::CurrentThreadId());
    (void)Await([&] { return made.load(); });
    brc::Ref<TItem> last = brc::Ref<TItem>::Adopt(head);
    {
      std::vector<brc::Ref<TItem>> refs;
      for (TItem* t : raw) refs.push_back(brc::Ref<TItem>::Adopt(t));
    }  // buffered for the attached owner
    dropped.store(true);
    auto end = Clock::now() + std::chrono::seconds(60);
    while (!blocked.load() && Clock::now() < end) std::this_thread::yield();  // no safepoint
    {
      brc::ParkableFrees parkable;
      last = nullptr;  // in flight while the buffer's push frees (and parks)
    }
    brc::Safepoint();
    dropper_done.store(true);
  });
  if (!Await([&] { return dropped.load(); })) Hung("the in-flight dropper", seed);
  owner_cmd.store(1);
  bool held = holds.Reached(1);
  brc::CollectResult r = Must(brc::Collect());
  JoinWithin(dropper, dropper_done, "the in-flight dropper", seed);
  owner_cmd.store(2);
  JoinWithin(owner, owner_done, "the blocked owner", seed);
  brc::CollectResult again = Must(brc::Collect());
  INFO("first collection took " << r.collected << ", the second " << again.collected);
  CHECK(held);
  CHECK_FALSE(holds.timed_out.load());
  CHECK(fill.destroyed.load() == kFill);
  CHECK(cycle.destroyed.load() == 2);
  CHECK(r.collected + again.collected == 2u);
}
