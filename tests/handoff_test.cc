// Hand-off buffers (lib/handoff.cc): drops for other owners wait in the dropper's buffers and
// reach the owners' queues in one push per buffer; every way of leaving the attached state, and
// every stop of the world, finds them pushed.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "handoff_util.h"
#include "test_util.h"

using brc::testing::HandoffBufferedForTesting;
using brc::testing::QueuedObjectsForTesting;
using brc_test::Counted;
using brc_test::Owner;

namespace {

constexpr std::size_t kEntries = 126;  // per buffer (lib/thread_state.h, kHandoffEntries)
constexpr std::size_t kBuffers = 4;

}  // namespace

TEST_CASE("Drops for an attached owner wait in the dropper's buffer until its safepoint",
          "[handoff]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  constexpr int kObjects = 50;
  Owner owner(&destroyed, kObjects);
  uint64_t pushes = brc::GetStats().handoff_pushes;
  owner.made().clear();  // non-owner drops at shared count zero
  CHECK(HandoffBufferedForTesting() == kObjects);
  CHECK(QueuedObjectsForTesting(owner.tid()) == 0);
  CHECK(brc::GetStats().handoff_pushes == pushes);
  brc::Safepoint();  // one push for the whole buffer
  CHECK(HandoffBufferedForTesting() == 0);
  CHECK(QueuedObjectsForTesting(owner.tid()) == kObjects);
  CHECK(brc::GetStats().handoff_pushes == pushes + 1);
  CHECK(destroyed == 0);
  owner.Safepoints();  // the owner drains and frees them
  CHECK(brc_test::EventuallyTrue([&] { return destroyed == kObjects; }));
  CHECK(QueuedObjectsForTesting(owner.tid()) == 0);
}

TEST_CASE("A full buffer is pushed at once and a thread buffers at most four owners' drops",
          "[handoff]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  SECTION("one owner: every full buffer goes at once") {
    constexpr int kObjects = 3 * kEntries + 5;
    Owner owner(&destroyed, kObjects);
    owner.made().clear();
    CHECK(QueuedObjectsForTesting(owner.tid()) == 3 * kEntries);
    CHECK(HandoffBufferedForTesting() == 5);
    brc::Safepoint();
    CHECK(QueuedObjectsForTesting(owner.tid()) == kObjects);
    owner.Safepoints();
    CHECK(brc_test::EventuallyTrue([&] { return destroyed == kObjects; }));
  }
  SECTION("six owners: a fifth destination gives up a buffer") {
    constexpr int kOwners = 6, kEach = 10;
    std::vector<std::unique_ptr<Owner>> owners;
    for (int i = 0; i < kOwners; ++i) owners.push_back(std::make_unique<Owner>(&destroyed, kEach));
    std::size_t max_buffered = 0;
    for (auto& o : owners) {
      for (auto& r : o->made()) {
        r = nullptr;
        max_buffered = std::max(max_buffered, HandoffBufferedForTesting());
      }
    }
    CHECK(max_buffered <= kBuffers * kEntries);
    std::size_t queued = 0;
    for (auto& o : owners) queued += QueuedObjectsForTesting(o->tid());
    CHECK(queued >= (kOwners - kBuffers) * kEach);  // pushed to make room
    CHECK(queued + HandoffBufferedForTesting() == kOwners * kEach);
    CHECK(destroyed == 0);
    brc::Safepoint();
    queued = 0;
    for (auto& o : owners) queued += QueuedObjectsForTesting(o->tid());
    CHECK(queued == kOwners * kEach);
    for (auto& o : owners) o->Safepoints();
    CHECK(brc_test::EventuallyTrue([&] { return destroyed == kOwners * kEach; }));
  }
}

TEST_CASE("A thread that blocks or detaches pushes its buffers first", "[handoff]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  constexpr int kObjects = 40;
  Owner owner(&destroyed, 2 * kObjects);
  std::vector<brc::Ref<Counted>> first(owner.made().begin(), owner.made().begin() + kObjects);
  std::vector<brc::Ref<Counted>> second(owner.made().begin() + kObjects, owner.made().end());
  owner.made().clear();  // `first` and `second` hold the only references now
  std::size_t seen_blocked = 0, buffered_before = 0;
  std::thread dropper([&] {
    brc::ThreadScope attach_dropper;
    first.clear();
    buffered_before = HandoffBufferedForTesting();
    brc::BlockingScope blocking;  // pushes
    seen_blocked = QueuedObjectsForTesting(owner.tid());
  });
  brc_test::JoinBlocking(dropper);
  CHECK(buffered_before == kObjects);
  CHECK(seen_blocked == kObjects);
  std::thread leaver([&] {
    {
      brc::ThreadScope attach_leaver;
      second.clear();
      buffered_before = HandoffBufferedForTesting();
    }  // the detach pushes
  });
  brc_test::JoinBlocking(leaver);
  CHECK(buffered_before == kObjects);
  CHECK(QueuedObjectsForTesting(owner.tid()) == 2 * kObjects);
  CHECK(destroyed == 0);
  owner.Safepoints();
  CHECK(brc_test::EventuallyTrue([&] { return destroyed == 2 * kObjects; }));
}

