// Tests for brc/collector.h, weak references during a collection: those to garbage are cleared
// before any finalizer or callback runs, a callback that locks its own weak reference gets null,
// and a WeakRef made in a constructor or by a finalizer, or destroyed by another callback before
// its own callback ran, behaves as if it had existed all along.
#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "collector_util.h"
#include "test_util.h"

namespace brc_collector_test {
namespace {

TEST_CASE("Weak references to garbage are cleared before finalizers and callbacks run",
          "[collector][weak]") {
  brc::ThreadScope attach;
  ManualCollections manual;
  std::atomic<int> destroyed{0};
  brc::Ref<FNode> a = brc::Make<FNode>(&destroyed);
  brc::Ref<FNode> b = brc::Make<FNode>(&destroyed);
  a->next = b;
  b->next = a;
  brc::WeakRef<FNode> weak_b(b);
  std::vector<std::string> events;
  bool locked_in_callback = true;
  bool expired_in_finalizer = false;
  brc::WeakRef<FNode> weak_a_cb(a, [&] {
    events.push_back("callback");
    locked_in_callback = weak_b.Lock() != nullptr;
  });
  a->action = [&](FNode*) {
    events.push_back("finalizer");
    expired_in_finalizer = weak_b.expired();
  };
  a = b = nullptr;
  brc::CollectResult r = MustCollect();
  CHECK(r.collected == 2);
  CHECK(r.weak_callbacks == 1);
  CHECK(destroyed.load() == 2);
  CHECK(events == std::vector<std::string>{"callback", "finalizer"});
  CHECK_FALSE(locked_in_callback);
  CHECK(expired_in_finalizer);
  CHECK(weak_b.Lock() == nullptr);
}

TEST_CASE("A weak-reference callback that locks its own weak reference gets null",
          "[collector][weak]") {
  brc::ThreadScope attach;
  ManualCollections manual;
  std::atomic<int> destroyed{0};
  brc::Ref<GNode> ring = Ring(2, &destroyed);
  auto weak = std::make_shared<brc::WeakRef<GNode>>();
  int calls = 0;
  bool got_object = true;
  *weak = brc::WeakRef<GNode>(ring, [&calls, &got_object, weak_copy = std::weak_ptr(weak)] {
    ++calls;
    got_object = weak_copy.lock()->Lock() != nullptr;
  });
  ring = nullptr;
  MustCollect();
  CHECK(calls == 1);
  CHECK_FALSE(got_object);
  CHECK(destroyed.load() == 2);
  // The same holds when counting alone frees the target.
  brc::Ref<GNode> single = brc::Make<GNode>(&destroyed);
  calls = 0;
  got_object = true;
  *weak = brc::WeakRef<GNode>(single, [&calls, &got_object, weak_copy = std::weak_ptr(weak)] {
    ++calls;
    got_object = weak_copy.lock()->Lock() != nullptr;
  });
  single = nullptr;
  CHECK(calls == 1);
  CHECK_FALSE(got_object);
}

// Regression tests for bugs found in review (the rest of this file).

struct SelfWeak : brc::Object {
  static constexpr std::string_view kTypeName = "SelfWeak";
  explicit SelfWeak(brc::WeakRef<SelfWeak>* out) {
    // A WeakRef to itself, made in the constructor (before Make finishes).
    *out = brc::WeakRef<SelfWeak>(brc::Ref<SelfWeak>::NewRef(this));
  }
  void Trace(brc::Visitor&) const {}
  void Clear() {}
};

TEST_CASE("A WeakRef made in a tracked constructor is cleared when the object dies",
          "[collector][weak]") {
  brc::ThreadScope attach;
  brc::WeakRef<SelfWeak> first, second;
  brc::Ref<SelfWeak> a = brc::Make<SelfWeak>(&first);
  SelfWeak* raw = a.get();
  a = nullptr;
  CHECK(first.expired());
  // The next object of the same size class reuses the block: the old WeakRef must not see it.
  brc::Ref<SelfWeak> b = brc::Make<SelfWeak>(&second);
  // (BRC_DEBUG keeps freed blocks in its quarantine instead of reusing them.)
  if (brc::testing::QuarantineCapacityForTesting() == 0) CHECK(b.get() == raw);
  CHECK(first.Lock() == nullptr);
  CHECK(second.Lock().get() == b.get());
}

TEST_CASE("A WeakRef that a finalizer makes to a garbage member is cleared too",
          "[collector][weak][finalizer]") {
  brc::ThreadScope attach;
  ManualCollections manual;
  std::atomic<int> destroyed{0};
  brc::WeakRef<FNode> made_late;
  brc::Ref<FNode> a = brc::Make<FNode>(&destroyed);
  brc::Ref<FNode> b = brc::Make<FNode>(&destroyed);
  a->action = [&, raw_b = b.get()](FNode*) {
    made_late = brc::WeakRef<FNode>(brc::Ref<FNode>::NewRef(raw_b));  // not a resurrection
  };
  a->next = b;
  b->next = a;
  a = b = nullptr;
  brc::CollectResult r = MustCollect();
  CHECK(r.collected == 2);
  CHECK(r.uncollectable == 0);
  CHECK(destroyed.load() == 2);
  CHECK(made_late.Lock() == nullptr);
}

TEST_CASE("A weak-reference callback whose WeakRef died before it ran is not called",
          "[collector][weak]") {
  brc::ThreadScope attach;
  ManualCollections manual;
  std::atomic<int> destroyed{0};
  brc::Ref<GNode> a = brc::Make<GNode>(&destroyed);
  brc::Ref<GNode> b = brc::Make<GNode>(&destroyed);
  a->a = b;
  b->a = a;
  // Whichever callback runs first destroys the other's WeakRef, which cancels its callback.
  int calls = 0;
  std::unique_ptr<brc::WeakRef<GNode>> wa, wb;
  wa = std::make_unique<brc::WeakRef<GNode>>(a, [&] { ++calls; wb.reset(); });
  wb = std::make_unique<brc::WeakRef<GNode>>(b, [&] { ++calls; wa.reset(); });
  a = b = nullptr;
  brc::CollectResult r = MustCollect();
  CHECK(destroyed.load() == 2);
  CHECK(calls == 1);
  CHECK(r.weak_callbacks == 1);
}

}  // namespace
}  // namespace brc_collector_test
