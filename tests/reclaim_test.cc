// Pages freed by other threads (lib/gc_heap.h, "Freed by other threads", "Cache decay",
// "Exited owners") and the page source (lib/page_source.cc): memory comes back without a
// collection, whether the owner is alive (at its safepoints) or has exited.
//
// Remote frees with a live owner: the owner sits in a BlockingScope while another thread drops
// its objects, so that thread merges on its behalf and frees the blocks into the owner's pages
// (a drop with the owner attached would queue the object back to it instead).
#include <atomic>
#include <cstdint>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "brc/collector.h"
#include "test_util.h"

namespace {

using brc_test::Counted;
using brc_test::Manual;

// A tracked object (it lives in the collector's heap).
struct TNode : brc::Object {
  explicit TNode(std::atomic<int>* destroyed) : destroyed(destroyed) {}
  ~TNode() { destroyed->fetch_add(1, std::memory_order_relaxed); }
  void Trace(brc::Visitor& v) const { v.Visit(next); }
  void Clear() { next = nullptr; }
  std::atomic<int>* destroyed;
  brc::Ref<TNode> next;
};

// A leaf object whose payload is a pattern of its address, checked at destruction: a block
// handed out twice, or reused while live, breaks it (72 bytes: a 40-byte payload).
using Patterned = brc_test::Sized<72>;

uint64_t InUse(uint32_t tid) { return brc::testing::HeapPagesOfThreadForTesting(tid).in_use; }
uint64_t Cached(uint32_t tid) { return brc::testing::HeapPagesOfThreadForTesting(tid).cached; }

// Makes `n` leaf and `n` tracked objects on the calling thread.
void MakeMany(int n, std::atomic<int>* destroyed, std::vector<brc::Ref<Patterned>>* leaves,
              std::vector<brc::Ref<TNode>>* nodes) {
  for (int i = 0; i < n; ++i) {
    leaves->push_back(brc::Make<Patterned>(destroyed));
    nodes->push_back(brc::Make<TNode>(destroyed));
  }
}

// BRC_DEBUG keeps freed objects in a quarantine before their memory goes back: pushes enough
// fresh leaf objects through it that everything freed before leaves it (freed by this thread).
void FlushQuarantine() {
  std::atomic<int> destroyed{0};
  for (std::size_t i = 0; i < brc::testing::QuarantineCapacityForTesting() + 16; ++i) {
    brc::Make<Counted>(&destroyed);
  }
}

// Drops everything in `refs` on a fresh attached thread.
template <class... V>
void DropOnOtherThread(V&... refs) {
  std::thread([&] {
    brc::ThreadScope attach;
    (refs.clear(), ...);
    FlushQuarantine();
  }).join();
}

uint64_t Collections() { return brc::GetCollectorStats().collections; }

// Makes 20,000 leaf and tracked objects on the calling thread and drops them there: their
// empty pages go to the thread's caches.
void FillCache(std::atomic<int>* destroyed) {
  {
    std::vector<brc::Ref<Patterned>> leaves;
    std::vector<brc::Ref<TNode>> nodes;
    MakeMany(20000, destroyed, &leaves, &nodes);
  }
  FlushQuarantine();
}

}  // namespace

TEST_CASE("Blocks another thread frees are reclaimed at the owner's next safepoint, without a "
          "collection", "[reclaim]") {
  Manual manual;
  brc::ThreadScope attach;
  uint32_t self = brc::CurrentThreadId();
  brc::ReleaseFreeMemory();
  uint64_t before = InUse(self);
  uint64_t collections = Collections();
  std::atomic<int> destroyed{0};
  std::vector<brc::Ref<Patterned>> leaves;
  std::vector<brc::Ref<TNode>> nodes;
  constexpr int kN = 20000;  // about 16 leaf and 25 tracked pages
  MakeMany(kN, &destroyed, &leaves, &nodes);
  uint64_t full = InUse(self);
  CHECK(full > before + 10);
  {
    brc::BlockingScope blocked;  // the other thread frees into this thread's pages
    DropOnOtherThread(leaves, nodes);
  }
  CHECK(destroyed.load() == 2 * kN);
  // Nothing reclaimed yet: the blocks wait on their pages' remote lists.
  CHECK(InUse(self) == full);
  brc::Safepoint();
  // Every page but each class's head (kept for the next allocation) left the lists.
  CHECK(InUse(self) <= before + 4);
  CHECK(Collections() == collections);
  CHECK(Patterned::corrupted.load() == 0);
  // The freed blocks are usable again.
  MakeMany(kN, &destroyed, &leaves, &nodes);
  leaves.clear();
  nodes.clear();
  CHECK(destroyed.load() == 4 * kN);
  CHECK(Patterned::corrupted.load() == 0);
}

