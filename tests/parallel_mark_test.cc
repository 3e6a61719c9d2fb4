// Marking by parts (lib/collector_mark.cc, "Parts"): with several workers the pages are split
// into parts, only a part's worker writes the headers on it, references into other parts are
// mailed there, and marking goes on in rounds until no mail is left (after a few rounds the
// collecting thread finishes alone). What the tests pin down:
//  * the result is exactly one worker's: the same garbage found, nothing live cleared, counts
//    and owners intact afterwards, with 2, 3 and 4 workers, young and full collections;
//  * a chain that crosses parts at every link (one round per crossing, far past the round
//    limit) is marked to its end, and collected whole once it is garbage;
//  * running out of memory for mail falls back to one worker, which needs none; running out
//    for stacks too fails the collection and leaves every object as it was: the next
//    collection finds exactly the garbage.
// Re-entrancy: marking runs nothing but Trace; its memory (stacks, mailboxes) is mmap'd, and
// the mark-stack cap reaches the mailboxes too.
#include <algorithm>
#include <atomic>
#include <random>
#include <vector>

#include <catch2/catch.hpp>

#include "brc/brc.h"
#include "brc/testing.h"
#include "test_util.h"

namespace {

using brc_test::Manual;
using brc_test::Must;

using PNode = brc_test::PairNode;
using Workers = brc_test::MarkingWorkers;

// 60,000 nodes (about 40 pages: enough for several parts), a fifth of them garbage, linked at
// random so that most references cross parts: the live ones in one chain in a random order
// (held by a root every 1,000 links, with a few extra references among them), the garbage in
// rings of 2 to 50 in a random order, some of whose nodes also reference live ones.
struct RandomHeap {
  RandomHeap(uint32_t seed, std::atomic<int>* destroyed) {
    std::mt19937 rng(seed);
    std::vector<brc::Ref<PNode>> live, dead;
    for (int i = 0; i < 60'000; ++i) {
      (rng() % 5 == 0 ? dead : live).push_back(brc::Make<PNode>(destroyed));
    }
    std::shuffle(live.begin(), live.end(), rng);
    std::shuffle(dead.begin(), dead.end(), rng);
    for (std::size_t i = 0; i + 1 < live.size(); ++i) {
      live[i]->a = live[i + 1];
      if (rng() % 10 == 0) live[i]->b = live[rng() % live.size()];
      if (i % 1000 == 0) roots.push_back(live[i]);
    }
    for (std::size_t first = 0; first < dead.size();) {
      std::size_t last = std::min(dead.size(), first + 2 + rng() % 49) - 1;
      for (std::size_t i = first; i < last; ++i) dead[i]->a = dead[i + 1];
      dead[last]->a = dead[first];
      for (std::size_t i = first; i <= last; ++i) {
        if (rng() % 4 == 0) dead[i]->b = live[rng() % live.size()];
      }
      first = last + 1;
    }
    garbage = dead.size();
  }
  std::vector<brc::Ref<PNode>> roots;
  std::size_t garbage = 0;
};

}  // namespace

