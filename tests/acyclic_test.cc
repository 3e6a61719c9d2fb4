// The acyclic check (lib/collector_mark.cc, "the acyclic check"; README "The acyclic check"):
// a collection whose examined objects hold no reference cycle among them proves it with one
// depth-first walk and skips the counting passes. What the tests pin down:
//  * the proof: lists, trees and shared subobjects (a DAG) are acyclic; a self-reference, a
//    ring, a cycle through a shared node are not; frozen and (in a young collection) old
//    objects are no part of it;
//  * a proven collection changes nothing but the marks: owners, counts, nothing freed, and its
//    objects are old afterwards, with both kinds and other threads' heaps;
//  * a failed check is undone exactly: the collection counts as usual and frees what it must,
//    and when the counting itself then runs out of memory, every object is as it was (young
//    ones still young, old ones still old) — the mark-stack cap reaches both paths;
//  * the backoff: after a failed check the next collection of that kind skips it, twice as many
//    after each failure in a row, none after a success;
//  * the walk's order: a proof that went mostly depth first turns the next walk of its kind
//    around; proofs, refutations and undos hold in both orders;
//  * BRC_DEBUG counts after every proof and aborts if the proof was wrong
//    (collector_config_test.cc checks the Trace misuse report there).
// Re-entrancy: the check runs nothing but Trace (which may not call brc); its memory is the
// mark stack (mmap): the cap covers running out of it.
#include <atomic>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "brc/brc.h"
#include "brc/testing.h"
#include "test_util.h"