TEST_CASE("An exited thread's pages are released once another thread freed their blocks, "
          "without a collection", "[reclaim]") {
  Manual manual;
  brc::ThreadScope attach;
  uint64_t collections = Collections();
  std::size_t source_before = brc::testing::PageSourcePagesForTesting();
  std::atomic<int> destroyed{0};
  std::vector<brc::Ref<Patterned>> leaves;
  std::vector<brc::Ref<TNode>> nodes;
  uint32_t producer = 0;
  constexpr int kN = 20000;
  std::thread([&] {
    brc::ThreadScope scope;
    producer = brc::CurrentThreadId();
    MakeMany(kN, &destroyed, &leaves, &nodes);
  }).join();
  REQUIRE(producer != 0);
  CHECK(InUse(producer) > 10);  // its objects are still alive
  // This thread merges on behalf of the exited owner and frees into its pages; its next
  // safepoint releases them.
  leaves.clear();
  nodes.clear();
  FlushQuarantine();
  CHECK(destroyed.load() == 2 * kN);
  brc::Safepoint();
  CHECK(InUse(producer) == 0);
  CHECK(Cached(producer) == 0);
  CHECK(Collections() == collections);
  if (brc::testing::PageSourceEnabledForTesting() && brc::testing::LeafHeapEnabledForTesting()) {
    // The pages went back to the page source (this thread's own heap may keep a few).
    CHECK(brc::testing::PageSourcePagesForTesting() <= source_before + 8);
  }
}

TEST_CASE("An exited thread's pages are released when the freeing thread detaches instead of "
          "reaching a safepoint", "[reclaim]") {
  Manual manual;
  std::atomic<int> destroyed{0};
  std::vector<brc::Ref<Patterned>> leaves;
  std::vector<brc::Ref<TNode>> nodes;
  uint32_t producer = 0;
  std::atomic<bool> attached{false};
  std::atomic<bool> produced{false};
  // The consumer attaches first, so that it does not take (adopt) the producer's id.
  std::thread consumer([&] {
    brc::ThreadScope scope;
    attached = true;
    while (!produced.load()) std::this_thread::yield();
    leaves.clear();
    nodes.clear();
    FlushQuarantine();
  });  // its ThreadScope ends without a safepoint after the drops
  while (!attached.load()) std::this_thread::yield();
  std::thread([&] {
    brc::ThreadScope scope;
    producer = brc::CurrentThreadId();
    MakeMany(5000, &destroyed, &leaves, &nodes);
  }).join();
  produced = true;
  consumer.join();
  CHECK(destroyed.load() == 10000);
  brc::ThreadScope attach;
  CHECK(InUse(producer) == 0);
}

TEST_CASE("An idle thread's cache of empty pages decays at its safepoints", "[reclaim]") {
  Manual manual;
  brc::ThreadScope attach;
  uint32_t self = brc::CurrentThreadId();
  brc::ReleaseFreeMemory();
  std::atomic<int> destroyed{0};
  FillCache(&destroyed);
  uint64_t cached = Cached(self);
  CHECK(cached > 2 * brc::testing::HeapPagesOfThreadForTesting(self).in_use);
  CHECK(cached > 8);
  brc::testing::SetCacheDecayIntervalForTesting(0);
  // The first tick only notes what is cached; the next returns what no allocation used.
  for (int i = 0; i < 3; ++i) brc::Safepoint();
  brc::testing::SetCacheDecayIntervalForTesting(50);
  CHECK(Cached(self) <= 8);  // kDecayKeepPages per heap
  // An allocation after the decay still works (fresh pages or the kept ones).
  auto again = brc::Make<Patterned>(&destroyed);
  CHECK(again != nullptr);
}

