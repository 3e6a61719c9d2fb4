// Young collections (brc/collector.h, "Young and full collections"): what a young collection
// examines (only objects allocated since the last collection), what it may free (cycles
// entirely inside that set), what it must keep (anything an old object, a stack or another
// thread references), promotion, the kinds in results and statistics, frozen objects, objects
// under construction during a collection, other threads' young objects, parallel marking, and
// user code re-entering a young collection. Allocation failure inside one: tests/oom_sweep/
// (steps_collector.cc), step "collect-young".
#include <atomic>
#include <cmath>
#include <functional>
#include <random>
#include <thread>
#include <unordered_set>
#include <vector>

#include <catch2/catch.hpp>

#include "brc/brc.h"
#include "brc/testing.h"
#include "test_util.h"

namespace {

using YNode = brc_test::PairNode;

using brc_test::Manual;
using brc_test::Must;

// A dropped two-node cycle of fresh objects.
void YoungCycle(std::atomic<int>* destroyed) {
  brc::Ref<YNode> x = brc::Make<YNode>(destroyed);
  brc::Ref<YNode> y = brc::Make<YNode>(destroyed);
  x->a = y;
  y->a = x;
}

TEST_CASE("A young collection frees young cycles and examines only young objects",
          "[collector][young]") {
  brc::ThreadScope attach;
  Manual manual;
  Must(brc::Collect());  // everything before this test is old now
  std::atomic<int> old_destroyed{0}, young_destroyed{0};
  std::vector<brc::Ref<YNode>> old;
  for (int i = 0; i < 5000; ++i) old.push_back(brc::Make<YNode>(&old_destroyed));
  brc::CollectResult promote = Must(brc::CollectYoung());
  CHECK(promote.kind == brc::CollectKind::kYoung);
  CHECK(promote.scanned == 5000);
  CHECK(promote.promoted == 5000);
  CHECK(promote.unreachable == 0);

  for (int i = 0; i < 100; ++i) YoungCycle(&young_destroyed);
  brc::Ref<YNode> kept = brc::Make<YNode>(&young_destroyed);  // on the stack: a root
  brc::CollectResult r = Must(brc::CollectYoung());
  CHECK(r.kind == brc::CollectKind::kYoung);
  CHECK(r.scanned == 201);  // the 5000 old objects are not examined
  CHECK(r.unreachable == 200);
  CHECK(r.collected == 200);
  CHECK(r.promoted == 1);
  CHECK(young_destroyed.load() == 200);
  CHECK(!kept->cleared);
  // Everything is old now: the next young collection has nothing to examine.
  CHECK(Must(brc::CollectYoung()).scanned == 0);
  brc::CollectResult full = Must(brc::Collect());
  CHECK(full.kind == brc::CollectKind::kFull);
  CHECK(full.scanned >= 5001);
  CHECK(full.promoted == 0);
  CHECK(old_destroyed.load() == 0);
}

TEST_CASE("A young object referenced only by an old object survives a young collection",
          "[collector][young]") {
  brc::ThreadScope attach;
  Manual manual;
  std::atomic<int> destroyed{0};
  brc::Ref<YNode> holder = brc::Make<YNode>(&destroyed);
  Must(brc::Collect());  // holder is old
  {
    // A young cycle hanging off the old holder: referenced from outside the young set.
    brc::Ref<YNode> x = brc::Make<YNode>(&destroyed);
    brc::Ref<YNode> y = brc::Make<YNode>(&destroyed);
    x->a = y;
    y->a = x;
    holder->a = x;
  }
  brc::CollectResult r = Must(brc::CollectYoung());
  CHECK(r.scanned == 2);
  CHECK(r.unreachable == 0);
  CHECK(destroyed.load() == 0);
  REQUIRE(holder->a);
  CHECK(!holder->a->cleared);
  CHECK(!holder->a->a->cleared);
  // Cut loose: now an old garbage cycle, which only a full collection examines.
  holder->a = nullptr;
  CHECK(Must(brc::CollectYoung()).unreachable == 0);
  CHECK(destroyed.load() == 0);
  brc::CollectResult full = Must(brc::Collect());
  CHECK(full.collected == 2);
  CHECK(destroyed.load() == 2);
}

TEST_CASE("A cycle through an old object is left to full collections", "[collector][young]") {
  brc::ThreadScope attach;
  Manual manual;
  std::atomic<int> destroyed{0};
  brc::Ref<YNode> old = brc::Make<YNode>(&destroyed);
  Must(brc::Collect());
  {
    brc::Ref<YNode> young = brc::Make<YNode>(&destroyed);
    young->a = old;
    old->a = young;
  }
  old = nullptr;  // old -> young -> old: garbage, but half of it is old
  brc::CollectResult r = Must(brc::CollectYoung());
  CHECK(r.scanned == 1);
  CHECK(r.unreachable == 0);  // the old member's reference makes the young one a root
  CHECK(destroyed.load() == 0);
  brc::CollectResult full = Must(brc::Collect());
  CHECK(full.collected == 2);
  CHECK(destroyed.load() == 2);
}

TEST_CASE("Young references to old objects do not keep old garbage or change old objects",
          "[collector][young]") {
  brc::ThreadScope attach;
  Manual manual;
  std::atomic<int> destroyed{0};
  brc::Ref<YNode> old_a = brc::Make<YNode>(&destroyed);
  brc::Ref<YNode> old_b = brc::Make<YNode>(&destroyed);
  old_a->a = old_b;
  Must(brc::Collect());
  int64_t count_b = brc::GetRefCount(old_b.get());
  {
    // Young garbage that references old objects: collected; the old ones' counts go back.
    brc::Ref<YNode> y = brc::Make<YNode>(&destroyed);
    y->a = y;
    y->b = old_b;
  }
  CHECK(brc::GetRefCount(old_b.get()) == count_b + 1);
  brc::CollectResult r = Must(brc::CollectYoung());
  CHECK(r.collected == 1);
  CHECK(destroyed.load() == 1);
  CHECK(brc::GetRefCount(old_b.get()) == count_b);
  CHECK(!old_a->cleared);
  CHECK(!old_b->cleared);
  CHECK(old_a->a.get() == old_b.get());
}

TEST_CASE("Statistics count young and full collections apart", "[collector][young]") {
  brc::ThreadScope attach;
  Manual manual;
  std::atomic<int> destroyed{0};
  brc::CollectorStats before = brc::GetCollectorStats();
  YoungCycle(&destroyed);
  Must(brc::CollectYoung());
  Must(brc::CollectYoung());
  Must(brc::Collect());
  brc::CollectorStats after = brc::GetCollectorStats();
  CHECK(after.young_collections == before.young_collections + 2);
  CHECK(after.full_collections == before.full_collections + 1);
  CHECK(after.collections == before.collections + 3);
  CHECK(after.young_stopped > before.young_stopped);
  CHECK(after.full_stopped > before.full_stopped);
  CHECK(after.young_max_pause > absl::ZeroDuration());
  CHECK(after.full_max_pause > absl::ZeroDuration());
  CHECK(after.total_stopped == after.young_stopped + after.full_stopped);
  CHECK(after.collected == before.collected + 2);
}

TEST_CASE("Frozen objects are in no young collection, and unfrozen they are old",
          "[collector][young]") {
  brc::ThreadScope attach;
  Manual manual;
  Must(brc::Collect());
  std::atomic<int> destroyed{0};
  for (int i = 0; i < 10; ++i) YoungCycle(&destroyed);
  absl::StatusOr<uint64_t> frozen = brc::Freeze();
  REQUIRE(frozen.ok());
  CHECK(*frozen >= 20);
  CHECK(Must(brc::CollectYoung()).scanned == 0);
  REQUIRE(brc::Unfreeze().ok());
  CHECK(Must(brc::CollectYoung()).scanned == 0);  // old now
  CHECK(destroyed.load() == 0);
  CHECK(Must(brc::Collect()).collected >= 20);
  CHECK(destroyed.load() == 20);
}

// A constructor that runs a collection: the object under construction is allocated but not
// yet tracked, so the collection skips it and keeps it young for the next one.
struct CollectingCtor : brc::Object {
  static constexpr std::string_view kTypeName = "CollectingCtor";
  CollectingCtor(std::atomic<int>* destroyed, bool young) : destroyed(destroyed) {
    absl::StatusOr<brc::CollectResult> r = young ? brc::CollectYoung() : brc::Collect();
    ok = r.ok();
  }
  ~CollectingCtor() { destroyed->fetch_add(1); }
  void Trace(brc::Visitor& v) const { v.Visit(self); }
  void Clear() { self = nullptr; }
  std::atomic<int>* destroyed;
  bool ok = false;
  brc::Ref<CollectingCtor> self;
};

TEST_CASE("An object whose constructor runs a collection is still young afterwards",
          "[collector][young][reentrancy]") {
  brc::ThreadScope attach;
  Manual manual;
  for (bool young : {true, false}) {
    INFO((young ? "CollectYoung" : "Collect") << " in the constructor");
    std::atomic<int> destroyed{0};
    {
      brc::Ref<CollectingCtor> c = brc::Make<CollectingCtor>(&destroyed, young);
      CHECK(c->ok);
      c->self = c;  // a garbage self-cycle once dropped
    }
    brc::CollectResult r = Must(brc::CollectYoung());
    CHECK(r.collected == 1);
    CHECK(destroyed.load() == 1);
  }
}

TEST_CASE("Young objects of other threads, live or exited, are examined", "[collector][young]") {
  brc::ThreadScope attach;
  Manual manual;
  Must(brc::Collect());
  std::atomic<int> destroyed{0};
  brc::Ref<YNode> handed;
  std::atomic<bool> made{false}, release{false};
  std::thread live([&] {
    brc::ThreadScope attach;
    for (int i = 0; i < 50; ++i) YoungCycle(&destroyed);
    made.store(true);
    brc::BlockingScope blocking;  // collections proceed while it waits
    while (!release.load()) std::this_thread::yield();
  });
  {
    brc::BlockingScope blocking;
    while (!made.load()) std::this_thread::yield();
  }
  std::thread exited([&] {
    brc::ThreadScope attach;
    for (int i = 0; i < 50; ++i) YoungCycle(&destroyed);
    handed = brc::Make<YNode>(&destroyed);  // young, referenced from this thread's stack
  });
  brc_test::JoinBlocking(exited);
  brc::CollectResult r = Must(brc::CollectYoung());
  release.store(true);
  brc_test::JoinBlocking(live);
  CHECK(r.scanned == 201);
  CHECK(r.collected == 200);
  CHECK(destroyed.load() == 200);
  CHECK(!handed->cleared);
}

TEST_CASE("Young collections find the same garbage with 1 and 2 marking workers",
          "[collector][young][parallel]") {
  BRC_TEST_SEED(seed);
  brc::ThreadScope attach;
  Manual manual;
  // Counters outlive the loop: each round's leftovers are freed by the next round's Collect().
  std::atomic<int> destroyed_by_round[2] = {0, 0};
  for (int workers : {1, 2}) {
    INFO("workers " << workers);
    REQUIRE(brc::SetCollectorConfig({.workers = workers}).ok());
    Must(brc::Collect());
    std::mt19937 rng(seed);
    std::atomic<int>& destroyed = destroyed_by_round[workers - 1];
    // An old heap, then a random young graph over young and old nodes; some young nodes are
    // held by old ones, some by the stack.
    std::vector<brc::Ref<YNode>> old;
    for (int i = 0; i < 20'000; ++i) old.push_back(brc::Make<YNode>(&destroyed));
    Must(brc::Collect());
    std::vector<brc::Ref<YNode>> young;
    for (int i = 0; i < 40'000; ++i) young.push_back(brc::Make<YNode>(&destroyed));
    for (auto& y : young) {
      y->a = young[rng() % young.size()];
      if (rng() % 4 == 0) y->b = old[rng() % old.size()];
    }
    for (int i = 0; i < 200; ++i) old[rng() % old.size()]->a = young[rng() % young.size()];
    std::vector<brc::Ref<YNode>> stack_roots;
    for (int i = 0; i < 100; ++i) stack_roots.push_back(young[rng() % young.size()]);
    // The expected garbage: young nodes reachable from neither the stack roots nor old nodes.
    std::vector<YNode*> reach;
    std::unordered_set<YNode*> alive;
    for (auto& r : stack_roots) reach.push_back(r.get());
    for (auto& o : old) {
      if (o->a) reach.push_back(o->a.get());
    }
    while (!reach.empty()) {
      YNode* n = reach.back();
      reach.pop_back();
      if (!alive.insert(n).second) continue;
      if (n->a) reach.push_back(n->a.get());
    }
    std::size_t young_alive = 0;
    for (auto& y : young) young_alive += alive.count(y.get());
    young.clear();  // counting frees what no cycle and no root holds
    uint64_t young_left = 40'000 - static_cast<uint64_t>(destroyed.load());
    brc::CollectResult r = Must(brc::CollectYoung());
    CHECK(r.scanned == young_left);
    CHECK(r.collected == young_left - young_alive);
    CHECK(destroyed.load() == static_cast<int>(40'000 - young_alive));
    for (auto& o : old) CHECK_FALSE(o->cleared);
    for (YNode* n : alive) CHECK_FALSE(n->cleared);
  }
  Must(brc::Collect());  // the last round's leftovers, while its counter is alive
}

TEST_CASE("Finalizers and callbacks of a young collection may not collect, and Clear() may allocate",
          "[collector][young][reentrancy]") {
  brc::ThreadScope attach;
  Manual manual;
  struct Fin : brc::Object {
    void Trace(brc::Visitor& v) const { v.Visit(self); }
    void Clear() {
      self = nullptr;
      // New young objects while the collection is clearing: they belong to the next one.
      brc::Ref<YNode> n = brc::Make<YNode>();
      n->a = n;
    }
    void Finalize() {
      absl::StatusOr<brc::CollectResult> young = brc::CollectYoung();
      absl::StatusOr<brc::CollectResult> full = brc::Collect();
      refused = young.status().code() == absl::StatusCode::kFailedPrecondition &&
                full.status().code() == absl::StatusCode::kFailedPrecondition &&
                young.status().message().find("Finalize()") != std::string_view::npos;
    }
    brc::Ref<Fin> self;
    bool* out = nullptr;
    bool refused = false;
    ~Fin() { *out = refused; }
  };
  bool refused = false;
  {
    brc::Ref<Fin> f = brc::Make<Fin>();
    f->out = &refused;
    f->self = f;
  }
  brc::CollectResult r = Must(brc::CollectYoung());
  CHECK(r.finalized == 1);
  CHECK(r.collected == 1);
  CHECK(refused);
  // The self-cycle Clear() made is young garbage for the next young collection.
  CHECK(Must(brc::CollectYoung()).collected == 1);
}

}  // namespace
