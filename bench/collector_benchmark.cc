// brc_bench, cycle collector part: what a collection costs, how long it stops the world, how
// quickly the world stops, what a tracked object costs in memory, and what the collector's
// schedule (young and full collections) costs a program that allocates tracked objects.
//
// Every benchmark here except BM_BuildAndDrop turns automatic collection off for its duration
// (brc::DisableCollector), so the only collections are the explicit ones it times, and restores
// the collector configuration afterwards. BM_BuildAndDrop measures the automatic collections
// themselves. Building and tearing down the heap is never timed: the collection benchmarks use
// manual time, so the Time column is wall-clock time per collection. Ignore their CPU column:
// it is the benchmark thread's CPU time over the whole iteration, the untimed setup included
// and the marking workers' time excluded.
//
// The heap: `Node`, a tracked type with one Ref<Node> (the 24-byte header and the Ref; what it
// takes in the collector's heap is BM_MemoryPerObject's tracked_block_B), linked into rings of
// 10 or 1000 nodes.
//
//   BM_CollectLiveHeap/<ring>/<workers>
//       1,000,000 nodes, all alive (one Ref per ring held in a vector). Times Collect(), which
//       scans everything and frees nothing. Read ns_per_obj: Collect()'s total time divided by
//       the objects it scanned. workers = marking threads (1 = serial on the collecting thread,
//       2 = a oneTBB arena). The heap is built once per run; Collect() runs repeatedly on it.
//   BM_CollectGarbage/<ring>/<workers>
//       The same 1,000,000 nodes with every ring root dropped, so all of them are cyclic
//       garbage. Times Collect(), which finds them, runs Clear() on each and frees them all.
//       Read ns_per_obj: total time per object collected. The heap is rebuilt (untimed) before
//       every iteration.
//   BM_CollectPause/<objects>/<workers>
//       100K, 1M and 4M live nodes in rings of 10. Read pause_ms: the time the world was
//       stopped per collection (CollectResult::time_stopped), the pause a mutator would see.
//       The Time column is the whole Collect().
//   BM_TimeToStop/<mutators>
//       1, 2, 4 and 8 attached threads spinning on an IncRef/DecRef pair of their own object
//       and brc::Safepoint(). The benchmark thread repeatedly stops the world
//       (brc::StopTheWorld) and restarts it, sleeping 100 us in between. Read p50_us and p99_us:
//       the median and 99th percentile of StopTheWorld::time_to_stop() over all stops of the
//       run (the Time column is their mean). On a 2-core machine, 4 and 8 mutators plus the
//       stopping thread oversubscribe the cores: a spinning mutator that is not on a core
//       cannot reach its safepoint until the kernel schedules it, so those rows measure the
//       scheduler more than brc, and their tail (p99, max_us) can reach a kernel time slice
//       (milliseconds). Even 1 and 2 mutators vary with load on such a machine.
//   BM_MemoryPerObject
//       Not a timing (one iteration). Bytes per object, from 1,000,000 live objects:
//         tracked_sizeof_B   sizeof(Node): the 24-byte header plus one Ref
//         tracked_block_B    the block a tracked Node takes in the collector's heap: the most
//                            common distance between consecutively allocated nodes
//         tracked_heap_B     the collector heap's growth (its 64 KiB pages, from
//                            brc::GetCollectorStats().heap_pages) divided by the objects: the
//                            block plus its share of the pages' headers
//         leaf_sizeof_B      sizeof of an untracked leaf with the same payload (no Trace)
//         leaf_block_B       the leaf's block under brc's default allocator, measured like
//                            tracked_block_B
//         leaf_malloc_B      the leaf's real cost under brc::MallocAllocator: glibc's
//                            in-use bytes (mallinfo2) grown per object
//         shared_ptr_B       std::make_shared of the equivalent node (a struct holding a
//                            std::shared_ptr next): glibc's in-use bytes grown per object
//       The two malloc figures need glibc 2.33 or later (mallinfo2); the leaf figure needs no
//       other object alive when it runs, so that it can switch allocators.
//
// Young and full collections (issue 11's floors). These run with the collector's schedule as
// a user gets it, or time one kind of collection over a fixed young set:
//
//   BM_BuildAndDrop/<setting>/nodes:N/rounds:R
//       The loop that made the collector expensive for container-heavy programs: build a
//       singly linked list of N tracked Nodes (each new node points to the previous head), drop
//       it, R times per iteration (N = 1,000,000 with R = 2; N = 250,000 with R = 8). Nothing
//       here is garbage for the collector: every node is freed by counting when the head is
//       dropped, which frees the 1M-long chain with bounded stack (README, "Long chains").
//       Settings, all with automatic collection as Make runs it:
//         off           brc::DisableCollector(): no collection at all (the baseline)
//         generational  the default CollectorConfig: young collections, and full ones when the
//                       promotions reach full_ratio of the old heap
//         full_only     CollectorConfig::generational = false: every automatic collection is
//                       full (brc's schedule before young collections)
//       Time: wall-clock per iteration. Counters per iteration: young, full (collections run,
//       from brc::GetCollectorStats() before and after), acyclic (of those, the ones that the
//       acyclic check settled without counting), stopped_ms (world stopped; split into
//       young_stopped_ms and full_stopped_ms), and ns_per_node (wall-clock time / (N x R)).
//       The floor: generational <= 1.3x off, each N.
//   BM_YoungPause/old:O/young:Y, BM_FullPause/old:O/young:Y
//       An old heap of O live Nodes (0 or 4,000,000, in rings of 10) is built once per run and
//       promoted by a brc::Collect(). Each iteration then builds, untimed, a young set of Y new
//       Nodes (2,000 or 20,000) in chains of 10: the tail of every live chain points to an old
//       node (one ring head of the old heap, spread over it; with no old heap, an anchor), half
//       of the live chains hang from old "anchor" nodes (old objects referencing young ones:
//       external references for a young collection) and half from Refs on the stack; one chain
//       in ten is closed into a ring and dropped (young garbage). The previous iteration's set is
//       dropped first (freed by counting). Then it times brc::CollectYoung() (BM_YoungPause) or
//       brc::Collect() (BM_FullPause). The Time column is the whole collection; read pause_us:
//       the median over the run of CollectResult::time_stopped (pause_mean_us, pause_max_us
//       beside it), and scanned / collected per collection. Automatic collection is off. The
//       anchors (Y/20 old nodes) exist in both heaps, so the two young sets are identical; the
//       floor: young pause with 4M old <= 2x the pause with no old heap.
// Every benchmark runs a fixed number of iterations. With
//   brc_bench --benchmark_filter='Collect|TimeToStop|Memory' --benchmark_repetitions=3
//             --benchmark_report_aggregates_only=true
// they take 45 to 80 s on a 2-core VM, depending on what else runs (about 2 minutes with the
// binary's default of 5 repetitions), most of it building the heaps. Read the median rows.
//   brc_bench --benchmark_filter='BuildAndDrop|YoungPause|FullPause'
// takes about 90 s with the default 5 repetitions on the same VM (each BM_YoungPause and
// BM_FullPause run builds its old heap of 4M nodes once, untimed).
#include <benchmark/benchmark.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "brc/brc.h"
#include "bench_util.h"
#include "brc/collector.h"
#include "brc/stop_the_world.h"
#include "brc/visitor.h"

#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
#define BRC_BENCH_HAVE_MALLINFO2 1
#endif

namespace {

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

// What a std::shared_ptr user would write for the same node.
struct SharedNode {
  std::shared_ptr<SharedNode> next;
};

// The mutators' object in BM_TimeToStop.
struct Counted : brc::Object {
  int64_t value = 0;
};

constexpr int64_t kObjects = 1'000'000;

// The collector heap's page size (kGcPageSize in lib/gc_heap.h, which is not public).
constexpr double kGcPageBytes = 64 * 1024;

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
std::vector<brc::Ref<Node>> BuildRings(int64_t objects, int64_t ring_size) {
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
bool CollectUntimed(benchmark::State& state) {
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

double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  // Nearest rank: the smallest sample with at least p of the samples at or below it.
  auto rank = static_cast<size_t>(std::ceil(p * static_cast<double>(sorted.size())));
  return sorted[std::clamp<size_t>(rank, 1, sorted.size()) - 1];
}

// ---------------------------------------------------------------------------------------------
// Collections.

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
BENCHMARK(BM_CollectLiveHeap)
    ->ArgNames({"ring", "workers"})
    ->Args({10, 1})
    ->Args({10, 2})
    ->Args({1000, 1})
    ->Args({1000, 2})
    ->UseManualTime()
    ->Iterations(10)
    ->Unit(benchmark::kMillisecond);

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
BENCHMARK(BM_CollectGarbage)
    ->ArgNames({"ring", "workers"})
    ->Args({10, 1})
    ->Args({10, 2})
    ->Args({1000, 1})
    ->Args({1000, 2})
    ->UseManualTime()
    ->Iterations(5)
    ->Unit(benchmark::kMillisecond);

// The pause against heap size: as BM_CollectLiveHeap with rings of 10; read pause_ms.
void BM_CollectPause(benchmark::State& state) {
  RunLiveHeap(state, state.range(0), 10, static_cast<int>(state.range(1)));
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
// A smoke run (bench_util.h) measures the smallest heap only.
using brc_bench::QuickRun;

// A merge pass of per-thread counts (brc/hot.h) with N objects counted per thread, each with a
// reference in this thread's slot and one in a second thread's (which idles at its safepoint
// meanwhile, so the pass stops two threads): what a stop costs as such objects grow.
// counter ns_per_object = pass time / N.
void BM_MergePass(benchmark::State& state) {
  const int64_t n = state.range(0);
  brc::ThreadScope attach;
  std::vector<brc::Ref<LeafNode>> objects;
  objects.reserve(n);
  {
    brc::StopTheWorld stop;  // one stop for all the switches
    for (int64_t i = 0; i < n; ++i) {
      objects.push_back(brc::Make<LeafNode>());
      if (!brc::CountPerThread(objects.back().get()).ok()) {
        state.SkipWithError("CountPerThread failed");
        break;
      }
    }
  }
  std::vector<brc::Ref<LeafNode>> mine = objects;  // this thread's slots: +1 each
  std::atomic<bool> ready{false}, done{false};
  std::thread other([&] {
    brc::ThreadScope t;
    std::vector<brc::Ref<LeafNode>> theirs = objects;  // the other thread's slots
    ready.store(true);
    while (!done.load(std::memory_order_relaxed)) brc::Safepoint();
  });
  while (!ready.load()) std::this_thread::yield();
  double total_seconds = 0;
  for (auto _ : state) {
    // Every pass folds the slots to zero: put this thread's back before the next one.
    for (auto& r : mine) brc::IncRef(r.get());
    auto start = std::chrono::steady_clock::now();
    if (!brc::MergePerThreadCounts().ok()) state.SkipWithError("MergePerThreadCounts failed");
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    state.SetIterationTime(seconds);
    total_seconds += seconds;
    for (auto& r : mine) brc::DecRef(r.get());
  }
  done.store(true);
  {
    brc::BlockingScope blocked;
    other.join();
  }
  mine.clear();
  objects.clear();
  (void)brc::MergePerThreadCounts();
  state.counters["ns_per_object"] =
      total_seconds * 1e9 / (static_cast<double>(n) * static_cast<double>(state.iterations()));
}
BENCHMARK(BM_MergePass)
    ->ArgName("objects")
    ->Arg(64)
    ->Arg(4096)
    ->Arg(65536)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

BENCHMARK(BM_CollectPause)
    ->ArgNames({"objects", "workers"})
    ->ArgsProduct({QuickRun() ? std::vector<int64_t>{100'000}
                              : std::vector<int64_t>{100'000, 1'000'000, 4'000'000},
                   {1, 2}})
    ->UseManualTime()
    ->Iterations(5)
    ->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------------------------------------
// The collector's schedule against allocation: build and drop.

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

// ---------------------------------------------------------------------------------------------
// Young against full pauses.

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

// Builds the young set: `young` Nodes in chains of kChain (see the header comment).
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

BENCHMARK(BM_YoungPause)
    ->ArgNames({"old", "young"})
    ->ArgsProduct({PauseOldSizes(), PauseYoungSizes()})
    ->UseManualTime()
    ->Iterations(200)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_FullPause)
    ->ArgNames({"old", "young"})
    ->ArgsProduct({PauseOldSizes(), PauseYoungSizes()})
    ->UseManualTime()
    ->Iterations(10)
    ->Unit(benchmark::kMicrosecond);

[[maybe_unused]] const bool kBuildAndDropRegistered = [] {
  RegisterBuildAndDrop();
  return true;
}();

// ---------------------------------------------------------------------------------------------
// Stopping the world.

void BM_TimeToStop(benchmark::State& state) {
  const int mutators = static_cast<int>(state.range(0));
  brc::ThreadScope attach;
  std::atomic<bool> done{false};
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(mutators));
  for (int i = 0; i < mutators; ++i) {
    threads.emplace_back([&done, &ready] {
      brc::ThreadScope attach;
      brc::Ref<Counted> own = brc::Make<Counted>();
      brc::Object* ob = own.get();
      ready.fetch_add(1, std::memory_order_release);
      while (!done.load(std::memory_order_relaxed)) {
        brc::IncRef(ob);
        benchmark::ClobberMemory();
        brc::DecRef(ob);
        brc::Safepoint();
      }
    });
  }
  // Only attached threads delay a stop: wait until every mutator is.
  while (ready.load(std::memory_order_acquire) < mutators) std::this_thread::yield();

  std::vector<double> samples_us;
  samples_us.reserve(static_cast<size_t>(state.max_iterations));
  for (auto _ : state) {
    absl::Duration to_stop;
    {
      brc::StopTheWorld stop;
      to_stop = stop.time_to_stop();
    }
    state.SetIterationTime(absl::ToDoubleSeconds(to_stop));
    samples_us.push_back(absl::ToDoubleMicroseconds(to_stop));
    // Let the mutators run between stops; sleeping as a blocked thread, as brc asks.
    brc::BlockingScope blocking;
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  done.store(true, std::memory_order_relaxed);
  for (std::thread& t : threads) t.join();

  std::sort(samples_us.begin(), samples_us.end());
  state.counters["p50_us"] = Percentile(samples_us, 0.50);
  state.counters["p99_us"] = Percentile(samples_us, 0.99);
  state.counters["max_us"] = samples_us.empty() ? 0.0 : samples_us.back();
}
BENCHMARK(BM_TimeToStop)
    ->ArgName("mutators")
    ->Arg(1)
    ->Arg(2)
    ->Arg(4)
    ->Arg(8)
    ->UseManualTime()
    ->Iterations(1000)
    ->Unit(benchmark::kMicrosecond);

// ---------------------------------------------------------------------------------------------
// Memory per object.

#ifdef BRC_BENCH_HAVE_MALLINFO2
// Bytes glibc malloc has handed out and not had back (small chunks and mmapped ones).
int64_t MallocInUse() {
  struct mallinfo2 mi = mallinfo2();
  return static_cast<int64_t>(mi.uordblks) + static_cast<int64_t>(mi.hblkhd);
}
#endif

// Installs brc::MallocAllocator for the scope. Needs no brc object alive; declare it before the
// brc::ThreadScope (see AllocatorScope in refcount_benchmark.cc).
class MallocAllocatorScope {
 public:
  MallocAllocatorScope() : status_(brc::SetAllocator(&brc::MallocAllocator())) {}
  ~MallocAllocatorScope() {
    if (status_.ok()) (void)brc::SetAllocator(&brc::DefaultAllocator());
  }
  MallocAllocatorScope(const MallocAllocatorScope&) = delete;
  MallocAllocatorScope& operator=(const MallocAllocatorScope&) = delete;
  const absl::Status& status() const { return status_; }

 private:
  absl::Status status_;
};

// The block size behind a run of allocations: the most common distance between the addresses
// of consecutively allocated objects (consecutive blocks of one page are one block apart; the
// jumps between pages are rare). 0 when there are fewer than two addresses.
template <class P>
double MostCommonStride(const std::vector<P>& objects) {
  std::map<uintptr_t, int64_t> counts;
  for (size_t i = 1; i < objects.size(); ++i) {
    auto a = reinterpret_cast<uintptr_t>(objects[i - 1].get());
    auto b = reinterpret_cast<uintptr_t>(objects[i].get());
    uintptr_t d = a < b ? b - a : a - b;
    if (d != 0 && d < 4096) ++counts[d];
  }
  uintptr_t best = 0;
  int64_t best_count = 0;
  for (const auto& [d, n] : counts) {
    if (n > best_count) best = d, best_count = n;
  }
  return static_cast<double>(best);
}

struct TrackedBytes {
  double heap = 0;   // the collector heap's growth per object (whole pages)
  double block = 0;  // the block one object takes
};

// The tracked node: the collector heap's growth, in whole pages, per object, and its block.
TrackedBytes TrackedBytesPerObject(benchmark::State& state) {
  TrackedBytes out;
  // A collection updates heap_pages (and returns the pages garbage left empty).
  if (!CollectUntimed(state)) return out;
  uint64_t pages_before = brc::GetCollectorStats().heap_pages;
  std::vector<brc::Ref<Node>> nodes;
  nodes.reserve(kObjects);
  for (int64_t i = 0; i < kObjects; ++i) nodes.push_back(brc::Make<Node>());
  if (!CollectUntimed(state)) return out;
  uint64_t pages_after = brc::GetCollectorStats().heap_pages;
  out.block = MostCommonStride(nodes);
  nodes.clear();
  CollectUntimed(state);  // gives the pages back
  if (pages_after <= pages_before) {
    state.SkipWithError("the collector heap did not grow");
    return out;
  }
  out.heap = static_cast<double>(pages_after - pages_before) * kGcPageBytes /
             static_cast<double>(kObjects);
  return out;
}

void BM_MemoryPerObject(benchmark::State& state) {
  TrackedBytes tracked;
  double leaf_block = 0;
  double leaf_malloc = -1;
  double shared_ptr_bytes = -1;
  std::string leaf_note;
  for (auto _ : state) {
    {
      brc::ThreadScope attach;
      CollectorSetup setup(state, 1);
      if (!setup.ok()) break;
      tracked = TrackedBytesPerObject(state);
      // The leaf on whatever allocator is installed (brc's default here).
      std::vector<brc::Ref<LeafNode>> leaves;
      leaves.reserve(kObjects);
      for (int64_t i = 0; i < kObjects; ++i) leaves.push_back(brc::Make<LeafNode>());
      leaf_block = MostCommonStride(leaves);
    }
#ifdef BRC_BENCH_HAVE_MALLINFO2
    {
      MallocAllocatorScope use_malloc;
      if (use_malloc.status().ok()) {
        brc::ThreadScope attach;
        std::vector<brc::Ref<LeafNode>> leaves;
        leaves.reserve(kObjects);
        int64_t before = MallocInUse();
        for (int64_t i = 0; i < kObjects; ++i) leaves.push_back(brc::Make<LeafNode>());
        leaf_malloc = static_cast<double>(MallocInUse() - before) / kObjects;
      } else {
        leaf_note = use_malloc.status().ToString();
      }
    }
    {
      std::vector<std::shared_ptr<SharedNode>> nodes;
      nodes.reserve(kObjects);
      int64_t before = MallocInUse();
      for (int64_t i = 0; i < kObjects; ++i) nodes.push_back(std::make_shared<SharedNode>());
      shared_ptr_bytes = static_cast<double>(MallocInUse() - before) / kObjects;
    }
#endif
  }
  state.counters["tracked_sizeof_B"] = sizeof(Node);
  state.counters["tracked_block_B"] = tracked.block;
  state.counters["tracked_heap_B"] = tracked.heap;
  state.counters["leaf_sizeof_B"] = sizeof(LeafNode);
  state.counters["leaf_block_B"] = leaf_block;
  if (leaf_malloc >= 0) state.counters["leaf_malloc_B"] = leaf_malloc;
  if (shared_ptr_bytes >= 0) state.counters["shared_ptr_B"] = shared_ptr_bytes;
  if (!leaf_note.empty()) state.SetLabel("leaf_malloc_B not measured: " + leaf_note);
}
BENCHMARK(BM_MemoryPerObject)->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace
