// brc_bench, cycle collector part: stopping the world. How long a stop takes to reach every
// attached thread (BM_TimeToStop), and what a merge pass of per-thread counts costs a stop as
// the objects counted per thread grow (BM_MergePass). collector_benchmark.cc describes
// BM_TimeToStop's rows and counters; BM_MergePass is described below.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "brc/brc.h"
#include "brc/stop_the_world.h"
#include "collector_common.h"

namespace brc_collector_bench {
namespace {


// The mutators' object in BM_TimeToStop.
struct Counted : brc::Object {
  int64_t value = 0;
};

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

}  // namespace

void RegisterMergePass() {
  benchmark::RegisterBenchmark("BM_MergePass", &BM_MergePass)
      ->ArgName("objects")
      ->Arg(64)
      ->Arg(4096)
      ->Arg(65536)
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
}

void RegisterTimeToStop() {
  benchmark::RegisterBenchmark("BM_TimeToStop", &BM_TimeToStop)
      ->ArgName("mutators")
      ->Arg(1)
      ->Arg(2)
      ->Arg(4)
      ->Arg(8)
      ->UseManualTime()
      ->Iterations(1000)
      ->Unit(benchmark::kMicrosecond);
}

}  // namespace brc_collector_bench
