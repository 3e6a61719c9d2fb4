// brc_bench, cycle collector part: the collector's schedule against allocation.
// BM_BuildAndDrop builds and drops long lists of tracked Nodes with automatic collection off,
// generational (the default) or full-only. collector_benchmark.cc describes the rows, the
// counters and the floor.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "bench_util.h"
#include "brc/brc.h"
#include "brc/collector.h"
#include "collector_common.h"

namespace brc_collector_bench {
namespace {

enum class Setting { kOff, kGenerational, kFullOnly };

// For the duration of one BM_BuildAndDrop run: the collector as `setting` asks. Restores the
// configuration and the enabled state it found afterwards (the default config, collector on).
// Declare it after the brc::ThreadScope.
class ScheduleSetup {
 public:
  ScheduleSetup(benchmark::State& state, Setting setting)
      : saved_(brc::GetCollectorConfig()), was_enabled_(brc::IsCollectorEnabled()) {
    brc::CollectorConfig config;  // the defaults, whatever ran before
    config.generational = setting != Setting::kFullOnly;
    absl::Status s = brc::SetCollectorConfig(config);
    ok_ = s.ok();
    if (!ok_) state.SkipWithError(("SetCollectorConfig: " + s.ToString()).c_str());
    if (setting == Setting::kOff) {
      brc::DisableCollector();
    } else {
      brc::EnableCollector();
    }
  }
  ~ScheduleSetup() {
    (void)brc::SetCollectorConfig(saved_);
    if (was_enabled_) {
      brc::EnableCollector();
    } else {
      brc::DisableCollector();
    }
  }
  ScheduleSetup(const ScheduleSetup&) = delete;
  ScheduleSetup& operator=(const ScheduleSetup&) = delete;
  bool ok() const { return ok_; }

 private:
  brc::CollectorConfig saved_;
  bool was_enabled_;
  bool ok_;
};

// Builds a list of `nodes` tracked Nodes, newest first, and returns its head.
brc::Ref<Node> BuildList(int64_t nodes) {
  brc::Ref<Node> head;
  for (int64_t i = 0; i < nodes; ++i) {
    brc::Ref<Node> node = brc::Make<Node>();
    node->next = std::move(head);
    head = std::move(node);
  }
  return head;
}

void BM_BuildAndDrop(benchmark::State& state, Setting setting) {
  const int64_t nodes = state.range(0);
  const int64_t rounds = state.range(1);
  brc::ThreadScope attach;
  ScheduleSetup setup(state, setting);
  if (!setup.ok()) return;
  // What earlier benchmarks left behind goes first; every setting starts from the same heap.
  if (!CollectUntimed(state)) return;
  const brc::CollectorStats before = brc::GetCollectorStats();
  auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    for (int64_t r = 0; r < rounds; ++r) {
      brc::Ref<Node> head = BuildList(nodes);
      brc_bench::Use(head.get());
    }  // dropped here: the whole list is freed by counting
  }
  std::chrono::duration<double, std::nano> wall = std::chrono::steady_clock::now() - start;
  const brc::CollectorStats after = brc::GetCollectorStats();
  if (after.collected != before.collected) {
    // No node of a list is ever garbage for the collector: it freed something alive.
    state.SkipWithError(("the collector freed " + std::to_string(after.collected -
                                                               before.collected) +
                         " objects of live lists")
                            .c_str());
    return;
  }
  const auto iters = static_cast<double>(state.iterations());
  if (iters > 0) {
    state.counters["young"] =
        static_cast<double>(after.young_collections - before.young_collections) / iters;
    state.counters["full"] =
        static_cast<double>(after.full_collections - before.full_collections) / iters;
    state.counters["acyclic"] =
        static_cast<double>(after.acyclic_collections - before.acyclic_collections) / iters;
    state.counters["stopped_ms"] =
        absl::ToDoubleMilliseconds(after.total_stopped - before.total_stopped) / iters;
    state.counters["young_stopped_ms"] =
        absl::ToDoubleMilliseconds(after.young_stopped - before.young_stopped) / iters;
    state.counters["full_stopped_ms"] =
        absl::ToDoubleMilliseconds(after.full_stopped - before.full_stopped) / iters;
    state.counters["ns_per_node"] = wall.count() / (iters * static_cast<double>(nodes * rounds));
  }
  state.SetItemsProcessed(state.iterations() * nodes * rounds);
}

}  // namespace

void RegisterBuildAndDrop() {
  const std::pair<const char*, Setting> settings[] = {
      {"off", Setting::kOff},
      {"generational", Setting::kGenerational},
      {"full_only", Setting::kFullOnly},
  };
  for (const auto& [name, setting] : settings) {
    Setting s = setting;
    benchmark::internal::Benchmark* b = benchmark::RegisterBenchmark(
        (std::string("BM_BuildAndDrop/") + name).c_str(),
        [s](benchmark::State& state) { BM_BuildAndDrop(state, s); });
    b->ArgNames({"nodes", "rounds"})->UseRealTime()->Unit(benchmark::kMillisecond);
    if (brc_bench::QuickRun()) {
      b->Args({100'000, 2})->Args({25'000, 8})->Iterations(2);
    } else {
      b->Args({1'000'000, 2})->Args({250'000, 8})->Iterations(5);
    }
  }
}

}  // namespace brc_collector_bench
