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
//
// BM_MergePass (collector_stops.cc, described there) times the merge pass of per-thread counts
// that a stop runs; unlike the rows above, it leaves the collector as it finds it and lets
// Google Benchmark choose its iterations.
//
// Files: collector_common.h (the node, the collector set-up, ring building, untimed
// collections, sums and percentiles), one file per mechanism measured (collector_heaps.cc:
// live heap, garbage, pause against heap size; collector_stops.cc: time to stop, merge pass;
// collector_young_full.cc: young against full pauses; collector_build_drop.cc: the schedule
// against build and drop; collector_memory.cc: memory per object), and this one, which registers
// them all in a fixed order (static initialisers of several files would run in link order).

#include "collector_common.h"

namespace brc_collector_bench {
namespace {

[[maybe_unused]] const bool kRegistered = [] {
  RegisterCollectLiveHeapAndGarbage();
  RegisterMergePass();
  RegisterCollectPause();
  RegisterYoungAndFullPauses();
  RegisterBuildAndDrop();
  RegisterTimeToStop();
  RegisterMemoryPerObject();
  return true;
}();

}  // namespace
}  // namespace brc_collector_bench
