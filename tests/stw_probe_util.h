// Shared by the stop-the-world review probes (stw_probe_test.cc, stw_probe_frees_test.cc):
// bounded waits, hold points that keep a free cascade at a chosen object until a stop has been
// requested of its thread, and the probe objects.
#ifndef BRC_TESTS_STW_PROBE_UTIL_H_
#define BRC_TESTS_STW_PROBE_UTIL_H_

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "brc/brc.h"
#include "brc/hot.h"
#include "test_util.h"

namespace stw_probe {

using brc::testing::StopRequestedForTesting;
using brc_test::Must;
using brc_test::WorkerFailures;
using Clock = std::chrono::steady_clock;

// A probe that would hang (the library deadlocked) aborts instead, saying which and the seed.
[[noreturn]] inline void Hung(const char* what, uint32_t seed) {
  std::fprintf(stderr, "stw_probe: %s did not finish in time (seed %u): aborting, not hanging\n",
               what, seed);
  std::abort();
}

// Polls `done`, reaching a safepoint in between (a no-op on a thread that is not attached), so
// that the waiting thread holds up no stop. False after `limit_s` seconds.
template <class Fn>
bool Await(Fn&& done, int limit_s = 60) {
  auto end = Clock::now() + std::chrono::seconds(limit_s);
  while (!done()) {
    if (Clock::now() > end) return false;
    brc::Safepoint();
    std::this_thread::yield();
  }
  return true;
}

// Joins `t` once it set `finished` (bounded), without holding up stops meanwhile.
inline void JoinWithin(std::thread& t, const std::atomic<bool>& finished, const char* what,
                uint32_t seed) {
  if (!Await([&] { return finished.load(); }, 180)) Hung(what, seed);
  brc_test::JoinBlocking(t);
}

// Hold points of a free cascade on thread `tid`: reaching the k-th index of `at`, the freeing
// code waits (bounded) until a stop of the world has been requested of it; the next free then
// parks (inside ParkableFrees). The test's k-th stop waits for Reached(k) first.
struct Holds {
  explicit Holds(std::vector<int> indices) : at(std::move(indices)) {}
  void At(int index) {
    if (brc::CurrentThreadId() != tid.load()) return;
    for (std::size_t k = 0; k < at.size(); ++k) {
      if (at[k] != index) continue;
      reached.store(static_cast<int>(k) + 1);
      auto end = Clock::now() + std::chrono::seconds(60);
      while (!StopRequestedForTesting()) {
        if (Clock::now() > end) {
          timed_out.store(true);
          return;
        }
        std::this_thread::yield();
      }
    }
  }
  bool Reached(int k) {
    return Await([&] { return reached.load() >= k || timed_out.load(); }) && !timed_out.load();
  }
  std::vector<int> at;
  std::atomic<uint32_t> tid{0};
  std::atomic<int> reached{0};
  std::atomic<bool> timed_out{false};
};

struct Shared {
  Holds* on_destroy = nullptr;
  Holds* on_clear = nullptr;
  Holds* on_finalize = nullptr;
  std::atomic<int> destroyed{0};
  std::vector<std::atomic<bool>>* dead = nullptr;  // per index, set by the destructor
};

// A leaf object of a chain.
struct Item : brc::Object {
  static constexpr std::string_view kTypeName = "stw_probe::Item";
  Item(Shared* s, int index) : s(s), index(index) {}
  ~Item() {
    s->destroyed.fetch_add(1);
    if (s->dead != nullptr) (*s->dead)[static_cast<std::size_t>(index)].store(true);
    if (s->on_destroy != nullptr) s->on_destroy->At(index);
  }
  Shared* s;
  int index;
  brc::Ref<Item> next;
};

// A tracked object with a finalizer: `next` (a chain or a ring) and a leaf child.
struct TItem : brc::Object {
  static constexpr std::string_view kTypeName = "stw_probe::TItem";
  TItem(Shared* s, int index) : s(s), index(index) {}
  ~TItem() {
    s->destroyed.fetch_add(1);
    if (s->on_destroy != nullptr) s->on_destroy->At(index);
  }
  void Trace(brc::Visitor& v) const {
    v.Visit(next);
    v.Visit(child);
  }
  void Clear() {
    if (s->on_clear != nullptr) s->on_clear->At(index);
    next = nullptr;
    child = nullptr;
  }
  void Finalize() {
    if (s->on_finalize == nullptr) return;
    s->on_finalize->At(index);
    child = nullptr;  // a free inside the finalizer: parks
  }
  Shared* s;
  int index;
  brc::Ref<TItem> next;
  brc::Ref<Item> child;
};

inline brc::Ref<Item> Chain(Shared* s, int n) {
  brc::Ref<Item> head;
  for (int i = n - 1; i >= 0; --i) {
    brc::Ref<Item> node = brc::Make<Item>(s, i);
    node->next = std::move(head);
    head = std::move(node);
  }
  return head;
}

// A live two-object cycle, referenced from this scope: with a cycle among the candidates the
// collector's acyclic check fails, so collections run meanwhile take the counting path (which
// alone can mistake an object for garbage). Collected after the scope.
struct LiveCycle {
  LiveCycle() : a(brc::Make<TItem>(&s, 0)) {
    a->next = brc::Make<TItem>(&s, 1);
    a->next->next = a;
  }
  ~LiveCycle() {
    a = nullptr;
    (void)brc::Collect();
  }
  Shared s;
  brc::Ref<TItem> a;
};

// In a stop of the world: `counter` must not move (nobody runs). Records a failure if it does.
inline void ExpectFrozen(const std::atomic<int>& counter, WorkerFailures* failures) {
  brc::StopTheWorld stop;
  int seen = counter.load();
  for (int i = 0; i < 200; ++i) std::this_thread::yield();
  failures->Expect(counter.load() == seen);
}

}  // namespace stw_probe

#endif  // BRC_TESTS_STW_PROBE_UTIL_H_
