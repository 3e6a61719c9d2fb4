// The re-entrancy matrix's table and the calls made from inside a hook (see reentrancy.h).
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "reentrancy.h"
#include "test_util.h"

namespace brc_reentrancy {

// Columns: Make, drop last ref, WeakRef + Lock, WeakRef to self, ThreadScope, BlockingScope,
// Safepoint, Collect, StopTheWorld, SetAllocator, ReleaseFreeMemory, GetReferrers, Freeze,
// MakeImmortal, ParkableFrees (the order of Call).
const std::vector<Row>& Rows() {
  static const std::vector<Row> rows = {
      {Hook::kConstructor, Path::kOwner, "constructor", "Make of a leaf type",
       {W, W, W, W, W, W, W, W, W, FP(kAlive), W, W, W, W, W}},
      {Hook::kConstructor, Path::kOwnerTracked, "constructor", "Make of a tracked type",
       {W, W, W, W, W, W, W, W, W, FP(kAlive), W, W, W, W, W}},

      {Hook::kDestructor, Path::kOwner, "destructor", "owner drops the last reference",
       {W, W, W, Fatal(kZeroIncref), W, W, W, W, W, FP(kAlive), W, W, W, W, W}},
      {Hook::kDestructor, Path::kDrainSafepoint, "destructor", "queue drain at Safepoint()",
       {W, W, W, Fatal(kZeroIncref), W, W, W, W, W, FP(kAlive), W, W, W, W, W}},
      {Hook::kDestructor, Path::kDrainBlocking, "destructor", "queue drain entering a BlockingScope",
       {W, W, W, Fatal(kZeroIncref), W, W, W, W, W, FP(kAlive), W, W, W, W, W}},
      {Hook::kDestructor, Path::kDrainDetach, "destructor", "queue drain at ThreadScope end",
       {W, W, W, Fatal(kZeroIncref), W, W, W, W, W, FP(kAlive), W, W, W, W, W}},
      {Hook::kDestructor, Path::kDrainExit, "destructor", "queue drain at thread exit",
       {W, W, W, Fatal(kZeroIncref), W, W, W, W, W, FP(kAlive), W, W, W, W, W}},
      {Hook::kDestructor, Path::kOnBehalf, "destructor", "a drop merged for a blocked owner",
       {W, W, W, Fatal(kZeroIncref), W, W, W, W, W, FP(kAlive), W, W, W, W, W}},
      {Hook::kDestructor, Path::kCollectOwn, "destructor", "Collect() frees own garbage",
       {W, W, W, Fatal(kZeroIncref), W, W, W, FP(kNested), W, FP(kAlive), W, W, FP(kNested), W, W}},
      {Hook::kDestructor, Path::kCollectOther, "destructor", "Collect() frees a blocked thread's garbage",
       {W, W, W, Fatal(kZeroIncref), W, W, W, FP(kNested), W, FP(kAlive), W, W, FP(kNested), W, W}},
      {Hook::kDestructor, Path::kAutoCollect, "destructor", "automatic collection inside Make",
       {W, W, W, Fatal(kZeroIncref), W, W, W, FP(kNested), W, FP(kAlive), W, W, FP(kNested), W, W}},

      {Hook::kFinalize, Path::kCollectOwn, "Finalize()", "Collect() of own garbage",
       {W, W, W, W, W, W, W, FP("from Finalize()"), W, FP(kAlive), W, W, FP("from Finalize()"), W, W}},
      {Hook::kFinalize, Path::kCollectOther, "Finalize()", "Collect() of a blocked thread's garbage",
       {W, W, W, W, W, W, W, FP("from Finalize()"), W, FP(kAlive), W, W, FP("from Finalize()"), W, W}},
      {Hook::kFinalize, Path::kAutoCollect, "Finalize()", "automatic collection inside Make",
       {W, W, W, W, W, W, W, FP("from Finalize()"), W, FP(kAlive), W, W, FP("from Finalize()"), W, W}},

      {Hook::kClear, Path::kCollectOwn, "Clear()", "Collect() of own garbage",
       {W, W, W, W, W, W, W, FP("from Clear()"), W, FP(kAlive), W, W, FP("from Clear()"), W, W}},
      {Hook::kClear, Path::kCollectOther, "Clear()", "Collect() of a blocked thread's garbage",
       {W, W, W, W, W, W, W, FP("from Clear()"), W, FP(kAlive), W, W, FP("from Clear()"), W, W}},
      {Hook::kClear, Path::kAutoCollect, "Clear()", "automatic collection inside Make",
       {W, W, W, W, W, W, W, FP("from Clear()"), W, FP(kAlive), W, W, FP("from Clear()"), W, W}},

      {Hook::kWeakCallback, Path::kOwner, "weak callback", "owner drops the last reference",
       {W, W, W, NA, W, W, W, W, W, FP(kAlive), W, W, W, W, W}},
      {Hook::kWeakCallback, Path::kDrainSafepoint, "weak callback", "queue drain at Safepoint()",
       {W, W, W, NA, W, W, W, W, W, FP(kAlive), W, W, W, W, W}},
      {Hook::kWeakCallback, Path::kDrainBlocking, "weak callback", "queue drain entering a BlockingScope",
       {W, W, W, NA, W, W, W, W, W, FP(kAlive), W, W, W, W, W}},
      {Hook::kWeakCallback, Path::kDrainDetach, "weak callback", "queue drain at ThreadScope end",
       {W, W, W, NA, W, W, W, W, W, FP(kAlive), W, W, W, W, W}},
      {Hook::kWeakCallback, Path::kDrainExit, "weak callback", "queue drain at thread exit",
       {W, W, W, NA, W, W, W, W, W, FP(kAlive), W, W, W, W, W}},
      {Hook::kWeakCallback, Path::kOnBehalf, "weak callback", "a drop merged for a blocked owner",
       {W, W, W, NA, W, W, W, W, W, FP(kAlive), W, W, W, W, W}},
      {Hook::kWeakCallback, Path::kCollectOwn, "weak callback", "Collect() of own garbage",
       {W, W, W, NA, W, W, W, FP("from a weak-reference callback"), W, FP(kAlive), W, W,
        FP("from a weak-reference callback"), W, W}},
      {Hook::kWeakCallback, Path::kCollectOther, "weak callback", "Collect() of a blocked thread's garbage",
       {W, W, W, NA, W, W, W, FP("from a weak-reference callback"), W, FP(kAlive), W, W,
        FP("from a weak-reference callback"), W, W}},
      {Hook::kWeakCallback, Path::kAutoCollect, "weak callback", "automatic collection inside Make",
       {W, W, W, NA, W, W, W, FP("from a weak-reference callback"), W, FP(kAlive), W, W,
        FP("from a weak-reference callback"), W, W}},

      {Hook::kCollectCallback, Path::kCollectStart, "collection callback", "Collect(), kStart",
       {W, W, W, NA, W, W, W, FP("from a collection callback"), W, FP(kAlive), W, W,
        FP("from a collection callback"), W, W}},
      {Hook::kCollectCallback, Path::kCollectStop, "collection callback", "Collect(), kStop",
       {W, W, W, NA, W, W, W, FP("from a collection callback"), W, FP(kAlive), W, W,
        FP("from a collection callback"), W, W}},
      {Hook::kCollectCallback, Path::kAutoCollect, "collection callback", "automatic collection inside Make",
       {W, W, W, NA, W, W, W, FP("from a collection callback"), W, FP(kAlive), W, W,
        FP("from a collection callback"), W, W}},

      {Hook::kWatchdog, Path::kStopping, "stop watchdog handler", "StopTheWorld, a thread late",
       {W, W, W, NA, W, W, W, FP(kStopped), Fatal(kStopsNest), FP(kWatchdogRefused), W,
        Fatal(kWatchdogRefused), FP(kStopped), W, W}},

      {Hook::kAllocate, Path::kAllocObject, "Allocator::Allocate", "an object's memory (Make)",
       {W, W, W, NA, W, W, W, W, W, FP(kAlive), W, W, W, W, W}},
      {Hook::kAllocate, Path::kAllocPage, "Allocator::Allocate", "a collector page (Make, tracked)",
       {W, W, W, NA, W, W, W, W, W, FP(kAlive), W, W, W, W, W}},
      {Hook::kAllocate, Path::kAllocQueue, "Allocator::Allocate", "merge-queue memory (a drop)",
       {W, W, W, NA, W, W, W, W, W, FP(kAlive), W, W, W, W, W}},
      {Hook::kAllocate, Path::kAllocCollector, "Allocator::Allocate", "the collector's lists (world stopped)",
       {W, W, W, NA, W, W, W, FP(kStopped), Fatal(kStopsNest), FP(kAlive), W,
        Fatal(kCollectorWalking), FP(kStopped), W, W}},
      {Hook::kDeallocate, Path::kFreeCollector, "Allocator::Deallocate", "the collector's lists (world stopped)",
       {W, W, W, NA, W, W, W, FP(kStopped), Fatal(kStopsNest), FP(kAlive), W,
        Fatal(kCollectorWalking), FP(kStopped), W, W}},
      {Hook::kDeallocate, Path::kDeallocObject, "Allocator::Deallocate", "an object's memory (a drop)",
       {W, W, W, NA, W, W, W, W, W, FP(kAlive), W, W, W, W, W}},
  };
  return rows;
}

void Fail(const std::string& msg) {
  std::lock_guard<std::mutex> lock(g->mu);
  g->failures.push_back(msg);
}
void Check(bool ok, const std::string& msg) {
  if (!ok) Fail(msg);
}

// Bounded wait on a flag, without reaching a safepoint (the owner threads of the drain paths
// must not drain before the test says so).
bool WaitFor(const std::atomic<bool>& flag) {
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(kWaitSeconds);
  while (!flag.load()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::yield();
  }
  return true;
}
void Prepare() { g->prep = std::make_unique<Prepared>(); }

void CheckStatus(const absl::Status& s) {
  const Expect& e = g->expect;
  switch (e.kind) {
    case Expect::kWorks:
      Check(s.ok(), "expected OK, got " + s.ToString());
      break;
    case Expect::kStatus:
      Check(s.code() == e.code && std::string(s.message()).find(e.text) != std::string::npos,
            "expected " + absl::StatusCodeToString(e.code) + " mentioning \"" + e.text +
                "\", got " + s.ToString());
      break;
    case Expect::kFatal:
      Fail("expected a fatal report, got the status " + s.ToString());
      break;
    default:
      break;
  }
}

// kParkableFrees: drops the last reference to the prepared chain inside a ParkableFrees scope.
// Where it can, it first has a helper thread request a stop of the world and waits until the
// request waits for this thread, so that the cascade's first free must park; the helper's stop
// completing before the drop returns shows that it did. It cannot where this thread holds the
// world stopped (a collection, the allocator under one: the poll is skipped there) or is itself
// requesting a stop (the watchdog handler): a second stop waits for that one to end.
void DropChainParkable(Prepared& p) {
  bool arrange = brc::IsAttached() && !brc::IsWorldStoppedByThisThread() &&
                 g->row->hook != Hook::kWatchdog;
  std::atomic<bool> stopped{false};
  std::thread helper;
  if (arrange) {
    helper = std::thread([&] {
      brc::ThreadScope attach;
      brc::StopTheWorld stop;
      stopped.store(true);
    });
    // No safepoint meanwhile: this thread must still be unparked when the cascade starts.
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(kWaitSeconds);
    while (!brc::testing::StopRequestedForTesting() && std::chrono::steady_clock::now() < end) {
      std::this_thread::yield();
    }
    Check(brc::testing::StopRequestedForTesting(), "the helper's stop waits for this thread");
  }
  {
    brc::ParkableFrees parkable;
    p.chain = nullptr;
  }
  // A hook that runs inside a free (a destructor, a weak callback, Deallocate) is already some
  // frees deep: frees past 64 deep wait for the outermost free (bounded stack, lib/refcount.cc),
  // so part of the chain is freed after the hook returns; RunCellInChild checks the whole.
  bool inside_free = g->row->hook == Hook::kDestructor || g->row->hook == Hook::kWeakCallback ||
                     g->row->hook == Hook::kDeallocate;
  int freed = p.chain_destroyed.load();
  Check(inside_free ? freed > 0 : freed == kChainLength,
        "the chain's cascade ran (" + std::to_string(freed) + " of " +
            std::to_string(kChainLength) + " links freed in the hook)");
  // Inside a queue drain the thread parks only once the drain is complete (its next safepoint;
  // here the BlockingScope of the join lets the stop through).
  bool in_drain = g->row->path == Path::kDrainSafepoint || g->row->path == Path::kDrainBlocking ||
                  g->row->path == Path::kDrainDetach || g->row->path == Path::kDrainExit;
  if (arrange) {
    Check(in_drain || stopped.load(),
          "the cascade parked for the pending stop (the stop completed before the drop returned)");
    brc_test::JoinBlocking(helper);
    Check(stopped.load(), "the helper's stop completed");
  }
}

// The call under test, made from inside the hook. `self` is the object whose hook runs
// (nullptr where there is none).
void RunCall(brc::Object* self) {
  Prepared& p = *g->prep;
  switch (g->call) {
    case Call::kMake: {
      brc::Ref<Leaf> a = brc::Make<Leaf>();
      brc::Ref<Node> b = brc::Make<Node>();
      Check(a->value == 7 && b->next == nullptr, "Make returned a usable object");
      break;
    }
    case Call::kDropLast: {
      p.victim = nullptr;
      Check(p.victim_destroyed.load() == 1, "the victim was freed by its last drop");
      break;
    }
    case Call::kWeak: {
      std::atomic<int> callbacks{0};
      brc::WeakRef<Leaf> w(p.weak_target, [&] { callbacks.fetch_add(1); });
      brc::Ref<Leaf> locked = w.Lock();
      Check(locked == p.weak_target, "Lock() returned the live target");
      locked = nullptr;
      p.weak_target = nullptr;
      Check(callbacks.load() == 1, "the weak callback ran once when its target was freed");
      Check(w.expired() && w.Lock() == nullptr, "the WeakRef reads expired after the free");
      break;
    }
    case Call::kWeakSelf: {
      brc::WeakRef<brc::Object> w(brc::Ref<brc::Object>::NewRef(self));
      brc::Ref<brc::Object> locked = w.Lock();
      Check(locked.get() == self, "Lock() on a WeakRef to the running object returned it");
      locked = nullptr;
      g->self_weak = std::move(w);
      break;
    }
    case Call::kThreadScope: {
      uint32_t id = brc::CurrentThreadId();
      {
        brc::ThreadScope nested;
        Check(brc::IsAttached() && brc::CurrentThreadId() == id, "nested scope: same id");
        brc::Ref<Leaf> x = brc::Make<Leaf>();
      }
      Check(brc::IsAttached() && brc::CurrentThreadId() == id,
            "still attached, same id, after the nested ThreadScope");
      brc::Ref<Leaf> y = brc::Make<Leaf>();
      break;
    }
    case Call::kBlockingScope: {
      {
        brc::BlockingScope blocking;
        Check(brc::IsAttached(), "attached inside the BlockingScope");
      }
      brc::Ref<Leaf> y = brc::Make<Leaf>();  // counting works again after it
      break;
    }
    case Call::kSafepoint: {
      brc::Safepoint();
      brc::Ref<Leaf> y = brc::Make<Leaf>();
      break;
    }
    case Call::kCollect: {
      // Both kinds: the fresh cycle is young, so a young collection finds it as well.
      for (bool young : {true, false}) {
        {
          brc::Ref<Node> a = brc::Make<Node>();
          brc::Ref<Node> b = brc::Make<Node>();
          a->next = b;
          b->next = a;
        }
        absl::StatusOr<brc::CollectResult> r = young ? brc::CollectYoung() : brc::Collect();
        CheckStatus(r.status());
        if (r.ok()) {
          std::string what = young ? "CollectYoung()" : "Collect()";
          Check(r->unreachable == 2 && r->collected == 2,
                what + " found and freed exactly the fresh garbage cycle (unreachable " +
                    std::to_string(r->unreachable) + ", collected " +
                    std::to_string(r->collected) + ")");
        }
      }
      break;
    }
    case Call::kStopTheWorld: {
      {
        brc::StopTheWorld stop;
        Check(brc::IsWorldStoppedByThisThread(), "the world is stopped inside StopTheWorld");
      }
      Check(!brc::IsWorldStoppedByThisThread(), "the world runs again after StopTheWorld");
      break;
    }
    case Call::kSetAllocator: {
      brc::Allocator* before = &brc::GetAllocator();
      absl::Status s = brc::SetAllocator(&brc::MallocAllocator());
      CheckStatus(s);
      if (s.ok()) (void)brc::SetAllocator(before);
      Check(&brc::GetAllocator() == before, "the allocator did not change");
      break;
    }
    case Call::kReleaseFreeMemory: {
      brc::ReleaseFreeMemory();
      brc::Ref<Leaf> y = brc::Make<Leaf>();
      brc::Ref<Node> z = brc::Make<Node>();
      break;
    }
    case Call::kGetReferrers: {
      std::vector<brc::Ref<brc::Object>> v = brc::GetReferrers(p.target.get());
      Check(v.size() == 1 && v[0].get() == p.holder.get(),
            "GetReferrers found the one referrer (found " + std::to_string(v.size()) + ")");
      break;
    }
    case Call::kFreeze: {
      absl::StatusOr<uint64_t> n = brc::Freeze();
      CheckStatus(n.status());
      if (n.ok()) {
        Check(*n >= 2, "Freeze() froze the live tracked objects");
        absl::StatusOr<uint64_t> u = brc::Unfreeze();
        Check(u.ok() && *u == *n, "Unfreeze() returned what Freeze() froze");
      }
      break;
    }
    case Call::kMakeImmortal: {
      Leaf* raw = p.immortal.get();
      brc::MakeImmortal(raw);
      Check(brc::IsImmortal(raw), "MakeImmortal made the object immortal");
      p.immortal = nullptr;
      Check(g->immortal_destroyed.load() == 0, "an immortal object survives its last drop");
      g->immortals.push_back(raw);
      break;
    }
    case Call::kParkableFrees:
      DropChainParkable(p);
      break;
  }
  g->returned.store(true);
}

// Every hook calls this; only the first call in a cell runs the call under test.
void FireHook(brc::Object* self) {
  if (g->fired.fetch_add(1) != 0) {
    Fail("the hook ran more than once");
    return;
  }
  g->hook_tid.store(brc::CurrentThreadId());
  std::fprintf(stderr, "hook: thread %u, world stopped by this thread: %d\n",
               brc::CurrentThreadId(), brc::IsWorldStoppedByThisThread() ? 1 : 0);
  RunCall(self);
}

}  // namespace brc_reentrancy
