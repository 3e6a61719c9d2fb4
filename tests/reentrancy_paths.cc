// The paths that run the re-entrancy matrix's hooks, and the body of one cell in the child
// (see reentrancy.h).
#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "reentrancy.h"
#include "test_util.h"

namespace brc_reentrancy {

// ---- the paths that run the hooks ----

// The owner made `refs` (their only references); a second attached thread drops them in
// order, so each is queued back to the owner, which has not drained yet.
void DropOnOtherThread(std::vector<brc::Ref<brc::Object>>& refs) {
  std::thread t([&] {
    brc::ThreadScope attach;
    for (auto& r : refs) r = nullptr;
  });
  t.join();  // not in a BlockingScope: entering one would drain the owner's queue now
}

// Runs `make` on a fresh attached thread W, hands what it returns to this thread, which drops
// it (queued to W), and lets W detach (ThreadScope end, or thread exit while attached): W's
// detach drains its queue and so runs the hook.
void DriveDetach(bool via_exit, const std::function<std::vector<brc::Ref<brc::Object>>()>& make) {
  std::vector<brc::Ref<brc::Object>> mailbox;
  std::atomic<bool> ready{false}, dropped{false};
  std::thread w([&] {
    auto body = [&] {
      Prepare();
      mailbox = make();
      std::size_t n = mailbox.size();
      ready.store(true);
      Check(WaitFor(dropped), "timed out waiting for the hand-off");
      Check(brc::testing::QueuedObjectsForTesting(brc::CurrentThreadId()) == n,
            "the dropped objects wait in the owner's queue");
    };
    if (via_exit) {
      brc::AttachCurrentThread();  // never detached by hand: the thread exits attached
      body();
    } else {
      brc::ThreadScope attach;
      body();
    }
  });
  Check(WaitFor(ready), "timed out waiting for the owner thread");
  for (auto& r : mailbox) r = nullptr;
  brc::Safepoint();  // pushes this thread's hand-off buffer: queued to W
  dropped.store(true);
  brc_test::JoinBlocking(w);  // the hook may stop the world
}

// Runs `make_garbage` on a helper thread that then waits in a BlockingScope while this thread
// collects its garbage.
void DriveCollectOther(const std::function<void()>& make_garbage) {
  std::atomic<bool> ready{false}, release{false};
  std::thread h([&] {
    brc::ThreadScope attach;
    make_garbage();
    ready.store(true);
    brc::BlockingScope blocking;
    Check(WaitFor(release), "timed out waiting for the collection");
  });
  Check(WaitFor(ready), "timed out waiting for the garbage");
  Prepare();
  Check(brc::Collect().ok(), "the driving Collect() works");
  release.store(true);
  brc_test::JoinBlocking(h);
}

// Makes tracked allocations until an automatic collection has run the hook.
void DriveAutoCollect() {
  Check(brc::SetCollectorConfig({.young_threshold = 1, .full_ratio = 0, .workers = 1}).ok(),
        "SetCollectorConfig for an automatic collection");
  brc::EnableCollector();
  for (int i = 0; i < 64 * 20 && g->fired.load() == 0; ++i) brc::Ref<Node> n = brc::Make<Node>();
  brc::DisableCollector();
  (void)brc::SetCollectorConfig({});
}

void MustCollect() {
  absl::StatusOr<brc::CollectResult> r = brc::Collect();
  Check(r.ok(), "the driving Collect() works: " + r.status().ToString());
}

brc::Ref<DtorLeaf> ArmedDtorLeaf() {
  brc::Ref<DtorLeaf> h = brc::Make<DtorLeaf>();
  h->armed = true;
  return h;
}

// A self-cycle of T, dropped: garbage for the collector.
template <class T>
brc::Object* MakeGarbage(bool arm = false) {
  brc::Ref<T> n = brc::Make<T>();
  if constexpr (std::is_same_v<T, DtorNode>) n->armed = arm;
  n->next = n;
  return n.get();
}

// The weak-callback hook: a WeakRef with a callback, kept alive beyond the target's free.
std::unique_ptr<brc::WeakRef<brc::Object>> g_hook_weak;
void WatchWithHook(const brc::Ref<brc::Object>& target) {
  g_hook_weak = std::make_unique<brc::WeakRef<brc::Object>>(target, [] { FireHook(nullptr); });
}

void Drive(const Row& row) {
  auto drain_objects = [&]() -> std::vector<brc::Ref<brc::Object>> {
    std::vector<brc::Ref<brc::Object>> refs;
    if (row.hook == Hook::kDestructor) {
      refs.push_back(ArmedDtorLeaf());
    } else {
      brc::Ref<brc::Object> target = brc::Make<Leaf>();
      WatchWithHook(target);
      refs.push_back(std::move(target));
    }
    refs.push_back(brc::Make<Leaf>());  // the rest of the batch
    refs.push_back(brc::Make<Leaf>());
    return refs;
  };
  auto tracked_garbage = [&] {
    if (row.hook == Hook::kDestructor) {
      MakeGarbage<DtorNode>(true);
    } else if (row.hook == Hook::kFinalize) {
      MakeGarbage<FinNode>();
    } else if (row.hook == Hook::kClear) {
      MakeGarbage<ClearNode>();
    } else {
      brc::Ref<Node> n = brc::Make<Node>();
      n->next = n;
      WatchWithHook(n);
    }
  };
  switch (row.path) {
    case Path::kOwner:
      Prepare();
      if (row.hook == Hook::kConstructor) {
        brc::Ref<CtorLeaf> x = brc::Make<CtorLeaf>();
      } else if (row.hook == Hook::kDestructor) {
        brc::Ref<DtorLeaf> h = ArmedDtorLeaf();
      } else {  // weak callback
        brc::Ref<brc::Object> target = brc::Make<Leaf>();
        WatchWithHook(target);
      }
      break;
    case Path::kOwnerTracked: {
      Prepare();
      brc::Ref<CtorNode> x = brc::Make<CtorNode>();
      break;
    }
    case Path::kDrainSafepoint:
    case Path::kDrainBlocking: {
      Prepare();
      std::vector<brc::Ref<brc::Object>> refs = drain_objects();
      DropOnOtherThread(refs);
      Check(brc::testing::QueuedObjectsForTesting(brc::CurrentThreadId()) == 3,
            "the dropped objects wait in the owner's queue");
      if (row.path == Path::kDrainSafepoint) {
        brc::Safepoint();
      } else {
        brc::BlockingScope blocking;
      }
      break;
    }
    case Path::kDrainDetach:
    case Path::kDrainExit:
      DriveDetach(row.path == Path::kDrainExit, drain_objects);
      break;
    case Path::kOnBehalf: {
      // This thread owns the objects and blocks; the other thread's drops then merge on its
      // behalf and free them there, running the hook on the other thread.
      std::vector<brc::Ref<brc::Object>> refs = drain_objects();
      std::atomic<bool> owner_blocked{false}, done{false};
      uint32_t owner = brc::CurrentThreadId();
      std::thread t([&] {
        brc::ThreadScope attach;
        Prepare();
        Check(WaitFor(owner_blocked), "timed out waiting for the owner to block");
        for (auto& r : refs) r = nullptr;
        Check(g->hook_tid.load() == brc::CurrentThreadId() && g->hook_tid.load() != owner,
              "the hook ran on the dropping thread, for the blocked owner");
        done.store(true);
      });
      {
        brc::BlockingScope blocking;
        owner_blocked.store(true);
        Check(WaitFor(done), "timed out waiting for the drops");
      }
      brc_test::JoinBlocking(t);
      break;
    }
    case Path::kCollectOwn:
      Prepare();
      tracked_garbage();
      MustCollect();
      break;
    case Path::kCollectOther:
      DriveCollectOther(tracked_garbage);
      break;
    case Path::kAutoCollect: {
      Prepare();
      uint64_t id = 0;
      if (row.hook == Hook::kCollectCallback) {
        id = brc::AddCollectCallback([](brc::CollectPhase phase, const brc::CollectResult&) {
          if (phase == brc::CollectPhase::kStop) FireHook(nullptr);
        });
      } else {
        tracked_garbage();
      }
      DriveAutoCollect();
      if (id != 0) brc::RemoveCollectCallback(id);
      break;
    }
    case Path::kCollectStart:
    case Path::kCollectStop: {
      Prepare();
      auto want = row.path == Path::kCollectStart ? brc::CollectPhase::kStart
                                                  : brc::CollectPhase::kStop;
      uint64_t id =
          brc::AddCollectCallback([want](brc::CollectPhase phase, const brc::CollectResult&) {
            if (phase == want) FireHook(nullptr);
          });
      MustCollect();
      brc::RemoveCollectCallback(id);
      break;
    }
    case Path::kStopping: {
      Prepare();
      std::atomic<bool> started{false}, release{false};
      // Attached, but busy where it reaches no safepoint until the handler lets it go.
      std::thread late([&] {
        brc::ThreadScope attach;
        started.store(true);
        Check(WaitFor(release), "timed out waiting for the watchdog handler");
        brc::Safepoint();
      });
      Check(WaitFor(started), "timed out waiting for the late thread");
      std::atomic<bool> handled{false};
      Check(brc::SetStopWatchdog(absl::Milliseconds(1),
                                 [&](const brc::LaggingThread&) {
                                   if (!handled.exchange(true)) FireHook(nullptr);
                                   release.store(true);
                                 })
                .ok(),
            "SetStopWatchdog");
      {
        brc::StopTheWorld stop;
      }
      (void)brc::SetStopWatchdog(absl::Seconds(1), nullptr);
      release.store(true);
      brc_test::JoinBlocking(late);
      break;
    }
    case Path::kAllocObject: {
      Prepare();
      TheHookAllocator().ArmFor(HookAllocator::kObjectSize, sizeof(AllocMarker));
      brc::Ref<AllocMarker> m = brc::Make<AllocMarker>();
      break;
    }
    case Path::kAllocPage: {
      Prepare();
      TheHookAllocator().ArmFor(HookAllocator::kPageOnThread);
      brc::Ref<BigNode> m = brc::Make<BigNode>();
      break;
    }
    case Path::kAllocQueue: {
      // This thread owns `victim`; another thread drops it, and that push needs queue memory
      // (released beforehand), so the allocator runs inside the push, on the other thread.
      // This thread stays attached (not blocked) meanwhile, so the drop queues rather than
      // merging on its behalf; it polls its safepoint, since the hook may stop the world.
      brc::Ref<Leaf> victim = brc::Make<Leaf>();
      brc::testing::ReleaseQueueMemoryForTesting();
      std::atomic<bool> dropped{false};
      std::thread t([&] {
        brc::ThreadScope attach;
        Prepare();
        TheHookAllocator().ArmFor(HookAllocator::kAnyOnThread);
        victim = nullptr;   // buffered for the owner (lib/handoff.cc)
        brc::Safepoint();   // the push, while the owner is still attached
        dropped.store(true);
      });
      auto end = std::chrono::steady_clock::now() + std::chrono::seconds(kWaitSeconds);
      while (!dropped.load() && std::chrono::steady_clock::now() < end) {
        brc::Safepoint();
        std::this_thread::yield();
      }
      Check(dropped.load(), "timed out waiting for the other thread's drop");
      brc_test::JoinBlocking(t);
      break;
    }
    case Path::kAllocCollector:
    case Path::kFreeCollector: {
      // Several collector pages, so that the collector's page list grows (and frees its old
      // buffer) while it is built: with the world stopped.
      Prepare();
      std::vector<brc::Ref<BigNode>> pages;
      for (int i = 0; i < 6; ++i) pages.push_back(brc::Make<BigNode>());
      TheHookAllocator().ArmFor(row.path == Path::kAllocCollector ? HookAllocator::kAnyOnThread
                                                                  : HookAllocator::kFreeAnyOnThread);
      MustCollect();
      TheHookAllocator().ArmFor(HookAllocator::kNone);
      break;
    }
    case Path::kDeallocObject: {
      Prepare();
      brc::Ref<AllocMarker> m = brc::Make<AllocMarker>();
      TheHookAllocator().ArmFor(HookAllocator::kFreeSize, sizeof(AllocMarker));
      m = nullptr;
      // BRC_DEBUG keeps freed memory in a quarantine: push the marker out of it.
      std::size_t flush = brc::testing::QuarantineCapacityForTesting() + 16;
      for (std::size_t i = 0; i < flush && g->fired.load() == 0; ++i) {
        brc::Ref<AllocMarker> x = brc::Make<AllocMarker>();
      }
      break;
    }
  }
}

bool IsAllocatorRow(const Row& row) {
  return row.hook == Hook::kAllocate || row.hook == Hook::kDeallocate;
}

// The body of one cell, in the child. Returns 0 when every check held. Cells of a row may run
// one after another in the same child: each starts from what the previous one left, and its
// checks compare with that.
int RunCellInChild(const Row& row, Call call) {
  g = new CellState();  // never freed: a hook on another thread may still read the old one
  g->row = &row;
  g->call = call;
  g->expect = row.cells[static_cast<int>(call)];
  {
    brc::ThreadScope attach;
    brc::DisableCollector();
    if (IsAllocatorRow(row)) {
      absl::Status s = brc::SetAllocator(&TheHookAllocator());
      if (!s.ok()) {
        std::fprintf(stderr, "cannot install the hook allocator: %s\n", s.ToString().c_str());
        return 2;
      }
    }
    TheHookAllocator().ArmFor(HookAllocator::kNone);
    int64_t live_before = brc::GetStats().live_objects();
    int alive_before = g_alive.load();
    brc::Ref<Leaf> keepalive = brc::Make<Leaf>();  // SetAllocator must always refuse
    Drive(row);
    Check(g->fired.load() == 1, "the hook ran exactly once (ran " +
                                    std::to_string(g->fired.load()) + " times)");
    Check(g->returned.load(), "the call returned to the hook");
    // The prepared objects' counts are exact again (nothing running now touches them): one
    // reference each from `prep`, and the holder's one more on the target.
    if (Prepared* p = g->prep.get()) {
      auto count_is = [](const brc::Object* ob, int64_t want, const char* what) {
        if (ob == nullptr) return;
        int64_t got = brc::GetRefCount(ob);
        Check(got == want, std::string("reference count of ") + what + " is " +
                               std::to_string(want) + " (got " + std::to_string(got) + ")");
      };
      count_is(p->victim.get(), 1, "the victim");
      count_is(p->weak_target.get(), 1, "the weak target");
      count_is(p->holder.get(), 1, "the referrer");
      count_is(p->target.get(), 2, "the referenced object");
      count_is(p->immortal.get(), 1, "the object for MakeImmortal");
      if (call == Call::kParkableFrees) {
        Check(p->chain == nullptr && p->chain_destroyed.load() == kChainLength,
              "the chain was freed, every link once (" +
                  std::to_string(p->chain_destroyed.load()) + " of " +
                  std::to_string(kChainLength) + ")");
      }
    }
    // Clean up, then look for corruption.
    g->prep.reset();
    g_hook_weak.reset();
    keepalive = nullptr;
    for (brc::Object* ob : g->immortals) brc::testing::FreeImmortalForTesting(ob);
    Check(g->immortal_destroyed.load() == 1,
          "the object for MakeImmortal was freed once (by FreeImmortalForTesting if immortal)");
    brc::Safepoint();
    absl::StatusOr<brc::CollectResult> r = brc::Collect();
    Check(r.ok(), "a Collect() after the cell works: " + r.status().ToString());
    brc::Safepoint();
    Check(g->self_weak.expired(), "the WeakRef to the hook's object reads expired at the end");
    g->self_weak = brc::WeakRef<brc::Object>();
    Check(g_alive.load() == alive_before,
          "every test object was freed (" + std::to_string(g_alive.load() - alive_before) +
              " still alive)");
    Check(brc::GetStats().live_objects() == live_before,
          "brc's live-object count is back (" + std::to_string(brc::GetStats().live_objects()) +
              ", was " + std::to_string(live_before) + ")");
    Check(!brc::IsWorldStoppedByThisThread(), "the world runs at the end");
  }
  std::lock_guard<std::mutex> lock(g->mu);
  for (const std::string& f : g->failures) std::fprintf(stderr, "cell check failed: %s\n", f.c_str());
  return g->failures.empty() ? 0 : 1;
}

}  // namespace brc_reentrancy
