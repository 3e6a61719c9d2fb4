// Review probes (an outside review of marking by parts, the acyclic walk's order and the
// cache-decay pacing). Each test pins one suspicion down; the commit that adds it says whether
// it failed. What they probe:
//  * marking by parts: a mark stack that cannot grow in the collecting thread's serial finish
//    (after kMaxRounds rounds, lib/collector_mark.cc, CountAndMarkByParts) must fail the
//    collection and be undone exactly, like an out-of-memory in pass 1 (the only path the
//    existing test reaches: its cap fails the very first growth);
//  * the cache-decay pacing (lib/merge_queue.cc, SafepointSlow; lib/gc_heap.cc,
//    DecayLookCanWait): remote frees into a busy thread whose cache waits to decay are
//    reclaimed at its next safepoint, not up to kBusyDecayLooks safepoints later.
#include <atomic>
#include <algorithm>
#include <cstdint>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "brc/brc.h"
#include "brc/testing.h"
#include "test_util.h"

namespace {

using brc_test::Counted;
using brc_test::Manual;
using brc_test::Must;

// Holds many references to itself (so its trace pushes that many entries at once without
// any of them crossing parts: no mail in pass 1). Large enough for a size class of its own.
struct RvWide : brc::Object {
  explicit RvWide(std::atomic<int>* destroyed) : destroyed(destroyed) {}
  ~RvWide() { destroyed->fetch_add(1, std::memory_order_relaxed); }
  void Trace(brc::Visitor& v) const {
    for (const auto& r : refs) v.Visit(r);
  }
  void Clear() { refs.clear(); }
  std::atomic<int>* destroyed;
  std::vector<brc::Ref<RvWide>> refs;
  char pad[200] = {};
};

struct RvNode : brc::Object {
  explicit RvNode(std::atomic<int>* destroyed) : destroyed(destroyed) {}
  ~RvNode() { destroyed->fetch_add(1, std::memory_order_relaxed); }
  void Trace(brc::Visitor& v) const {
    v.Visit(a);
    v.Visit(w);
  }
  void Clear() {
    a = nullptr;
    w = nullptr;
  }
  std::atomic<int>* destroyed;
  brc::Ref<RvNode> a;
  brc::Ref<RvWide> w;
};

using RvWorkers = brc_test::MarkingWorkers;

}  // namespace

