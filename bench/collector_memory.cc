// brc_bench, cycle collector part: memory per object. BM_MemoryPerObject (one iteration, no
// timing) compares a tracked Node's size, block and share of the collector heap with an
// untracked leaf under brc's default allocator and under glibc malloc, and with
// std::make_shared. collector_benchmark.cc describes its counters.
#include <benchmark/benchmark.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "brc/brc.h"
#include "brc/collector.h"
#include "collector_common.h"

#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
#define BRC_BENCH_HAVE_MALLINFO2 1
#endif

namespace brc_collector_bench {
namespace {

// What a std::shared_ptr user would write for the same node.
struct SharedNode {
  std::shared_ptr<SharedNode> next;
};

// The collector heap's page size (kGcPageSize in lib/gc_heap.h, which is not public).
constexpr double kGcPageBytes = 64 * 1024;

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

}  // namespace

void RegisterMemoryPerObject() {
  benchmark::RegisterBenchmark("BM_MemoryPerObject", &BM_MemoryPerObject)
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
}

}  // namespace brc_collector_bench
