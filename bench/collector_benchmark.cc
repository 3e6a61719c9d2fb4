// brc_bench, cycle collector part: what a collection costs, how long it stops the world, how
// quickly the world stops, and what a tracked object costs in memory.
//
// Every benchmark here turns automatic collection off for its duration (brc::DisableCollector),
// so the only collections are the explicit brc::Collect() calls it times, and restores the
// collector configuration afterwards. Building and tearing down the heap is never timed: the
// collection benchmarks use manual time, so the Time column is wall-clock time per Collect().
// Ignore their CPU column: it is the benchmark thread's CPU time over the whole iteration, the
// untimed setup included and the marking workers' time excluded.
//
// The heap: `Node`, a tracked type with one Ref<Node> (32 bytes + 8-byte collector word, a
// 48-byte block in the collector's heap), linked into rings of 10 or 1000 nodes.
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
//         tracked_sizeof_B   sizeof(Node): the 24-byte header plus the payload
//         tracked_word_B     sizeof(Node) + the collector word: the space brc asks for
//         tracked_heap_B     the collector heap's growth (its 64 KiB pages, from
//                            brc::GetCollectorStats().heap_pages) divided by the objects
//         leaf_sizeof_B      sizeof of an untracked leaf with the same payload (no Trace)
//         leaf_malloc_B      the leaf's real cost under brc::MallocAllocator: glibc's
//                            in-use bytes (mallinfo2) grown per object
//         shared_ptr_B       std::make_shared of the equivalent node (a struct holding a
//                            std::shared_ptr next): glibc's in-use bytes grown per object
//       The two malloc figures need glibc 2.33 or later (mallinfo2); the leaf figure needs no
//       other object alive when it runs, so that it can switch allocators.
//
// Every benchmark runs a fixed number of iterations. With
//   brc_bench --benchmark_filter='Collect|TimeToStop|Memory' --benchmark_repetitions=3
//             --benchmark_report_aggregates_only=true
// they take 45 to 80 s on a 2-core VM, depending on what else runs (about 2 minutes with the
// binary's default of 5 repetitions), most of it building the heaps. Read the median rows.
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
#include "brc/detail/gc_word.h"
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

BENCHMARK(BM_CollectPause)
    ->ArgNames({"objects", "workers"})
    ->ArgsProduct({QuickRun() ? std::vector<int64_t>{100'000}
                              : std::vector<int64_t>{100'000, 1'000'000, 4'000'000},
                   {1, 2}})
    ->UseManualTime()
    ->Iterations(5)
    ->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------------------------------------
// Stopping the world.

double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  // Nearest rank: the smallest sample with at least p of the samples at or below it.
  auto rank = static_cast<size_t>(std::ceil(p * static_cast<double>(sorted.size())));
  return sorted[std::clamp<size_t>(rank, 1, sorted.size()) - 1];
}

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

// The tracked node: the collector heap's growth, in whole pages, per object.
double TrackedHeapBytesPerObject(benchmark::State& state) {
  // A collection updates heap_pages (and returns the pages garbage left empty).
  if (!CollectUntimed(state)) return 0;
  uint64_t pages_before = brc::GetCollectorStats().heap_pages;
  std::vector<brc::Ref<Node>> nodes;
  nodes.reserve(kObjects);
  for (int64_t i = 0; i < kObjects; ++i) nodes.push_back(brc::Make<Node>());
  if (!CollectUntimed(state)) return 0;
  uint64_t pages_after = brc::GetCollectorStats().heap_pages;
  nodes.clear();
  CollectUntimed(state);  // gives the pages back
  if (pages_after <= pages_before) {
    state.SkipWithError("the collector heap did not grow");
    return 0;
  }
  return static_cast<double>(pages_after - pages_before) * kGcPageBytes /
         static_cast<double>(kObjects);
}

void BM_MemoryPerObject(benchmark::State& state) {
  double tracked_heap = 0;
  double leaf_malloc = -1;
  double shared_ptr_bytes = -1;
  std::string leaf_note;
  for (auto _ : state) {
    {
      brc::ThreadScope attach;
      CollectorSetup setup(state, 1);
      if (!setup.ok()) break;
      tracked_heap = TrackedHeapBytesPerObject(state);
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
  state.counters["tracked_word_B"] = sizeof(Node) + sizeof(brc::detail::GcWord);
  state.counters["tracked_heap_B"] = tracked_heap;
  state.counters["leaf_sizeof_B"] = sizeof(LeafNode);
  if (leaf_malloc >= 0) state.counters["leaf_malloc_B"] = leaf_malloc;
  if (shared_ptr_bytes >= 0) state.counters["shared_ptr_B"] = shared_ptr_bytes;
  if (!leaf_note.empty()) state.SetLabel("leaf_malloc_B not measured: " + leaf_note);
}
BENCHMARK(BM_MemoryPerObject)->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace
