// Shared by the re-entrancy matrix's files (tests/reentrancy_*.cc, tag [reentrancy]): the
// table's vocabulary, the state of the cell running in a child process, and the objects whose
// hooks run. What the matrix is and how it runs:
//
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
//
// Files: reentrancy_cells.cc has the table (Rows()) and the calls made from inside a hook;
// reentrancy_paths.cc the paths that run the hooks and the body of a cell in the child;
// reentrancy_test.cc the parent side (forking, matching outcomes) and the test cases.
#ifndef BRC_TESTS_REENTRANCY_H_
#define BRC_TESTS_REENTRANCY_H_

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

namespace brc_reentrancy {

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
// left out until the fix lands (then the mark is deleted). None is marked now; what this matrix found is fixed (see the GetStats test case in reentrancy_test.cc and the
// watchdog and collector-list rows).

// One row per (place, path that runs it); defined in reentrancy_cells.cc.
const std::vector<Row>& Rows();

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
inline CellState* g = nullptr;
inline std::atomic<int> g_alive{0};  // test objects constructed and not yet destroyed


// A failed check of the cell, recorded (hooks may run on threads where Catch2 may not be used)
// and printed by the child at the end of the cell.
void Fail(const std::string& msg);
void Check(bool ok, const std::string& msg);
// Bounded wait on a flag, without reaching a safepoint (the owner threads of the drain paths
// must not drain before the test says so).
bool WaitFor(const std::atomic<bool>& flag);
// Every hook calls this; only the first call in a cell runs the call under test.
void FireHook(brc::Object* self);

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

// Makes g->prep, on the thread that will run the hook.
void Prepare();

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

inline HookAllocator& TheHookAllocator() {
  static auto* a = new HookAllocator();  // never destroyed: it must outlive its objects
  return *a;
}

bool IsAllocatorRow(const Row& row);
// The body of one cell, in the child (reentrancy_paths.cc). Returns 0 when every check held.
int RunCellInChild(const Row& row, Call call);

}  // namespace brc_reentrancy

#endif  // BRC_TESTS_REENTRANCY_H_
