// Statistics: generated from one list, per thread, summed on demand.
#include <atomic>
#include <string>

#include "test_util.h"

TEST_CASE("FormatStats prints every field of the list", "[stats]") {
  brc::Stats s;
  int index = 0;
#define BRC_SET_(name, help) s.name = 1000 + index++;
  BRC_STAT_FIELDS(BRC_SET_)
#undef BRC_SET_
  std::string text = brc::FormatStats(s);
  index = 0;
#define BRC_CHECK_FIELD_(name, help)                                           \
  CHECK(text.find(#name) != std::string::npos);                                \
  CHECK(text.find(std::to_string(1000 + index++)) != std::string::npos);
  BRC_STAT_FIELDS(BRC_CHECK_FIELD_)
#undef BRC_CHECK_FIELD_
}

TEST_CASE("GetStats sums live and exited threads", "[stats]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  brc::Stats before = brc::GetStats();
  brc_test::RunAttached([&] {
    auto a = brc::Make<brc_test::Counted>(&destroyed);
    for (int i = 0; i < 5; ++i) brc::IncRef(a.get());
    for (int i = 0; i < 5; ++i) brc::DecRef(a.get());
  });
  auto mine = brc::Make<brc_test::Counted>(&destroyed);
  brc::Ref<brc_test::Counted> copy = mine;
  brc::Stats after = brc::GetStats();
  CHECK(after.allocations - before.allocations == 2);
  CHECK(after.frees - before.frees == 1);
  BRC_OP_CHECK(after.local_increfs - before.local_increfs == 6);
  BRC_OP_CHECK(after.local_decrefs - before.local_decrefs == 6);  // 5, and the final drop
  CHECK(after.live_objects() - before.live_objects() == 1);
}
