// The pluggable allocator.
#include <atomic>
#include <cstdlib>
#include <new>

#include "test_util.h"

namespace {

class CountingAllocator final : public brc::Allocator {
 public:
  void* Allocate(std::size_t size, std::size_t align) noexcept override {
    if (fail_next) {
      fail_next = false;
      return nullptr;
    }
    ++allocated;
    return brc::MallocAllocator().Allocate(size, align);
  }
  void Deallocate(void* p, std::size_t size, std::size_t align) noexcept override {
    ++freed;
    brc::MallocAllocator().Deallocate(p, size, align);
  }
  std::string_view Name() const noexcept override { return "counting"; }
  std::atomic<int> allocated{0}, freed{0};
  bool fail_next = false;
};

struct alignas(128) Big : brc::Object {
  char data[300];
};

}  // namespace

TEST_CASE("SetAllocator validates its argument and the moment", "[allocator]") {
  brc::ThreadScope attach;
  CHECK(brc::SetAllocator(nullptr).code() == absl::StatusCode::kInvalidArgument);
  std::atomic<int> destroyed{0};
  auto alive = brc::Make<brc_test::Counted>(&destroyed);
  absl::Status s = brc::SetAllocator(&brc::MallocAllocator());
  CHECK(s.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(s.message().find("alive") != std::string_view::npos);
}

TEST_CASE("objects are allocated and freed through the installed allocator", "[allocator]") {
  brc::ThreadScope attach;
  CountingAllocator counting;
  REQUIRE(brc::SetAllocator(&counting).ok());
  CHECK(brc::GetAllocator().Name() == "counting");
  std::atomic<int> destroyed{0};
  {
    auto a = brc::Make<brc_test::Counted>(&destroyed);
    auto b = brc::Make<Big>();
    CHECK(reinterpret_cast<uintptr_t>(b.get()) % 128 == 0);
    CHECK(counting.allocated == 2);
  }
#ifndef BRC_DEBUG  // BRC_DEBUG keeps freed memory in its quarantine
  CHECK(counting.freed == 2);
#endif
  SECTION("allocation failure throws std::bad_alloc and leaks nothing") {
    int64_t live = brc::GetStats().live_objects();
    counting.fail_next = true;
    CHECK_THROWS_AS(brc::Make<brc_test::Counted>(&destroyed), std::bad_alloc);
    CHECK(brc::GetStats().live_objects() == live);
  }
#ifndef BRC_DEBUG
  REQUIRE(brc::SetAllocator(&brc::DefaultAllocator()).ok());
#endif
}

TEST_CASE("both built-in allocators serve ordinary and over-aligned objects", "[allocator]") {
  brc::ThreadScope attach;
  for (brc::Allocator* a : {&brc::MallocAllocator(), &brc::ScalableAllocator()}) {
    INFO(a->Name());
    REQUIRE(brc::SetAllocator(a).ok());
    std::atomic<int> destroyed{0};
    {
      auto small = brc::Make<brc_test::Counted>(&destroyed);
      auto big = brc::Make<Big>();
      CHECK(reinterpret_cast<uintptr_t>(big.get()) % 128 == 0);
    }
    CHECK(destroyed == 1);
#ifdef BRC_DEBUG
    break;  // the quarantine still holds this allocator's memory
#endif
  }
#ifndef BRC_DEBUG
  REQUIRE(brc::SetAllocator(&brc::DefaultAllocator()).ok());
#endif
}

TEST_CASE("The default allocator maps large blocks directly and refuses sizes that overflow",
          "[allocator]") {
  brc::Allocator& a = brc::DefaultAllocator();
  // Around the direct-map threshold (128 KiB) and well above it: usable, zeroed or not, and
  // given back with the size they were asked for.
  for (std::size_t size : {std::size_t{128} << 10, (std::size_t{128} << 10) - 16,
                           (std::size_t{1} << 20) + 7, std::size_t{16} << 20}) {
    INFO(size);
    for (std::size_t align : {std::size_t{16}, std::size_t{4096}}) {
      auto* p = static_cast<unsigned char*>(a.Allocate(size, align));
      REQUIRE(p != nullptr);
      CHECK(reinterpret_cast<uintptr_t>(p) % align == 0);
      p[0] = 1;
      p[size - 1] = 2;
      CHECK(p[0] + p[size - 1] == 3);
      a.Deallocate(p, size, align);
    }
  }
#if !defined(__SANITIZE_ADDRESS__)
  // Sizes whose rounding up would wrap: a failed allocation, never a tiny block. (Under
  // AddressSanitizer these sizes go to its malloc, which reports them as errors instead.)
  CHECK(a.Allocate(SIZE_MAX, 16) == nullptr);
  CHECK(a.Allocate(SIZE_MAX - 100, 16) == nullptr);
#endif
}
