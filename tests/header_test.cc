// The 24-byte tracked header (brc/detail/gc_word.h): the collector keeps its bits and mark epoch
// in the header and, while the world is stopped, its scratch counts in the owner-id half. These
// tests check what that design must keep: every owner comes back after collections of every
// kind (owned, merged, owned by an exited thread, with 1 and 2 marking workers, after a
// resurrection check), object flags set by other threads during a stop are not lost, and a
// tracked type whose header is not at the start of its block is refused.
#include <atomic>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "brc/brc.h"
#include "brc/testing.h"
#include "test_util.h"

namespace {

struct HNode : brc::Object {
  static constexpr std::string_view kTypeName = "HNode";
  void Trace(brc::Visitor& v) const { v.Visit(next); }
  void Clear() { next = nullptr; }
  brc::Ref<HNode> next;
};

using brc_test::Manual;
using brc_test::Must;

TEST_CASE("Every owner comes back after young and full collections", "[collector][header]") {
  brc::ThreadScope attach;
  Manual manual;
  const uint32_t me = brc::CurrentThreadId();
  for (int workers : {1, 2}) {
    INFO("workers " << workers);
    REQUIRE(brc::SetCollectorConfig({.workers = workers}).ok());
    // Owned here, referenced from other tracked objects (so their scratch counts are not 0).
    std::vector<brc::Ref<HNode>> mine;
    for (int i = 0; i < 30'000; ++i) {
      mine.push_back(brc::Make<HNode>());
      if (i > 0) mine[i]->next = mine[i - 1];
    }
    // Made by a thread that has exited: still owned by its id.
    uint32_t exited_id = 0;
    std::vector<brc::Ref<HNode>> orphans;
    brc_test::RunAttached([&] {
      exited_id = brc::CurrentThreadId();
      for (int i = 0; i < 1000; ++i) orphans.push_back(brc::Make<HNode>());
    });
    // Merged: made by another thread, which dropped its references after this one took its own.
    std::vector<brc::Ref<HNode>> made(1000), merged;
    std::atomic<bool> ready{false}, taken{false};
    std::thread maker([&] {
      brc::ThreadScope attach;
      for (int i = 0; i < 1000; ++i) {
        made[static_cast<std::size_t>(i)] = brc::Make<HNode>();
        made[static_cast<std::size_t>(i)]->next = mine[static_cast<std::size_t>(i)];
      }
      ready.store(true);
      {
        brc::BlockingScope blocking;
        while (!taken.load()) std::this_thread::yield();
      }
      for (auto& n : made) n = nullptr;  // the owner's last references: merged now
    });
    {
      brc::BlockingScope blocking;
      while (!ready.load()) std::this_thread::yield();
    }
    merged = made;  // this thread's references: shared increments
    taken.store(true);
    brc_test::JoinBlocking(maker);
    brc::Safepoint();
    for (auto& n : merged) REQUIRE(brc::testing::GetCounts(n.get()).owner == 0);
    for (int round = 0; round < 3; ++round) {
      Must(round == 1 ? brc::Collect() : brc::CollectYoung());
      for (auto& n : mine) REQUIRE(brc::testing::GetCounts(n.get()).owner == me);
      for (auto& n : orphans) REQUIRE(brc::testing::GetCounts(n.get()).owner == exited_id);
      for (auto& n : merged) REQUIRE(brc::testing::GetCounts(n.get()).owner == 0);
    }
    // And counting still works on all of them: the owner's fast path, the others' atomic one.
    int64_t before = brc::GetRefCount(mine[0].get());
    {
      brc::Ref<HNode> extra = mine[0];
      CHECK(brc::GetRefCount(mine[0].get()) == before + 1);
    }
    CHECK(brc::GetRefCount(mine[0].get()) == before);
  }
}

struct FNode : brc::Object {
  static constexpr std::string_view kTypeName = "header_test::FNode";
  void Trace(brc::Visitor& v) const { v.Visit(next); }
  void Clear() { next = nullptr; }
  void Finalize() {
    if (keep != nullptr) *keep = brc::Ref<FNode>::NewRef(this);  // resurrects itself
  }
  brc::Ref<FNode> next;
  brc::Ref<FNode>* keep = nullptr;
};

TEST_CASE("Owners come back after a resurrection check", "[collector][header]") {
  brc::ThreadScope attach;
  Manual manual;
  const uint32_t me = brc::CurrentThreadId();
  brc::Ref<FNode> kept;
  FNode* a_raw;
  {
    brc::Ref<FNode> a = brc::Make<FNode>();
    brc::Ref<FNode> b = brc::Make<FNode>();
    a->next = b;
    b->next = a;
    a->keep = &kept;
    a_raw = a.get();
  }
  brc::CollectResult r = Must(brc::CollectYoung());
  CHECK(r.finalized == 2);
  CHECK(r.resurrected == 2);
  REQUIRE(kept.get() == a_raw);
  CHECK(brc::testing::GetCounts(kept.get()).owner == me);
  CHECK(brc::testing::GetCounts(kept->next.get()).owner == me);
  kept->keep = nullptr;
  kept = nullptr;
  CHECK(Must(brc::Collect()).collected == 2);
}

TEST_CASE("A WeakRef made while a collection has the world stopped keeps its flag",
          "[collector][header][threads]") {
  // Regression: the collector's plain stores of its bits once shared a word with the object
  // flags, so a WeakRef made by a thread in a BlockingScope during a stop could lose its flag
  // (and its target, freed later, would leave a dangling weak slot).
  brc::ThreadScope attach;
  Manual manual;
  constexpr int kNodes = 4000;
  std::vector<brc::Ref<HNode>> nodes;
  for (int i = 0; i < kNodes; ++i) nodes.push_back(brc::Make<HNode>());
  std::vector<brc::Ref<HNode>> copies = nodes;  // handed to the other thread
  std::atomic<bool> done{false};
  std::vector<brc::WeakRef<HNode>> weak;
  weak.reserve(kNodes);
  std::thread maker([&] {
    brc::ThreadScope attach;
    std::vector<brc::Ref<HNode>> mine = std::move(copies);
    {
      brc::BlockingScope blocking;  // the world may stop around it meanwhile
      for (auto& n : mine) weak.emplace_back(n);
      done.store(true);
    }
    mine.clear();
  });
  int collections = 0;
  while (!done.load()) {
    Must(collections % 2 == 0 ? brc::Collect() : brc::CollectYoung());
    ++collections;
  }
  brc_test::JoinBlocking(maker);
  INFO("collections during the loop: " << collections);
  for (auto& n : nodes) {
    REQUIRE((brc::testing::GetCounts(n.get()).flags & brc::kFlagHasWeakRefs) != 0);
  }
  // The flag does its job: the WeakRefs expire when the nodes go.
  nodes.clear();
  brc::Safepoint();
  for (auto& w : weak) CHECK(w.expired());
}

struct Other {
  long payload[2] = {1, 2};
};
struct NotFirst : Other, brc::Object {
  static constexpr std::string_view kTypeName = "NotFirst";
  void Trace(brc::Visitor&) const {}
  void Clear() {}
};

TEST_CASE("A tracked type whose Object base is not first is refused, naming the type",
          "[collector][header][misuse]") {
  brc_test::ExpectAbort(
      [] {
        brc::ThreadScope attach;
        brc::Ref<NotFirst> n = brc::Make<NotFirst>();
      },
      "NotFirst");
}

}  // namespace

