// Tests for brc/collector.h, the automatic schedule: allocation triggers collections, their
// number grows like log(heap) while the heap grows, young collections run every threshold and
// full ones when the old heap grew by the ratio (total work linear in allocations), and
// allocations of short-lived threads count too.
#include <atomic>
#include <cmath>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "collector_util.h"
#include "test_util.h"

namespace brc_collector_test {
namespace {

TEST_CASE("Allocation triggers collections and their number stays bounded as the heap grows",
          "[collector][schedule]") {
  brc::ThreadScope attach;
  MustCollect();  // a clean slate for the schedule
  constexpr uint64_t kThreshold = 1000;
  constexpr double kRatio = 0.5;
  // The schedule before young collections: every collection full, each waiting for ratio x
  // the survivors.
  REQUIRE(brc::SetCollectorConfig({.young_threshold = kThreshold, .full_ratio = kRatio,
                                   .generational = false}).ok());
  brc::EnableCollector();
  std::atomic<int> destroyed{0};
  uint64_t before = brc::GetCollectorStats().automatic_collections;
  // Garbage cycles only: the live heap stays small, so collections come every ~threshold.
  for (int i = 0; i < 20'000; ++i) Ring(2, &destroyed);
  uint64_t garbage_runs = brc::GetCollectorStats().automatic_collections - before;
  CHECK(garbage_runs >= 40000 / kThreshold / 2);
  CHECK(destroyed.load() > 30000);  // they found and freed the cycles
  // A growing live heap of N objects: each collection waits for ratio x the survivors, so the
  // count grows like log(N), not like N / threshold.
  brc::CollectorStats s0 = brc::GetCollectorStats();
  std::vector<brc::Ref<GNode>> live;
  constexpr int kLive = 200'000;
  for (int i = 0; i < kLive; ++i) live.push_back(brc::Make<GNode>());
  brc::CollectorStats s1 = brc::GetCollectorStats();
  uint64_t growth_runs = s1.automatic_collections - s0.automatic_collections;
  INFO("collections while the heap grew to " << kLive << ": " << growth_runs);
  CHECK(growth_runs >= 1);
  CHECK(s1.young_collections == s0.young_collections);
  // Survivors s_k after collection k satisfy s_{k+1} >= s_k (1 + ratio) once s_k x ratio
  // exceeds the threshold: at most log(N/threshold)/log(1+ratio) + threshold*... runs.
  double bound = kThreshold / kRatio / kThreshold + std::log(double(kLive) / kThreshold) /
                 std::log(1 + kRatio) + 4;
  CHECK(static_cast<double>(growth_runs) <= bound);
  // Rings made since the last collection may still point at `destroyed`: free them before it
  // goes out of scope, or a later test's collection writes to this dead stack slot.
  MustCollect();
  REQUIRE(brc::SetCollectorConfig({}).ok());
}

TEST_CASE("Generational schedule: young collections every threshold, full ones when the old "
          "heap grew by the ratio, total work linear in allocations",
          "[collector][schedule][young]") {
  brc::ThreadScope attach;
  MustCollect();  // a clean slate for the schedule
  constexpr uint64_t kThreshold = 1000;
  constexpr double kRatio = 0.5;
  REQUIRE(brc::SetCollectorConfig({.young_threshold = kThreshold, .full_ratio = kRatio}).ok());
  brc::EnableCollector();
  // Every object each automatic collection examined, by kind.
  struct Work {
    std::atomic<uint64_t> young{0}, full{0}, promoted{0}, wrong_kind{0};
  };
  auto work = std::make_shared<Work>();
  uint64_t cb = brc::AddCollectCallback([work](brc::CollectPhase phase,
                                               const brc::CollectResult& r) {
    if (phase != brc::CollectPhase::kStop || !r.automatic) return;
    (r.kind == brc::CollectKind::kYoung ? work->young : work->full) += r.scanned;
    work->promoted += r.promoted;
    if (r.kind == brc::CollectKind::kFull && r.promoted != 0) ++work->wrong_kind;
  });
  brc::CollectorStats s0 = brc::GetCollectorStats();
  std::vector<brc::Ref<GNode>> live;
  std::atomic<int> destroyed{0};
  constexpr int kLive = 200'000;
  for (int i = 0; i < kLive; ++i) {
    live.push_back(brc::Make<GNode>());
    if (i % 4 == 0) Ring(2, &destroyed);  // young garbage along the way
  }
  brc::CollectorStats s1 = brc::GetCollectorStats();
  REQUIRE(brc::RemoveCollectCallback(cb));
  uint64_t allocated = kLive + 2 * (kLive / 4);
  uint64_t young = s1.young_collections - s0.young_collections;
  uint64_t full = s1.full_collections - s0.full_collections;
  INFO("young " << young << " full " << full << " examined by young " << work->young.load()
                << " by full " << work->full.load());
  CHECK(young >= allocated / kThreshold / 2);
  CHECK(full >= 1);
  // Full collections come when the old heap grew by the ratio: about log(N)/log(1 + ratio).
  CHECK(static_cast<double>(full) <= std::log(double(kLive) / kThreshold) / std::log(1 + kRatio) + 4);
  // Young collections examine each allocation about once; full ones the old heap at sizes
  // growing by (1 + ratio): at most (1 + ratio) / ratio x N in all.
  CHECK(work->young.load() <= allocated + 2 * kThreshold * (young + full));
  CHECK(static_cast<double>(work->full.load()) <= (1 + kRatio) / kRatio * kLive + 4.0 * kThreshold);
  CHECK(work->wrong_kind.load() == 0);
  CHECK(s1.promoted - s0.promoted == work->promoted.load());
  CHECK(destroyed.load() >= kLive / 4 * 2 - 2 * static_cast<int>(kThreshold));  // young cycles freed
  // Rings made since the last collection may still point at `destroyed`: free them before it
  // goes out of scope, or a later test's collection writes to this dead stack slot.
  MustCollect();
  REQUIRE(brc::SetCollectorConfig({}).ok());
}

TEST_CASE("Allocations of short-lived threads count toward the automatic schedule",
          "[collector][schedule]") {
  brc::ThreadScope attach;
  MustCollect();
  REQUIRE(brc::SetCollectorConfig({.young_threshold = 500}).ok());
  brc::EnableCollector();
  std::atomic<int> destroyed{0};
  uint64_t before = brc::GetCollectorStats().automatic_collections;
  // Each thread makes fewer tracked objects than one reporting batch, then exits.
  for (int t = 0; t < 100; ++t) {
    std::thread worker([&] {
      brc::ThreadScope attach;
      for (int i = 0; i < 10; ++i) Ring(2, &destroyed);
    });
    brc_test::JoinBlocking(worker);
  }
  // 2000 allocations were counted at the threads' exits; the next batch here collects.
  for (int i = 0; i < 100; ++i) brc::Make<GNode>();
  CHECK(brc::GetCollectorStats().automatic_collections > before);
  CHECK(destroyed.load() >= 1000);
  // Rings made since the last collection may still point at `destroyed`: free them before it
  // goes out of scope, or a later test's collection writes to this dead stack slot.
  MustCollect();
  REQUIRE(brc::SetCollectorConfig({}).ok());
}

}  // namespace
}  // namespace brc_collector_test
