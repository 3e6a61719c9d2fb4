// What the files of brc_bench's many-thread benchmarks share (threads_benchmark.cc describes
// them and registers them in order; the scenarios are threads_scaling.cc (own object, one shared
// object, false sharing), threads_handoff.cc, threads_read_mostly.cc and threads_trees.cc):
// the counting discipline, the counted objects, the timed loops, the per-run state, and the
// registration helpers.
#ifndef BRC_BENCH_THREADS_COMMON_H_
#define BRC_BENCH_THREADS_COMMON_H_

#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "brc/brc.h"
#include "brc/testing.h"
#include "bench_util.h"

namespace brc_threads_bench {

// ---------------------------------------------------------------------------------------------
// The counting discipline (bench_util.h).
using brc_bench::Barrier;
using brc_bench::Opaque;

constexpr std::size_t kCacheLine = 64;
// Objects meant not to share anything sit this far apart: some x86 cores fetch cache lines in
// adjacent pairs, so one line of distance is not always enough.
constexpr std::size_t kApart = 128;

// ---------------------------------------------------------------------------------------------
// Objects: the counted ones are in bench_util.h; these sit alone in a block.

using brc_bench::AtomicObject;
using brc_bench::Payload;
using brc_bench::PlainObject;
using brc_bench::PlainPayload;

// A brc object alone in its 128-byte block.
struct alignas(kApart) ApartPayload : brc::Object {
  int64_t a = 0, b = 0, c = 0;
};

// Any other object alone in its 128-byte block (make_unique and make_shared honour the
// alignment; for make_shared the whole control block, counts included, gets it).
template <class T>
struct alignas(kApart) Apart {
  T value;
};

static_assert(sizeof(ApartPayload) == kApart && sizeof(Apart<PlainObject>) == kApart);

// ---------------------------------------------------------------------------------------------
// The timed loops: one increment and one decrement per iteration.

using brc_bench::AtomicPairs;
using brc_bench::PlainPairs;

template <class T>
inline void SharedPtrPairs(benchmark::State& state, const std::shared_ptr<T>* p) {
  for (auto _ : state) {
    {
      std::shared_ptr<T> copy(*p);
      Barrier();
    }
    Barrier();
  }
}

inline void BrcPairs(benchmark::State& state, brc::Object* ob) {
  for (auto _ : state) {
    brc::IncRef(ob);
    Barrier();
    brc::DecRef(ob);
    Barrier();
  }
}

// brc's fast path is chosen by comparing the object's owner with the calling thread: check,
// before timing, that this thread takes the path the benchmark claims to measure.
inline void CheckOwner(benchmark::State& state, const brc::Object* ob, bool want_owner) {
  bool owner = brc::testing::GetCounts(ob).owner == brc::CurrentThreadId();
  if (owner != want_owner) {
    state.SkipWithError(want_owner ? "brc: the counting thread does not own its object"
                                   : "brc: a non-owner thread owns the shared object");
  }
}

// ---------------------------------------------------------------------------------------------
// What the threads of one run share. Google Benchmark calls a benchmark's Setup on the main
// thread before it starts the run's threads and Teardown after it joined them, so the run's
// state is published to the threads by their creation and needs no atomics of its own.

template <class Run>
struct PerRun {
  static void Setup(const benchmark::State& state) { Slot() = std::make_unique<Run>(state.threads()); }
  static void Teardown(const benchmark::State&) { Slot().reset(); }
  static Run& Get() { return *Slot(); }

 private:
  static std::unique_ptr<Run>& Slot() {
    static std::unique_ptr<Run> run;
    return run;
  }
};

// Waits until every thread of the run arrives. Inside a BlockingScope: an attached brc thread
// that waits must not hold up a stop of the world (a no-op on threads that are not attached).
inline void ArriveAndWait(std::barrier<>& barrier) {
  brc::BlockingScope blocking;
  barrier.arrive_and_wait();
}

inline int Cores() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

// ---------------------------------------------------------------------------------------------
// Registration helpers.

inline bool QuickMode() { return brc_bench::QuickRun(); }

// 1, 2, 4, ... below the core count, the core count, twice it.
inline std::vector<int> CountingThreads() {
  const int cores = Cores();
  std::set<int> t = {1, cores, 2 * cores};
  if (!QuickMode()) {
    for (int n = 2; n < cores; n *= 2) t.insert(n);
  }
  return {t.begin(), t.end()};
}

// Even counts only (half produce, half consume): 2, 4, ... up to the cores, and twice the cores.
inline std::vector<int> HandoffThreads() {
  const int cores = Cores();
  std::set<int> t = {2, 2 * cores};
  if (!QuickMode()) {
    for (int n = 4; n < cores; n *= 2) t.insert(n);
    if (cores % 2 == 0) t.insert(cores);
  }
  return {t.begin(), t.end()};
}

using BenchFn = void (*)(benchmark::State&);
using HookFn = void (*)(const benchmark::State&);

inline benchmark::internal::Benchmark* Threaded(const std::string& name, BenchFn fn,
                                         const std::vector<int>& threads) {
  benchmark::internal::Benchmark* b = benchmark::RegisterBenchmark(name.c_str(), fn);
  for (int t : threads) b->Threads(t);
  return b->UseRealTime();
}

template <class Run>
void WithRun(benchmark::internal::Benchmark* b) {
  b->Setup(&PerRun<Run>::Setup)->Teardown(&PerRun<Run>::Teardown);
}

// Each scenario file registers its benchmarks; threads_benchmark.cc calls these in this order
// (the order of the list and of a run).
void RegisterScaling(const std::vector<int>& counting);      // threads_scaling.cc
void RegisterReadMostly(const std::vector<int>& counting);   // threads_read_mostly.cc
void RegisterHandoff();                                      // threads_handoff.cc
void RegisterTrees();                                        // threads_trees.cc

}  // namespace brc_threads_bench

#endif  // BRC_BENCH_THREADS_COMMON_H_
