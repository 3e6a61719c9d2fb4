// The default allocator's per-thread leaf heap (lib/gc_heap.h): every size class, frees by the
// owner and by other threads, the empty-page cache and its bounds.
#include <atomic>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "brc/collector.h"
#include "test_util.h"

namespace {

using brc_test::Sized;

struct alignas(32) OverAligned : brc::Object {
  char data[40];
};

template <std::size_t N>
void MakeAndDropMany(std::atomic<int>* destroyed, int n) {
  std::vector<brc::Ref<Sized<N>>> live;
  for (int i = 0; i < n; ++i) live.push_back(brc::Make<Sized<N>>(destroyed));
  for (size_t i = 0; i < live.size(); i += 2) live[i] = nullptr;  // free every other one
  for (int i = 0; i < n / 2; ++i) live.push_back(brc::Make<Sized<N>>(destroyed));  // reuse
}

}  // namespace

TEST_CASE("Leaf objects of every size class keep their contents until freed", "[leaf_heap]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  MakeAndDropMany<32>(&destroyed, 5000);
  MakeAndDropMany<48>(&destroyed, 5000);
  MakeAndDropMany<100>(&destroyed, 3000);
  MakeAndDropMany<1000>(&destroyed, 500);
  MakeAndDropMany<8192>(&destroyed, 40);   // the largest leaf class
  MakeAndDropMany<20000>(&destroyed, 10);  // above it: malloc
  CHECK(destroyed.load() == (5000 + 2500) * 2 + 4500 + 750 + 60 + 15);
  CHECK(Sized<32>::corrupted.load() == 0);
  CHECK(Sized<48>::corrupted.load() == 0);
  CHECK(Sized<100>::corrupted.load() == 0);
  CHECK(Sized<1000>::corrupted.load() == 0);
  CHECK(Sized<8192>::corrupted.load() == 0);
  CHECK(Sized<20000>::corrupted.load() == 0);
  auto over = brc::Make<OverAligned>();  // aligned above 16: malloc, still aligned
  CHECK(reinterpret_cast<uintptr_t>(over.get()) % 32 == 0);
  CHECK(brc::GetStats().live_objects() == 1);
}

TEST_CASE("The leaf heap keeps at most its peak of empty pages and gives them back",
          "[leaf_heap]") {
  brc::ThreadScope attach;
  brc::ReleaseFreeMemory();
  uint64_t base = brc::testing::LeafHeapPagesForTesting();
  std::atomic<int> destroyed{0};
  uint64_t peak = 0;
  for (int round = 0; round < 5; ++round) {
    std::vector<brc::Ref<Sized<48>>> live;
    for (int i = 0; i < 200'000; ++i) live.push_back(brc::Make<Sized<48>>(&destroyed));
    uint64_t pages = brc::testing::LeafHeapPagesForTesting();
    if (round == 0) peak = pages;
    // Later rounds reuse the cached pages instead of growing.
    CHECK(pages <= peak + 2);
  }
  CHECK(destroyed.load() == 5 * 200'000);
  uint64_t kept = brc::testing::LeafHeapPagesForTesting();
  CHECK(kept <= peak + 2);
  brc::ReleaseFreeMemory();
  uint64_t after = brc::testing::LeafHeapPagesForTesting();
  if (brc::testing::LeafHeapEnabledForTesting()) {
    CHECK(peak - base >= 140);  // 200k blocks of 48 bytes: at least 140 pages of 64 KiB
    CHECK(after <= base + 30);  // only the head page of each class used stays
  } else {
    CHECK(peak == base);  // ASan build: every object came from malloc
  }
}

TEST_CASE("Leaf objects freed by other threads go back to their page", "[leaf_heap]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  constexpr int kObjects = 100'000;
  std::vector<brc::Ref<Sized<64>>> taken;
  // The maker exits while we still hold its objects: they are merged (unowned), and our drops
  // free them on a page of another thread's heap (the remote list).
  std::thread maker([&] {
    brc::ThreadScope maker_attach;
    std::vector<brc::Ref<Sized<64>>> made;
    for (int i = 0; i < kObjects; ++i) made.push_back(brc::Make<Sized<64>>(&destroyed));
    taken = made;  // our references are the maker's own (local) ones, dropped at its exit
  });
  maker.join();
  uint64_t with_objects = brc::testing::LeafHeapPagesForTesting();
  CHECK(destroyed.load() == 0);
  taken.clear();
  CHECK(destroyed.load() == kObjects);
  CHECK(Sized<64>::corrupted.load() == 0);
  CHECK(brc::GetStats().live_objects() == 0);
  // A collection sweeps every leaf heap: it reclaims the remote frees and returns the exited
  // thread's empty pages.
  REQUIRE(brc::Collect().ok());
  uint64_t after = brc::testing::LeafHeapPagesForTesting();
  if (brc::testing::LeafHeapEnabledForTesting()) {
    CHECK(with_objects >= 95);  // 100k blocks of 64 bytes, 1022 to a page
    CHECK(after + 85 <= with_objects);
  }
}

TEST_CASE("With another allocator installed, leaf objects do not use the leaf heap",
          "[leaf_heap]") {
#ifndef BRC_DEBUG  // the quarantine would still hold default-heap objects
  REQUIRE(brc::SetAllocator(&brc::MallocAllocator()).ok());
  {
    brc::ThreadScope attach;
    brc::ReleaseFreeMemory();
    uint64_t before = brc::testing::LeafHeapPagesForTesting();
    std::atomic<int> destroyed{0};
    {
      std::vector<brc::Ref<Sized<48>>> live;
      for (int i = 0; i < 50'000; ++i) live.push_back(brc::Make<Sized<48>>(&destroyed));
      CHECK(brc::testing::LeafHeapPagesForTesting() == before);
    }
    CHECK(destroyed.load() == 50'000);
  }
  REQUIRE(brc::SetAllocator(&brc::DefaultAllocator()).ok());
#endif
}

TEST_CASE("ReleaseFreeMemory reclaims blocks other threads freed and returns the pages",
          "[leaf_heap]") {
  brc::ThreadScope attach;
  brc::ReleaseFreeMemory();
  uint64_t base = brc::testing::LeafHeapPagesForTesting();
  std::atomic<int> destroyed{0};
  constexpr int kObjects = 100'000;
  std::vector<brc::Ref<Sized<64>>> shared;
  {
    std::vector<brc::Ref<Sized<64>>> mine;
    for (int i = 0; i < kObjects; ++i) mine.push_back(brc::Make<Sized<64>>(&destroyed));
    std::thread holder([&] {
      brc::ThreadScope holder_attach;
      shared = mine;  // non-owner references
    });
    holder.join();
  }  // our (owner) references are gone: the objects are merged, kept alive by `shared`
  CHECK(destroyed.load() == 0);
  std::thread dropper([&] {
    brc::ThreadScope dropper_attach;
    shared.clear();  // the last references: freed here, on pages of our heap (remote list)
  });
  dropper.join();
  CHECK(destroyed.load() == kObjects);
  uint64_t with_remote_frees = brc::testing::LeafHeapPagesForTesting();
  brc::ReleaseFreeMemory();
  uint64_t after = brc::testing::LeafHeapPagesForTesting();
  if (brc::testing::LeafHeapEnabledForTesting()) {
    CHECK(with_remote_frees >= base + 95);
    CHECK(after <= base + 2);
  }
  {
    brc::BlockingScope blocked;
    brc::ReleaseFreeMemory();  // inside a BlockingScope: does nothing (a collection may sweep)
  }
}
