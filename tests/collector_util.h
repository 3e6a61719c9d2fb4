// What the collector tests share (collector_test.cc: basic cycles, the heap and marking;
// collector_finalizer_test.cc; collector_weak_test.cc; collector_schedule_test.cc;
// collector_config_test.cc: configuration, statistics and errors; collector_threads_test.cc:
// collections racing with other threads): two tracked node types, a scope with automatic
// collections off, a collection that must succeed, and a ring builder.
#ifndef BRC_TESTS_COLLECTOR_UTIL_H_
#define BRC_TESTS_COLLECTOR_UTIL_H_

#include <atomic>
#include <functional>
#include <string_view>
#include <utility>

#include "absl/status/statusor.h"
#include "brc/collector.h"
#include "test_util.h"

namespace brc_collector_test {

// A tracked node: up to two edges, a destruction counter and an optional finalizer action.
struct GNode : brc::Object {
  static constexpr std::string_view kTypeName = "GNode";
  explicit GNode(std::atomic<int>* destroyed = nullptr, int value = 0)
      : destroyed(destroyed), value(value) {}
  ~GNode() {
    if (destroyed != nullptr) destroyed->fetch_add(1, std::memory_order_relaxed);
  }
  void Trace(brc::Visitor& v) const {
    v.Visit(a);
    v.Visit(b);
  }
  void Clear() {
    a = nullptr;
    b = nullptr;
  }
  std::atomic<int>* destroyed;
  int value;
  brc::Ref<GNode> a;
  brc::Ref<GNode> b;
};

// A tracked node with a finalizer that runs a test-provided action.
struct FNode : brc::Object {
  static constexpr std::string_view kTypeName = "FNode";
  explicit FNode(std::atomic<int>* destroyed, std::function<void(FNode*)> action = nullptr)
      : destroyed(destroyed), action(std::move(action)) {}
  ~FNode() { destroyed->fetch_add(1, std::memory_order_relaxed); }
  void Trace(brc::Visitor& v) const { v.Visit(next); }
  void Clear() { next = nullptr; }
  void Finalize() {
    ++finalized;
    if (action) action(this);
  }
  std::atomic<int>* destroyed;
  std::function<void(FNode*)> action;
  int finalized = 0;
  brc::Ref<FNode> next;
};

// Automatic collections off for the test (explicit Collect() still runs), restored after.
struct ManualCollections {
  ManualCollections() { brc::DisableCollector(); }
  ~ManualCollections() { brc::EnableCollector(); }
};

inline brc::CollectResult MustCollect() {
  absl::StatusOr<brc::CollectResult> r = brc::Collect();
  INFO(r.status().ToString());
  REQUIRE(r.ok());
  return *r;
}

// Builds a ring of n GNodes (through `a`) and returns one member.
inline brc::Ref<GNode> Ring(int n, std::atomic<int>* destroyed) {
  brc::Ref<GNode> first = brc::Make<GNode>(destroyed, 0);
  brc::Ref<GNode> prev = first;
  for (int i = 1; i < n; ++i) {
    brc::Ref<GNode> node = brc::Make<GNode>(destroyed, i);
    prev->a = node;
    prev = node;
  }
  prev->a = first;
  return first;
}

}  // namespace brc_collector_test

#endif  // BRC_TESTS_COLLECTOR_UTIL_H_