TEST_CASE("Review probe - a mark stack that cannot grow in the serial finish of marking by "
          "parts fails the collection and is undone exactly",
          "[review][collector][parallel][robust]") {
  brc::ThreadScope attach;
  Manual manual;
  RvWorkers workers(2);
  constexpr int kNodes = 40'000;  // about 40 pages: two parts
  constexpr int kChain = 20;      // crosses parts at every link: past the 8 rounds
  constexpr int kSelfRefs = 70'000;  // more than one growth of a stack (64 Ki entries)
  for (bool young : {true, false}) {
    INFO("young " << young);
    Must(brc::Collect());
    std::atomic<int> destroyed{0};
    std::vector<brc::Ref<RvNode>> nodes;
    for (int i = 0; i < kNodes; ++i) nodes.push_back(brc::Make<RvNode>(&destroyed));
    brc::Ref<RvWide> wide = brc::Make<RvWide>(&destroyed);
    for (int i = 0; i < kSelfRefs; ++i) wide->refs.push_back(wide);
    // The chain alternates between nodes on pages in different parts: the oldest and the
    // newest for a young collection (the young list holds pages newest first), the oldest and
    // the middle ones for a full one (a class list rotates its full pages to the back). Its
    // last node references the wide object, which only the serial finish reaches.
    auto partner = [&](int i) { return young ? kNodes - 1 - i : kNodes / 2 + i; };
    std::vector<RvNode*> chain;
    for (int i = 0; i < kChain / 2; ++i) {
      chain.push_back(nodes[i].get());
      chain.push_back(nodes[partner(i)].get());
    }
    for (int i = 0; i + 1 < kChain; ++i) chain[i]->a = brc::Ref<RvNode>::NewRef(chain[i + 1]);
    chain.back()->w = wide;
    brc::Ref<RvNode> head = brc::Ref<RvNode>::NewRef(chain.front());
    wide = nullptr;
    // The other nodes stay roots (held here); the chain's own are dropped.
    std::vector<brc::Ref<RvNode>> keep;
    for (int i = 0; i < kNodes; ++i) {
      bool in_chain = i < kChain / 2 || (i >= partner(kChain / 2 - 1) && i <= partner(0)) ||
                      (i >= partner(0) && i <= partner(kChain / 2 - 1));
      if (!in_chain) keep.push_back(std::move(nodes[i]));
    }
    nodes.clear();
    RvWide* w = chain.back()->w.get();
    brc::testing::Counts head_before = brc::testing::GetCounts(head.get());
    brc::testing::Counts wide_before = brc::testing::GetCounts(w);
    // Every stack and mailbox may grow once (64 Ki entries), never twice.
    brc::testing::LimitMarkStacksForTesting(std::size_t{1} << 16);
    absl::StatusOr<brc::CollectResult> failed = young ? brc::CollectYoung() : brc::Collect();
    int rounds = brc::testing::LastMarkRoundsForTesting();
    brc::testing::LimitMarkStacksForTesting(0);
    INFO("rounds of the failed mark " << rounds);
    // By parts it got as far as the serial finish and failed there; the mark was undone and
    // one worker tried (lib/collector_mark.cc, Mark), and failed too: the last mark is its.
    CHECK(rounds == 1);
    REQUIRE_FALSE(failed.ok());
    CHECK(failed.status().code() == absl::StatusCode::kResourceExhausted);
    CHECK(destroyed.load() == 0);
    brc::testing::Counts head_after = brc::testing::GetCounts(head.get());
    brc::testing::Counts wide_after = brc::testing::GetCounts(w);
    CHECK(head_after.owner == head_before.owner);
    CHECK(head_after.local == head_before.local);
    CHECK(head_after.shared_count == head_before.shared_count);
    CHECK(wide_after.owner == wide_before.owner);
    CHECK(wide_after.local == wide_before.local);
    CHECK(wide_after.shared_count == wide_before.shared_count);
    // Undone exactly: the same collection now runs to its end and finds no garbage, with
    // every node (and the wide object) still a candidate.
    brc::CollectResult r = Must(young ? brc::CollectYoung() : brc::Collect());
    CHECK(r.scanned == static_cast<uint64_t>(kNodes + 1));
    CHECK(r.collected == 0);
    // (How many rounds this mark takes follows the page layout, which BRC_DEBUG's quarantine
    // of freed blocks changes: not checked.)
    CHECK(destroyed.load() == 0);
    head = nullptr;  // counting frees the chain; the wide object (its own cycle) is garbage
    CHECK(destroyed.load() == kChain);
    brc::CollectResult g = Must(brc::Collect());
    CHECK(g.collected == 1);
    CHECK(destroyed.load() == kChain + 1);
    keep.clear();
    Must(brc::Collect());
    CHECK(destroyed.load() == kNodes + 1);
  }
}

namespace {

// A tracked object for the reclaim probe.
struct RvTNode : brc::Object {
  explicit RvTNode(std::atomic<int>* destroyed) : destroyed(destroyed) {}
  ~RvTNode() { destroyed->fetch_add(1, std::memory_order_relaxed); }
  void Trace(brc::Visitor& v) const { v.Visit(next); }
  void Clear() { next = nullptr; }
  std::atomic<int>* destroyed;
  brc::Ref<RvTNode> next;
};

uint64_t RvInUse(uint32_t tid) { return brc::testing::HeapPagesOfThreadForTesting(tid).in_use; }
uint64_t RvCached(uint32_t tid) {
  return brc::testing::HeapPagesOfThreadForTesting(tid).cached;
}

void RvFlushQuarantine() {
  std::atomic<int> destroyed{0};
  for (std::size_t i = 0; i < brc::testing::QuarantineCapacityForTesting() + 16; ++i) {
    brc::Make<Counted>(&destroyed);
  }
}

}  // namespace