namespace {

struct ANode : brc::Object {
  static constexpr std::string_view kTypeName = "ANode";
  explicit ANode(std::atomic<int>* destroyed = nullptr) : destroyed(destroyed) {}
  ~ANode() {
    if (destroyed != nullptr) destroyed->fetch_add(1, std::memory_order_relaxed);
  }
  void Trace(brc::Visitor& v) const {
    v.Visit(a);
    v.Visit(b);
    for (const auto& r : many) v.Visit(r);
  }
  void Clear() {
    a = nullptr;
    b = nullptr;
    many.clear();
  }
  std::atomic<int>* destroyed;
  brc::Ref<ANode> a;
  brc::Ref<ANode> b;
  std::vector<brc::Ref<ANode>> many;
};

using brc_test::Manual;
using brc_test::Must;

// Everything made before is old, and the check's schedule starts afresh.
void Fresh() {
  Must(brc::Collect());
  brc::testing::ResetAcyclicScheduleForTesting();
}

// A list of n fresh nodes; returns its head (the newest).
brc::Ref<ANode> List(int n, std::atomic<int>* destroyed = nullptr) {
  brc::Ref<ANode> head;
  for (int i = 0; i < n; ++i) {
    brc::Ref<ANode> x = brc::Make<ANode>(destroyed);
    x->a = std::move(head);
    head = std::move(x);
  }
  return head;
}

// n fresh nodes, each referencing the next one made (the last references nothing).
std::vector<brc::Ref<ANode>> Forward(int n, std::atomic<int>* destroyed) {
  std::vector<brc::Ref<ANode>> nodes;
  nodes.reserve(n);
  for (int i = 0; i < n; ++i) nodes.push_back(brc::Make<ANode>(destroyed));
  for (int i = 0; i + 1 < n; ++i) nodes[i]->a = nodes[i + 1];
  return nodes;
}

// A live ring of n fresh nodes.
brc::Ref<ANode> Ring(int n, std::atomic<int>* destroyed = nullptr) {
  brc::Ref<ANode> first = brc::Make<ANode>(destroyed);
  brc::Ref<ANode> last = first;
  for (int i = 1; i < n; ++i) {
    last->a = brc::Make<ANode>(destroyed);
    last = last->a;
  }
  last->a = first;
  return first;
}

TEST_CASE("Lists, trees and shared subobjects are proven acyclic and change nothing but marks",
          "[collector][acyclic]") {
  brc::ThreadScope attach;
  Manual manual;
  Fresh();
  std::atomic<int> destroyed{0};
  brc::Ref<ANode> list = List(3000, &destroyed);
  // A diamond: two paths to one node are no cycle.
  brc::Ref<ANode> top = brc::Make<ANode>(&destroyed);
  top->a = brc::Make<ANode>(&destroyed);
  top->b = brc::Make<ANode>(&destroyed);
  top->a->a = brc::Make<ANode>(&destroyed);
  top->b->a = top->a->a;
  top->b->b = list;  // into the list, too
  brc::testing::Counts before = brc::testing::GetCounts(top->b.get());
  uint64_t acyclic_before = brc::GetCollectorStats().acyclic_collections;

  brc::CollectResult r = Must(brc::CollectYoung());
  CHECK(r.acyclic);
  CHECK(r.scanned == 3004);
  CHECK(r.promoted == 3004);
  CHECK(r.unreachable == 0);
  CHECK(r.collected == 0);
  CHECK(destroyed.load() == 0);
  CHECK(brc::GetCollectorStats().acyclic_collections == acyclic_before + 1);
  brc::testing::Counts after = brc::testing::GetCounts(top->b.get());
  CHECK(after.owner == before.owner);
  CHECK(after.local == before.local);
  CHECK(after.shared_count == before.shared_count);
  // Old now: the next young collection has nothing to examine.
  CHECK(Must(brc::CollectYoung()).scanned == 0);

  // A full collection proves the same over the whole heap (old and young objects).
  brc::Ref<ANode> young = List(500, &destroyed);
  r = Must(brc::Collect());
  CHECK(r.acyclic);
  CHECK(r.collected == 0);
  CHECK(Must(brc::CollectYoung()).scanned == 0);
  list = nullptr;
  top = nullptr;
  young = nullptr;
  CHECK(destroyed.load() == 3504);
}

TEST_CASE("A cycle fails the check: the collection counts, frees garbage, keeps live cycles",
          "[collector][acyclic]") {
  brc::ThreadScope attach;
  Manual manual;
  std::atomic<int> destroyed{0};
  SECTION("a self-reference") {
    Fresh();
    brc::Ref<ANode> self = brc::Make<ANode>(&destroyed);
    self->a = self;
    brc::Ref<ANode> list = List(100, &destroyed);
    brc::CollectResult r = Must(brc::CollectYoung());
    CHECK_FALSE(r.acyclic);
    CHECK(r.scanned == 101);
    CHECK(r.collected == 0);
    self->a = nullptr;
  }
  SECTION("a live ring and a garbage ring among acyclic objects") {
    Fresh();
    brc::Ref<ANode> list = List(100, &destroyed);
    brc::Ref<ANode> ring = Ring(5, &destroyed);
    Ring(7, &destroyed);  // garbage
    brc::CollectResult r = Must(brc::CollectYoung());
    CHECK_FALSE(r.acyclic);
    CHECK(r.scanned == 112);
    CHECK(r.collected == 7);
    CHECK(destroyed.load() == 7);
    ring->a = nullptr;
  }
  SECTION("a cycle through a shared node, found in a full collection") {
    Fresh();
    brc::Ref<ANode> top = brc::Make<ANode>(&destroyed);
    top->a = brc::Make<ANode>(&destroyed);
    top->b = brc::Make<ANode>(&destroyed);
    top->b->a = top->a;
    Must(brc::CollectYoung());  // old now
    top->a->a = top->b;         // a cycle among old objects: only full collections see it
    brc::testing::ResetAcyclicScheduleForTesting();
    CHECK(Must(brc::CollectYoung()).acyclic);  // nothing young: trivially acyclic
    brc::CollectResult r = Must(brc::Collect());
    CHECK_FALSE(r.acyclic);
    CHECK(r.collected == 0);
    top->a->a = nullptr;
  }
  SECTION("a cycle among frozen objects is no part of the proof") {
    Fresh();
    brc::Ref<ANode> ring = Ring(4, &destroyed);
    REQUIRE(*brc::Freeze() >= 4);
    brc::Ref<ANode> list = List(50, &destroyed);
    CHECK(Must(brc::Collect()).acyclic);
    REQUIRE(brc::Unfreeze().ok());
    brc::testing::ResetAcyclicScheduleForTesting();
    CHECK_FALSE(Must(brc::Collect()).acyclic);
    ring->a = nullptr;
  }
}

TEST_CASE("After a failed check the schedule skips it, doubling, until one succeeds",
          "[collector][acyclic]") {
  brc::ThreadScope attach;
  Manual manual;
  Fresh();
  std::vector<brc::Ref<ANode>> keep;
  auto young = [&](bool cyclic) {
    keep.push_back(cyclic ? Ring(3) : List(3));
    return Must(brc::CollectYoung()).acyclic;
  };
  CHECK_FALSE(young(true));   // tried, failed: skip the next one
  CHECK_FALSE(young(false));  // skipped, though acyclic
  CHECK_FALSE(young(true));   // tried, failed again: skip the next two
  CHECK_FALSE(young(false));
  CHECK_FALSE(young(false));
  CHECK(young(false));        // tried: success resets the backoff
  CHECK(young(false));
  // The kinds keep apart: young failures leave full collections alone.
  CHECK_FALSE(young(true));
  CHECK_FALSE(Must(brc::Collect()).acyclic);  // the heap holds the rings: tried, failed
  for (auto& r : keep) r->a = nullptr;
  keep.clear();
  CHECK_FALSE(Must(brc::Collect()).acyclic);  // skipped
  CHECK(Must(brc::Collect()).acyclic);
}

TEST_CASE("The walk turns around when most of a proof went depth first, per kind",
          "[collector][acyclic]") {
  brc::ThreadScope attach;
  Manual manual;
  Fresh();
  std::atomic<int> destroyed{0};
  std::vector<brc::Ref<ANode>> keep;
  REQUIRE_FALSE(brc::testing::AcyclicWalkNewestFirstForTesting(true));
  // Linked forward (each node references a newer one): oldest first goes depth first down all
  // of it. Proven, and the next young walk goes newest first.
  std::vector<brc::Ref<ANode>> forward = Forward(3000, &destroyed);
  keep.push_back(forward.front());
  forward.clear();
  brc::CollectResult r = Must(brc::CollectYoung());
  CHECK(r.acyclic);
  CHECK(r.scanned == 3000);
  CHECK(brc::testing::AcyclicWalkNewestFirstForTesting(true));
  CHECK_FALSE(brc::testing::AcyclicWalkNewestFirstForTesting(false));  // full: its own
  // The same shape newest first: every node is in order; the order stays.
  forward = Forward(3000, &destroyed);
  keep.push_back(forward.front());
  forward.clear();
  r = Must(brc::CollectYoung());
  CHECK(r.acyclic);
  CHECK(r.scanned == 3000);
  CHECK(brc::testing::AcyclicWalkNewestFirstForTesting(true));
  // A list grown at its head (each node references an older one) is the other way round.
  keep.push_back(List(3000, &destroyed));
  r = Must(brc::CollectYoung());
  CHECK(r.acyclic);
  CHECK(r.scanned == 3000);
  CHECK_FALSE(brc::testing::AcyclicWalkNewestFirstForTesting(true));
  // Full collections turn on their own: the whole heap (9000 nodes, two thirds linked forward).
  r = Must(brc::Collect());
  CHECK(r.acyclic);
  CHECK(brc::testing::AcyclicWalkNewestFirstForTesting(false));
  CHECK_FALSE(brc::testing::AcyclicWalkNewestFirstForTesting(true));
  CHECK(destroyed.load() == 0);
  keep.clear();
  CHECK(destroyed.load() == 9000);
}

TEST_CASE("Newest first, a cycle fails the check and the undo leaves counting exact",
          "[collector][acyclic]") {
  brc::ThreadScope attach;
  Manual manual;
  std::atomic<int> destroyed{0};
  for (bool full : {false, true}) {
    INFO("full collection: " << full);
    Fresh();
    destroyed = 0;
    brc::testing::SetAcyclicWalkNewestFirstForTesting(true);
    brc::Ref<ANode> list = List(100, &destroyed);
    std::vector<brc::Ref<ANode>> forward = Forward(100, &destroyed);
    brc::Ref<ANode> ring = Ring(5, &destroyed);
    Ring(7, &destroyed);  // garbage
    brc::Ref<ANode> more = List(100, &destroyed);
    brc::CollectResult r = Must(full ? brc::Collect() : brc::CollectYoung());
    CHECK_FALSE(r.acyclic);
    CHECK(r.scanned == 312);
    CHECK(r.collected == 7);
    CHECK(destroyed.load() == 7);
    // A failure leaves the order as it was.
    CHECK(brc::testing::AcyclicWalkNewestFirstForTesting(!full));
    // Everything that survived is old and intact: the next young collection finds nothing.
    CHECK(Must(brc::CollectYoung()).scanned == 0);
    ring->a = nullptr;
    ring = nullptr;
    list = nullptr;
    forward.clear();
    more = nullptr;
    CHECK(destroyed.load() == 312);
  }
}

TEST_CASE("Other threads' young objects are proven with their owners intact",
          "[collector][acyclic]") {
  brc::ThreadScope attach;
  Manual manual;
  Fresh();
  brc::Ref<ANode> theirs;
  uint32_t their_owner = 0;
  std::thread t([&] {
    brc::ThreadScope a;
    theirs = List(1000);
    their_owner = brc::testing::GetCounts(theirs.get()).owner;
    brc::Ref<ANode> keep = theirs;  // the thread exits while its objects live on
  });
  t.join();
  brc::Ref<ANode> mine = List(1000);
  brc::CollectResult r = Must(brc::CollectYoung());
  CHECK(r.acyclic);
  CHECK(r.scanned == 2000);
  // The list's head is shared with this thread, so its count may be merged; below it every
  // node keeps the owner it had (the exited thread's id, which stays reserved for its heap).
  CHECK(brc::testing::GetCounts(theirs->a.get()).owner == their_owner);
  CHECK(brc::testing::GetCounts(mine->a.get()).owner == brc::testing::GetCounts(mine.get()).owner);
}

TEST_CASE("A check that runs out of mark stack is undone exactly, in both kinds",
          "[collector][acyclic][robust]") {
  brc::ThreadScope attach;
  Manual manual;
  constexpr int kChain = 100'000;  // deeper than the capped stack (64 Ki entries)
  auto run = [&](bool full) {
    Fresh();
    std::atomic<int> destroyed{0};
    brc::Ref<ANode> old_list = List(10, &destroyed);
    Must(brc::CollectYoung());  // old now
    // A chain linked forward (each node references the next one made), so that the walk,
    // which meets them oldest first, must go depth first down all of it: its stack holds an
    // exit per node. The last node references the old list. A fan holds every node, so that
    // counting's marking needs a deep stack too.
    std::vector<brc::Ref<ANode>> nodes = Forward(kChain, &destroyed);
    nodes.back()->a = old_list;
    brc::Ref<ANode> fan = brc::Make<ANode>(&destroyed);
    fan->many = nodes;
    brc::Ref<ANode> head = nodes.front();
    nodes.clear();
    brc::testing::LimitMarkStacksForTesting(std::size_t{1} << 16);
    absl::StatusOr<brc::CollectResult> r = full ? brc::Collect() : brc::CollectYoung();
    brc::testing::LimitMarkStacksForTesting(0);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == absl::StatusCode::kResourceExhausted);
    // As it was: the young set is still exactly the chain and the fan, the old list still old.
    brc::testing::ResetAcyclicScheduleForTesting();
    brc::CollectResult again = Must(brc::CollectYoung());
    CHECK(again.scanned == kChain + 1);
    CHECK(again.acyclic);
    CHECK(again.collected == 0);
    CHECK(destroyed.load() == 0);
    fan = nullptr;
    head = nullptr;
    old_list = nullptr;
    CHECK(destroyed.load() == kChain + 10 + 1);
  };
  SECTION("young") { run(false); }
  SECTION("full") { run(true); }
}