// A thread that allocates between its safepoints reads the decay's clock at one safepoint in
// kBusyDecayLooks (64, lib/gc_heap.h): its cache still decays, a few dozen safepoints late.
TEST_CASE("A busy thread's cache of empty pages decays too, at fewer of its safepoints",
          "[reclaim]") {
  Manual manual;
  brc::ThreadScope attach;
  uint32_t self = brc::CurrentThreadId();
  brc::ReleaseFreeMemory();
  std::atomic<int> destroyed{0};
  FillCache(&destroyed);
  REQUIRE(Cached(self) > 8);
  brc::testing::SetCacheDecayIntervalForTesting(0);
  // One small allocation between safepoints (it comes from a page in use, not the cache), as
  // many times as two paced looks need at most, each followed by a safepoint.
  std::vector<brc::Ref<Counted>> kept;
  int safepoints = 0;
  while (Cached(self) > 8 && safepoints < 4 * 64) {
    kept.push_back(brc::Make<Counted>(&destroyed));
    brc::Safepoint();
    ++safepoints;
  }
  brc::testing::SetCacheDecayIntervalForTesting(50);
  INFO("safepoints until the cache decayed: " << safepoints);
  CHECK(Cached(self) <= 8);  // kDecayKeepPages per heap
}

TEST_CASE("A cache that keeps being reused does not decay", "[reclaim]") {
  Manual manual;
  brc::ThreadScope attach;
  uint32_t self = brc::CurrentThreadId();
  std::atomic<int> destroyed{0};
  brc::testing::SetCacheDecayIntervalForTesting(1000000);  // no tick during the test
  for (int round = 0; round < 3; ++round) {
    std::vector<brc::Ref<Patterned>> leaves;
    std::vector<brc::Ref<TNode>> nodes;
    MakeMany(20000, &destroyed, &leaves, &nodes);
    leaves.clear();
    nodes.clear();
    FlushQuarantine();
    brc::Safepoint();
  }
  CHECK(Cached(self) > 8);
  brc::testing::SetCacheDecayIntervalForTesting(50);
}

TEST_CASE("Pages come from the malloc path when the page source cannot map", "[reclaim]") {
  Manual manual;
  brc::ThreadScope attach;
  brc::ReleaseFreeMemory();
  std::size_t source_before = brc::testing::PageSourcePagesForTesting();
  brc::testing::FailPageSourceMapsForTesting(true);
  std::atomic<int> destroyed{0};
  std::vector<brc::Ref<Patterned>> leaves;
  std::vector<brc::Ref<TNode>> nodes;
  // Enough pages to need new regions (the free pages of mapped ones are used first).
  MakeMany(200000, &destroyed, &leaves, &nodes);
  brc::testing::FailPageSourceMapsForTesting(false);
  uint32_t self = brc::CurrentThreadId();
  CHECK(InUse(self) > 100);
  {
    brc::BlockingScope blocked;
    DropOnOtherThread(leaves, nodes);  // remote frees into pages of both kinds
  }
  brc::Safepoint();
  brc::ReleaseFreeMemory();
  CHECK(destroyed.load() == 400000);
  CHECK(Patterned::corrupted.load() == 0);
  CHECK(brc::testing::PageSourcePagesForTesting() <= source_before + 8);
}

namespace {

// Wraps the default allocator; its Deallocate of a heap page, once armed, calls public API.
class HookAllocator final : public brc::Allocator {
 public:
  void* Allocate(std::size_t size, std::size_t align) noexcept override {
    return brc::DefaultAllocator().Allocate(size, align);
  }
  void Deallocate(void* p, std::size_t size, std::size_t align) noexcept override {
    brc::DefaultAllocator().Deallocate(p, size, align);
    if (size == (std::size_t{64} << 10) && armed.exchange(false)) Hook();
  }
  std::string_view Name() const noexcept override { return "reclaim-hook"; }

  void Hook() noexcept {
    // At a safepoint of an attached thread that is cleaning pages: every public call works.
    brc::Safepoint();
    auto fresh = brc::Make<TNode>(destroyed);  // may take a page: nested allocator calls
    fresh = nullptr;
    victim = nullptr;  // another thread's object
    collect_ok = brc::Collect().ok();
    brc::Safepoint();
    ran = true;
  }

  std::atomic<bool> armed{false};
  bool ran = false;
  bool collect_ok = false;
  std::atomic<int>* destroyed = nullptr;
  brc::Ref<TNode> victim;
};

}  // namespace

