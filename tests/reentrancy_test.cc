// The re-entrancy matrix: every place where brc runs user code, crossed with every public call
// that user code might make from there.
//
// Why: user code runs inside brc in many places — a constructor inside brc::Make, a destructor
// run by the owner or by a merge-queue drain on the owner's behalf, Finalize() and Clear() run
// by the collector, weak-reference callbacks, collection callbacks, the stop-the-world
// watchdog handler, a custom allocator. Each of them may call back into brc, and brc is in the
// middle of something each time (a drain half done, a detach under way, a collection holding
// its lock, the world half stopped, a queue lock held). Defects of this kind (issue 10 §1.4)
// were found one at a time; this file checks them all.
//
// How: the table in Rows() has one row per (place, path that runs it) and one column per
// public call. Each cell says what must happen when that place makes that call:
//   works                 the call does its job, and its effect is asserted (the object made
//                         is usable, the victim freed once, Lock() returns the target,
//                         Collect() frees exactly the fresh cycle, ...);
//   status(code, text)    the call returns that absl::Status and nothing changes;
//   fatal(text)           brc reports the misuse on stderr and aborts.
// Cells run in forked children (like ExpectAbort in test_util.h): a fatal cell must abort
// there, a defect cannot take the whole test binary down, and an alarm turns a deadlock into a
// failure instead of a hang. The cells of a row that must return share one child (a fork costs
// ~40 ms under ASan), each from a fresh setup; a cell that must abort gets a child of its own.
// In the child the hook fires exactly once, the cell's checks run, and then the child checks
// that nothing is corrupt: every test object was destroyed exactly once (a magic word catches
// double destruction, a live counter catches leaks), brc's own live-object count is back where
// it was, and a final Collect() works. Hooks run on other threads too, where Catch2's
// assertions may not be used: checks there are recorded and printed by the child.
//
// A cell that fails for a known defect carries its name in `defect` and is left out until the
// fix lands, and then the name is deleted (none is marked now). The same table
// prints as Markdown (hidden test case "[.reentrancy-table]"), which is how the README's table
// is made.
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "test_util.h"

