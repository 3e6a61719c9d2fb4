// brc_bench, cycle collector part: collections of a heap of rings of Nodes, all alive
// (BM_CollectLiveHeap), all garbage (BM_CollectGarbage), and the pause against the heap's size
// (BM_CollectPause). collector_benchmark.cc describes the rows and counters.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "bench_util.h"
#include "brc/brc.h"
#include "brc/collector.h"
#include "collector_common.h"

namespace brc_collector_bench {
namespace {

// Runs one collection, timed: sets the iteration's manual time and adds to `totals`. Returns
// the result, or nothing (after SkipWithError) when Collect() failed.
std::optional<brc::CollectResult> TimedCollect(benchmark::State& state, Totals& totals) {
  auto start = std::chrono::steady_clock::now();
  absl::StatusOr<brc::CollectResult> r = brc::Collect();
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!r.ok()) {
    state.SkipWithError(("Collect: " + r.status().ToString()).c_str());
    return std::nullopt;
  }
  state.SetIterationTime(seconds);
  ++totals.collections;
  totals.total_time += r->total_time;
  totals.time_stopped += r->time_stopped;
  totals.scanned += r->scanned;
  totals.collected += r->collected;
  return *r;
}

double PerObjectNs(absl::Duration d, uint64_t objects) {
  return objects == 0 ? 0.0 : absl::ToDoubleNanoseconds(d) / static_cast<double>(objects);
}

void ReportCollections(benchmark::State& state, const Totals& t, uint64_t per_object_divisor) {
  if (t.collections == 0) return;
  double n = static_cast<double>(t.collections);
  state.counters["ns_per_obj"] = PerObjectNs(t.total_time, per_object_divisor);
  state.counters["pause_ms"] = absl::ToDoubleMilliseconds(t.time_stopped) / n;
  state.counters["scanned"] = static_cast<double>(t.scanned) / n;
  state.counters["collected"] = static_cast<double>(t.collected) / n;
}

// Times collections of a live heap of `objects` nodes in rings of `ring_size`.
void RunLiveHeap(benchmark::State& state, int64_t objects, int64_t ring_size, int workers) {
  brc::ThreadScope attach;
  CollectorSetup setup(state, workers);
  if (!setup.ok()) return;
  // Whatever earlier benchmarks left behind goes first, so that only this heap is scanned.
  if (!CollectUntimed(state)) return;
  std::vector<brc::Ref<Node>> roots = BuildRings(objects, ring_size);
  if (!CollectUntimed(state)) return;  // warm-up: the marking arena, the pages' first touch
  Totals totals;
  for (auto _ : state) {
    std::optional<brc::CollectResult> r = TimedCollect(state, totals);
    if (!r) break;
    if (r->collected != 0 || r->scanned < static_cast<uint64_t>(objects)) {
      state.SkipWithError(("live heap: collected " + std::to_string(r->collected) +
                           " (want 0), scanned " + std::to_string(r->scanned) +
                           " (want >= " + std::to_string(objects) + ")")
                              .c_str());
      break;
    }
  }
  ReportCollections(state, totals, totals.scanned);
  // Untimed teardown: the dropped rings are cyclic garbage.
  roots.clear();
  CollectUntimed(state);
}

void BM_CollectLiveHeap(benchmark::State& state) {
  RunLiveHeap(state, kObjects, state.range(0), static_cast<int>(state.range(1)));
  state.SetItemsProcessed(state.iterations() * kObjects);
}

void BM_CollectGarbage(benchmark::State& state) {
  const int64_t ring_size = state.range(0);
  brc::ThreadScope attach;
  CollectorSetup setup(state, static_cast<int>(state.range(1)));
  if (!setup.ok()) return;
  if (!CollectUntimed(state)) return;
  Totals totals;
  for (auto _ : state) {
    {
      std::vector<brc::Ref<Node>> roots = BuildRings(kObjects, ring_size);
    }  // every ring is now referenced only from inside itself
    std::optional<brc::CollectResult> r = TimedCollect(state, totals);
    if (!r) break;
    if (r->collected != static_cast<uint64_t>(kObjects)) {
      state.SkipWithError(("garbage heap: collected " + std::to_string(r->collected) + " (want " +
                           std::to_string(kObjects) + "), scanned " + std::to_string(r->scanned) +
                           ", uncollectable " + std::to_string(r->uncollectable))
                              .c_str());
      break;
    }
  }
  ReportCollections(state, totals, totals.collected);
  state.SetItemsProcessed(state.iterations() * kObjects);
}

// The pause against heap size: as BM_CollectLiveHeap with rings of 10; read pause_ms.
void BM_CollectPause(benchmark::State& state) {
  RunLiveHeap(state, state.range(0), 10, static_cast<int>(state.range(1)));
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
}  // namespace

void RegisterCollectLiveHeapAndGarbage() {
  benchmark::RegisterBenchmark("BM_CollectLiveHeap", &BM_CollectLiveHeap)
      ->ArgNames({"ring", "workers"})
      ->Args({10, 1})
      ->Args({10, 2})
      ->Args({1000, 1})
      ->Args({1000, 2})
      ->UseManualTime()
      ->Iterations(10)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("BM_CollectGarbage", &BM_CollectGarbage)
      ->ArgNames({"ring", "workers"})
      ->Args({10, 1})
      ->Args({10, 2})
      ->Args({1000, 1})
      ->Args({1000, 2})
      ->UseManualTime()
      ->Iterations(5)
      ->Unit(benchmark::kMillisecond);
}

// A smoke run (bench_util.h) measures the smallest heap only.
using brc_bench::QuickRun;

void RegisterCollectPause() {
  benchmark::RegisterBenchmark("BM_CollectPause", &BM_CollectPause)
      ->ArgNames({"objects", "workers"})
      ->ArgsProduct({QuickRun() ? std::vector<int64_t>{100'000}
                                : std::vector<int64_t>{100'000, 1'000'000, 4'000'000},
                     {1, 2}})
      ->UseManualTime()
      ->Iterations(5)
      ->Unit(benchmark::kMillisecond);
}

}  // namespace brc_collector_bench
