// The object header: size, layout, type records, creation.
#include <atomic>
#include <string_view>

#include "test_util.h"

using brc_test::Counted;
using brc_test::Node;

namespace {

struct Leaf : brc::Object {
  int payload = 7;
};

struct WithVtable : brc::Object {
  virtual ~WithVtable() = default;
  virtual int Get() const { return 1; }
};

struct Derived : WithVtable {
  explicit Derived(std::atomic<int>* d) : destroyed(d) {}
  ~Derived() override { destroyed->fetch_add(1); }
  int Get() const override { return 2; }
  std::atomic<int>* destroyed;
};

struct alignas(64) OverAligned : brc::Object {
  char data[10];
};

struct Throws : brc::Object {
  Throws() { throw 42; }
};

}  // namespace

TEST_CASE("header is 24 bytes: type pointer, owner, two 32-bit halves, flags", "[object]") {
  STATIC_REQUIRE(sizeof(brc::Object) == 24);
  STATIC_REQUIRE(sizeof(Leaf) == 32);  // 24-byte header + int, padded to 8
}

TEST_CASE("a new object is owned by its creator with local count 1", "[object]") {
  brc::ThreadScope attach;
  auto leaf = brc::Make<Leaf>();
  brc::testing::Counts c = brc::testing::GetCounts(leaf.get());
  CHECK(c.owner == brc::CurrentThreadId());
  CHECK(c.owner != 0);
  CHECK(c.local == 1);
  CHECK(c.shared_count == 0);
  CHECK(c.state == brc::kStateDefault);
  CHECK(brc::GetRefCount(leaf.get()) == 1);
  CHECK(leaf->payload == 7);
}

TEST_CASE("type records carry the name, size and alignment", "[object]") {
  brc::ThreadScope attach;
  auto leaf = brc::Make<Leaf>();
  CHECK(leaf->type_name().find("Leaf") != std::string_view::npos);
  CHECK(leaf->type_info()->size == sizeof(Leaf));
  auto node = brc::Make<Node>();
  CHECK(node->type_name() == "brc_test::Node");  // kTypeName overrides the derived name
  auto aligned = brc::Make<OverAligned>();
  CHECK(reinterpret_cast<uintptr_t>(aligned.get()) % 64 == 0);
  CHECK(aligned->type_info()->align == 64);
}

TEST_CASE("Ref<Base> destroys the most-derived type, even with a vtable before the header",
          "[object]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  {
    brc::Ref<WithVtable> base = brc::Make<Derived>(&destroyed);
    CHECK(base->Get() == 2);
    brc::Ref<brc::Object> as_object = base;
    CHECK(brc::GetRefCount(as_object.get()) == 2);
  }
  CHECK(destroyed == 1);
}

TEST_CASE("a constructor that throws returns the memory and propagates", "[object]") {
  brc::ThreadScope attach;
  int64_t live_before = brc::GetStats().live_objects();
  CHECK_THROWS_AS(brc::Make<Throws>(), int);
  CHECK(brc::GetStats().live_objects() == live_before);
}