namespace {

// ---- the table's vocabulary ----

enum class Call {
  kMake,              // brc::Make of a leaf and of a tracked object
  kDropLast,          // dropping the last reference to another object
  kWeak,              // WeakRef with a callback to another object, Lock(), then its free
  kWeakSelf,          // WeakRef to the object whose hook is running, and Lock()
  kThreadScope,       // a nested brc::ThreadScope
  kBlockingScope,     // a brc::BlockingScope
  kSafepoint,         // brc::Safepoint()
  kCollect,           // brc::CollectYoung(), then brc::Collect(), each with a fresh cycle to find
  kStopTheWorld,      // brc::StopTheWorld
  kSetAllocator,      // brc::SetAllocator (some object is always alive: must refuse)
  kReleaseFreeMemory, // brc::ReleaseFreeMemory()
  kGetReferrers,      // brc::GetReferrers of an object with one referrer
  kFreeze,            // brc::Freeze() and Unfreeze()
  kMakeImmortal,      // brc::MakeImmortal of another object
  kParkableFrees,     // drop a 100-object chain inside brc::ParkableFrees, a stop pending
};
constexpr int kCalls = 15;
constexpr std::array<const char*, kCalls> kCallNames = {
    "Make",          "drop last ref", "WeakRef + Lock",   "WeakRef to self", "ThreadScope",
    "BlockingScope", "Safepoint",     "Collect",          "StopTheWorld",    "SetAllocator",
    "ReleaseFreeMemory", "GetReferrers", "Freeze",        "MakeImmortal",    "ParkableFrees"};

// Where user code runs.
enum class Hook {
  kConstructor,      // T's constructor, inside brc::Make
  kDestructor,       // T's destructor, when the object is freed
  kFinalize,         // T::Finalize(), run by the collector
  kClear,            // T::Clear(), run by the collector
  kWeakCallback,     // a WeakRef's callback, when its target is freed
  kCollectCallback,  // brc::AddCollectCallback's callback
  kWatchdog,         // brc::SetStopWatchdog's handler: runs before the world is stopped
  kAllocate,         // a custom brc::Allocator's Allocate
  kDeallocate,       // a custom brc::Allocator's Deallocate
};

enum class Path {
  kOwner,           // on the owner thread, directly (Make, or the owner's last drop)
  kOwnerTracked,    // the same, for a tracked type
  kDrainSafepoint,  // merge-queue drain at the owner's Safepoint()
  kDrainBlocking,   // merge-queue drain as the owner enters a BlockingScope
  kDrainDetach,     // merge-queue drain as the owner's ThreadScope ends
  kDrainExit,       // merge-queue drain as the owner thread exits attached
  kOnBehalf,        // another thread drops the last reference while the owner is blocked
  kCollectOwn,      // Collect() on garbage the collecting thread owns
  kCollectOther,    // Collect() on garbage of another thread (blocked meanwhile)
  kAutoCollect,     // an automatic collection inside brc::Make
  kCollectStart,    // Collect(), callback phase kStart
  kCollectStop,     // Collect(), callback phase kStop
  kStopping,        // a StopTheWorld waiting for a thread that has not parked
  kAllocObject,     // the allocator asked for an object's memory (Make)
  kAllocPage,       // the allocator asked for a collector heap page (Make of a tracked type)
  kAllocQueue,      // the allocator asked for merge-queue memory (another thread's drop)
  kAllocCollector,  // the allocator asked for the collector's own lists (world stopped)
  kDeallocObject,   // the allocator given back an object's memory (last drop)
  kFreeCollector,   // the allocator given back the collector's memory (world stopped)
};

struct Expect {
  enum Kind { kNa, kWorks, kStatus, kFatal };
  Kind kind = kNa;
  absl::StatusCode code = absl::StatusCode::kOk;
  const char* text = "";  // a part of the status message or of the fatal report
  const char* defect = nullptr;  // a known defect: the cell fails until it is fixed
};

constexpr Expect NA{Expect::kNa};
constexpr Expect W{Expect::kWorks};
constexpr Expect FP(const char* text) {
  return {Expect::kStatus, absl::StatusCode::kFailedPrecondition, text};
}
constexpr Expect Fatal(const char* text) { return {Expect::kFatal, absl::StatusCode::kOk, text}; }
// A cell that should behave as `e` but does not yet, because of `defect`.
constexpr Expect Defect(Expect e, const char* defect) {
  e.defect = defect;
  return e;
}

struct Row {
  Hook hook;
  Path path;
  const char* place;  // where user code runs
  const char* how;    // the path that runs it
  std::array<Expect, kCalls> cells;
};

// Messages the cells look for.
constexpr const char* kNested = "collections do not nest";
constexpr const char* kAlive = "objects are alive";
constexpr const char* kStopped = "holds the world stopped";
constexpr const char* kZeroIncref = "reference count is zero";
constexpr const char* kStopsNest = "stops do not nest";

constexpr const char* kWatchdogRefused = "watchdog handler";
constexpr const char* kCollectorWalking = "holds the world stopped for a collection";

// Known defects: a cell that fails today for a known reason says which in Expect::defect and is
// left out until the fix lands (then the mark is deleted). None is marked now; what this matrix found is fixed (see the GetStats test case below and the
// watchdog and collector-list rows).

// Columns: Make, drop last ref, WeakRef + Lock, WeakRef to self, ThreadScope, BlockingScope,
// Safepoint, Collect, StopTheWorld, SetAllocator, ReleaseFreeMemory, GetReferrers, Freeze,
// MakeImmortal, ParkableFrees (the order of Call).
const std::vector<Row>& Rows() {
  static const std::vector<Row> rows = {
      {Hook::kConstructor, Path::kOwner, "constructor", "Make of a leaf type",
       {W, W, W, W, W, W, W, W, W, FP(kAlive), W, W, W, W, W}},
      {Hook::kConstructor, Path::kOwnerTracked, "constructor", "Make of a tracked type",
       {W, W, W, W, W, W, W, W, W, FP(kAlive), W, W, W, W, W}},

      {Hook::kDestructor, Path::kOwner, "destructor", "owner drops the last reference",
       {W, W, W, Fatal(kZeroIncref), W, W, W, W, W, FP(kAlive), W, W, W, W, W}},
      {Hook::kDestructor, Path::kDrainSafepoint, "destructor", "queue drain at Safepoint()",
       {W, W, W, Fatal(kZeroIncref), W, W, W, W, W, FP(kAlive), W, W, W, W, W}},
      {Hook::kDestructor, Path::kDrainBlocking, "destructor", "queue drain entering a BlockingScope",
       {W, W, W, Fatal(kZeroIncref), W, W, W, W, W, FP(kAlive), W, W, W, W, W}},
      {Hook::kDestructor, Path::kDrainDetach, "destructor", "queue drain at ThreadScope end",
       {W, W, W, Fatal(kZeroIncref), W, W, W, W, W, FP(kAlive), W, W, W, W, W}},
      {Hook::kDestructor, Path::kDrainExit, "destructor", "queue drain at thread exit",
       {W, W, W, Fatal(kZeroIncref), W, W, W, W, W, FP(kAlive), W, W, W, W, W}},
      {Hook::kDestructor, Path::kOnBehalf, "destructor", "a drop merged for a blocked owner",
       {W, W, W, Fatal(kZeroIncref), W, W, W, W, W, FP(kAlive), W, W, W, W, W}},
      {Hook::kDestructor, Path::kCollectOwn, "destructor", "Collect() frees own garbage",
       {W, W, W, Fatal(kZeroIncref), W, W, W, FP(kNested), W, FP(kAlive), W, W, FP(kNested), W, W}},
      {Hook::kDestructor, Path::kCollectOther, "destructor", "Collect() frees a blocked thread's garbage",
       {W, W, W, Fatal(kZeroIncref), W, W, W, FP(kNested), W, FP(kAlive), W, W, FP(kNested), W, W}},
      {Hook::kDestructor, Path::kAutoCollect, "destructor", "automatic collection inside Make",
       {W, W, W, Fatal(kZeroIncref), W, W, W, FP(kNested), W, FP(kAlive), W, W, FP(kNested), W, W}},

      {Hook::kFinalize, Path::kCollectOwn, "Finalize()", "Collect() of own garbage",
       {W, W, W, W, W, W, W, FP("from Finalize()"), W, FP(kAlive), W, W, FP("from Finalize()"), W, W}},
      {Hook::kFinalize, Path::kCollectOther, "Finalize()", "Collect() of a blocked thread's garbage",
       {W, W, W, W, W, W, W, FP("from Finalize()"), W, FP(kAlive), W, W, FP("from Finalize()"), W, W}},
      {Hook::kFinalize, Path::kAutoCollect, "Finalize()", "automatic collection inside Make",
       {W, W, W, W, W, W, W, FP("from Finalize()"), W, FP(kAlive), W, W, FP("from Finalize()"), W, W}},

      {Hook::kClear, Path::kCollectOwn, "Clear()", "Collect() of own garbage",
       {W, W, W, W, W, W, W, FP("from Clear()"), W, FP(kAlive), W, W, FP("from Clear()"), W, W}},
      {Hook::kClear, Path::kCollectOther, "Clear()", "Collect() of a blocked thread's garbage",
       {W, W, W, W, W, W, W, FP("from Clear()"), W, FP(kAlive), W, W, FP("from Clear()"), W, W}},
      {Hook::kClear, Path::kAutoCollect, "Clear()", "automatic collection inside Make",
       {W, W, W, W, W, W, W, FP("from Clear()"), W, FP(kAlive), W, W, FP("from Clear()"), W, W}},

      {Hook::kWeakCallback, Path::kOwner, "weak callback", "owner drops the last reference",
       {W, W, W, NA, W, W, W, W, W, FP(kAlive), W, W, W, W, W}},
      {Hook::kWeakCallback, Path::kDrainSafepoint, "weak callback", "queue drain at Safepoint()",
       {W, W, W, NA, W, W, W, W, W, FP(kAlive), W, W, W, W, W}},
      {Hook::kWeakCallback, Path::kDrainBlocking, "weak callback", "queue drain entering a BlockingScope",
       {W, W, W, NA, W, W, W, W, W, FP(kAlive), W, W, W, W, W}},
      {Hook::kWeakCallback, Path::kDrainDetach, "weak callback", "queue drain at ThreadScope end",
       {W, W, W, NA, W, W, W, W, W, FP(kAlive), W, W, W, W, W}},
      {Hook::kWeakCallback, Path::kDrainExit, "weak callback", "queue drain at thread exit",
       {W, W, W, NA, W, W, W, W, W, FP(kAlive), W, W, W, W, W}},
      {Hook::kWeakCallback, Path::kOnBehalf, "weak callback", "a drop merged for a blocked owner",
       {W, W, W, NA, W, W, W, W, W, FP(kAlive), W, W, W, W, W}},
      {Hook::kWeakCallback, Path::kCollectOwn, "weak callback", "Collect() of own garbage",
       {W, W, W, NA, W, W, W, FP("from a weak-reference callback"), W, FP(kAlive), W, W,
        FP("from a weak-reference callback"), W, W}},
      {Hook::kWeakCallback, Path::kCollectOther, "weak callback", "Collect() of a blocked thread's garbage",
       {W, W, W, NA, W, W, W, FP("from a weak-reference callback"), W, FP(kAlive), W, W,
        FP("from a weak-reference callback"), W, W}},
      {Hook::kWeakCallback, Path::kAutoCollect, "weak callback", "automatic collection inside Make",
       {W, W, W, NA, W, W, W, FP("from a weak-reference callback"), W, FP(kAlive), W, W,
        FP("from a weak-reference callback"), W, W}},

      {Hook::kCollectCallback, Path::kCollectStart, "collection callback", "Collect(), kStart",
       {W, W, W, NA, W, W, W, FP("from a collection callback"), W, FP(kAlive), W, W,
        FP("from a collection callback"), W, W}},
      {Hook::kCollectCallback, Path::kCollectStop, "collection callback", "Collect(), kStop",
       {W, W, W, NA, W, W, W, FP("from a collection callback"), W, FP(kAlive), W, W,
        FP("from a collection callback"), W, W}},
      {Hook::kCollectCallback, Path::kAutoCollect, "collection callback", "automatic collection inside Make",
       {W, W, W, NA, W, W, W, FP("from a collection callback"), W, FP(kAlive), W, W,
        FP("from a collection callback"), W, W}},

      {Hook::kWatchdog, Path::kStopping, "stop watchdog handler", "StopTheWorld, a thread late",
       {W, W, W, NA, W, W, W, FP(kStopped), Fatal(kStopsNest), FP(kWatchdogRefused), W,
        Fatal(kWatchdogRefused), FP(kStopped), W, W}},

      {Hook::kAllocate, Path::kAllocObject, "Allocator::Allocate", "an object's memory (Make)",
       {W, W, W, NA, W, W, W, W, W, FP(kAlive), W, W, W, W, W}},
      {Hook::kAllocate, Path::kAllocPage, "Allocator::Allocate", "a collector page (Make, tracked)",
       {W, W, W, NA, W, W, W, W, W, FP(kAlive), W, W, W, W, W}},
      {Hook::kAllocate, Path::kAllocQueue, "Allocator::Allocate", "merge-queue memory (a drop)",
       {W, W, W, NA, W, W, W, W, W, FP(kAlive), W, W, W, W, W}},
      {Hook::kAllocate, Path::kAllocCollector, "Allocator::Allocate", "the collector's lists (world stopped)",
       {W, W, W, NA, W, W, W, FP(kStopped), Fatal(kStopsNest), FP(kAlive), W,
        Fatal(kCollectorWalking), FP(kStopped), W, W}},
      {Hook::kDeallocate, Path::kFreeCollector, "Allocator::Deallocate", "the collector's lists (world stopped)",
       {W, W, W, NA, W, W, W, FP(kStopped), Fatal(kStopsNest), FP(kAlive), W,
        Fatal(kCollectorWalking), FP(kStopped), W, W}},
      {Hook::kDeallocate, Path::kDeallocObject, "Allocator::Deallocate", "an object's memory (a drop)",
       {W, W, W, NA, W, W, W, W, W, FP(kAlive), W, W, W, W, W}},
  };
  return rows;
}

// ---- state of the cell running in this (child) process ----

constexpr uint32_t kLiveMagic = 0x5EA1AB1E;
constexpr int kWaitSeconds = 10;  // hang guard for every wait; a cell normally takes ms

struct Prepared;

struct CellState {
  const Row* row = nullptr;
  Call call = Call::kMake;
  Expect expect;
  std::atomic<int> fired{0};         // hook runs (must be exactly 1)
  std::atomic<bool> returned{false};  // the call returned to the hook
  std::mutex mu;
  std::vector<std::string> failures;  // guarded by mu
  std::unique_ptr<Prepared> prep;
  brc::WeakRef<brc::Object> self_weak;  // kWeakSelf's WeakRef, checked after the cell
  std::vector<brc::Object*> immortals;  // freed by the cleanup
  std::atomic<int> immortal_destroyed{0};
  std::atomic<uint32_t> hook_tid{0};  // the thread the hook ran on
};
CellState* g = nullptr;
std::atomic<int> g_alive{0};  // test objects constructed and not yet destroyed

void Fail(const std::string& msg) {
  std::lock_guard<std::mutex> lock(g->mu);
  g->failures.push_back(msg);
}
void Check(bool ok, const std::string& msg) {
  if (!ok) Fail(msg);
}

// Bounded wait on a flag, without reaching a safepoint (the owner threads of the drain paths
// must not drain before the test says so).
bool WaitFor(const std::atomic<bool>& flag) {
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(kWaitSeconds);
  while (!flag.load()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::yield();
  }
  return true;
}

// Every test object carries one: destruction twice is caught by the magic word, a leak by
// g_alive at the end of the cell.
struct Life {
  Life() { g_alive.fetch_add(1); }
  ~Life() {
    if (magic != kLiveMagic) Fail("an object was destroyed twice");
    magic = 0;
    g_alive.fetch_sub(1);
  }
  Life(const Life&) = delete;
  uint32_t magic = kLiveMagic;
};

struct Leaf : brc::Object {
  static constexpr std::string_view kTypeName = "reentrancy::Leaf";
  explicit Leaf(std::atomic<int>* destroyed = nullptr) : destroyed(destroyed) {}
  ~Leaf() {
    if (destroyed != nullptr) destroyed->fetch_add(1);
  }
  Life life;
  std::atomic<int>* destroyed;
  int value = 7;
};

struct Node : brc::Object {
  static constexpr std::string_view kTypeName = "reentrancy::Node";
  void Trace(brc::Visitor& v) const { v.Visit(next); }
  void Clear() { next = nullptr; }
  Life life;
  brc::Ref<Node> next;
};

// A link of kParkableFrees's chain: its destructor frees the next link, so one drop of the
// head frees the whole chain in one cascade.
struct ChainLink : brc::Object {
  static constexpr std::string_view kTypeName = "reentrancy::ChainLink";
  explicit ChainLink(std::atomic<int>* destroyed) : destroyed(destroyed) {}
  ~ChainLink() { destroyed->fetch_add(1); }
  void Trace(brc::Visitor& v) const { v.Visit(next); }
  void Clear() { next = nullptr; }
  Life life;
  std::atomic<int>* destroyed;
  brc::Ref<ChainLink> next;
};
constexpr int kChainLength = 100;

// What the calls act on, made by the thread that will run the hook, before it runs.
struct Prepared {
  std::atomic<int> victim_destroyed{0};
  brc::Ref<Leaf> victim = brc::Make<Leaf>(&victim_destroyed);
  brc::Ref<Leaf> weak_target = brc::Make<Leaf>();
  brc::Ref<Node> holder = brc::Make<Node>();
  brc::Ref<Node> target = brc::Make<Node>();
  brc::Ref<Leaf> immortal = brc::Make<Leaf>(&g->immortal_destroyed);
  std::atomic<int> chain_destroyed{0};
  brc::Ref<ChainLink> chain;  // kChainLength links; this is the only reference to the head
  Prepared() {
    holder->next = target;
    for (int i = 0; i < kChainLength; ++i) {
      brc::Ref<ChainLink> link = brc::Make<ChainLink>(&chain_destroyed);
      link->next = std::move(chain);
      chain = std::move(link);
    }
  }
};

void Prepare() { g->prep = std::make_unique<Prepared>(); }

void CheckStatus(const absl::Status& s) {
  const Expect& e = g->expect;
  switch (e.kind) {
    case Expect::kWorks:
      Check(s.ok(), "expected OK, got " + s.ToString());
      break;
    case Expect::kStatus:
      Check(s.code() == e.code && std::string(s.message()).find(e.text) != std::string::npos,
            "expected " + absl::StatusCodeToString(e.code) + " mentioning \"" + e.text +
                "\", got " + s.ToString());
      break;
    case Expect::kFatal:
      Fail("expected a fatal report, got the status " + s.ToString());
      break;
    default:
      break;
  }
}

// kParkableFrees: drops the last reference to the prepared chain inside a ParkableFrees scope.
// Where it can, it first has a helper thread request a stop of the world and waits until the
// request waits for this thread, so that the cascade's first free must park; the helper's stop
// completing before the drop returns shows that it did. It cannot where this thread holds the
// world stopped (a collection, the allocator under one: the poll is skipped there) or is itself
// requesting a stop (the watchdog handler): a second stop waits for that one to end.
void DropChainParkable(Prepared& p) {
  bool arrange = brc::IsAttached() && !brc::IsWorldStoppedByThisThread() &&
                 g->row->hook != Hook::kWatchdog;
  std::atomic<bool> stopped{false};
  std::thread helper;
  if (arrange) {
    helper = std::thread([&] {
      brc::ThreadScope attach;
      brc::StopTheWorld stop;
      stopped.store(true);
    });
    // No safepoint meanwhile: this thread must still be unparked when the cascade starts.
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(kWaitSeconds);
    while (!brc::testing::StopRequestedForTesting() && std::chrono::steady_clock::now() < end) {
      std::this_thread::yield();
    }
    Check(brc::testing::StopRequestedForTesting(), "the helper's stop waits for this thread");
  }
  {
    brc::ParkableFrees parkable;
    p.chain = nullptr;
  }
  // A hook that runs inside a free (a destructor, a weak callback, Deallocate) is already some
  // frees deep: frees past 64 deep wait for the outermost free (bounded stack, lib/refcount.cc),
  // so part of the chain is freed after the hook returns; RunCellInChild checks the whole.
  bool inside_free = g->row->hook == Hook::kDestructor || g->row->hook == Hook::kWeakCallback ||
                     g->row->hook == Hook::kDeallocate;
  int freed = p.chain_destroyed.load();
  Check(inside_free ? freed > 0 : freed == kChainLength,
        "the chain's cascade ran (" + std::to_string(freed) + " of " +
            std::to_string(kChainLength) + " links freed in the hook)");
  // Inside a queue drain the thread parks only once the drain is complete (its next safepoint;
  // here the BlockingScope of the join lets the stop through).
  bool in_drain = g->row->path == Path::kDrainSafepoint || g->row->path == Path::kDrainBlocking ||
                  g->row->path == Path::kDrainDetach || g->row->path == Path::kDrainExit;
  if (arrange) {
    Check(in_drain || stopped.load(),
          "the cascade parked for the pending stop (the stop completed before the drop returned)");
    brc_test::JoinBlocking(helper);
    Check(stopped.load(), "the helper's stop completed");
  }
}

// The call under test, made from inside the hook. `self` is the object whose hook runs
// (nullptr where there is none).
void RunCall(brc::Object* self) {
  Prepared& p = *g->prep;
  switch (g->call) {
    case Call::kMake: {
      brc::Ref<Leaf> a = brc::Make<Leaf>();
      brc::Ref<Node> b = brc::Make<Node>();
      Check(a->value == 7 && b->next == nullptr, "Make returned a usable object");
      break;
    }
    case Call::kDropLast: {
      p.victim = nullptr;
      Check(p.victim_destroyed.load() == 1, "the victim was freed by its last drop");
      break;
    }
    case Call::kWeak: {
      std::atomic<int> callbacks{0};
      brc::WeakRef<Leaf> w(p.weak_target, [&] { callbacks.fetch_add(1); });
      brc::Ref<Leaf> locked = w.Lock();
      Check(locked == p.weak_target, "Lock() returned the live target");
      locked = nullptr;
      p.weak_target = nullptr;
      Check(callbacks.load() == 1, "the weak callback ran once when its target was freed");
      Check(w.expired() && w.Lock() == nullptr, "the WeakRef reads expired after the free");
      break;
    }
    case Call::kWeakSelf: {
      brc::WeakRef<brc::Object> w(brc::Ref<brc::Object>::NewRef(self));
      brc::Ref<brc::Object> locked = w.Lock();
      Check(locked.get() == self, "Lock() on a WeakRef to the running object returned it");
      locked = nullptr;
      g->self_weak = std::move(w);
      break;
    }
    case Call::kThreadScope: {
      uint32_t id = brc::CurrentThreadId();
      {
        brc::ThreadScope nested;
        Check(brc::IsAttached() && brc::CurrentThreadId() == id, "nested scope: same id");
        brc::Ref<Leaf> x = brc::Make<Leaf>();
      }
      Check(brc::IsAttached() && brc::CurrentThreadId() == id,
            "still attached, same id, after the nested ThreadScope");
      brc::Ref<Leaf> y = brc::Make<Leaf>();
      break;
    }
    case Call::kBlockingScope: {
      {
        brc::BlockingScope blocking;
        Check(brc::IsAttached(), "attached inside the BlockingScope");
      }
      brc::Ref<Leaf> y = brc::Make<Leaf>();  // counting works again after it
      break;
    }
    case Call::kSafepoint: {
      brc::Safepoint();
      brc::Ref<Leaf> y = brc::Make<Leaf>();
      break;
    }
    case Call::kCollect: {
      // Both kinds: the fresh cycle is young, so a young collection finds it as well.
      for (bool young : {true, false}) {
        {
          brc::Ref<Node> a = brc::Make<Node>();
          brc::Ref<Node> b = brc::Make<Node>();
          a->next = b;
          b->next = a;
        }
        absl::StatusOr<brc::CollectResult> r = young ? brc::CollectYoung() : brc::Collect();
        CheckStatus(r.status());
        if (r.ok()) {
          std::string what = young ? "CollectYoung()" : "Collect()";
          Check(r->unreachable == 2 && r->collected == 2,
                what + " found and freed exactly the fresh garbage cycle (unreachable " +
                    std::to_string(r->unreachable) + ", collected " +
                    std::to_string(r->collected) + ")");
        }
      }
      break;
    }
    case Call::kStopTheWorld: {
      {
        brc::StopTheWorld stop;
        Check(brc::IsWorldStoppedByThisThread(), "the world is stopped inside StopTheWorld");
      }
      Check(!brc::IsWorldStoppedByThisThread(), "the world runs again after StopTheWorld");
      break;
    }
    case Call::kSetAllocator: {
      brc::Allocator* before = &brc::GetAllocator();
      absl::Status s = brc::SetAllocator(&brc::MallocAllocator());
      CheckStatus(s);
      if (s.ok()) (void)brc::SetAllocator(before);
      Check(&brc::GetAllocator() == before, "the allocator did not change");
      break;
    }
    case Call::kReleaseFreeMemory: {
      brc::ReleaseFreeMemory();
      brc::Ref<Leaf> y = brc::Make<Leaf>();
      brc::Ref<Node> z = brc::Make<Node>();
      break;
    }
    case Call::kGetReferrers: {
      std::vector<brc::Ref<brc::Object>> v = brc::GetReferrers(p.target.get());
      Check(v.size() == 1 && v[0].get() == p.holder.get(),
            "GetReferrers found the one referrer (found " + std::to_string(v.size()) + ")");
      break;
    }
    case Call::kFreeze: {
      absl::StatusOr<uint64_t> n = brc::Freeze();
      CheckStatus(n.status());
      if (n.ok()) {
        Check(*n >= 2, "Freeze() froze the live tracked objects");
        absl::StatusOr<uint64_t> u = brc::Unfreeze();
        Check(u.ok() && *u == *n, "Unfreeze() returned what Freeze() froze");
      }
      break;
    }
    case Call::kMakeImmortal: {
      Leaf* raw = p.immortal.get();
      brc::MakeImmortal(raw);
      Check(brc::IsImmortal(raw), "MakeImmortal made the object immortal");
      p.immortal = nullptr;
      Check(g->immortal_destroyed.load() == 0, "an immortal object survives its last drop");
      g->immortals.push_back(raw);
      break;
    }
    case Call::kParkableFrees:
      DropChainParkable(p);
      break;
  }
  g->returned.store(true);
}

// Every hook calls this; only the first call in a cell runs the call under test.
void FireHook(brc::Object* self) {
  if (g->fired.fetch_add(1) != 0) {
    Fail("the hook ran more than once");
    return;
  }
  g->hook_tid.store(brc::CurrentThreadId());
  std::fprintf(stderr, "hook: thread %u, world stopped by this thread: %d\n",
               brc::CurrentThreadId(), brc::IsWorldStoppedByThisThread() ? 1 : 0);
  RunCall(self);
}

// ---- the objects whose hooks run ----

struct CtorLeaf : brc::Object {
  static constexpr std::string_view kTypeName = "reentrancy::CtorLeaf";
  CtorLeaf() { FireHook(this); }
  Life life;
};

struct CtorNode : brc::Object {
  static constexpr std::string_view kTypeName = "reentrancy::CtorNode";
  CtorNode() { FireHook(this); }
  void Trace(brc::Visitor& v) const { v.Visit(next); }
  void Clear() { next = nullptr; }
  Life life;
  brc::Ref<Node> next;
};

struct DtorLeaf : brc::Object {
  static constexpr std::string_view kTypeName = "reentrancy::DtorLeaf";
  ~DtorLeaf() {
    if (armed) FireHook(this);
  }
  Life life;
  bool armed = false;
};

struct DtorNode : brc::Object {
  static constexpr std::string_view kTypeName = "reentrancy::DtorNode";
  ~DtorNode() {
    if (armed) FireHook(this);
  }
  void Trace(brc::Visitor& v) const { v.Visit(next); }
  void Clear() { next = nullptr; }
  Life life;
  bool armed = false;
  brc::Ref<DtorNode> next;
};

struct FinNode : brc::Object {
  static constexpr std::string_view kTypeName = "reentrancy::FinNode";
  void Trace(brc::Visitor& v) const { v.Visit(next); }
  void Clear() { next = nullptr; }
  void Finalize() { FireHook(this); }
  Life life;
  brc::Ref<FinNode> next;
};

struct ClearNode : brc::Object {
  static constexpr std::string_view kTypeName = "reentrancy::ClearNode";
  void Trace(brc::Visitor& v) const { v.Visit(next); }
  void Clear() {
    FireHook(this);
    next = nullptr;
  }
  Life life;
  brc::Ref<ClearNode> next;
};

// Allocator markers: sizes nothing else in the process allocates.
struct AllocMarker : brc::Object {
  static constexpr std::string_view kTypeName = "reentrancy::AllocMarker";
  Life life;
  std::array<char, 4000> pad{};
};
struct BigNode : brc::Object {  // larger than a page's blocks: gets a collector page of its own
  static constexpr std::string_view kTypeName = "reentrancy::BigNode";
  void Trace(brc::Visitor& v) const { v.Visit(next); }
  void Clear() { next = nullptr; }
  Life life;
  brc::Ref<BigNode> next;
  std::array<char, 10000> pad{};
};

// A custom allocator (malloc underneath) whose Allocate or Deallocate runs the hook once, when
// armed, on the allocation the path is about.
class HookAllocator final : public brc::Allocator {
 public:
  enum Arm { kNone, kObjectSize, kPageOnThread, kAnyOnThread, kFreeSize, kFreeAnyOnThread };
  void ArmFor(Arm arm, std::size_t size = 0) {
    size_ = size;
    thread_ = std::this_thread::get_id();
    arm_.store(arm);
  }
  void* Allocate(std::size_t size, std::size_t align) noexcept override {
    void* p = brc::MallocAllocator().Allocate(size, align);
    Arm a = arm_.load();
    bool hit = (a == kObjectSize && size == size_) ||
               (a == kPageOnThread && align == 64 * 1024 && OnThread()) ||
               (a == kAnyOnThread && OnThread());
    if (hit && arm_.exchange(kNone) == a) FireHook(nullptr);
    return p;
  }
  void Deallocate(void* p, std::size_t size, std::size_t align) noexcept override {
    Arm a = arm_.load();
    bool hit = (a == kFreeSize && size == size_) || (a == kFreeAnyOnThread && OnThread());
    if (hit && arm_.exchange(kNone) == a) FireHook(nullptr);
    brc::MallocAllocator().Deallocate(p, size, align);
  }
  std::string_view Name() const noexcept override { return "reentrancy-hook"; }