TEST_CASE("Marking by parts finds exactly the garbage one worker finds",
          "[collector][parallel]") {
  BRC_TEST_SEED(seed);
  brc::ThreadScope attach;
  Manual manual;
  for (bool young : {false, true}) {
    std::vector<uint64_t> collected;
    for (int workers : {1, 2, 3, 4}) {
      INFO("workers " << workers << ", young " << young);
      Workers w(workers);
      Must(brc::Collect());  // an empty heap: this round's nodes are the young set
      std::atomic<int> destroyed{0};
      {
        RandomHeap heap(seed, &destroyed);
        brc::testing::Counts before = brc::testing::GetCounts(heap.roots[0].get());
        brc::CollectResult r = Must(young ? brc::CollectYoung() : brc::Collect());
        CHECK(r.scanned == 60'000);
        CHECK(r.collected == heap.garbage);
        CHECK(destroyed.load() == static_cast<int>(heap.garbage));
        collected.push_back(r.collected);
        // By parts, references crossed parts: at least one round marked from mail.
        if (workers > 1) CHECK(brc::testing::LastMarkRoundsForTesting() >= 2);
        brc::testing::Counts after = brc::testing::GetCounts(heap.roots[0].get());
        CHECK(after.owner == before.owner);
        CHECK(after.local == before.local);
        CHECK(after.shared_count == before.shared_count);
        // What survived is intact (nothing reachable was cleared) and old now.
        for (auto& root : heap.roots) CHECK_FALSE(root->cleared);
        CHECK(Must(brc::CollectYoung()).scanned == 0);
      }
      Must(brc::Collect());  // the rest is garbage now
      CHECK(destroyed.load() == 60'000);
    }
    CHECK(collected[1] == collected[0]);
    CHECK(collected[2] == collected[0]);
    CHECK(collected[3] == collected[0]);
  }
}

TEST_CASE("A chain that crosses parts at every link is marked to its end",
          "[collector][parallel]") {
  brc::ThreadScope attach;
  Manual manual;
  Workers w(2);
  Must(brc::Collect());
  std::atomic<int> destroyed{0};
  // 40,000 nodes in allocation order; the chain alternates between the first and the second
  // half, which lie in different parts (contiguous runs of pages), and closes into a ring.
  constexpr int kNodes = 40'000;
  std::vector<brc::Ref<PNode>> nodes;
  for (int i = 0; i < kNodes; ++i) nodes.push_back(brc::Make<PNode>(&destroyed));
  std::vector<PNode*> order;
  for (int i = 0; i < kNodes / 2; ++i) {
    order.push_back(nodes[i].get());
    order.push_back(nodes[i + kNodes / 2].get());
  }
  for (std::size_t i = 0; i + 1 < order.size(); ++i) {
    order[i]->a = brc::Ref<PNode>::NewRef(order[i + 1]);
  }
  order.back()->a = brc::Ref<PNode>::NewRef(order.front());
  brc::Ref<PNode> head = brc::Ref<PNode>::NewRef(order.front());
  nodes.clear();
  for (bool young : {true, false}) {
    INFO("young " << young);
    brc::CollectResult r = Must(young ? brc::CollectYoung() : brc::Collect());
    CHECK(r.scanned == static_cast<uint64_t>(kNodes));
    CHECK(r.collected == 0);
    CHECK(destroyed.load() == 0);
    // Far more crossings than rounds: the collecting thread finished alone (8 rounds).
    CHECK(brc::testing::LastMarkRoundsForTesting() == 8);
  }
  for (PNode* n : order) CHECK_FALSE(n->cleared);
  head = nullptr;  // the ring is garbage now
  brc::CollectResult r = Must(brc::Collect());
  CHECK(r.collected == static_cast<uint64_t>(kNodes));
  CHECK(destroyed.load() == kNodes);
}

TEST_CASE("Marking by parts that runs out of memory for mail or stacks leaves every object as "
          "it was",
          "[collector][parallel][robust]") {
  BRC_TEST_SEED(seed);
  brc::ThreadScope attach;
  Manual manual;
  for (bool young : {true, false}) {
    INFO("young " << young);
    Workers w(2);
    Must(brc::Collect());
    std::atomic<int> destroyed{0};
    {
      RandomHeap heap(seed, &destroyed);
      brc::testing::Counts before = brc::testing::GetCounts(heap.roots[0].get());
      // No growth of any stack or mailbox succeeds (the smallest is 64 Ki entries).
      brc::testing::LimitMarkStacksForTesting(1);
      absl::StatusOr<brc::CollectResult> failed = young ? brc::CollectYoung() : brc::Collect();
      brc::testing::LimitMarkStacksForTesting(0);
      REQUIRE_FALSE(failed.ok());
      CHECK(failed.status().code() == absl::StatusCode::kResourceExhausted);
      CHECK(destroyed.load() == 0);
      brc::testing::Counts after = brc::testing::GetCounts(heap.roots[0].get());
      CHECK(after.owner == before.owner);
      CHECK(after.local == before.local);
      CHECK(after.shared_count == before.shared_count);
      // Undone exactly: the same collection now finds the garbage, and the young set is
      // still all 60,000 nodes.
      brc::CollectResult r = Must(young ? brc::CollectYoung() : brc::Collect());
      CHECK(r.scanned == 60'000);
      CHECK(r.collected == heap.garbage);
      CHECK(destroyed.load() == static_cast<int>(heap.garbage));
      for (auto& root : heap.roots) CHECK_FALSE(root->cleared);
    }
    Must(brc::Collect());
    CHECK(destroyed.load() == 60'000);
  }
}

TEST_CASE("Marking by parts that cannot mail falls back to one worker, which marks exactly",
          "[collector][parallel][robust]") {
  brc::ThreadScope attach;
  Manual manual;
  for (bool young : {true, false}) {
    INFO("young " << young);
    Workers w(2);
    Must(brc::Collect());
    std::atomic<int> destroyed{0};
    {
      // 300,000 nodes in one chain in a random order: about half of the links cross the two
      // parts, some 75,000 each way, more than a mailbox may hold under the cap below (64 Ki
      // entries), while one worker's depth-first marking of a chain needs a stack of one or two.
      std::vector<brc::Ref<PNode>> nodes;
      for (int i = 0; i < 300'000; ++i) nodes.push_back(brc::Make<PNode>(&destroyed));
      std::mt19937 rng(7);
      std::shuffle(nodes.begin(), nodes.end(), rng);
      for (std::size_t i = 0; i + 1 < nodes.size(); ++i) nodes[i]->a = nodes[i + 1];
      nodes.back()->a = nodes.front();  // a ring: garbage once the head goes
      brc::Ref<PNode> head = nodes.front();
      nodes.clear();
      brc::testing::LimitMarkStacksForTesting(std::size_t{1} << 16);
      absl::StatusOr<brc::CollectResult> r = young ? brc::CollectYoung() : brc::Collect();
      brc::testing::LimitMarkStacksForTesting(0);
      REQUIRE(r.ok());
      CHECK(r->scanned == 300'000);
      CHECK(r->collected == 0);
      CHECK(brc::testing::LastMarkRoundsForTesting() == 1);  // one worker marked
      CHECK(destroyed.load() == 0);
      CHECK(Must(brc::CollectYoung()).scanned == 0);  // old now, intact
      head = nullptr;
    }
    // Without the cap, by parts again: the ring is found whole.
    brc::CollectResult r = Must(brc::Collect());
    CHECK(r.collected == 300'000);
    CHECK(destroyed.load() == 300'000);
  }
}
