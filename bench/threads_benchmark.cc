// brc_bench, many threads: how counting scales, what false sharing costs, what a producer/consumer
// hand-off costs, and an allocation-heavy workload (binary trees) against counted and traced
// baselines. Names follow the report's naming contract (bench/report.py parses them):
//
//   BM_ScaleOwn/<plain|atomic|shared_ptr|brc>        every thread counts on its own object;
//                                                    the objects sit 128 bytes apart
//   BM_ScaleShared/<atomic|shared_ptr|brc>           every thread counts on one object (brc:
//                                                    thread 0 owns it, the others are non-owners)
//   BM_FalseSharing/<plain|atomic|shared_ptr|brc>    every thread counts on its own object, and
//                                                    neighbouring objects are adjacent in memory
//     items_per_second = increment+decrement pairs per second, all threads together
//   BM_Handoff/<brc|shared_ptr|new_delete>           T/2 producers make objects and hand them in
//                                                    batches to T/2 consumers, which drop them
//     items_per_second = objects made and dropped per second
//   BM_BinaryTrees/<contender>/depth:D               build a complete tree, count it, drop it;
//                                                    one thread; counter ns_per_node
//   BM_BinaryTreesPerThread/<contender>/depth:D      the same with one tree per thread;
//     items_per_second = nodes per second, all threads together
//   BM_ReadMostly/<atomic|brc_shared|brc_per_thread|brc_immortal>/temps:<0|1>
//                                                    64 objects of an idle owner; every thread
//                                                    takes and drops references to them in
//                                                    turn (temps:1: and makes and drops a
//                                                    private temporary per step)
//   tree contenders: plain, atomic (intrusive counts, new/delete), shared_ptr (make_shared),
//   brc (untracked node), brc_tracked (node with Trace/Clear, automatic collections on),
//   boehm (Boehm GC, GC_MALLOC'd nodes, no counting; when CMake found libgc).
// Every threaded benchmark measures real time; Google Benchmark names them
// ".../real_time/threads:T". Thread counts are 1, 2, 4, ... below the core count, the core count
// and twice it (oversubscribed); the hand-off uses even counts only. With BRC_BENCH_QUICK set
// (non-empty, not "0"): {1, cores, 2*cores}, hand-off {2, 2*cores}, tree depth 16 only.
//
// Counting discipline, as in refcount_benchmark.cc: the object is reached through Opaque()
// once, and Barrier() follows every increment and every decrement, so that each operation
// really loads and stores the count.
//
// brc threads attach (brc::ThreadScope) for as long as they touch objects, and wait for each
// other only inside a brc::BlockingScope, so that no waiting thread holds up a stop of the world.
// The run lengths come from --benchmark_min_time (refcount_benchmark.cc's main() makes it
// 0.2 s): a per-benchmark MinTime() would change the names Google Benchmark 1.7 prints.
//
// Files: threads_common.h (objects, timed loops, per-run state, registration helpers), one file
// per scenario (threads_scaling.cc: own object, one shared object, false sharing;
// threads_handoff.cc; threads_read_mostly.cc; threads_trees.cc), and this one, which registers
// them all in a fixed order (static initialisers of several files would run in link order).

#include <vector>

#include "threads_common.h"

namespace brc_threads_bench {
namespace {

[[maybe_unused]] const bool kRegistered = [] {
  const std::vector<int> counting = CountingThreads();
  RegisterScaling(counting);
  RegisterReadMostly(counting);
  RegisterHandoff();
  RegisterTrees();
  return true;
}();

}  // namespace
}  // namespace brc_threads_bench