TEST_CASE("Drops for a blocked or exited owner are merged at once and not buffered", "[handoff]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  constexpr int kObjects = 30;
  uint64_t merges = brc::GetStats().merges_for_owner;
  SECTION("blocked") {
    Owner owner(&destroyed, kObjects);
    std::vector<brc::Ref<Counted>> mine = std::move(owner.made());
    owner.Block();
    mine.clear();
    CHECK(destroyed == kObjects);
    CHECK(HandoffBufferedForTesting() == 0);
  }
  SECTION("exited") {
    std::vector<brc::Ref<Counted>> mine;
    {
      Owner owner(&destroyed, kObjects);
      mine = std::move(owner.made());
    }
    mine.clear();
    CHECK(destroyed == kObjects);
    CHECK(HandoffBufferedForTesting() == 0);
  }
  CHECK(brc::GetStats().merges_for_owner - merges == kObjects);
}

TEST_CASE("An owner that blocks after the drops is merged on its behalf by the push",
          "[handoff]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  constexpr int kObjects = 60;
  Owner owner(&destroyed, kObjects);
  owner.made().clear();  // buffered: the owner was attached
  CHECK(HandoffBufferedForTesting() == kObjects);
  uint64_t merges = brc::GetStats().merges_for_owner;
  owner.Block();
  brc::Safepoint();  // the push finds it blocked: merged (and freed) here
  CHECK(destroyed == kObjects);
  CHECK(brc::GetStats().merges_for_owner - merges == kObjects);
  CHECK(QueuedObjectsForTesting(owner.tid()) == 0);
}

namespace {

// A ring of tracked nodes, and a head object that holds it.
struct Ring : brc::Object {
  static constexpr std::string_view kTypeName = "handoff_test::Ring";
  explicit Ring(std::atomic<int>* destroyed) : destroyed(destroyed) {}
  ~Ring() { destroyed->fetch_add(1); }
  void Trace(brc::Visitor& v) const { v.Visit(next); }
  void Clear() { next = nullptr; }
  std::atomic<int>* destroyed;
  brc::Ref<Ring> next;
};

brc::Ref<Ring> MakeRing(int n, std::atomic<int>* destroyed) {
  brc::Ref<Ring> first = brc::Make<Ring>(destroyed);
  brc::Ref<Ring> last = first;
  for (int i = 1; i < n; ++i) {
    brc::Ref<Ring> r = brc::Make<Ring>(destroyed);
    last->next = r;
    last = r;
  }
  last->next = first;
  return first;
}

}  // namespace

TEST_CASE("A collection sees buffered drops: its own and those of parked threads",
          "[handoff][collector]") {
  brc_test::Manual manual;
  brc::ThreadScope attach;
  const bool own = GENERATE(true, false);
  INFO((own ? "the collecting thread dropped it" : "a parked thread dropped it"));
  std::atomic<int> destroyed{0};
  std::atomic<bool> handed{false}, dropped{false}, done{false};
  std::atomic<uint32_t> owner_id{0};
  brc::Ref<Ring> holder;
  std::thread owner([&] {
    brc::ThreadScope attach_owner;
    owner_id.store(brc::CurrentThreadId());
    brc::Ref<Ring> head = brc::Make<Ring>(&destroyed);  // owned here
    head->next = MakeRing(5, &destroyed);               // head -> a 5-ring
    holder = std::move(head);  // the only reference now belongs to another thread
    handed.store(true);
    while (!done.load()) brc::Safepoint();
  });
  while (!handed.load()) std::this_thread::yield();
  std::thread other;
  if (own) {
    holder = nullptr;  // buffered here
    CHECK(HandoffBufferedForTesting() == 1);
  } else {
    other = std::thread([&] {
      brc::ThreadScope attach_other;
      holder = nullptr;  // buffered there
      dropped.store(true);
      while (!done.load()) brc::Safepoint();  // parks for the collection, pushing first
    });
    while (!dropped.load()) std::this_thread::yield();
  }
  // The head is dead once merged; the ring, its only referent then, is garbage in the same
  // collection (the head's destructor ran before the stop, or MergeParkedQueues freed it).
  brc::CollectResult r = brc_test::Must(brc::Collect());
  int collected = static_cast<int>(r.collected);
  done.store(true);
  if (other.joinable()) brc_test::JoinBlocking(other);
  brc_test::JoinBlocking(owner);
  CHECK(collected == 5);
  CHECK(destroyed == 6);
}