namespace {

// An allocator that, the first time the collector asks it for memory with the world stopped,
// makes a tracked node holding a reference to `victim` (user code may Make objects there: README
// "Re-entrancy", row Allocator).
struct MakingAllocator final : brc::Allocator {
  void* Allocate(std::size_t bytes, std::size_t align) noexcept override {
    if (armed && brc::IsWorldStoppedByThisThread()) {
      armed = false;
      try {
        made = brc::Make<HNode>();
        made->next = brc::Ref<HNode>::NewRef(victim);
      } catch (const std::bad_alloc&) {
        // leaves `made` empty: the test fails on it
      }
    }
    return brc::DefaultAllocator().Allocate(bytes, align);
  }
  void Deallocate(void* p, std::size_t bytes, std::size_t align) noexcept override {
    brc::DefaultAllocator().Deallocate(p, bytes, align);
  }
  std::string_view Name() const noexcept override { return "making"; }
  bool armed = false;
  HNode* victim = nullptr;
  brc::Ref<HNode> made;
};

TEST_CASE("An object made by an allocator during a collection's stop keeps what it references",
          "[collector][header][reentrancy]") {
  static MakingAllocator alloc;  // outlives every object it made
  REQUIRE(brc::SetAllocator(&alloc).ok());
  {
    brc::ThreadScope attach;
    Manual manual;
    for (bool young : {false, true}) {
      INFO((young ? "CollectYoung" : "Collect"));
      {
        // A self-cycle: garbage, until the node the allocator makes inside the collection's
        // stop references it too.
        brc::Ref<HNode> victim = brc::Make<HNode>();
        victim->next = victim;
        alloc.victim = victim.get();
      }
      alloc.armed = true;
      Must(young ? brc::CollectYoung() : brc::Collect());
      REQUIRE_FALSE(alloc.armed);  // the allocator ran inside the stop
      REQUIRE(alloc.made);
      CHECK(alloc.made->next.get() == alloc.victim);
      CHECK(alloc.victim->next.get() == alloc.victim);  // not cleared
      // Once the allocator lets go, the next full collection finds the self-cycle.
      alloc.made = nullptr;
      CHECK(Must(brc::Collect()).collected == 1);
    }
  }
  REQUIRE(brc::SetAllocator(&brc::DefaultAllocator()).ok());
}

}  // namespace
