// BRC_DEBUG: use after free is reported with the type. Built only into BRC_DEBUG builds (the
// ASan+UBSan preset); in other builds the quarantine does not exist and there is nothing to test.
#include "test_util.h"

#ifdef BRC_DEBUG

using brc_test::Counted;
using brc_test::ExpectAbort;
using brc_test::Node;

TEST_CASE("debug: a raw pointer used after the last reference is dropped is reported",
          "[debug][misuse]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  Node* raw = nullptr;
  {
    auto node = brc::Make<Node>(&destroyed);
    raw = node.get();
  }
  REQUIRE(destroyed == 1);
  ExpectAbort([&] { brc::IncRef(raw); }, "use after free");
  ExpectAbort([&] { brc::DecRef(raw); }, "brc_test::Node");
  ExpectAbort([&] { brc::Ref<Node> r = brc::Ref<Node>::NewRef(raw); }, "use after free");
}

TEST_CASE("debug: use after free from another thread is reported", "[debug][misuse]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  Counted* raw = nullptr;
  brc_test::RunAttached([&] {
    auto c = brc::Make<Counted>(&destroyed);
    raw = c.get();
  });
  REQUIRE(destroyed == 1);
  ExpectAbort([&] { brc::DecRef(raw); }, "Counted");
}

#endif  // BRC_DEBUG