 private:
  bool OnThread() const { return std::this_thread::get_id() == thread_; }
  std::atomic<Arm> arm_{kNone};
  std::size_t size_ = 0;
  std::thread::id thread_;
};

HookAllocator& TheHookAllocator() {
  static auto* a = new HookAllocator();  // never destroyed: it must outlive its objects
  return *a;
}

// ---- the paths that run the hooks ----

// The owner made `refs` (their only references); a second attached thread drops them in
// order, so each is queued back to the owner, which has not drained yet.
void DropOnOtherThread(std::vector<brc::Ref<brc::Object>>& refs) {
  std::thread t([&] {
    brc::ThreadScope attach;
    for (auto& r : refs) r = nullptr;
  });
  t.join();  // not in a BlockingScope: entering one would drain the owner's queue now
}

// Runs `make` on a fresh attached thread W, hands what it returns to this thread, which drops
// it (queued to W), and lets W detach (ThreadScope end, or thread exit while attached): W's
// detach drains its queue and so runs the hook.
void DriveDetach(bool via_exit, const std::function<std::vector<brc::Ref<brc::Object>>()>& make) {
  std::vector<brc::Ref<brc::Object>> mailbox;
  std::atomic<bool> ready{false}, dropped{false};
  std::thread w([&] {
    auto body = [&] {
      Prepare();
      mailbox = make();
      std::size_t n = mailbox.size();
      ready.store(true);
      Check(WaitFor(dropped), "timed out waiting for the hand-off");
      Check(brc::testing::QueuedObjectsForTesting(brc::CurrentThreadId()) == n,
            "the dropped objects wait in the owner's queue");
    };
    if (via_exit) {
      brc::AttachCurrentThread();  // never detached by hand: the thread exits attached
      body();
    } else {
      brc::ThreadScope attach;
      body();
    }
  });
  Check(WaitFor(ready), "timed out waiting for the owner thread");
  for (auto& r : mailbox) r = nullptr;
  brc::Safepoint();  // pushes this thread's hand-off buffer: queued to W
  dropped.store(true);
  brc_test::JoinBlocking(w);  // the hook may stop the world
}

// Runs `make_garbage` on a helper thread that then waits in a BlockingScope while this thread
// collects its garbage.
void DriveCollectOther(const std::function<void()>& make_garbage) {
  std::atomic<bool> ready{false}, release{false};
  std::thread h([&] {
    brc::ThreadScope attach;
    make_garbage();
    ready.store(true);
    brc::BlockingScope blocking;
    Check(WaitFor(release), "timed out waiting for the collection");
  });
  Check(WaitFor(ready), "timed out waiting for the garbage");
  Prepare();
  Check(brc::Collect().ok(), "the driving Collect() works");
  release.store(true);
  brc_test::JoinBlocking(h);
}

// Makes tracked allocations until an automatic collection has run the hook.
void DriveAutoCollect() {
  Check(brc::SetCollectorConfig({.young_threshold = 1, .full_ratio = 0, .workers = 1}).ok(),
        "SetCollectorConfig for an automatic collection");
  brc::EnableCollector();
  for (int i = 0; i < 64 * 20 && g->fired.load() == 0; ++i) brc::Ref<Node> n = brc::Make<Node>();
  brc::DisableCollector();
  (void)brc::SetCollectorConfig({});
}

void MustCollect() {
  absl::StatusOr<brc::CollectResult> r = brc::Collect();
  Check(r.ok(), "the driving Collect() works: " + r.status().ToString());
}

brc::Ref<DtorLeaf> ArmedDtorLeaf() {
  brc::Ref<DtorLeaf> h = brc::Make<DtorLeaf>();
  h->armed = true;
  return h;
}

// A self-cycle of T, dropped: garbage for the collector.
template <class T>
brc::Object* MakeGarbage(bool arm = false) {
  brc::Ref<T> n = brc::Make<T>();
  if constexpr (std::is_same_v<T, DtorNode>) n->armed = arm;
  n->next = n;
  return n.get();
}

// The weak-callback hook: a WeakRef with a callback, kept alive beyond the target's free.
std::unique_ptr<brc::WeakRef<brc::Object>> g_hook_weak;
void WatchWithHook(const brc::Ref<brc::Object>& target) {
  g_hook_weak = std::make_unique<brc::WeakRef<brc::Object>>(target, [] { FireHook(nullptr); });
}

void Drive(const Row& row) {
  auto drain_objects = [&]() -> std::vector<brc::Ref<brc::Object>> {
    std::vector<brc::Ref<brc::Object>> refs;
    if (row.hook == Hook::kDestructor) {
      refs.push_back(ArmedDtorLeaf());
    } else {
      brc::Ref<brc::Object> target = brc::Make<Leaf>();
      WatchWithHook(target);
      refs.push_back(std::move(target));
    }
    refs.push_back(brc::Make<Leaf>());  // the rest of the batch
    refs.push_back(brc::Make<Leaf>());
    return refs;
  };
  auto tracked_garbage = [&] {
    if (row.hook == Hook::kDestructor) {
      MakeGarbage<DtorNode>(true);
    } else if (row.hook == Hook::kFinalize) {
      MakeGarbage<FinNode>();
    } else if (row.hook == Hook::kClear) {
      MakeGarbage<ClearNode>();
    } else {
      brc::Ref<Node> n = brc::Make<Node>();
      n->next = n;
      WatchWithHook(n);
    }
  };
  switch (row.path) {
    case Path::kOwner:
      Prepare();
      if (row.hook == Hook::kConstructor) {
        brc::Ref<CtorLeaf> x = brc::Make<CtorLeaf>();
      } else if (row.hook == Hook::kDestructor) {
        brc::Ref<DtorLeaf> h = ArmedDtorLeaf();
      } else {  // weak callback
        brc::Ref<brc::Object> target = brc::Make<Leaf>();
        WatchWithHook(target);
      }
      break;
    case Path::kOwnerTracked: {
      Prepare();
      brc::Ref<CtorNode> x = brc::Make<CtorNode>();
      break;
    }
    case Path::kDrainSafepoint:
    case Path::kDrainBlocking: {
      Prepare();
      std::vector<brc::Ref<brc::Object>> refs = drain_objects();
      DropOnOtherThread(refs);
      Check(brc::testing::QueuedObjectsForTesting(brc::CurrentThreadId()) == 3,
            "the dropped objects wait in the owner's queue");
      if (row.path == Path::kDrainSafepoint) {
        brc::Safepoint();
      } else {
        brc::BlockingScope blocking;
      }
      break;
    }
    case Path::kDrainDetach:
    case Path::kDrainExit:
      DriveDetach(row.path == Path::kDrainExit, drain_objects);
      break;
    case Path::kOnBehalf: {
      // This thread owns the objects and blocks; the other thread's drops then merge on its
      // behalf and free them there, running the hook on the other thread.
      std::vector<brc::Ref<brc::Object>> refs = drain_objects();
      std::atomic<bool> owner_blocked{false}, done{false};
      uint32_t owner = brc::CurrentThreadId();
      std::thread t([&] {
        brc::ThreadScope attach;
        Prepare();
        Check(WaitFor(owner_blocked), "timed out waiting for the owner to block");
        for (auto& r : refs) r = nullptr;
        Check(g->hook_tid.load() == brc::CurrentThreadId() && g->hook_tid.load() != owner,
              "the hook ran on the dropping thread, for the blocked owner");
        done.store(true);
      });
      {
        brc::BlockingScope blocking;
        owner_blocked.store(true);
        Check(WaitFor(done), "timed out waiting for the drops");
      }
      brc_test::JoinBlocking(t);
      break;
    }
    case Path::kCollectOwn:
      Prepare();
      tracked_garbage();
      MustCollect();
      break;
    case Path::kCollectOther:
      DriveCollectOther(tracked_garbage);
      break;
    case Path::kAutoCollect: {
      Prepare();
      uint64_t id = 0;
      if (row.hook == Hook::kCollectCallback) {
        id = brc::AddCollectCallback([](brc::CollectPhase phase, const brc::CollectResult&) {
          if (phase == brc::CollectPhase::kStop) FireHook(nullptr);
        });
      } else {
        tracked_garbage();
      }
      DriveAutoCollect();
      if (id != 0) brc::RemoveCollectCallback(id);
      break;
    }
    case Path::kCollectStart:
    case Path::kCollectStop: {
      Prepare();
      auto want = row.path == Path::kCollectStart ? brc::CollectPhase::kStart
                                                  : brc::CollectPhase::kStop;
      uint64_t id =
          brc::AddCollectCallback([want](brc::CollectPhase phase, const brc::CollectResult&) {
            if (phase == want) FireHook(nullptr);
          });
      MustCollect();
      brc::RemoveCollectCallback(id);
      break;
    }
    case Path::kStopping: {
      Prepare();
      std::atomic<bool> started{false}, release{false};
      // Attached, but busy where it reaches no safepoint until the handler lets it go.
      std::thread late([&] {
        brc::ThreadScope attach;
        started.store(true);
        Check(WaitFor(release), "timed out waiting for the watchdog handler");
        brc::Safepoint();
      });
      Check(WaitFor(started), "timed out waiting for the late thread");
      std::atomic<bool> handled{false};
      Check(brc::SetStopWatchdog(absl::Milliseconds(1),
                                 [&](const brc::LaggingThread&) {
                                   if (!handled.exchange(true)) FireHook(nullptr);
                                   release.store(true);
                                 })
                .ok(),
            "SetStopWatchdog");
      {
        brc::StopTheWorld stop;
      }
      (void)brc::SetStopWatchdog(absl::Seconds(1), nullptr);
      release.store(true);
      brc_test::JoinBlocking(late);
      break;
    }
    case Path::kAllocObject: {
      Prepare();
      TheHookAllocator().ArmFor(HookAllocator::kObjectSize, sizeof(AllocMarker));
      brc::Ref<AllocMarker> m = brc::Make<AllocMarker>();
      break;
    }
    case Path::kAllocPage: {
      Prepare();
      TheHookAllocator().ArmFor(HookAllocator::kPageOnThread);
      brc::Ref<BigNode> m = brc::Make<BigNode>();
      break;
    }
    case Path::kAllocQueue: {
      // This thread owns `victim`; another thread drops it, and that push needs queue memory
      // (released beforehand), so the allocator runs inside the push, on the other thread.
      // This thread stays attached (not blocked) meanwhile, so the drop queues rather than
      // merging on its behalf; it polls its safepoint, since the hook may stop the world.
      brc::Ref<Leaf> victim = brc::Make<Leaf>();
      brc::testing::ReleaseQueueMemoryForTesting();
      std::atomic<bool> dropped{false};
      std::thread t([&] {
        brc::ThreadScope attach;
        Prepare();
        TheHookAllocator().ArmFor(HookAllocator::kAnyOnThread);
        victim = nullptr;   // buffered for the owner (lib/handoff.cc)
        brc::Safepoint();   // the push, while the owner is still attached
        dropped.store(true);
      });
      auto end = std::chrono::steady_clock::now() + std::chrono::seconds(kWaitSeconds);
      while (!dropped.load() && std::chrono::steady_clock::now() < end) {
        brc::Safepoint();
        std::this_thread::yield();
      }
      Check(dropped.load(), "timed out waiting for the other thread's drop");
      brc_test::JoinBlocking(t);
      break;
    }
    case Path::kAllocCollector:
    case Path::kFreeCollector: {
      // Several collector pages, so that the collector's page list grows (and frees its old
      // buffer) while it is built: with the world stopped.
      Prepare();
      std::vector<brc::Ref<BigNode>> pages;
      for (int i = 0; i < 6; ++i) pages.push_back(brc::Make<BigNode>());
      TheHookAllocator().ArmFor(row.path == Path::kAllocCollector ? HookAllocator::kAnyOnThread
                                                                  : HookAllocator::kFreeAnyOnThread);
      MustCollect();
      TheHookAllocator().ArmFor(HookAllocator::kNone);
      break;
    }
    case Path::kDeallocObject: {
      Prepare();
      brc::Ref<AllocMarker> m = brc::Make<AllocMarker>();
      TheHookAllocator().ArmFor(HookAllocator::kFreeSize, sizeof(AllocMarker));
      m = nullptr;
      // BRC_DEBUG keeps freed memory in a quarantine: push the marker out of it.
      std::size_t flush = brc::testing::QuarantineCapacityForTesting() + 16;
      for (std::size_t i = 0; i < flush && g->fired.load() == 0; ++i) {
        brc::Ref<AllocMarker> x = brc::Make<AllocMarker>();
      }
      break;
    }
  }
}

bool IsAllocatorRow(const Row& row) {
  return row.hook == Hook::kAllocate || row.hook == Hook::kDeallocate;
}

// The body of one cell, in the child. Returns 0 when every check held. Cells of a row may run
// one after another in the same child: each starts from what the previous one left, and its
// checks compare with that.
int RunCellInChild(const Row& row, Call call) {
  g = new CellState();  // never freed: a hook on another thread may still read the old one
  g->row = &row;
  g->call = call;
  g->expect = row.cells[static_cast<int>(call)];
  {
    brc::ThreadScope attach;
    brc::DisableCollector();
    if (IsAllocatorRow(row)) {
      absl::Status s = brc::SetAllocator(&TheHookAllocator());
      if (!s.ok()) {
        std::fprintf(stderr, "cannot install the hook allocator: %s\n", s.ToString().c_str());
        return 2;
      }
    }
    TheHookAllocator().ArmFor(HookAllocator::kNone);
    int64_t live_before = brc::GetStats().live_objects();
    int alive_before = g_alive.load();
    brc::Ref<Leaf> keepalive = brc::Make<Leaf>();  // SetAllocator must always refuse
    Drive(row);
    Check(g->fired.load() == 1, "the hook ran exactly once (ran " +
                                    std::to_string(g->fired.load()) + " times)");
    Check(g->returned.load(), "the call returned to the hook");
    // The prepared objects' counts are exact again (nothing running now touches them): one
    // reference each from `prep`, and the holder's one more on the target.
    if (Prepared* p = g->prep.get()) {
      auto count_is = [](const brc::Object* ob, int64_t want, const char* what) {
        if (ob == nullptr) return;
        int64_t got = brc::GetRefCount(ob);
        Check(got == want, std::string("reference count of ") + what + " is " +
                               std::to_string(want) + " (got " + std::to_string(got) + ")");
      };
      count_is(p->victim.get(), 1, "the victim");
      count_is(p->weak_target.get(), 1, "the weak target");
      count_is(p->holder.get(), 1, "the referrer");
      count_is(p->target.get(), 2, "the referenced object");
      count_is(p->immortal.get(), 1, "the object for MakeImmortal");
      if (call == Call::kParkableFrees) {
        Check(p->chain == nullptr && p->chain_destroyed.load() == kChainLength,
              "the chain was freed, every link once (" +
                  std::to_string(p->chain_destroyed.load()) + " of " +
                  std::to_string(kChainLength) + ")");
      }
    }
    // Clean up, then look for corruption.
    g->prep.reset();
    g_hook_weak.reset();
    keepalive = nullptr;
    for (brc::Object* ob : g->immortals) brc::testing::FreeImmortalForTesting(ob);
    Check(g->immortal_destroyed.load() == 1,
          "the object for MakeImmortal was freed once (by FreeImmortalForTesting if immortal)");
    brc::Safepoint();
    absl::StatusOr<brc::CollectResult> r = brc::Collect();
    Check(r.ok(), "a Collect() after the cell works: " + r.status().ToString());
    brc::Safepoint();
    Check(g->self_weak.expired(), "the WeakRef to the hook's object reads expired at the end");
    g->self_weak = brc::WeakRef<brc::Object>();
    Check(g_alive.load() == alive_before,
          "every test object was freed (" + std::to_string(g_alive.load() - alive_before) +
              " still alive)");
    Check(brc::GetStats().live_objects() == live_before,
          "brc's live-object count is back (" + std::to_string(brc::GetStats().live_objects()) +
              ", was " + std::to_string(live_before) + ")");
    Check(!brc::IsWorldStoppedByThisThread(), "the world runs at the end");
  }
  std::lock_guard<std::mutex> lock(g->mu);
  for (const std::string& f : g->failures) std::fprintf(stderr, "cell check failed: %s\n", f.c_str());
  return g->failures.empty() ? 0 : 1;
}

// ---- the parent side ----

struct ChildOutcome {
  int status = 0;
  std::string output;
  bool Exited(int code) const { return WIFEXITED(status) && WEXITSTATUS(status) == code; }
  bool Signaled(int sig) const { return WIFSIGNALED(status) && WTERMSIG(status) == sig; }
  std::string Describe() const {
    if (WIFEXITED(status)) return "exited " + std::to_string(WEXITSTATUS(status));
    if (Signaled(SIGALRM)) return "hung (killed by the alarm)";
    if (WIFSIGNALED(status)) return std::string("killed by signal ") + strsignal(WTERMSIG(status));
    return "status " + std::to_string(status);
  }
};

// Runs `body` in a forked child with stdout and stderr captured and an alarm as the hang
// guard; the child's exit code is what `body` returns.
ChildOutcome RunInChild(const std::function<int()>& body, int alarm_s) {
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  std::fflush(nullptr);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    dup2(fds[1], STDERR_FILENO);
    dup2(fds[1], STDOUT_FILENO);
    std::signal(SIGABRT, SIG_DFL);  // not Catch2's handler: it allocates inside the signal
    std::signal(SIGALRM, SIG_DFL);
    alarm(static_cast<unsigned>(alarm_s));
    int rc = body();
    std::fflush(nullptr);
    _exit(rc);
  }
  close(fds[1]);
  ChildOutcome out;
  char buf[512];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof(buf))) > 0) out.output.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  REQUIRE(waitpid(pid, &out.status, 0) == pid);
  return out;
}