TEST_CASE("An allocator called while an exited thread's pages are released may call brc back",
          "[reclaim][reentrancy]") {
  Manual manual;
  static HookAllocator hook;  // outlives every object it makes
  REQUIRE(brc::SetAllocator(&hook).ok());
  std::atomic<int> destroyed{0};
  hook.destroyed = &destroyed;
  {
    brc::ThreadScope attach;
    std::vector<brc::Ref<TNode>> nodes;
    uint32_t producer = 0;
    std::atomic<bool> release{false};
    std::atomic<bool> victim_ready{false};
    std::thread other([&] {  // owns the victim, stays attached until the end
      brc::ThreadScope scope;
      hook.victim = brc::Make<TNode>(&destroyed);
      victim_ready = true;
      while (!release.load()) {
        brc::Safepoint();
        std::this_thread::yield();
      }
    });
    // `other` holds its id before the producer starts, so it cannot adopt the producer's.
    while (!victim_ready.load()) std::this_thread::yield();
    std::thread([&] {
      brc::ThreadScope scope;
      producer = brc::CurrentThreadId();
      for (int i = 0; i < 5000; ++i) nodes.push_back(brc::Make<TNode>(&destroyed));
    }).join();
    hook.armed = true;
    nodes.clear();     // frees into the exited producer's pages
    FlushQuarantine();
    brc::Safepoint();  // releases them: the first page's Deallocate runs the hook
    CHECK(hook.ran);
    CHECK(hook.collect_ok);
    CHECK(InUse(producer) == 0);
    hook.armed = false;
    release = true;
    {
      brc::BlockingScope blocked;  // `other` may stop the world as it detaches
      other.join();
    }
    CHECK(destroyed.load() == 5002);
  }
  REQUIRE(brc::SetAllocator(&brc::DefaultAllocator()).ok());
}

TEST_CASE("Concurrent remote frees while owners reclaim, block and exit", "[reclaim][threads]") {
  Manual manual;
  BRC_TEST_SEED(seed);
  constexpr int kProducers = 3;
  constexpr int kRounds = 4;
  constexpr int kPerRound = 3000;
  std::atomic<int> destroyed{0};
  std::atomic<int> made{0};
  for (int round = 0; round < kRounds; ++round) {
    std::vector<std::vector<brc::Ref<Patterned>>> handed(kProducers);
    std::vector<std::vector<brc::Ref<TNode>>> handed_nodes(kProducers);
    std::atomic<int> ready{0};
    std::atomic<bool> consumed{false};
    std::vector<std::thread> producers;
    for (int p = 0; p < kProducers; ++p) {
      producers.emplace_back([&, p] {
        std::mt19937 rng(seed + 977 * round + p);
        brc::ThreadScope scope;
        for (int i = 0; i < kPerRound; ++i) {
          handed[p].push_back(brc::Make<Patterned>(&destroyed));
          handed_nodes[p].push_back(brc::Make<TNode>(&destroyed));
        }
        made.fetch_add(2 * kPerRound);
        ready.fetch_add(1);
        // Some producers exit at once (their pages are cleaned by the consumers), some block
        // (the consumers free remotely), some stay attached and reach safepoints.
        switch (rng() % 3) {
          case 0:
            return;
          case 1: {
            brc::BlockingScope blocked;
            while (!consumed.load()) std::this_thread::yield();
            break;
          }
          default:
            while (!consumed.load()) {
              brc::Safepoint();
              std::this_thread::yield();
            }
        }
        brc::Safepoint();
      });
    }
    while (ready.load() != kProducers) std::this_thread::yield();
    std::vector<std::thread> consumers;
    for (int c = 0; c < 2; ++c) {
      consumers.emplace_back([&, c] {
        std::mt19937 rng(seed + 31 * round + c);
        brc::ThreadScope scope;
        for (int p = c; p < kProducers; p += 2) {
          std::shuffle(handed[p].begin(), handed[p].end(), rng);
          for (auto& r : handed[p]) {
            r = nullptr;
            if (rng() % 64 == 0) brc::Safepoint();
          }
          handed_nodes[p].clear();
        }
      });
    }
    for (auto& t : consumers) t.join();
    consumed = true;
    for (auto& t : producers) t.join();
  }
  brc::ThreadScope attach;
  brc::Safepoint();
  CHECK(destroyed.load() == made.load());
  CHECK(Patterned::corrupted.load() == 0);
  CHECK(brc::Collect().ok());
}
