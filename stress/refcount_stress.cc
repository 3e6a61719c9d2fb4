// Concurrency stress for the counting core: seeded, bounded in time, invariant-checked.
//
//   brc_stress [--scenario hot|handoff|churn|alloc|all] [--threads N] [--seconds S] [--seed X]
//
//   hot      N threads take and drop references to one object, mixing strong copies and
//            WeakRef::Lock(); the main thread stops the world now and then and checks that the
//            object's count equals the references every parked thread says it holds; at the end
//            the count is exactly what it was.
//   handoff  producers create objects and pass them to consumers through a
//            tbb::concurrent_queue; consumers drop them.
//   churn    short-lived threads create objects, hand them to a long-lived thread and exit
//            while merges may still be queued to them.
//   alloc    an allocator that fails every Nth allocation is installed; threads create leaf and
//            tracked objects (some in cycles), hand them across threads (queue pushes) while
//            collections run. Make must throw std::bad_alloc, Collect() may return
//            ResourceExhausted, and nothing may be lost, leaked or freed twice.
//
// Prints its parameters first and operations per second per scenario at the end; exits 1 on a
// violated invariant, naming it and the seed. Every scenario ends with all objects dropped and
// checks that brc's live-object count and the scenario's own construction/destruction counters
// are back where they started.
#include <tbb/concurrent_queue.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "brc/brc.h"
#include "stress_common.h"
#include "brc/testing.h"