ChildOutcome RunCell(const Row& row, Call call, int alarm_s) {
  return RunInChild([&] { return RunCellInChild(row, call); }, alarm_s);
}

// Whether the outcome is what the cell expects.
bool Matches(const Expect& e, const ChildOutcome& o) {
  switch (e.kind) {
    case Expect::kWorks:
    case Expect::kStatus:
      return o.Exited(0);
    case Expect::kFatal:
      return o.Signaled(SIGABRT) && o.output.find(e.text) != std::string::npos;
    case Expect::kNa:
      return true;
  }
  return false;
}

std::string ExpectText(const Expect& e) {
  switch (e.kind) {
    case Expect::kNa: return "n/a";
    case Expect::kWorks: return "works";
    case Expect::kStatus: return absl::StatusCodeToString(e.code) + " (\"" + e.text + "\")";
    case Expect::kFatal: return std::string("fatal (\"") + e.text + "\")";
  }
  return "?";
}

std::string CellName(const Row& row, int c) {
  return std::string(row.place) + " [" + row.how + "] x " + kCallNames[c];
}

std::string CellStart(int c) { return "=== cell " + std::to_string(c) + "\n"; }
std::string CellEnd(int c, int rc) {
  return "=== cell " + std::to_string(c) + " done: " + std::to_string(rc) + "\n";
}

