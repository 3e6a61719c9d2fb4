// steps_collector.cc: the scenario's steps that run the cycle collector and stop the world.
// Automatic collections started inside Make; a young collection (young garbage, and a young
// object held by an old one, which must survive); a full collection whose garbage has every
// tracked type, finalizers that resurrect, throw and allocate, weak callbacks, a cycle through
// the helper's object and a collection callback; StopTheWorld (dropping a parked thread's object
// inside it) with GetReferrers and GetReferents; Freeze/Unfreeze; parallel marking on two
// workers. Collect, CollectYoung, Freeze and Unfreeze may return ResourceExhausted; the
// automatic collections absorb a failure.
#include <vector>

#include "oom_sweep.h"

namespace brc_oom {

// Enough tracked allocations to start an automatic collection inside Make (the threshold is 1,
// and an allocating thread reports every 64): garbage cycles with finalizers among them.
void StepAutoCollect() {
  for (int i = 0; i < 70; ++i) {
    Ref<Node> x = TryMake<Node>("Make<Node>", i % 10 == 0 ? kAllocateInFinalize : 0);
    if (i % 7 == 0) {
      Ref<Node> y = TryMake<Node>("Make<Node>");
      Link(x, 0, y);
      Link(y, 0, x);  // garbage cycle once both go
    }
  }
}

// A young collection: young garbage (a cycle with a finalizer that allocates and a weak
// reference with a callback), and a young node held by an older one, which must survive.
void StepCollectYoung() {
  Ref<Node> holder = TryMake<Node>("Make<Node>");
  DoCollect();  // holder is old now
  {
    Ref<Node> y1 = TryMake<Node>("Make<Node>", kAllocateInFinalize);
    Ref<Node> y2 = TryMake<Node>("Make<Node>");
    Link(y1, 0, y2);
    Link(y2, 0, y1);
    MakeWeak(29, y1, kCbAllocate);
    Ref<Node> kept = TryMake<Node>("Make<Node>");
    Link(holder, 0, kept);
  }
  DoCollectYoung();
  DoCollectYoung();  // the promoted survivors: nothing to examine
}

// A collection with garbage of every tracked type: finalizers that resurrect, throw and
// allocate, weak callbacks on garbage, a cycle through an object another thread owns, and a
// collection callback. Then the resurrected object is dropped and collected.
void StepCollect() {
  uint64_t callback_id = 0;
  Try("AddCollectCallback", [&] { callback_id = brc::AddCollectCallback(BigCollectCallback{}); });
  {
    Ref<Node> r1 = TryMake<Node>("Make<Node>", kResurrect);
    Ref<Node> r2 = TryMake<Node>("Make<Node>", kThrowInFinalize);
    Ref<Node> r3 = TryMake<Node>("Make<Node>", kAllocateInFinalize);
    Link(r1, 0, r2);
    Link(r2, 0, r3);
    Link(r3, 0, r1);
    MakeWeak(30, r2, kCbCount);
    MakeWeak(31, r3, kCbThrow);
    Ref<BigNode> big = TryMake<BigNode>("Make<BigNode>");
    Ref<PageNode> page = TryMake<PageNode>("Make<PageNode>");
    Ref<Aligned64Node> a64 = TryMake<Aligned64Node>("Make<Aligned64Node>", kAllocateInFinalize);
    Link(big, 0, page);
    Link(page, 0, big);
    Link(page, 1, a64);
    Link(a64, 0, a64);  // and a self-cycle
    MakeWeak(32, a64, kCbDropChain);
    S().chain[32] = TryMake<Leaf>("Make<Leaf>", 32);
    MakeWeak(33, S().chain[32], kCbCount);
    MakeWeak(34, big, kCbAllocate);
    if (HelperRunning()) {
      OnHelper(CmdMakeNode, 6);  // owned by the helper, part of a garbage cycle with ours
      Ref<Node> mine = TryMake<Node>("Make<Node>");
      Link(mine, 0, S().handoff[6]);
      if (S().handoff[6]) Link(Ref<Node>::NewRef(static_cast<Node*>(S().handoff[6].get())), 0,
                               mine);
      OnHelper(CmdDropHandoff, 6);
    }
  }
  DoCollect();
  g_resurrected = nullptr;
  DoCollect();
  if (callback_id != 0) {
    Try("RemoveCollectCallback", [&] {
      if (!brc::RemoveCollectCallback(callback_id)) Violation("RemoveCollectCallback: not found");
    });
  }
}

// StopTheWorld with the helper attached (it parks); with the world stopped, drop an object the
// helper owns (queued to a parked owner), and list referrers. Then GetReferrers and GetReferents
// with the world running.
void StepStopTheWorld() {
  OnHelper(CmdMakeLeaf, 7);
  const Object* target = S().held[6].get();  // a BigNode, referenced by the Node in held[5]
  Try("brc::StopTheWorld", [&] {
    brc::StopTheWorld stop;
    S().handoff[7] = nullptr;
    if (target != nullptr) {
      std::vector<Ref<Object>> referrers = brc::GetReferrers(target);
      if (S().held[5] && referrers.size() != 1) {
        Violation("GetReferrers (world stopped) found %zu referrers, expected 1",
                  referrers.size());
      }
    }
  });
  CheckWorldRunning("brc::StopTheWorld");
  OnHelper(CmdNothing, 0);  // the helper drains what was queued to it
  if (target != nullptr) {
    Try("brc::GetReferrers", [&] {
      std::vector<Ref<Object>> referrers = brc::GetReferrers(target);
      if (S().held[5] && referrers.size() != 1) {
        Violation("GetReferrers found %zu referrers, expected 1", referrers.size());
      }
    });
    CheckWorldRunning("brc::GetReferrers");
  }
  if (S().held[5]) {
    Try("brc::GetReferents", [&] {
      std::vector<Ref<Object>> referents = brc::GetReferents(S().held[5].get());
      std::size_t expect = (S().held[0] ? 1 : 0) + (S().held[6] ? 1 : 0);
      if (referents.size() != expect) {
        Violation("GetReferents found %zu referents, expected %zu", referents.size(), expect);
      }
    });
  }
}

// Freeze what is alive, make garbage, collect (the frozen objects are left out), unfreeze,
// collect again.
void StepFreeze() {
  TryStatus("brc::Freeze", &brc::Freeze);
  {
    Ref<Node> x = TryMake<Node>("Make<Node>", kAllocateInFinalize);
    Ref<Node> y = TryMake<Node>("Make<Node>");
    Link(x, 0, y);
    Link(y, 0, x);
    MakeWeak(40, y, kCbCount);
  }
  DoCollect();
  TryStatus("brc::Unfreeze", &brc::Unfreeze);
  // An Unfreeze that ran out of memory changed nothing (documented): the caller retries, as a
  // user would, or the frozen objects stay out of collections for good.
  try {
    (void)brc::Unfreeze();
  } catch (...) {
  }
  DoCollect();
}

// Marking on two workers (oneTBB, or plain threads under TSan): the heap must have at least 16
// pages, so sixteen large tracked objects (a page each) in garbage pairs. Last, because which
// worker finds which garbage (and so grows its list) depends on timing under TSan.
void StepParallelCollect() {
  brc::CollectorConfig config = brc::GetCollectorConfig();
  config.workers = 2;
  if (!brc::SetCollectorConfig(config).ok()) Violation("SetCollectorConfig(workers = 2) failed");
  for (int i = 0; i < 8; ++i) {
    Ref<BigNode> x = TryMake<BigNode>("Make<BigNode>");
    Ref<BigNode> y = TryMake<BigNode>("Make<BigNode>", i == 0 ? kAllocateInFinalize : 0);
    Link(x, 0, y);
    Link(y, 0, x);
    if (i == 0) MakeWeak(45, x, kCbCount);
  }
  DoCollect();
  config.workers = 1;
  (void)brc::SetCollectorConfig(config);
}

}  // namespace brc_oom