TEST_CASE("Newest first, a check that runs out of mark stack is undone exactly",
          "[collector][acyclic][robust]") {
  brc::ThreadScope attach;
  Manual manual;
  constexpr int kChain = 100'000;  // deeper than the capped stack (64 Ki entries)
  for (bool full : {false, true}) {
    INFO("full collection: " << full);
    Fresh();
    std::atomic<int> destroyed{0};
    brc::Ref<ANode> old_list = List(10, &destroyed);
    Must(brc::CollectYoung());  // old now
    // A list grown at its head: newest first, the walk meets the head first and must go depth
    // first down all of it. Its tail references the old list.
    brc::Ref<ANode> head = std::move(old_list);
    brc::Ref<ANode> keep_old = head;
    for (int i = 0; i < kChain; ++i) {
      brc::Ref<ANode> x = brc::Make<ANode>(&destroyed);
      x->a = std::move(head);
      head = std::move(x);
    }
    brc::testing::SetAcyclicWalkNewestFirstForTesting(true);
    brc::testing::LimitMarkStacksForTesting(std::size_t{1} << 16);
    absl::StatusOr<brc::CollectResult> r = full ? brc::Collect() : brc::CollectYoung();
    brc::testing::LimitMarkStacksForTesting(0);
    // Counting marks the list from its head with a shallow stack, so the collection itself
    // succeeds; the check gave up and was undone, and found nothing to free.
    REQUIRE(r.ok());
    CHECK_FALSE(r->acyclic);
    CHECK(r->collected == 0);
    CHECK(destroyed.load() == 0);
    // Old now, and every object intact: nothing young is left, and dropping frees them all.
    CHECK(Must(brc::CollectYoung()).scanned == 0);
    head = nullptr;
    keep_old = nullptr;
    CHECK(destroyed.load() == kChain + 10);
  }
}