// Runs the given cells of `row` one after another in one child (a fork costs ~40 ms under
// ASan), and checks each. A cell that kills the child is reported, and the cells after it run
// in a fresh child.
void RunCellsBatched(const Row& row, std::vector<int> calls) {
  while (!calls.empty()) {
    ChildOutcome o = RunInChild(
        [&] {
          int failed = 0;
          for (int c : calls) {
            std::fprintf(stderr, "%s", CellStart(c).c_str());
            int rc = RunCellInChild(row, static_cast<Call>(c));
            std::fprintf(stderr, "%s", CellEnd(c, rc).c_str());
            std::fflush(nullptr);
            failed |= rc;
          }
          return failed;
        },
        20);
    std::size_t consumed = 0;
    for (int c : calls) {
      std::size_t begin = o.output.find(CellStart(c));
      if (begin == std::string::npos) break;
      begin += CellStart(c).size();
      std::size_t end0 = o.output.find(CellEnd(c, 0), begin);
      std::size_t end = end0 != std::string::npos ? end0 : o.output.find(CellEnd(c, 1), begin);
      ++consumed;
      INFO("cell: " << CellName(row, c));
      INFO("expected: " << ExpectText(row.cells[c]));
      if (end == std::string::npos) {
        INFO("got: the child died in this cell: " << o.Describe() << "\n"
                                                   << o.output.substr(begin));
        bool child_survived = false;
        CHECK(child_survived);
        break;
      }
      INFO("got:\n" << o.output.substr(begin, end - begin));
      bool cell_checks_held = end == end0;
      CHECK(cell_checks_held);
    }
    if (consumed == 0) {
      INFO("the child died before its first cell: " << o.Describe() << "\n" << o.output);
      bool child_survived = false;
      CHECK(child_survived);
      return;
    }
    calls.erase(calls.begin(), calls.begin() + static_cast<std::ptrdiff_t>(consumed));
  }
}