TEST_CASE("Review probe - remote frees into a busy thread whose cache waits to decay are "
          "reclaimed at its next safepoint",
          "[review][reclaim]") {
  Manual manual;
  brc::ThreadScope attach;
  uint32_t self = brc::CurrentThreadId();
  brc::ReleaseFreeMemory();
  brc::testing::SetCacheDecayIntervalForTesting(1'000'000);  // no decay is ever due
  std::atomic<int> destroyed{0};
  // Live tracked objects on pages of this thread, then a cache above kDecayKeepPages (made
  // and dropped here), so that kPendingDecay stays set from now on.
  std::vector<brc::Ref<RvTNode>> live;
  constexpr int kN = 20'000;
  for (int i = 0; i < kN; ++i) live.push_back(brc::Make<RvTNode>(&destroyed));
  {
    std::vector<brc::Ref<RvTNode>> dropped;
    for (int i = 0; i < 2 * kN; ++i) dropped.push_back(brc::Make<RvTNode>(&destroyed));
  }
  RvFlushQuarantine();
  REQUIRE(RvCached(self) > 8);
  // Busy safepoints with nothing but the decay waiting: the paced ones skip the look.
  std::vector<brc::Ref<Counted>> kept;
  for (int i = 0; i < 10; ++i) {
    kept.push_back(brc::Make<Counted>(&destroyed));
    brc::Safepoint();
  }
  uint64_t full = RvInUse(self);
  {
    brc::BlockingScope blocked;  // the other thread frees into this thread's pages
    std::thread([&] {
      brc::ThreadScope other;
      live.clear();
      RvFlushQuarantine();
    }).join();
  }
  REQUIRE(destroyed.load() == 3 * kN);
  CHECK(RvInUse(self) == full);
  // One busy safepoint: the reclaim bit is set, so it must not wait for a paced look.
  kept.push_back(brc::Make<Counted>(&destroyed));
  brc::Safepoint();
  INFO("pages in use before the remote frees " << full << ", after one safepoint "
                                               << RvInUse(self));
  CHECK(RvInUse(self) + 10 < full);
  brc::testing::SetCacheDecayIntervalForTesting(50);
}

namespace {

using RvRing = brc_test::PairNode;

}  // namespace

// Young collections by parts: old objects (not candidates, never written) reference young rings
// in every part; a ring referenced only from an old object must survive however its nodes are
// split among parts, and exactly the unreferenced rings are garbage, with 1, 2, 3 or 4 workers.
TEST_CASE("Review probe - young rings held only by old objects survive marking by parts",
          "[review][collector][parallel]") {
  BRC_TEST_SEED(seed);
  brc::ThreadScope attach;
  Manual manual;
  for (int n_workers : {1, 2, 3, 4}) {
    INFO("workers " << n_workers);
    RvWorkers workers(n_workers);
    std::mt19937 rng(seed);
    Must(brc::Collect());
    std::atomic<int> destroyed{0};
    constexpr int kOld = 30'000;
    constexpr int kYoung = 40'000;
    std::vector<brc::Ref<RvRing>> old;
    for (int i = 0; i < kOld; ++i) old.push_back(brc::Make<RvRing>(&destroyed));
    Must(brc::Collect());  // old now
    std::vector<brc::Ref<RvRing>> young;
    for (int i = 0; i < kYoung; ++i) young.push_back(brc::Make<RvRing>(&destroyed));
    std::shuffle(young.begin(), young.end(), rng);
    std::vector<int> ring_of(kYoung);
    std::vector<std::pair<int, int>> rings;  // [first, last]
    for (int first = 0; first < kYoung;) {
      int last = std::min(kYoung, first + 2 + static_cast<int>(rng() % 49)) - 1;
      for (int i = first; i < last; ++i) young[i]->a = young[i + 1];
      young[last]->a = young[first];
      for (int i = first; i <= last; ++i) ring_of[i] = static_cast<int>(rings.size());
      rings.emplace_back(first, last);
      first = last + 1;
    }
    std::vector<bool> held(rings.size(), false);
    for (int i = 0; i < kOld; ++i) {
      if (rng() % 8 != 0) continue;
      int k = static_cast<int>(rng() % kYoung);
      old[i]->b = young[k];
      held[ring_of[k]] = true;
    }
    int garbage = 0;
    std::vector<RvRing*> live;
    for (std::size_t r = 0; r < rings.size(); ++r) {
      for (int i = rings[r].first; i <= rings[r].second; ++i) {
        if (held[r]) {
          live.push_back(young[i].get());
        } else {
          ++garbage;
        }
      }
    }
    young.clear();
    brc::CollectResult r = Must(brc::CollectYoung());
    CHECK(r.scanned == static_cast<uint64_t>(kYoung));
    CHECK(r.collected == static_cast<uint64_t>(garbage));
    CHECK(destroyed.load() == garbage);
    int cleared = 0;
    for (RvRing* n : live) cleared += n->cleared ? 1 : 0;
    CHECK(cleared == 0);
    old.clear();
    Must(brc::Collect());
    CHECK(destroyed.load() == kOld + kYoung);
  }
}