TEST_CASE("A check that runs out of mark stack falls back to counting, which still collects",
          "[collector][acyclic][robust]") {
  brc::ThreadScope attach;
  Manual manual;
  Fresh();
  std::atomic<int> destroyed{0};
  // Deep for the walk (an exit per node), shallow for marking (one root, a chain).
  constexpr int kChain = 100'000;
  auto chain = [&] {
    std::vector<brc::Ref<ANode>> nodes = Forward(kChain, &destroyed);
    return nodes.front();
  };
  // The shape is acyclic: with stack enough, the check proves it.
  brc::Ref<ANode> head = chain();
  brc::CollectResult r = Must(brc::CollectYoung());
  CHECK(r.acyclic);
  CHECK(r.scanned == kChain);
  head = nullptr;
  REQUIRE(destroyed.load() == kChain);
  destroyed = 0;
  // With the stack capped, the check gives up and counting decides, and collects.
  head = chain();
  Ring(3, &destroyed);  // garbage
  brc::testing::LimitMarkStacksForTesting(std::size_t{1} << 16);
  r = Must(brc::CollectYoung());
  brc::testing::LimitMarkStacksForTesting(0);
  CHECK_FALSE(r.acyclic);
  CHECK(r.scanned == kChain + 3);
  CHECK(r.collected == 3);
  CHECK(destroyed.load() == 3);
  head = nullptr;
  CHECK(destroyed.load() == kChain + 3);
}

}  // namespace