namespace {

// A destructor that re-enters brc while a push (or the owner's drain) runs it: it drops an
// object another thread owns (a buffered drop from inside a push), reaches a safepoint (which
// pushes the buffers again), opens a nested ThreadScope and a BlockingScope, and, for some,
// runs a collection.
struct Reentrant : brc::Object {
  Reentrant(std::atomic<int>* destroyed, brc::Ref<Counted> other, bool collect)
      : destroyed(destroyed), other(std::move(other)), collect(collect) {}
  ~Reentrant() {
    other = nullptr;
    brc::Safepoint();
    { brc::ThreadScope nested; }
    { brc::BlockingScope blocking; }
    if (collect) (void)brc::Collect();
    destroyed->fetch_add(1);
  }
  std::atomic<int>* destroyed;
  brc::Ref<Counted> other;
  bool collect;
};

}  // namespace

TEST_CASE("Destructors run by a push or a drain may drop and block and attach and collect",
          "[handoff][reentrancy]") {
  brc_test::Manual manual;
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0}, others_destroyed{0};
  constexpr int kObjects = 3 * kEntries;
  // Objects made by `third`, referenced by the re-entrant ones; the latter made by `maker`.
  Owner third(&others_destroyed, kObjects);
  third.Safepoints();  // it must park for the destructors' collections
  std::vector<brc::Ref<Reentrant>> handed;
  std::atomic<bool> made{false}, go{false};
  const bool maker_blocks = GENERATE(false, true);
  INFO((maker_blocks ? "the maker blocks: pushes merge on its behalf" : "the maker drains"));
  std::thread maker([&] {
    brc::ThreadScope attach_maker;
    for (int i = 0; i < kObjects; ++i) {
      handed.push_back(brc::Make<Reentrant>(&destroyed, std::move(third.made()[i]),
                                            i % 97 == 0));
    }
    made.store(true);
    if (maker_blocks) {
      brc::BlockingScope blocking;
      while (!go.load()) std::this_thread::yield();
    } else {
      while (!go.load()) brc::Safepoint();
      while (destroyed.load() < kObjects) brc::Safepoint();
    }
  });
  while (!made.load()) std::this_thread::yield();
  handed.clear();  // full buffers go at once; the rest at the safepoint below
  brc::Safepoint();
  go.store(true);
  CHECK(brc_test::EventuallyTrue([&] { return destroyed.load() == kObjects; }));
  brc_test::JoinBlocking(maker);
  CHECK(brc_test::EventuallyTrue([&] { return others_destroyed.load() == kObjects; }));
}

namespace {

struct Link : brc::Object {
  explicit Link(std::atomic<int>* destroyed) : destroyed(destroyed) {}
  ~Link() { destroyed->fetch_add(1, std::memory_order_relaxed); }
  std::atomic<int>* destroyed;
  brc::Ref<Link> next;
};

}  // namespace

TEST_CASE("A million-long chain of another thread's objects is freed without deep recursion",
          "[handoff][reentrancy]") {
  brc::ThreadScope attach;
  std::atomic<int> destroyed{0};
  constexpr int kLength = 1'000'000;
  const bool owner_exits = GENERATE(true, false);
  INFO((owner_exits ? "the owner exited: merged on its behalf" : "the owner drains"));
  brc::Ref<Link> head;
  std::atomic<bool> made{false}, go{false};
  std::thread owner([&] {
    brc::ThreadScope attach_owner;
    brc::Ref<Link> first = brc::Make<Link>(&destroyed);
    Link* last = first.get();
    for (int i = 1; i < kLength; ++i) {
      last->next = brc::Make<Link>(&destroyed);
      last = last->next.get();
    }
    head = std::move(first);
    made.store(true);
    if (owner_exits) return;
    while (!go.load()) brc::Safepoint();
    while (destroyed.load() < kLength) brc::Safepoint();
  });
  while (!made.load()) std::this_thread::yield();
  if (owner_exits) brc_test::JoinBlocking(owner);
  head = nullptr;
  brc::Safepoint();
  go.store(true);
  CHECK(brc_test::EventuallyTrue([&] { return destroyed.load() == kLength; }));
  if (owner.joinable()) brc_test::JoinBlocking(owner);
}

