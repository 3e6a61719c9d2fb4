// What the collector benchmarks share (collector_benchmark.cc describes them all and registers
// them in order; the files are collector_heaps.cc, collector_stops.cc, collector_young_full.cc,
// collector_build_drop.cc and collector_memory.cc): the tracked node every heap is made of and
// its untracked twin, the collector set up for one benchmark, the ring builder, untimed
// collections, the sums over timed ones, a percentile, and the registration functions.
#ifndef BRC_BENCH_COLLECTOR_COMMON_H_
#define BRC_BENCH_COLLECTOR_COMMON_H_

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "brc/brc.h"
#include "brc/collector.h"
#include "brc/visitor.h"

namespace brc_collector_bench {

// The tracked node every collection benchmark is made of.
struct Node : brc::Object {
  brc::Ref<Node> next;
  void Trace(brc::Visitor& v) const { v.Visit(next); }
  void Clear() { next = nullptr; }
};

// The same payload without Trace/Clear: brc does not track it.
struct LeafNode : brc::Object {
  brc::Ref<LeafNode> next;
};

constexpr int64_t kObjects = 1'000'000;

// For the duration of one benchmark: no automatic collections, and `workers` marking threads.
// Restores the previous configuration afterwards. Declare it after the brc::ThreadScope, so
// that it is destroyed (and the config restored) while the thread is still attached.
class CollectorSetup {
 public:
  CollectorSetup(benchmark::State& state, int workers)
      : saved_(brc::GetCollectorConfig()), was_enabled_(brc::IsCollectorEnabled()) {
    brc::DisableCollector();
    brc::CollectorConfig config = saved_;
    config.workers = workers;
    absl::Status s = brc::SetCollectorConfig(config);
    ok_ = s.ok();
    if (!ok_) state.SkipWithError(("SetCollectorConfig: " + s.ToString()).c_str());
  }
  ~CollectorSetup() {
    (void)brc::SetCollectorConfig(saved_);
    if (was_enabled_) brc::EnableCollector();
  }
  CollectorSetup(const CollectorSetup&) = delete;
  CollectorSetup& operator=(const CollectorSetup&) = delete;
  bool ok() const { return ok_; }

 private:
  brc::CollectorConfig saved_;
  bool was_enabled_;
  bool ok_;
};

// Builds `objects` nodes as rings of `ring_size` and returns one Ref per ring (its head), which
// keeps the whole ring alive. Nodes of a ring are allocated one after the other.
inline std::vector<brc::Ref<Node>> BuildRings(int64_t objects, int64_t ring_size) {
  std::vector<brc::Ref<Node>> roots;
  roots.reserve(static_cast<size_t>(objects / ring_size));
  for (int64_t r = 0; r < objects / ring_size; ++r) {
    brc::Ref<Node> head = brc::Make<Node>();
    Node* tail = head.get();
    for (int64_t i = 1; i < ring_size; ++i) {
      tail->next = brc::Make<Node>();
      tail = tail->next.get();
    }
    tail->next = head;  // closes the ring
    roots.push_back(std::move(head));
  }
  return roots;
}

// An untimed collection (a warm-up, or freeing what a benchmark left as garbage).
inline bool CollectUntimed(benchmark::State& state) {
  absl::StatusOr<brc::CollectResult> r = brc::Collect();
  if (!r.ok()) {
    state.SkipWithError(("Collect: " + r.status().ToString()).c_str());
    return false;
  }
  return true;
}

// Sums over the timed collections of one run.
struct Totals {
  int64_t collections = 0;
  absl::Duration total_time;    // CollectResult::total_time, summed
  absl::Duration time_stopped;  // CollectResult::time_stopped, summed
  uint64_t scanned = 0;
  uint64_t collected = 0;
};

inline double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  // Nearest rank: the smallest sample with at least p of the samples at or below it.
  auto rank = static_cast<size_t>(std::ceil(p * static_cast<double>(sorted.size())));
  return sorted[std::clamp<size_t>(rank, 1, sorted.size()) - 1];
}

// Registration, one function per family (or pair of families registered together), called in
// this order by collector_benchmark.cc.
void RegisterCollectLiveHeapAndGarbage();  // collector_heaps.cc
void RegisterMergePass();                  // collector_stops.cc
void RegisterCollectPause();               // collector_heaps.cc
void RegisterYoungAndFullPauses();         // collector_young_full.cc
void RegisterBuildAndDrop();               // collector_build_drop.cc
void RegisterTimeToStop();                 // collector_stops.cc
void RegisterMemoryPerObject();            // collector_memory.cc

}  // namespace brc_collector_bench

#endif  // BRC_BENCH_COLLECTOR_COMMON_H_
