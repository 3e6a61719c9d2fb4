// Tests for brc/collector.h, configuration and errors: a refused configuration returns a status
// and changes nothing, statistics record each collection and its pause, running out of memory
// (a hand-off queue that cannot grow, a collection that cannot allocate) loses nothing, and a
// Trace that reports a reference its object does not hold is reported.
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <new>
#include <string_view>
#include <thread>

#include "collector_util.h"
#include "test_util.h"

namespace brc_collector_test {
namespace {

TEST_CASE("Collector configuration errors return a status", "[collector]") {
  auto config = [](uint64_t threshold, double ratio, int workers) {
    return brc::CollectorConfig{
        .young_threshold = threshold, .full_ratio = ratio, .workers = workers};
  };
  CHECK(brc::SetCollectorConfig(config(0, 0.25, 1)).code() == absl::StatusCode::kInvalidArgument);
  CHECK(brc::SetCollectorConfig(config((uint64_t{1} << 40) + 1, 0.25, 1)).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(brc::SetCollectorConfig(config(UINT64_MAX, 0.25, 1)).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(brc::SetCollectorConfig(config(100, -1.0, 1)).code() == absl::StatusCode::kInvalidArgument);
  CHECK(brc::SetCollectorConfig(config(100, -0.0, 1)).ok());
  CHECK(brc::SetCollectorConfig(config(100, 1e7, 1)).code() == absl::StatusCode::kInvalidArgument);
  CHECK(brc::SetCollectorConfig(config(100, INFINITY, 1)).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(brc::SetCollectorConfig(config(100, std::nan(""), 1)).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(brc::SetCollectorConfig(config(100, 0.25, 0)).code() == absl::StatusCode::kInvalidArgument);
  CHECK(brc::SetCollectorConfig(config(100, 0.25, -1)).code() == absl::StatusCode::kInvalidArgument);
  CHECK(brc::SetCollectorConfig(config(100, 0.25, 1000)).code() == absl::StatusCode::kInvalidArgument);
  // A refused configuration changes nothing.
  CHECK(brc::GetCollectorConfig().young_threshold == 100);
  REQUIRE(brc::SetCollectorConfig(config(1u << 20, 1e6, 2)).ok());  // the extremes allowed
  REQUIRE(brc::SetCollectorConfig(config(100, 0.5, 2)).ok());
  CHECK(brc::GetCollectorConfig().young_threshold == 100);
  CHECK(brc::GetCollectorConfig().full_ratio == 0.5);
  CHECK(brc::GetCollectorConfig().workers == 2);
  REQUIRE(brc::SetCollectorConfig({}).ok());
  brc::ThreadScope attach;
  brc::DisableCollector();
  CHECK_FALSE(brc::IsCollectorEnabled());
  brc::EnableCollector();
  CHECK(brc::IsCollectorEnabled());
}

TEST_CASE("Collection statistics record each collection and its pauses", "[collector]") {
  brc::ThreadScope attach;
  ManualCollections manual;
  brc::CollectorStats before = brc::GetCollectorStats();
  Ring(7, nullptr);
  MustCollect();
  brc::CollectorStats after = brc::GetCollectorStats();
  CHECK(after.collections == before.collections + 1);
  CHECK(after.collected == before.collected + 7);
  uint64_t pauses_before = 0, pauses_after = 0;
  for (uint64_t n : before.pause_histogram) pauses_before += n;
  for (uint64_t n : after.pause_histogram) pauses_after += n;
  CHECK(pauses_after == pauses_before + 1);
  CHECK(after.max_pause >= before.max_pause);
}

// An allocator that fails on demand (otherwise malloc), for the out-of-memory paths.
class FailingAllocator final : public brc::Allocator {
 public:
  void* Allocate(std::size_t size, std::size_t align) noexcept override {
    if (fail.load()) return nullptr;
    return brc::MallocAllocator().Allocate(size, align);
  }
  void Deallocate(void* p, std::size_t size, std::size_t align) noexcept override {
    brc::MallocAllocator().Deallocate(p, size, align);
  }
  std::string_view Name() const noexcept override { return "failing"; }
  std::atomic<bool> fail{false};
};

TEST_CASE("A queue that cannot grow merges on the owner's behalf with the world stopped",
          "[collector][oom]") {
  static FailingAllocator failing;  // outlives every object it makes
  REQUIRE(brc::SetAllocator(&failing).ok());
  {
    brc::ThreadScope attach;
    std::atomic<int> destroyed{0};
    std::atomic<bool> handed{false};
    std::atomic<bool> done{false};
    brc_test::Counted* raw = nullptr;
    std::thread owner([&] {
      brc::ThreadScope attach;
      brc::testing::ReleaseQueueMemoryForTesting();  // the next queueing must allocate
      raw = brc::Make<brc_test::Counted>(&destroyed).Release();
      handed.store(true);
      while (!done.load()) brc::Safepoint();
    });
    while (!handed.load()) std::this_thread::yield();
    uint64_t merges = brc::GetStats().merges_for_owner;
    failing.fail.store(true);
    brc::Ref<brc_test::Counted>::Adopt(raw);  // dropped by a non-owner: buffered for the owner
    brc::Safepoint();  // the buffer's push must queue, cannot
    failing.fail.store(false);
    // Merged (and freed) at once instead of queued: nothing lost, nothing pinned.
    CHECK(destroyed.load() == 1);
    CHECK(brc::GetStats().merges_for_owner == merges + 1);
    done.store(true);
    brc_test::JoinBlocking(owner);
  }
  REQUIRE(brc::SetAllocator(&brc::DefaultAllocator()).ok());
}

TEST_CASE("A collection that runs out of memory reports it and changes nothing",
          "[collector][oom]") {
  static FailingAllocator failing;
  REQUIRE(brc::SetAllocator(&failing).ok());
  {
    brc::ThreadScope attach;
    ManualCollections manual;
    std::atomic<int> destroyed{0};
    brc::Ref<GNode> live = Ring(4, &destroyed);
    Ring(3, &destroyed);  // garbage
    failing.fail.store(true);
    absl::StatusOr<brc::CollectResult> r = brc::Collect();
    // (A leaf needs memory from the allocator; a tracked node may still find a free block in
    // its page.)
    CHECK_THROWS_AS(brc::Make<brc_test::Counted>(&destroyed), std::bad_alloc);
    failing.fail.store(false);
    CHECK(r.status().code() == absl::StatusCode::kResourceExhausted);
    CHECK(destroyed.load() == 0);
    CHECK(live->a->a->a->a.get() == live.get());  // untouched
    // With memory back, the next collection finds the garbage as if nothing had happened.
    brc::CollectResult again = MustCollect();
    CHECK(again.collected == 3);
    CHECK(destroyed.load() == 3);
    live = nullptr;
    again = MustCollect();
    CHECK(again.collected == 4);
  }
  REQUIRE(brc::SetAllocator(&brc::DefaultAllocator()).ok());
}

// Its Trace reports one reference twice: one more than it holds.
struct Liar : brc::Object {
  static constexpr std::string_view kTypeName = "Liar";
  void Trace(brc::Visitor& v) const {
    v.Visit(other);
    v.Visit(other);
  }
  void Clear() { other = nullptr; }
  brc::Ref<GNode> other;
};

TEST_CASE("A Trace that reports a reference its object does not hold is reported",
          "[collector][misuse]") {
  // Counting collections check every Trace against the counts: a heap with a cycle (here a
  // ring of two GNodes) always counts.
  brc_test::ExpectAbort(
      [] {
        brc::ThreadScope attach;
        brc::Ref<Liar> liar = brc::Make<Liar>();
        liar->other = brc::Make<GNode>();
        liar->other->a = brc::Make<GNode>();
        liar->other->a->a = liar->other;
        (void)brc::Collect();
      },
      "reports more references to this object than its reference count");
#ifdef BRC_DEBUG
  // BRC_DEBUG counts after every acyclic check too, so an acyclic heap is checked as well.
  brc_test::ExpectAbort(
      [] {
        brc::ThreadScope attach;
        brc::Ref<Liar> liar = brc::Make<Liar>();
        liar->other = brc::Make<GNode>();
        (void)brc::Collect();
      },
      "reports more references to this object than its reference count");
#endif
}

}  // namespace
}  // namespace brc_collector_test