bool CanInstallAllocator() { return brc::GetStats().live_objects() == 0; }

// Runs the cells of `hook` (all rows of it) whose known-defect mark is `with_defects`.
void RunMatrix(std::optional<Hook> hook, bool with_defects) {
  for (const Row& row : Rows()) {
    if (hook && row.hook != *hook) continue;
    if (IsAllocatorRow(row) && !CanInstallAllocator()) {
      // Under ctest every test case has its own process; run by hand, run the allocator rows
      // on their own ("re-entrancy: custom allocator").
      FAIL("cannot run " << row.place << " [" << row.how
                         << "]: objects from earlier tests are alive, so no allocator can be "
                            "installed");
    }
    // Cells that must return (works, or a status) share one child; the others, which must
    // abort (or may today, for a known defect), get one each.
    std::vector<int> batch;
    for (int c = 0; c < kCalls; ++c) {
      const Expect& e = row.cells[c];
      if (e.kind == Expect::kNa || (e.defect != nullptr) != with_defects) continue;
      if (e.defect == nullptr && (e.kind == Expect::kWorks || e.kind == Expect::kStatus)) {
        batch.push_back(c);
        continue;
      }
      // A known hang is given less time.
      int alarm_s = e.defect != nullptr ? 2 : 20;
      ChildOutcome o = RunCell(row, static_cast<Call>(c), alarm_s);
      INFO("cell: " << CellName(row, c));
      INFO("expected: " << ExpectText(e) << (e.defect ? std::string(" — known defect ") + e.defect : ""));
      INFO("got: " << o.Describe() << "\n" << o.output);
      CHECK(Matches(e, o));
    }
    RunCellsBatched(row, batch);
  }
}

}  // namespace

