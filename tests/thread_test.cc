// Thread attach/detach and ids.
#include <atomic>
#include <set>
#include <thread>
#include <vector>

#include "test_util.h"

TEST_CASE("attached threads get distinct non-zero ids, unattached threads report 0", "[thread]") {
  CHECK_FALSE(brc::IsAttached());
  CHECK(brc::CurrentThreadId() == 0);
  constexpr int kThreads = 6;
  std::vector<uint32_t> ids(kThreads);
  std::atomic<int> ready{0};
  std::vector<std::thread> pool;
  for (int i = 0; i < kThreads; ++i) {
    pool.emplace_back([&, i] {
      brc::ThreadScope attach;
      ids[i] = brc::CurrentThreadId();
      ready.fetch_add(1);
      while (ready.load() < kThreads) std::this_thread::yield();  // all attached at once
    });
  }
  for (auto& t : pool) t.join();
  std::set<uint32_t> unique(ids.begin(), ids.end());
  CHECK(unique.size() == kThreads);
  CHECK(unique.count(0) == 0);
}

TEST_CASE("ids of exited threads are reused", "[thread]") {
  uint32_t first = 0, second = 0;
  brc_test::RunAttached([&] { first = brc::CurrentThreadId(); });
  brc_test::RunAttached([&] { second = brc::CurrentThreadId(); });
  CHECK(first != 0);
  CHECK(first == second);
}

TEST_CASE("ThreadScope nests: only the outermost detaches", "[thread]") {
  {
    brc::ThreadScope outer;
    uint32_t id = brc::CurrentThreadId();
    {
      brc::ThreadScope inner;
      CHECK(brc::CurrentThreadId() == id);
    }
    CHECK(brc::IsAttached());
    CHECK(brc::CurrentThreadId() == id);
  }
  CHECK_FALSE(brc::IsAttached());
}

TEST_CASE("BlockingScope is a no-op on a thread that is not attached", "[thread]") {
  brc::BlockingScope blocking;
  CHECK_FALSE(brc::IsAttached());
}

TEST_CASE("a thread can leave and re-enter a BlockingScope many times", "[thread]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  auto a = brc::Make<brc_test::Counted>(&destroyed);
  for (int i = 0; i < 100; ++i) {
    { brc::BlockingScope blocking; }
    brc::Ref<brc_test::Counted> copy = a;  // owner fast path again after the scope
  }
  CHECK(brc::GetRefCount(a.get()) == 1);
  CHECK(brc::testing::GetCounts(a.get()).owner == brc::CurrentThreadId());
}
