// brc_bench, many threads: read-mostly sharing. See threads_benchmark.cc for the names and
// conventions.
#include "threads_common.h"

namespace brc_threads_bench {
namespace {

// ---------------------------------------------------------------------------------------------
// Scenario 5: read-mostly sharing, the shape of an interpreter's modules, classes and globals.
// kReadMostlyObjects objects are made by an owner thread that then waits (in a BlockingScope)
// and never counts; every benchmark thread is a non-owner that takes and drops a reference to
// each object in turn; with temps:1 it also makes and drops a private temporary per step (an
// interpreter's intermediate value). Contenders:
//   atomic           std::atomic counts on the same objects (temporaries: new/delete)
//   brc_shared       brc, non-owners on the shared word (per-thread counting off)
//   brc_per_thread   brc, the objects switched with brc::CountPerThread by their owner
//   brc_immortal     brc, the objects immortal: no counting at all, what counting can reach
//     items_per_second = reference pairs per second, all threads together

constexpr int kReadMostlyObjects = 64;  // a power of two

struct AtomicReadMostlyRun {
  explicit AtomicReadMostlyRun(int) {}
  std::vector<Apart<AtomicObject>> objects{kReadMostlyObjects};
};

void BM_ReadMostlyAtomic(benchmark::State& state) {
  auto& run = PerRun<AtomicReadMostlyRun>::Get();
  Apart<AtomicObject>* objects = Opaque(run.objects.data());
  const bool temps = state.range(0) != 0;
  uint32_t i = static_cast<uint32_t>(state.thread_index()) * 7;
  for (auto _ : state) {
    AtomicObject* p = &objects[i++ & (kReadMostlyObjects - 1)].value;
    p->refcount.fetch_add(1, std::memory_order_relaxed);
    Barrier();
    if (temps) {
      auto* t = Opaque(new AtomicObject);
      t->refcount.fetch_add(1, std::memory_order_relaxed);
      Barrier();
      if (t->refcount.fetch_sub(1, std::memory_order_acq_rel) == 1) delete t;
    }
    p->refcount.fetch_sub(1, std::memory_order_acq_rel);
    Barrier();
  }
  state.SetItemsProcessed(state.iterations());
}

enum class ReadMostlyMode { kShared, kPerThread, kDetected, kImmortal };

template <ReadMostlyMode kMode>
struct BrcReadMostlyRun {
  explicit BrcReadMostlyRun(int) {
    if constexpr (kMode == ReadMostlyMode::kDetected) {
      brc::PerThreadConfig c;
      c.detect_contention = true;
      (void)brc::SetPerThreadConfig(c);
    }
    owner = std::thread([this] {
      brc::ThreadScope attach;
      std::vector<brc::Ref<Payload>> mine;
      for (int i = 0; i < kReadMostlyObjects; ++i) {
        mine.push_back(brc::Make<Payload>());
        if constexpr (kMode == ReadMostlyMode::kPerThread) {
          if (!brc::CountPerThread(mine.back().get()).ok()) failed = true;
        } else if constexpr (kMode == ReadMostlyMode::kImmortal) {
          brc::MakeImmortal(mine.back().get());
        }
        objects.push_back(mine.back().get());
      }
      {
        std::lock_guard<std::mutex> lock(mu);
        ready = true;
      }
      cv.notify_all();
      {
        brc::BlockingScope blocked;  // counts nothing until the run ends
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [this] { return done; });
      }
      switched = 0;
      for (auto& r : mine) switched += brc::IsCountedPerThread(r.get()) ? 1 : 0;
      if constexpr (kMode == ReadMostlyMode::kImmortal) {
        for (auto& r : mine) brc::testing::FreeImmortalForTesting(r.Release());
      }
      mine.clear();
      (void)brc::MergePerThreadCounts();  // frees the ones counted per thread
    });
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [this] { return ready; });
  }
  ~BrcReadMostlyRun() {
    {
      std::lock_guard<std::mutex> lock(mu);
      done = true;
    }
    cv.notify_all();
    owner.join();
    (void)brc::SetPerThreadConfig({});
  }
  std::mutex mu;
  std::condition_variable cv;
  bool ready = false, done = false, failed = false;
  int switched = 0;
  std::vector<brc::Object*> objects;  // written by the owner before `ready`
  std::thread owner;
};

template <ReadMostlyMode kMode>
void BM_ReadMostlyBrc(benchmark::State& state) {
  auto& run = PerRun<BrcReadMostlyRun<kMode>>::Get();
  brc::ThreadScope attach;
  if (run.failed) state.SkipWithError("CountPerThread failed");
  brc::Object* const* objects = Opaque(run.objects.data());
  const bool temps = state.range(0) != 0;
  uint32_t i = static_cast<uint32_t>(state.thread_index()) * 7;
  for (auto _ : state) {
    brc::Object* ob = objects[i++ & (kReadMostlyObjects - 1)];
    brc::IncRef(ob);
    Barrier();
    if (temps) {
      brc::Ref<Payload> t = brc::Make<Payload>();
      Opaque(t.get());
      Barrier();
    }
    brc::DecRef(ob);
    Barrier();
    if ((i & 255) == 0) brc::Safepoint();  // where the detector's switch happens
  }
  if (state.thread_index() == 0) {
    int per_thread = 0;
    for (int k = 0; k < kReadMostlyObjects; ++k) {
      per_thread += brc::IsCountedPerThread(run.objects[k]) ? 1 : 0;
    }
    state.counters["per_thread"] = per_thread;
  }
  state.SetItemsProcessed(state.iterations());
}

}  // namespace

void RegisterReadMostly(const std::vector<int>& counting) {
  for (int temps : {0, 1}) {
    auto arg = [&](benchmark::internal::Benchmark* b) { b->ArgName("temps")->Arg(temps); };
    auto* a = Threaded("BM_ReadMostly/atomic", &BM_ReadMostlyAtomic, counting);
    arg(a);
    WithRun<AtomicReadMostlyRun>(a);
    using M = ReadMostlyMode;
    auto* b1 = Threaded("BM_ReadMostly/brc_shared", &BM_ReadMostlyBrc<M::kShared>, counting);
    arg(b1);
    WithRun<BrcReadMostlyRun<M::kShared>>(b1);
    auto* b2 =
        Threaded("BM_ReadMostly/brc_per_thread", &BM_ReadMostlyBrc<M::kPerThread>, counting);
    arg(b2);
    WithRun<BrcReadMostlyRun<M::kPerThread>>(b2);
    // No contender with contention detection on: a switch stops the world from a Safepoint(),
    // and Google Benchmark's threads wait for each other at the end of the timed loop outside
    // any brc::BlockingScope, which such a stop would wait for forever (README, "Contention
    // detection"). The detector is exercised by the tests and the stress program instead.
    auto* b4 = Threaded("BM_ReadMostly/brc_immortal", &BM_ReadMostlyBrc<M::kImmortal>, counting);
    arg(b4);
    WithRun<BrcReadMostlyRun<M::kImmortal>>(b4);
  }
}

}  // namespace brc_threads_bench