TEST_CASE("A push whose queue cannot grow merges the whole buffer with the world stopped",
          "[handoff][oom]") {
  struct Failing final : brc::Allocator {
    void* Allocate(std::size_t size, std::size_t align) noexcept override {
      return fail.load() ? nullptr : brc::MallocAllocator().Allocate(size, align);
    }
    void Deallocate(void* p, std::size_t size, std::size_t align) noexcept override {
      brc::MallocAllocator().Deallocate(p, size, align);
    }
    std::string_view Name() const noexcept override { return "handoff-failing"; }
    std::atomic<bool> fail{false};
  };
  static Failing failing;  // outlives every object it makes
  REQUIRE(brc::SetAllocator(&failing).ok());
  {
    brc::ThreadScope attach;
    std::atomic<int> destroyed{0};
    std::vector<Counted*> raw;
    std::atomic<bool> made{false}, done{false};
    std::thread owner([&] {
      brc::ThreadScope attach_owner;
      brc::testing::ReleaseQueueMemoryForTesting();  // the push must allocate
      for (std::size_t i = 0; i < kEntries + 3; ++i) {
        raw.push_back(brc::Make<Counted>(&destroyed).Release());
      }
      made.store(true);
      while (!done.load()) brc::Safepoint();
    });
    while (!made.load()) std::this_thread::yield();
    uint64_t failures = brc::GetStats().queue_push_failures;
    failing.fail.store(true);
    for (Counted* c : raw) brc::Ref<Counted>::Adopt(c);  // a full buffer pushes at once
    brc::Safepoint();                                    // and the rest
    failing.fail.store(false);
    CHECK(destroyed.load() == static_cast<int>(kEntries + 3));
    CHECK(brc::GetStats().queue_push_failures - failures >= 1);
    done.store(true);
    brc_test::JoinBlocking(owner);
  }
  REQUIRE(brc::SetAllocator(&brc::DefaultAllocator()).ok());
}

TEST_CASE("Threads handing objects to each other free each exactly once", "[handoff][threads]") {
  BRC_TEST_SEED(seed);
  const int threads = GENERATE(2, 4);
  constexpr int kRounds = 3000;
  std::atomic<int> made{0}, destroyed{0};
  std::mutex mu;
  std::vector<std::vector<brc::Ref<Counted>>> boxes(threads);  // guarded by mu
  brc_test::WorkerFailures failures;
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      brc::ThreadScope attach;
      std::mt19937 rng(seed + static_cast<uint32_t>(t));
      std::vector<brc::Ref<Counted>> mine;
      for (int r = 0; r < kRounds; ++r) {
        int n = static_cast<int>(rng() % 8);
        std::vector<brc::Ref<Counted>> send;
        for (int i = 0; i < n; ++i) send.push_back(brc::Make<Counted>(&destroyed, i));
        made.fetch_add(n);
        int to = static_cast<int>(rng() % static_cast<uint32_t>(threads));
        {
          std::lock_guard<std::mutex> lock(mu);
          for (auto& s : send) boxes[to].push_back(std::move(s));
          mine.swap(boxes[t]);
        }
        if (rng() % 3 == 0) mine.resize(mine.size() / 2);  // drops some now
        if (rng() % 5 == 0) brc::Safepoint();
        if (rng() % 50 == 0) {
          brc::BlockingScope blocking;
          std::this_thread::yield();
        }
        std::lock_guard<std::mutex> lock(mu);
        for (auto& m : mine) boxes[(t + 1) % threads].push_back(std::move(m));
        mine.clear();
      }
      failures.Expect(HandoffBufferedForTesting() <= kBuffers * kEntries);
    });
  }
  for (auto& p : pool) p.join();
  brc::ThreadScope attach;
  boxes.clear();  // their owners exited: merged on their behalf
  CHECK(failures.count == 0);
  CHECK(brc_test::EventuallyTrue([&] { return destroyed.load() == made.load(); }));
}
