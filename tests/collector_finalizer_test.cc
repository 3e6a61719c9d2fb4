// Tests for brc/collector.h, finalizers: each runs once even when it resurrects its object or
// another member of the cycle, the garbage it makes waits for the next collection, an exception
// it throws is reported and the collection completes; and Collect() from a finalizer, a
// collection callback, a weak-reference callback, a Clear() or a stop is refused with the reason.
#include <atomic>
#include <stdexcept>
#include <string>
#include <vector>

#include "brc/stop_the_world.h"
#include "collector_util.h"
#include "test_util.h"

namespace brc_collector_test {
namespace {

TEST_CASE("A finalizer that resurrects its own object - it survives and is finalized once",
          "[collector][finalizer]") {
  brc::ThreadScope attach;
  ManualCollections manual;
  std::atomic<int> destroyed{0};
  brc::Ref<FNode> saved;
  brc::Ref<FNode> a = brc::Make<FNode>(&destroyed, [&](FNode* self) {
    saved = brc::Ref<FNode>::NewRef(self);  // resurrection
  });
  brc::Ref<FNode> b = brc::Make<FNode>(&destroyed);
  a->next = b;
  b->next = a;
  FNode* raw_a = a.get();
  FNode* raw_b = b.get();
  a = nullptr;
  b = nullptr;
  brc::CollectResult r = MustCollect();
  CHECK(r.unreachable == 2);
  CHECK(r.resurrected == 2);  // a, and b which a reaches
  CHECK(r.collected == 0);
  CHECK(destroyed.load() == 0);
  REQUIRE(saved.get() == raw_a);
  // Nothing it reaches was cleared.
  CHECK(saved->next.get() == raw_b);
  CHECK(raw_b->next.get() == raw_a);
  CHECK(raw_a->finalized == 1);
  CHECK(raw_b->finalized == 1);
  // Dropped again: collected this time, without a second Finalize().
  saved = nullptr;
  r = MustCollect();
  CHECK(r.collected == 2);
  CHECK(r.finalized == 0);
  CHECK(destroyed.load() == 2);
}

TEST_CASE("A finalizer that resurrects another member of the cycle", "[collector][finalizer]") {
  brc::ThreadScope attach;
  ManualCollections manual;
  std::atomic<int> destroyed{0};
  brc::Ref<FNode> saved;
  // Ring a -> b -> c -> a; a's finalizer keeps c.
  brc::Ref<FNode> a = brc::Make<FNode>(&destroyed);
  brc::Ref<FNode> b = brc::Make<FNode>(&destroyed);
  brc::Ref<FNode> c = brc::Make<FNode>(&destroyed);
  a->action = [&, raw_c = c.get()](FNode*) { saved = brc::Ref<FNode>::NewRef(raw_c); };
  a->next = b;
  b->next = c;
  c->next = a;
  a = b = c = nullptr;
  brc::CollectResult r = MustCollect();
  CHECK(r.resurrected == 3);  // c, and a and b through it
  CHECK(destroyed.load() == 0);
  REQUIRE(saved != nullptr);
  REQUIRE(saved->next != nullptr);
  REQUIRE(saved->next->next != nullptr);
  CHECK(saved->next->next->next.get() == saved.get());  // the ring is intact
  saved = nullptr;
  r = MustCollect();
  CHECK(r.collected == 3);
  CHECK(r.finalized == 0);  // each finalizer ran once, in the first collection
  CHECK(destroyed.load() == 3);
}

TEST_CASE("A finalizer that creates new garbage does not make collections loop",
          "[collector][finalizer]") {
  brc::ThreadScope attach;
  ManualCollections manual;
  std::atomic<int> destroyed{0};
  std::atomic<int> made{0};
  brc::Ref<FNode> a = brc::Make<FNode>(&destroyed, [&](FNode*) {
    // A fresh 4-cycle, dropped at once: garbage for a later collection.
    Ring(4, nullptr);
    made.fetch_add(4);
  });
  a->next = a;
  a = nullptr;
  brc::CollectResult r = MustCollect();
  CHECK(r.collected == 1);
  CHECK(r.finalized == 1);
  CHECK(destroyed.load() == 1);
  // The finalizer's garbage waits for the next collection, which does not finalize again.
  r = MustCollect();
  CHECK(r.collected == 4);
  CHECK(r.finalized == 0);
}

TEST_CASE("A finalizer that throws is reported and the collection completes",
          "[collector][finalizer]") {
  brc::ThreadScope attach;
  ManualCollections manual;
  std::vector<std::string> reports;
  brc::SetCollectorErrorHandler([&](std::string_view m) { reports.emplace_back(m); });
  std::atomic<int> destroyed{0};
  brc::Ref<FNode> a = brc::Make<FNode>(&destroyed, [](FNode*) {
    throw std::runtime_error("finalizer failed on purpose");
  });
  brc::Ref<FNode> b = brc::Make<FNode>(&destroyed);
  a->next = b;
  b->next = a;
  a = b = nullptr;
  brc::CollectResult r = MustCollect();
  brc::SetCollectorErrorHandler(nullptr);
  CHECK(r.errors == 1);
  CHECK(r.collected == 2);
  CHECK(destroyed.load() == 2);
  REQUIRE(reports.size() == 1);
  CHECK(reports[0].find("FNode") != std::string::npos);
  CHECK(reports[0].find("finalizer failed on purpose") != std::string::npos);
  CHECK(reports[0].find("std::runtime_error") != std::string::npos);
}

TEST_CASE("Collect from a finalizer or a callback or Clear() is refused with the reason",
          "[collector][nesting]") {
  brc::ThreadScope attach;
  ManualCollections manual;
  std::atomic<int> destroyed{0};
  absl::Status from_finalizer, from_callback, from_clear, from_weak;
  brc::Ref<FNode> a = brc::Make<FNode>(&destroyed, [&](FNode*) {
    from_finalizer = brc::Collect().status();
  });
  brc::WeakRef<FNode> w(a, [&] { from_weak = brc::Collect().status(); });
  a->next = a;
  uint64_t id = brc::AddCollectCallback([&](brc::CollectPhase, const brc::CollectResult&) {
    from_callback = brc::Collect().status();
  });
  a = nullptr;
  MustCollect();
  brc::RemoveCollectCallback(id);
  CHECK(from_finalizer.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(std::string(from_finalizer.message()).find("Finalize") != std::string::npos);
  CHECK(std::string(from_finalizer.message()).find("FNode") != std::string::npos);
  CHECK(from_callback.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(from_weak.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(destroyed.load() == 1);

  struct ClearCollects : brc::Object {
    void Trace(brc::Visitor& v) const { v.Visit(self); }
    void Clear() {
      *status = brc::Collect().status();
      self = nullptr;
    }
    absl::Status* status;
    brc::Ref<ClearCollects> self;
  };
  brc::Ref<ClearCollects> c = brc::Make<ClearCollects>();
  c->status = &from_clear;
  c->self = c;
  c = nullptr;
  MustCollect();
  CHECK(from_clear.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(std::string(from_clear.message()).find("Clear") != std::string::npos);
  // Within a stop, too.
  {
    brc::StopTheWorld stop;
    CHECK(brc::Collect().status().code() == absl::StatusCode::kFailedPrecondition);
  }
}

}  // namespace
}  // namespace brc_collector_test