TEST_CASE("re-entrancy: constructor inside Make", "[reentrancy]") {
  RunMatrix(Hook::kConstructor, false);
}
TEST_CASE("re-entrancy: destructor (owner, queue drains, collector)", "[reentrancy]") {
  RunMatrix(Hook::kDestructor, false);
}
TEST_CASE("re-entrancy: Finalize()", "[reentrancy]") { RunMatrix(Hook::kFinalize, false); }
TEST_CASE("re-entrancy: Clear()", "[reentrancy]") { RunMatrix(Hook::kClear, false); }
TEST_CASE("re-entrancy: weak-reference callback", "[reentrancy]") {
  RunMatrix(Hook::kWeakCallback, false);
}
TEST_CASE("re-entrancy: collection callback", "[reentrancy]") {
  RunMatrix(Hook::kCollectCallback, false);
}
TEST_CASE("re-entrancy: stop-the-world watchdog handler", "[reentrancy]") {
  RunMatrix(Hook::kWatchdog, false);
}
TEST_CASE("re-entrancy: custom allocator", "[reentrancy]") {
  RunMatrix(Hook::kAllocate, false);
  RunMatrix(Hook::kDeallocate, false);
}

// A cell that fails for a known defect would carry its name in `defect` and be left out of the
// test cases above until the fix lands; none is marked (every defect this matrix found is fixed).

