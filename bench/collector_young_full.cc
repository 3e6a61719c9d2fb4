// brc_bench, cycle collector part: young against full pauses. BM_YoungPause and BM_FullPause
// time one brc::CollectYoung() or brc::Collect() over the same young set of chains, beside an
// old heap of 0 or 4M nodes. collector_benchmark.cc describes the heaps, rows and counters.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "bench_util.h"
#include "brc/brc.h"
#include "brc/collector.h"
#include "collector_common.h"

namespace brc_collector_bench {
namespace {

constexpr int64_t kChain = 10;  // young nodes per chain

// The old heap of BM_YoungPause / BM_FullPause, built once per run.
struct OldHeap {
  std::vector<brc::Ref<Node>> rings;    // one head per ring of 10
  std::vector<brc::Ref<Node>> anchors;  // old nodes whose `next` holds a young chain
};

// This iteration's young set; the previous one is dropped first.
struct YoungSet {
  std::vector<brc::Ref<Node>> stack_roots;  // live chains held from "the stack"
  int64_t garbage = 0;                      // nodes in dropped rings (young cycles)
};

int64_t Chains(int64_t young) { return young / kChain; }

// Anchors for the live chains that hang from old objects (every other live chain).
int64_t Anchors(int64_t young) { return Chains(young) / 2 + 1; }

// Builds the young set: `young` Nodes in chains of kChain (see collector_benchmark.cc's header
// comment).
void BuildYoung(int64_t young, OldHeap& old, YoungSet& set) {
  set.stack_roots.clear();  // last iteration's set, promoted since: freed by counting
  set.garbage = 0;
  const int64_t chains = Chains(young);
  // Ring heads of the old heap, spread over it: a prime stride visits them out of order.
  const auto rings = static_cast<int64_t>(old.rings.size());
  int64_t anchor = 0;
  int64_t pick = 0;
  for (int64_t c = 0; c < chains; ++c) {
    brc::Ref<Node> head = brc::Make<Node>();
    Node* tail = head.get();
    for (int64_t i = 1; i < kChain; ++i) {
      tail->next = brc::Make<Node>();
      tail = tail->next.get();
    }
    if (c % 10 == 9) {
      tail->next = head;  // a young ring; dropped below, so it is young garbage
      set.garbage += kChain;
      continue;
    }
    if (rings > 0) {
      pick = (pick + 7919) % rings;
      tail->next = old.rings[static_cast<size_t>(pick)];
    } else {
      tail->next = old.anchors[static_cast<size_t>(c) % old.anchors.size()];
    }
    if (c % 2 == 0) {
      set.stack_roots.push_back(std::move(head));
    } else {
      // The anchor's previous chain (last iteration's, old now) is freed by counting.
      old.anchors[static_cast<size_t>(anchor++) % old.anchors.size()]->next = std::move(head);
    }
  }
}

// Times one young (BM_YoungPause) or full (BM_FullPause) collection per iteration.
void RunPause(benchmark::State& state, bool young_kind) {
  const int64_t old_objects = state.range(0);
  const int64_t young = state.range(1);
  brc::ThreadScope attach;
  CollectorSetup setup(state, 1);
  if (!setup.ok()) return;
  if (!CollectUntimed(state)) return;  // what earlier benchmarks left behind
  OldHeap old;
  old.rings = BuildRings(old_objects, 10);
  old.anchors.reserve(static_cast<size_t>(Anchors(young)));
  for (int64_t i = 0; i < Anchors(young); ++i) old.anchors.push_back(brc::Make<Node>());
  if (!CollectUntimed(state)) return;  // promotes the old heap
  YoungSet set;
  // Warm-up: one young set and one collection of the kind timed, untimed.
  BuildYoung(young, old, set);
  absl::StatusOr<brc::CollectResult> warm = young_kind ? brc::CollectYoung() : brc::Collect();
  if (!warm.ok()) {
    state.SkipWithError(("warm-up collection: " + warm.status().ToString()).c_str());
    return;
  }
  std::vector<double> pauses_us;
  pauses_us.reserve(static_cast<size_t>(state.max_iterations));
  Totals totals;
  for (auto _ : state) {
    BuildYoung(young, old, set);
    auto start = std::chrono::steady_clock::now();
    absl::StatusOr<brc::CollectResult> r = young_kind ? brc::CollectYoung() : brc::Collect();
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!r.ok()) {
      state.SkipWithError(("collection: " + r.status().ToString()).c_str());
      break;
    }
    state.SetIterationTime(seconds);
    const brc::CollectKind want = young_kind ? brc::CollectKind::kYoung : brc::CollectKind::kFull;
    const auto min_scanned = static_cast<uint64_t>(
        young_kind ? young : young + old_objects + Anchors(young));
    if (r->kind != want || r->collected != static_cast<uint64_t>(set.garbage) ||
        r->scanned < min_scanned) {
      state.SkipWithError(
          (std::string(young_kind ? "CollectYoung" : "Collect") + ": kind " +
           (r->kind == brc::CollectKind::kYoung ? "young" : "full") + ", collected " +
           std::to_string(r->collected) + " (want " + std::to_string(set.garbage) +
           "), scanned " + std::to_string(r->scanned) + " (want >= " +
           std::to_string(min_scanned) + ")")
              .c_str());
      break;
    }
    ++totals.collections;
    totals.total_time += r->total_time;
    totals.time_stopped += r->time_stopped;
    totals.scanned += r->scanned;
    totals.collected += r->collected;
    pauses_us.push_back(absl::ToDoubleMicroseconds(r->time_stopped));
  }
  if (totals.collections > 0) {
    const auto n = static_cast<double>(totals.collections);
    std::sort(pauses_us.begin(), pauses_us.end());
    state.counters["pause_us"] = Percentile(pauses_us, 0.5);
    state.counters["pause_mean_us"] = absl::ToDoubleMicroseconds(totals.time_stopped) / n;
    state.counters["pause_max_us"] = pauses_us.back();
    state.counters["scanned"] = static_cast<double>(totals.scanned) / n;
    state.counters["collected"] = static_cast<double>(totals.collected) / n;
  }
  // Untimed teardown: the young set and the anchors' chains are freed by counting, the old
  // rings are cyclic garbage.
  set.stack_roots.clear();
  old = OldHeap();
  CollectUntimed(state);
}

void BM_YoungPause(benchmark::State& state) { RunPause(state, true); }
void BM_FullPause(benchmark::State& state) { RunPause(state, false); }

std::vector<int64_t> PauseOldSizes() {
  return brc_bench::QuickRun() ? std::vector<int64_t>{0, 100'000}
                               : std::vector<int64_t>{0, 4'000'000};
}
std::vector<int64_t> PauseYoungSizes() {
  return brc_bench::QuickRun() ? std::vector<int64_t>{2'000}
                               : std::vector<int64_t>{2'000, 20'000};
}

}  // namespace

void RegisterYoungAndFullPauses() {
  benchmark::RegisterBenchmark("BM_YoungPause", &BM_YoungPause)
      ->ArgNames({"old", "young"})
      ->ArgsProduct({PauseOldSizes(), PauseYoungSizes()})
      ->UseManualTime()
      ->Iterations(200)
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("BM_FullPause", &BM_FullPause)
      ->ArgNames({"old", "young"})
      ->ArgsProduct({PauseOldSizes(), PauseYoungSizes()})
      ->UseManualTime()
      ->Iterations(10)
      ->Unit(benchmark::kMicrosecond);
}

}  // namespace brc_collector_bench
