// Tests for brc/collector.h, the basics: a dropped cycle lives until a collection frees it,
// which objects are tracked and what they take in memory, acyclic garbage freed by counting
// alone (memory stays bounded with collection off, also for large objects freed by another
// thread), frozen objects, GetReferents/GetReferrers, and parallel marking against serial.
// The rest of the collector's tests, by mechanism: collector_finalizer_test.cc (finalizers,
// resurrection, collections refused inside one), collector_weak_test.cc (weak references during
// a collection), collector_schedule_test.cc (automatic collections), collector_config_test.cc
// (configuration, statistics, errors) and collector_threads_test.cc (collections racing with
// other threads); collector_util.h holds the nodes and helpers they share.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <random>
#include <thread>
#include <vector>

#include "collector_util.h"
#include "test_util.h"

namespace brc_collector_test {
namespace {

TEST_CASE("A dropped three-node ring lives until a collection frees it", "[collector]") {
  brc::ThreadScope attach;
  ManualCollections manual;
  std::atomic<int> destroyed{0};
  brc::Ref<GNode> ring = Ring(3, &destroyed);
  CHECK(brc::IsTracked(ring.get()));
  MustCollect();
  CHECK(destroyed.load() == 0);  // still referenced from here
  ring = nullptr;
  CHECK(destroyed.load() == 0);  // counting alone cannot free a cycle
  brc::CollectResult r = MustCollect();
  CHECK(destroyed.load() == 3);
  CHECK(r.unreachable == 3);
  CHECK(r.collected == 3);
  CHECK(r.uncollectable == 0);
  CHECK(r.scanned >= 3);
  CHECK(r.total_time >= r.time_stopped);
}

TEST_CASE("Leaf types are not tracked, tracked ones are until they die", "[collector]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  brc::Ref<brc_test::Counted> leaf = brc::Make<brc_test::Counted>(&destroyed);
  CHECK_FALSE(brc::IsTracked(leaf.get()));
  brc::Ref<GNode> node = brc::Make<GNode>(&destroyed);
  CHECK(brc::IsTracked(node.get()));
}

TEST_CASE("A tracked object costs the 24-byte header of a leaf, nothing more", "[collector]") {
  struct Empty : brc::Object {
    void Trace(brc::Visitor&) const {}
    void Clear() {}
  };
  struct OneRef : brc::Object {
    void Trace(brc::Visitor& v) const { v.Visit(next); }
    void Clear() { next = nullptr; }
    brc::Ref<OneRef> next;
  };
  struct alignas(16) Aligned : brc::Object {
    void Trace(brc::Visitor&) const {}
    void Clear() {}
  };
  // The collector's state lives in the header (brc/detail/gc_word.h): no word in front.
  CHECK(sizeof(brc::Object) == 24);
  CHECK(brc::testing::TrackedBlockSizeForTesting(sizeof(Empty), alignof(Empty)) == 32);
  // Header + one reference: 32 bytes, a 32-byte block (it was 48 with a collector word).
  CHECK(sizeof(OneRef) == 32);
  CHECK(brc::testing::TrackedBlockSizeForTesting(sizeof(OneRef), alignof(OneRef)) == 32);
  CHECK(brc::testing::TrackedBlockSizeForTesting(sizeof(Aligned), alignof(Aligned)) == 32);
  // Any node: its size rounded up to the next class (multiples of 16 up to 128).
  CHECK(brc::testing::TrackedBlockSizeForTesting(sizeof(GNode), alignof(GNode)) ==
        (sizeof(GNode) + 15) / 16 * 16);
  // And the objects are usable, at the sizes claimed.
  brc::ThreadScope attach;
  ManualCollections manual;
  brc::Ref<OneRef> a = brc::Make<OneRef>();
  brc::Ref<Aligned> b = brc::Make<Aligned>();
  CHECK(reinterpret_cast<uintptr_t>(b.get()) % 16 == 0);
  a->next = a;
  a = nullptr;
  CHECK(MustCollect().collected >= 1);
}

TEST_CASE("Acyclic garbage is freed by counting so memory stays bounded with collection off",
          "[collector]") {
  brc::ThreadScope attach;
  ManualCollections manual;
  constexpr int kElements = 1'000'000;
  std::atomic<int> destroyed{0};
  uint64_t pages_after_first = 0;
  uint64_t collections_before = brc::GetCollectorStats().collections;
  for (int iter = 0; iter < 4; ++iter) {
    brc::Ref<GNode> head;
    for (int i = 0; i < kElements; ++i) {
      brc::Ref<GNode> n = brc::Make<GNode>(&destroyed, i);
      n->a = std::move(head);
      head = std::move(n);
    }
    head = nullptr;  // a million-deep chain, freed with constant stack
    CHECK(destroyed.load() == kElements * (iter + 1));
    uint64_t pages = brc::testing::CollectorHeapPagesForTesting();
    if (iter == 0) pages_after_first = pages;
    // A million live nodes fill more than 700 pages of 64 KiB; once they are freed the thread
    // keeps its empty pages for reuse (at most its peak), so later iterations reuse them
    // instead of growing the heap. A BRC_DEBUG build's quarantine keeps up to 65,536 freed
    // nodes (64-byte blocks) in use across iterations, which can raise the peak once by that.
    const uint64_t quarantined_pages =
        brc::testing::QuarantineCapacityForTesting() * 64 / (64 << 10) + 2;
    CHECK(pages <= pages_after_first + 8 + 2 * quarantined_pages);
  }
  // Given back on request (BRC_DEBUG builds keep 65,536 freed objects quarantined: about 50
  // pages).
  brc::ReleaseFreeMemory();
  CHECK(brc::testing::CollectorHeapPagesForTesting() < 200);
  CHECK(brc::GetCollectorStats().collections == collections_before);  // counting did it all
}

// A regression test for a bug found in review.
TEST_CASE("Large tracked objects freed by another thread do not pile up", "[collector][heap]") {
  struct Big : brc::Object {
    void Trace(brc::Visitor&) const {}
    void Clear() {}
    char payload[256 << 10];
  };
  brc::ThreadScope attach;
  ManualCollections manual;
  std::atomic<Big*> slot{nullptr};
  std::atomic<bool> done{false};
  // Pages other tests left in other (exited) threads' heaps, when several run in one process.
  const uint64_t baseline = brc::testing::CollectorHeapPagesForTesting();
  uint64_t max_pages = 0;
  std::thread owner([&] {
    brc::ThreadScope attach;
    for (int i = 0; i < 200; ++i) {
      slot.store(brc::Make<Big>().Release());
      while (slot.load() != nullptr) brc::Safepoint();  // the main thread drops it
      max_pages = std::max(max_pages, brc::testing::CollectorHeapPagesForTesting());
    }
    done.store(true);
  });
  while (!done.load()) {
    if (Big* big = slot.load()) {
      slot.store(nullptr);
      brc::Ref<Big>::Adopt(big);  // dropped here, on a thread that does not own its page
    }
    brc::Safepoint();
  }
  brc_test::JoinBlocking(owner);
  INFO("peak collector pages: " << max_pages << ", before the test: " << baseline);
  // Each large page is released at the owner's next large allocation (BRC_DEBUG's quarantine
  // holds on to freed objects, pages included, for a while).
  uint64_t quarantined = std::min<uint64_t>(200, brc::testing::QuarantineCapacityForTesting());
  CHECK(max_pages < baseline + 20 + quarantined);
}

TEST_CASE("Frozen objects are not scanned and not freed", "[collector]") {
  brc::ThreadScope attach;
  ManualCollections manual;
  std::atomic<int> destroyed{0};
  brc::Ref<GNode> ring = Ring(10, &destroyed);
  absl::StatusOr<uint64_t> frozen = brc::Freeze();
  REQUIRE(frozen.ok());
  CHECK(*frozen >= 10);
  ring = nullptr;
  brc::CollectResult r = MustCollect();
  CHECK(destroyed.load() == 0);
  CHECK(r.collected == 0);
  CHECK(r.scanned == 0);  // everything alive was frozen, and nothing new was made
  absl::StatusOr<uint64_t> thawed = brc::Unfreeze();
  REQUIRE(thawed.ok());
  CHECK(*thawed == *frozen);
  r = MustCollect();
  CHECK(r.collected == 10);
  CHECK(destroyed.load() == 10);
}

TEST_CASE("GetReferents and GetReferrers follow Trace", "[collector]") {
  brc::ThreadScope attach;
  brc::Ref<GNode> x = brc::Make<GNode>();
  brc::Ref<GNode> y = brc::Make<GNode>();
  brc::Ref<GNode> z = brc::Make<GNode>();
  x->a = z;
  y->b = z;
  std::vector<brc::Ref<brc::Object>> referents = brc::GetReferents(x.get());
  REQUIRE(referents.size() == 1);
  CHECK(referents[0].get() == z.get());
  std::vector<brc::Ref<brc::Object>> referrers = brc::GetReferrers(z.get());
  CHECK(referrers.size() == 2);
  bool has_x = false, has_y = false;
  for (auto& r : referrers) {
    has_x |= r.get() == x.get();
    has_y |= r.get() == y.get();
  }
  CHECK(has_x);
  CHECK(has_y);
}

TEST_CASE("Parallel marking finds the same garbage as serial marking", "[collector][parallel]") {
  BRC_TEST_SEED(seed);
  brc::ThreadScope attach;
  ManualCollections manual;
  for (int workers : {1, 2, 4}) {
    INFO("workers " << workers);
    REQUIRE(brc::SetCollectorConfig({.workers = workers}).ok());
    std::mt19937 rng(seed);
    std::atomic<int> destroyed{0};
    std::vector<brc::Ref<GNode>> roots;
    std::vector<GNode*> all;
    // 60,000 nodes (enough pages for several workers) in random graphs; a random third of
    // the rings stay rooted.
    int garbage_nodes = 0;
    for (int ring = 0; ring < 3000; ++ring) {
      brc::Ref<GNode> r = Ring(20, &destroyed);
      // Cross edges into earlier rooted rings keep garbage pointing at live objects.
      if (!roots.empty()) r->b = roots[rng() % roots.size()];
      if (rng() % 3 == 0) {
        roots.push_back(r);
      } else {
        garbage_nodes += 20;
      }
    }
    brc::CollectResult r = MustCollect();
    CHECK(r.collected == static_cast<uint64_t>(garbage_nodes));
    CHECK(destroyed.load() == garbage_nodes);
    roots.clear();
    r = MustCollect();
    CHECK(destroyed.load() == 60000);
  }
  REQUIRE(brc::SetCollectorConfig({}).ok());
}

}  // namespace
}  // namespace brc_collector_test