// Found by this matrix: an allocator that reads brc's statistics (say, to log them) while a
// collection asks it for memory for its page list. The collector used to build that list
// while holding the thread registry's lock, which GetStats() takes again: a self-deadlock
// (absl aborted with "Potential Mutex deadlock"; std::mutex under TSan hung).
TEST_CASE("re-entrancy: an allocator that calls GetStats() during a collection",
          "[reentrancy]") {
  // Each test case runs in its own process under ctest, so no object is alive yet.
  REQUIRE(CanInstallAllocator());
  struct StatsAllocator final : brc::Allocator {
    void* Allocate(std::size_t size, std::size_t align) noexcept override {
      // Only while the collector holds the world stopped: its own lists.
      if (armed.load() && brc::IsWorldStoppedByThisThread() && armed.exchange(false)) {
        (void)brc::GetStats();
        called.store(true);
      }
      return brc::MallocAllocator().Allocate(size, align);
    }
    void Deallocate(void* p, std::size_t size, std::size_t align) noexcept override {
      brc::MallocAllocator().Deallocate(p, size, align);
    }
    std::string_view Name() const noexcept override { return "stats-reading"; }
    std::atomic<bool> armed{false};
    std::atomic<bool> called{false};
  };
  ChildOutcome o = RunInChild(
      [] {
        g = new CellState();
        static StatsAllocator allocator;
        brc::ThreadScope attach;
        if (!brc::SetAllocator(&allocator).ok()) return 2;
        brc::Ref<Node> node = brc::Make<Node>();  // one collector page to list
        allocator.armed.store(true);
        bool ok = brc::Collect().ok();
        if (!allocator.called.load()) return 3;  // the collector never asked: nothing tested
        return ok ? 0 : 1;
      },
      5);
  INFO(o.Describe() << "\n" << o.output);
  CHECK(o.Exited(0));
}

// Prints the matrix as Markdown: `brc_tests "[.reentrancy-table]"`.
TEST_CASE("re-entrancy: print the table", "[.reentrancy-table]") {
  std::string md = "| where user code runs | path |";
  for (const char* name : kCallNames) md += std::string(" ") + name + " |";
  md += "\n|---|---|";
  for (int c = 0; c < kCalls; ++c) md += "---|";
  md += "\n";
  for (const Row& row : Rows()) {
    md += std::string("| ") + row.place + " | " + row.how + " |";
    for (const Expect& e : row.cells) {
      std::string t = e.kind == Expect::kStatus ? std::string("FP (") + e.text + ")"
                      : e.kind == Expect::kFatal ? std::string("fatal (") + e.text + ")"
                                                 : ExpectText(e);
      if (e.defect != nullptr) t += ", **today: " + std::string(e.defect) + "**";
      md += " " + t + " |";
    }
    md += "\n";
  }
  std::printf("FP = FailedPrecondition whose message contains the text.\n\n%s", md.c_str());
}

// Runs every cell and prints what happened, whatever the table says: for exploring.
TEST_CASE("re-entrancy: explore every cell", "[.reentrancy-explore]") {
  for (const Row& row : Rows()) {
    for (int c = 0; c < kCalls; ++c) {
      if (row.cells[c].kind == Expect::kNa) continue;
      const char* only = std::getenv("REENTRANCY_ONLY");
      if (only != nullptr && CellName(row, c).find(only) == std::string::npos) continue;
      auto start = std::chrono::steady_clock::now();
      ChildOutcome o = RunCell(row, static_cast<Call>(c), 5);
      double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
      std::string first;
      for (const char* key : {"brc: fatal", "cell check failed", "brc:", "ERROR", "runtime error"}) {
        auto pos = o.output.find(key);
        if (pos != std::string::npos) {
          first = o.output.substr(pos, o.output.find('\n', pos) - pos);
          break;
        }
      }
      bool ok = Matches(row.cells[c], o);
      std::printf("%-5s %6.0fms | %s | %s | %s\n", ok ? "ok" : "DIFF", ms,
                  CellName(row, c).c_str(), o.Describe().c_str(), first.c_str());
      if ((!ok || only != nullptr) && std::getenv("REENTRANCY_VERBOSE") != nullptr) std::printf("%s\n", o.output.c_str());
    }
  }
}