namespace {

using brc_stress::Clock;
using brc_stress::Deadline;
using brc_stress::HandoffQueue;
using brc_stress::Options;
using brc_stress::StartRun;
using brc_stress::TimeUp;

std::atomic<int64_t> g_constructed{0};
std::atomic<int64_t> g_destroyed{0};
uint64_t g_seed = 0;

struct Payload : brc::Object {
  explicit Payload(uint64_t v) : value(v), check(~v) { g_constructed.fetch_add(1); }
  ~Payload() {
    if (check != ~value) Fail("payload corrupted before its destructor ran");
    check = 0;
    g_destroyed.fetch_add(1);
  }
  static void Fail(const char* what) {
    std::fprintf(stderr, "brc_stress: INVARIANT VIOLATED: %s (seed %llu)\n", what,
                 static_cast<unsigned long long>(g_seed));
    std::_Exit(1);
  }
  uint64_t value;
  uint64_t check;
};

// N threads take and drop references to one object, mixing strong copies and WeakRef::Lock.
uint64_t Hot(const Options& o) {
  brc::ThreadScope attach;
  auto hot = brc::Make<Payload>(42);
  brc::WeakRef<Payload> weak(hot);
  int64_t count_before = brc::GetRefCount(hot.get());
  std::atomic<uint64_t> ops{0};
  struct alignas(64) Published {
    std::atomic<uint64_t> value{0};
  };
  std::vector<Published> published(static_cast<std::size_t>(o.threads));
  Clock::time_point end = Deadline(o.seconds);
  std::vector<std::thread> pool;
  for (int t = 0; t < o.threads; ++t) {
    pool.emplace_back([&, t] {
      brc::ThreadScope attach_worker;
      std::mt19937_64 rng(o.seed * 1000 + t);
      std::vector<brc::Ref<Payload>> held;
      uint64_t n = 0;
      while (!TimeUp(end)) {
        // Published before every safepoint, where a stop may park this thread.
        published[t].value.store(held.size(), std::memory_order_relaxed);
        for (int i = 0; i < 1024; ++i, ++n) {
          uint64_t r = rng();
          if (held.size() < 64 && (held.empty() || r % 3 != 0)) {
            if (r % 5 == 0) {
              brc::Ref<Payload> got = weak.Lock();
              if (got == nullptr) Payload::Fail("WeakRef::Lock failed on a live object");
              held.push_back(std::move(got));
            } else {
              held.push_back(hot);
            }
          } else {
            held.pop_back();
          }
        }
        published[t].value.store(held.size(), std::memory_order_relaxed);
        brc::Safepoint();
      }
      held.clear();
      published[t].value.store(0, std::memory_order_relaxed);
      ops.fetch_add(n);
    });
  }
  // Meanwhile: with every worker parked (or gone), the count must be exactly what they hold.
  uint64_t checks = 0;
  while (!TimeUp(end)) {
    {
      brc::StopTheWorld stop;
      int64_t held = 0;
      for (int t = 0; t < o.threads; ++t) {
        held += static_cast<int64_t>(published[t].value.load(std::memory_order_relaxed));
      }
      if (brc::GetRefCount(hot.get()) != count_before + held) {
        Payload::Fail("hot object's count, with the world stopped, differs from the sum of "
                      "the references the parked threads hold");
      }
      ++checks;
    }
    brc::BlockingScope pause;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  {
    brc::BlockingScope joining;
    for (auto& t : pool) t.join();
  }
  brc::Safepoint();
  if (checks == 0) Payload::Fail("no stopped-world check ran");
  if (brc::GetRefCount(hot.get()) != count_before) {
    Payload::Fail("hot object's count differs from its starting value");
  }
  return ops.load();
}

// Producers create objects and pass them to consumers through a tbb::concurrent_queue.
uint64_t Handoff(const Options& o) {
  HandoffQueue<Payload*> queue;
  std::atomic<uint64_t> ops{0};
  std::atomic<int> producers_left{0};
  int producers = o.threads / 2 > 0 ? o.threads / 2 : 1;
  int consumers = o.threads - producers > 0 ? o.threads - producers : 1;
  producers_left = producers;
  Clock::time_point end = Deadline(o.seconds);
  std::vector<std::thread> pool;
  for (int t = 0; t < producers; ++t) {
    pool.emplace_back([&, t] {
      brc::ThreadScope attach;
      std::mt19937_64 rng(o.seed * 2000 + t);
      uint64_t n = 0;
      while (!TimeUp(end)) {
        for (int i = 0; i < 256; ++i, ++n) {
          auto p = brc::Make<Payload>(rng());
          if (n % 4 == 0) {
            brc::Ref<Payload> extra = p;  // owner count 2 for a while
            queue.push(extra.Release());
          }
          queue.push(p.Release());
        }
        brc::Safepoint();
      }
      ops.fetch_add(n);
      producers_left.fetch_sub(1);
    });
  }
  for (int t = 0; t < consumers; ++t) {
    pool.emplace_back([&] {
      brc::ThreadScope attach;
      Payload* p = nullptr;
      for (;;) {
        if (queue.try_pop(p)) {
          brc::Ref<Payload>::Adopt(p).Reset();
        } else if (producers_left.load() == 0) {
          if (!queue.try_pop(p)) break;
          brc::Ref<Payload>::Adopt(p).Reset();
        } else {
          brc::Safepoint();
          std::this_thread::yield();
        }
      }
    });
  }
  for (auto& t : pool) t.join();
  return ops.load();
}

// Threads attach, create objects, hand them to a long-lived thread and exit while merges may
// still be queued to them.
uint64_t Churn(const Options& o) {
  brc::ThreadScope attach;
  std::atomic<uint64_t> ops{0};
  std::mutex mu;
  std::vector<brc::Ref<Payload>> pile;  // guarded by mu
  Clock::time_point end = Deadline(o.seconds);
  std::atomic<bool> stop{false};
  std::thread dropper([&] {
    brc::ThreadScope attach_dropper;
    std::vector<brc::Ref<Payload>> mine;
    while (!stop.load()) {
      {
        std::lock_guard<std::mutex> lock(mu);
        mine.swap(pile);
      }
      mine.clear();
      brc::Safepoint();
      std::this_thread::yield();
    }
  });
  uint64_t round = 0;
  while (!TimeUp(end)) {
    std::vector<std::thread> wave;
    for (int t = 0; t < o.threads; ++t) {
      wave.emplace_back([&, t] {
        brc::ThreadScope attach_short;
        std::mt19937_64 rng(o.seed * 3000 + round * 64 + t);
        std::vector<brc::Ref<Payload>> made;
        for (int i = 0; i < 200; ++i) {
          made.push_back(brc::Make<Payload>(rng()));
          if (rng() % 2) made.push_back(made.back());
        }
        {
          std::lock_guard<std::mutex> lock(mu);
          for (auto& r : made) pile.push_back(std::move(r));
        }
        ops.fetch_add(made.size());
      });  // exits, possibly with objects still to be queued to it
    }
    for (auto& t : wave) t.join();
    ++round;
  }
  stop.store(true);
  dropper.join();
  pile.clear();
  return ops.load();
}

// Fails every Nth allocation (of objects, collector pages, merge queues and the collector's
// lists alike); otherwise glibc malloc. Counts what it refused.
class FailingAllocator final : public brc::Allocator {
 public:
  void* Allocate(std::size_t size, std::size_t align) noexcept override {
    uint64_t n = calls_.fetch_add(1, std::memory_order_relaxed) + 1;
    if (armed_.load(std::memory_order_relaxed) && n % every_ == 0) {
      refused_.fetch_add(1, std::memory_order_relaxed);
      return nullptr;
    }
    return brc::MallocAllocator().Allocate(size, align);
  }
  void Deallocate(void* p, std::size_t size, std::size_t align) noexcept override {
    brc::MallocAllocator().Deallocate(p, size, align);
  }
  std::string_view Name() const noexcept override { return "failing"; }

  void Arm(uint64_t every) {
    every_ = every;
    armed_.store(true);
  }
  void Disarm() { armed_.store(false); }
  uint64_t refused() const { return refused_.load(); }

 private:
  uint64_t every_ = 1000;
  std::atomic<bool> armed_{false};
  std::atomic<uint64_t> calls_{0};
  std::atomic<uint64_t> refused_{0};
};

std::atomic<int64_t> g_nodes_constructed{0};
std::atomic<int64_t> g_nodes_destroyed{0};

// A tracked payload: may sit in a cycle.
struct Node : brc::Object {
  Node() : check(kAlive) { g_nodes_constructed.fetch_add(1); }
  ~Node() {
    if (check != kAlive) Payload::Fail("tracked node corrupted, or destroyed twice");
    check = 0;
    g_nodes_destroyed.fetch_add(1);
  }
  void Trace(brc::Visitor& v) const { v.Visit(next); }
  void Clear() { next = nullptr; }
  static constexpr uint64_t kAlive = 0x5eed5eed5eed5eedull;
  uint64_t check;
  brc::Ref<Node> next;
};

uint64_t Alloc(const Options& o) {
  static FailingAllocator failing;  // must outlive every object it makes
  if (!brc::SetAllocator(&failing).ok()) {
    Payload::Fail("alloc: could not install the failing allocator (objects still alive)");
  }
  (void)brc::SetCollectorConfig({.young_threshold = 200, .workers = 2});
  std::mt19937_64 seed_rng(o.seed * 4000);
  uint64_t push_failures_before = brc::GetStats().queue_push_failures;
  failing.Arm(50 + seed_rng() % 50);  // every 50th..99th allocation fails
  HandoffQueue<brc::Object*> queue;   // holds Payload* and Node* (as Object*)
  std::atomic<uint64_t> ops{0};
  std::atomic<uint64_t> make_failures{0};
  std::atomic<uint64_t> collect_failures{0};
  std::atomic<uint64_t> collections{0};
  Clock::time_point end = Deadline(o.seconds);
  std::atomic<int> makers_left{o.threads};
  std::vector<std::thread> pool;
  for (int t = 0; t < o.threads; ++t) {
    pool.emplace_back([&, t] {
      brc::ThreadScope attach;
      std::mt19937_64 rng(o.seed * 5000 + t);
      uint64_t n = 0;
      brc::Ref<Node> prev;
      while (!TimeUp(end)) {
        for (int i = 0; i < 64; ++i, ++n) {
          try {
            if (rng() % 2) {
              queue.push(brc::Make<Payload>(rng()).Release());
            } else {
              brc::Ref<Node> node = brc::Make<Node>();
              if (prev && rng() % 3 == 0) {  // a small cycle, dropped later by someone else
                node->next = prev;
                prev->next = node;
              }
              prev = node;
              queue.push(node.Release());
            }
          } catch (const std::bad_alloc&) {
            make_failures.fetch_add(1, std::memory_order_relaxed);
          }
          // Drop what others made: these decrements queue objects to their owners.
          brc::Object* other = nullptr;
          if (queue.try_pop(other)) brc::DecRef(other);
        }
        // A queue keeps its memory once grown; give it back now and then, so that queueing
        // to this thread has to allocate again (and sometimes fails).
        if (rng() % 4 == 0) brc::testing::ReleaseQueueMemoryForTesting();
        if (t == 0) {
          absl::StatusOr<brc::CollectResult> r = brc::Collect();
          collections.fetch_add(1, std::memory_order_relaxed);
          if (!r.ok()) {
            if (r.status().code() != absl::StatusCode::kResourceExhausted) {
              Payload::Fail("alloc: Collect failed with an undocumented status");
            }
            collect_failures.fetch_add(1, std::memory_order_relaxed);
          }
        }
        brc::Safepoint();
      }
      prev = nullptr;
      makers_left.fetch_sub(1);
      // Drop whatever is left in the queue, then leave.
      for (brc::Object* other = nullptr;;) {
        if (queue.try_pop(other)) {
          brc::DecRef(other);
        } else if (makers_left.load() == 0) {
          if (!queue.try_pop(other)) break;
          brc::DecRef(other);
        } else {
          brc::Safepoint();
          std::this_thread::yield();
        }
      }
      ops.fetch_add(n);
    });
  }
  for (auto& t : pool) t.join();
  failing.Disarm();
  {
    brc::ThreadScope attach;
    absl::StatusOr<brc::CollectResult> r = brc::Collect();
    if (!r.ok()) Payload::Fail("alloc: the final collection failed with memory back");
  }
  if (g_nodes_constructed.load() != g_nodes_destroyed.load()) {
    Payload::Fail("alloc: tracked nodes constructed and destroyed differ (lost or leaked)");
  }
  (void)brc::SetCollectorConfig({});
  if (!brc::SetAllocator(&brc::DefaultAllocator()).ok()) {
    Payload::Fail("alloc: objects still alive after the scenario");
  }
  std::printf("brc_stress: alloc: %llu allocations refused: %llu Make failures, %llu failed "
              "queue pushes, %llu of %llu collections out of memory\n",
              static_cast<unsigned long long>(failing.refused()),
              static_cast<unsigned long long>(make_failures.load()),
              static_cast<unsigned long long>(brc::GetStats().queue_push_failures -
                                              push_failures_before),
              static_cast<unsigned long long>(collect_failures.load()),
              static_cast<unsigned long long>(collections.load()));
  if (make_failures.load() == 0) Payload::Fail("alloc: no allocation failure was injected");
  return ops.load();
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!StartRun("brc_stress", "hot|handoff|churn|alloc", argc, argv, &o)) return 2;
  g_seed = o.seed;
  struct Scenario {
    const char* name;
    uint64_t (*run)(const Options&);
  };
  const Scenario scenarios[] = {
      {"hot", Hot}, {"handoff", Handoff}, {"churn", Churn}, {"alloc", Alloc}};
  bool ran = false;
  for (const Scenario& s : scenarios) {
    if (o.scenario != "all" && o.scenario != s.name) continue;
    ran = true;
    int64_t live_before = brc::GetStats().live_objects();
    auto start = Clock::now();
    uint64_t ops = s.run(o);
    double secs = std::chrono::duration<double>(Clock::now() - start).count();
    int64_t live_after = brc::GetStats().live_objects();
    if (live_after != live_before) {
      std::fprintf(stderr, "brc_stress: %s: live objects %lld before, %lld after\n", s.name,
                   static_cast<long long>(live_before), static_cast<long long>(live_after));
      Payload::Fail("objects leaked or freed twice (live-object count changed)");
    }
    if (g_constructed.load() != g_destroyed.load()) {
      Payload::Fail("constructions and destructions of Payload differ");
    }
    std::printf("brc_stress: %-8s ok  %12.0f ops/s\n", s.name, ops / secs);
  }
  if (!ran) {
    std::fprintf(stderr, "brc_stress: unknown scenario '%s'\n", o.scenario.c_str());
    return 2;
  }
  return 0;
}
