// oom_sweep.h: what the files of brc_oom_sweep share. The failure injection's state (the run's
// report to the parent, the armed counter, the per-thread failures of --repro); the life table
// that records each object made in a run; the object types and the weak-reference slots with
// their callbacks; Try and the status checks that sort what a step may see; the helper thread;
// the steps of the scenario and the reproductions. main.cc says what the sweep does as a whole.
// The files, by mechanism:
//   main.cc             the options, one run in a forked child (RunN), the sweep loop, main
//   inject.cc           failure injection: the counter, the failing brc::Allocator, the replaced
//                       global operator new/delete, stacks and --trace, Violation
//   objects.cc          the life table, the weak callbacks, and what a step may see (Try,
//                       CheckStatus, MakeWeak)
//   run.cc              the step table, one run of the scenario with its checks (RunOnce), and
//                       crash reporting inside a run
//   steps_objects.cc    the main thread's own steps: Make, WeakRef, drops by the owner,
//                       per-thread counts, and the configuration calls
//   steps_collector.cc  the collector's steps: automatic, young, full and parallel collections,
//                       StopTheWorld with GetReferrers/GetReferents, Freeze/Unfreeze
//   steps_threads.cc    the helper thread and the steps between threads: merge-queue pushes both
//                       ways, merges for a blocked owner, attach/detach, exited owners' pages
//   repro.cc            --repro: targeted reproductions of the defects the sweep found
// Everything is in namespace brc_oom; only main and the replaced operator new/delete are global.
#ifndef BRC_TESTS_OOM_SWEEP_OOM_SWEEP_H_
#define BRC_TESTS_OOM_SWEEP_OOM_SWEEP_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

#include "brc/brc.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define OOM_SANITIZED 1
#endif
#if defined(__SANITIZE_ADDRESS__)
#define OOM_LSAN 1
#endif

namespace brc_oom {

using brc::Make;
using brc::Object;
using brc::Ref;
using brc::WeakRef;

// ---------------------------------------------------------------------------------------------
// Failure injection (inject.cc)

enum class Site : int { kNone, kBrcAllocator, kOperatorNew, kAny /* --repro: either */ };

const char* SiteName(Site s);

// What a run tells the parent, in memory shared with it (MAP_SHARED), so that it survives the
// child's crash.
struct RunReport {
  std::atomic<uint64_t> injected_at;  // the allocation failed, 0 when none was
  std::atomic<uint64_t> allocations;  // counted while armed (up to the end of the scenario)
  std::atomic<int> site;              // Site of the failed allocation
  std::atomic<int> bad_allocs;        // failures that surfaced as std::bad_alloc
  std::atomic<int> statuses;          // ... as ResourceExhausted
  std::atomic<bool> failed;           // a check failed; `failure` says which
  char step[48];                      // the step running when the allocation was failed
  char failure[768];                  // the first failed check
  void* pcs[64];                      // the failed allocation's stack (same addresses as ours)
  int depth;
};
extern RunReport* g_report;  // set once by main, before any run

// Relaxed: arming and disarming happen on the main thread while no other scenario thread runs
// (threads are started after arming and joined before disarming: their start and join order it).
extern std::atomic<bool> g_armed;
extern std::atomic<uint64_t> g_count;
extern uint64_t g_fail_at;  // written only while disarmed; 0 never fails
extern bool g_print_injection;  // --only: print the failed allocation's stack at once
extern bool g_verbose;
extern bool g_persistent;  // --persistent: every allocation from the N-th on fails
// The harness's own bookkeeping allocations on this thread are never counted.
extern constinit thread_local int t_exempt;
struct Exempt {
  Exempt() { ++t_exempt; }
  ~Exempt() { --t_exempt; }
};

// The step now running, for reports (written by the main thread, read anywhere).
extern std::atomic<const char*> g_step;

void PrintStack(void* const* pcs, int depth);
void PrintCurrentStack();
// The failed allocation's stack; Aside prints it from a forked child (symbolizing may allocate,
// and the sweep's parent must stay as it was for the next runs).
void PrintInjectionSite();
void PrintInjectionSiteAside();
bool Injected();

// --trace: every counted allocation (its number, step, site, size, thread), printed after the
// run, to compare runs when the count varies.
struct TraceEntry {
  const char* step;
  Site site;
  std::size_t size;
  bool main_thread;
  void* pcs[10];  // --trace-stacks
  void* address;  // what the allocation returned
};
constexpr std::size_t kTraceMax = 1 << 16;
extern TraceEntry* g_trace;  // allocated (with malloc) by --trace
extern bool g_trace_stacks;
extern std::thread::id g_main_thread;
void PrintTrace();  // the run's counted allocations, after it

// --repro: fails, on this thread, the nth next allocation of `site` (and with `all`, every later
// one), counted from now.
void FailOnThisThread(Site site, int nth, bool all = false);
void StopFailing();

// A check failed: remember the first message for the parent and print every one.
void Violation(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// The brc allocator: the built-in default, failing on command.
class FailingAllocator final : public brc::Allocator {
 public:
  void* Allocate(std::size_t size, std::size_t align) noexcept override;
  void Deallocate(void* p, std::size_t size, std::size_t align) noexcept override;
  std::string_view Name() const noexcept override { return "oom-sweep"; }
};
extern FailingAllocator g_allocator;

// ---------------------------------------------------------------------------------------------
// The life table (objects.cc): each object made in a run gets an id; its constructor (last)
// marks it alive, its destructor marks it destroyed, Clear() and Finalize() count their calls.

enum Kind : uint8_t {
  kLeaf,
  kStringLeaf,
  kBigLeaf,
  kAligned64Leaf,
  kAligned4096Leaf,
  kNode,
  kBigNode,
  kAligned64Node,
  kPageNode,
  kKinds
};
inline constexpr const char* kKindNames[kKinds] = {"Leaf",    "StringLeaf", "BigLeaf",
                                                   "Aligned64Leaf", "Aligned4096Leaf", "Node",
                                                   "BigNode", "Aligned64Node", "PageNode"};

constexpr int kMaxObjects = 4096;
enum Life : uint8_t { kNever = 0, kAlive = 1, kDestroyed = 2 };
extern std::atomic<uint8_t> g_life[kMaxObjects];
extern Kind g_kind[kMaxObjects];  // written before the id is published (kAlive, release)
extern std::atomic<uint8_t> g_clears[kMaxObjects];
extern std::atomic<uint8_t> g_finalizes[kMaxObjects];
extern std::atomic<int> g_next_id;

int Born(Kind kind);
void Died(int id);
void Cleared(int id);
void Finalized(int id);

// The object a finalizer resurrected (kResurrect). Main thread (the collecting one) only.
extern Ref<Object> g_resurrected;

// ---------------------------------------------------------------------------------------------
// Object types: leaf (small, with an allocating member, large, over-aligned) and tracked
// (small, large, over-aligned), the tracked ones with finalizers that resurrect, throw or
// allocate on request.

struct Leaf : Object {
  explicit Leaf(int v) : value(v) { id = Born(kLeaf); }
  ~Leaf() { Died(id); }
  int id;
  int value;
};

// Its constructor allocates (operator new) after brc has: a failure there is a throwing
// constructor, whose storage Make must give back.
struct StringLeaf : Object {
  explicit StringLeaf(int n) : text(static_cast<std::size_t>(n), 's') { id = Born(kStringLeaf); }
  ~StringLeaf() { Died(id); }
  int id;
  std::string text;
};

struct BigLeaf : Object {  // > 8 KiB: not a leaf-heap block
  BigLeaf() { id = Born(kBigLeaf); }
  ~BigLeaf() { Died(id); }
  int id;
  char payload[16 * 1024];
};

struct alignas(64) Aligned64Leaf : Object {
  Aligned64Leaf() { id = Born(kAligned64Leaf); }
  ~Aligned64Leaf() { Died(id); }
  int id;
};

struct alignas(4096) Aligned4096Leaf : Object {
  Aligned4096Leaf() { id = Born(kAligned4096Leaf); }
  ~Aligned4096Leaf() { Died(id); }
  int id;
};

enum NodeFlag : uint8_t {
  kResurrect = 1,           // Finalize() stores the object in g_resurrected
  kThrowInFinalize = 2,     // Finalize() throws
  kAllocateInFinalize = 4,  // Finalize() makes (and drops) an object
};

template <Kind K, std::size_t kPad, std::size_t kAlign>
struct alignas(kAlign) NodeT : Object {
  explicit NodeT(uint8_t f = 0) : flags(f) { id = Born(K); }
  ~NodeT() { Died(id); }
  void Trace(brc::Visitor& v) const {
    v.Visit(a);
    v.Visit(b);
  }
  void Clear() {
    Cleared(id);
    a = nullptr;
    b = nullptr;
  }
  void Finalize() {
    Finalized(id);
    if ((flags & kResurrect) && !g_resurrected) g_resurrected = Ref<Object>::NewRef(this);
    if (flags & kAllocateInFinalize) Ref<Leaf> scratch = Make<Leaf>(-1);
    if (flags & kThrowInFinalize) throw std::runtime_error("Finalize() throws on purpose");
  }
  int id;
  uint8_t flags;
  Ref<Object> a;
  Ref<Object> b;
  char pad[kPad];
};

using Node = NodeT<kNode, 1, 8>;
using BigNode = NodeT<kBigNode, 9000, 8>;  // > 8 KiB: a page of its own
using Aligned64Node = NodeT<kAligned64Node, 1, 64>;
using PageNode = NodeT<kPageNode, 1, 4096>;

// Links a -> b through `field` (0: a, 1: b) when both exist.
template <class T>
void Link(const Ref<T>& from, int field, const Ref<Object>& to) {
  if (!from || !to) return;
  (field == 0 ? from->a : from->b) = to;
}

// Handlers large enough that std::function keeps them on the heap: each registration or report
// copies them (an allocation the sweep fails).
struct BigWatchdogHandler {
  void* state[6] = {};
  void operator()(const brc::LaggingThread&) const {}
};
struct BigCollectCallback {
  void* state[6] = {};
  void operator()(brc::CollectPhase, const brc::CollectResult&) const {}
};

// ---------------------------------------------------------------------------------------------
// Weak references and their callbacks (objects.cc)

enum CbAction : uint8_t {
  kCbCount,      // just records that it ran
  kCbThrow,      // throws (brc must catch and report it)
  kCbAllocate,   // makes and drops an object
  kCbDropChain,  // drops the harness's strong reference chain[slot] (a cascade of frees)
};

constexpr int kWeakSlots = 48;
struct WeakRec {
  std::optional<WeakRef<Object>> ref;
  bool registered = false;  // its callback was registered
  bool cancelled = false;   // the WeakRef was destroyed before its target
  std::atomic<int> ran{0};
};

// What a run holds: made by RunOnce before the steps, dropped by it after them (main thread).
struct Scenario {
  Ref<Object> held[32];
  WeakRec weak[kWeakSlots];
  Ref<Object> chain[kWeakSlots];  // dropped by the kCbDropChain callback of the same slot
  Ref<Object> handoff[8];         // passed between the main thread and others
};
extern Scenario* g_s;
inline Scenario& S() { return *g_s; }

void RunCallback(int slot, CbAction action);

// Large enough that std::function keeps it on the heap (an allocation the sweep fails).
struct WeakCallback {
  int slot;
  CbAction action;
  void* padding[4] = {};
  void operator()() const { RunCallback(slot, action); }
};

// A WeakRef with a callback in `slot`. If making it fails, it is made again: a failed WeakRef
// must leave the weak table able to make the next one (issue 10, defect 6).
void MakeWeak(int slot, const Ref<Object>& target, CbAction action);
void MakePlainWeak(int slot, const Ref<Object>& target);
// Lock() on a WeakRef whose target the harness still holds must succeed.
void CheckLocks(int slot, const Ref<Object>& target);

// ---------------------------------------------------------------------------------------------
// Steps run operations through Try, which sorts what they throw (objects.cc).

extern std::atomic<int> g_collector_errors;

void SurfacedBadAlloc(const char* what);

template <class Fn>
bool Try(const char* what, Fn&& fn) {
  try {
    fn();
    return true;
  } catch (const std::bad_alloc&) {
    SurfacedBadAlloc(what);
  } catch (const std::exception& e) {
    Violation("%s threw an unexpected exception: %s", what, e.what());
  } catch (...) {
    Violation("%s threw an unexpected exception (not a std::exception)", what);
  }
  return false;
}

template <class T, class... Args>
Ref<T> TryMake(const char* what, Args&&... args) {
  Ref<T> r;
  Try(what, [&] { r = Make<T>(std::forward<Args>(args)...); });
  return r;
}

// Collect, Freeze, Unfreeze: OK or ResourceExhausted, never an exception.
void CheckStatus(const char* what, const absl::Status& s);
void CheckWorldRunning(const char* after);

template <class StatusOrT>
void TryStatus(const char* what, StatusOrT (*fn)()) {
  try {
    StatusOrT r = fn();
    CheckStatus(what, r.status());
  } catch (const std::bad_alloc&) {
    Violation("%s threw std::bad_alloc (documented: ResourceExhausted)", what);
  } catch (const std::exception& e) {
    Violation("%s threw an unexpected exception: %s", what, e.what());
  }
  CheckWorldRunning(what);
}

void DoCollect();
void DoCollectYoung();

// ---------------------------------------------------------------------------------------------
// The helper thread (steps_threads.cc): attached, polling its safepoint, running one command at
// a time for the main thread, which waits for each (so allocations happen in the same order
// every run).

using Command = void (*)(int arg);

struct Helper {
  std::thread thread;
  std::atomic<bool> started{false};  // attached, or gave up
  std::atomic<bool> attached{false};
  std::atomic<bool> quit{false};
  std::atomic<int> posted{0};
  std::atomic<int> done{0};
  Command command = nullptr;  // written before `posted` (release)
  int arg = 0;
};
extern Helper* g_helper;

bool HelperRunning();
// Waiting threads poll with short sleeps rather than spinning (see steps_threads.cc).
void Pause();
// Runs `command` on the helper while this thread polls its safepoint (attached: what the helper
// drops of this thread's objects is queued to it).
void OnHelper(Command command, int arg);
// The same while this thread is inside a BlockingScope: what the helper drops of this thread's
// objects is merged (and freed) on its behalf, on the helper.
void OnHelperWhileBlocked(Command command, int arg);
void JoinBlocking(std::thread& t);

// Helper commands: drop handoff[k] (or all of them), make a Node or a Leaf into handoff[k].
void CmdDropHandoff(int k);
void CmdDropAllHandoffs(int);
void CmdMakeNode(int k);
void CmdMakeLeaf(int k);
void CmdNothing(int);

// ---------------------------------------------------------------------------------------------
// The scenario: its steps, in the order run.cc's table runs them, and one run.

void StepErrorHandler();     // steps_objects.cc
void StepMake();             // steps_objects.cc
void StepWeak();             // steps_objects.cc
void StepWatchdog();         // steps_objects.cc
void StepHelperStart();      // steps_threads.cc
void StepWeakDrop();         // steps_objects.cc
void StepAutoCollect();      // steps_collector.cc
void StepQueue();            // steps_threads.cc
void StepBlockedOwner();     // steps_threads.cc
void StepCollectYoung();     // steps_collector.cc
void StepCollect();          // steps_collector.cc
void StepStopTheWorld();     // steps_collector.cc
void StepFreeze();           // steps_collector.cc
void StepPerThread();        // steps_objects.cc
void StepSetAllocator();     // steps_objects.cc
void StepAttachDetach();     // steps_threads.cc
void StepReclaim();          // steps_threads.cc
void StepHelperStop();       // steps_threads.cc
void StepParallelCollect();  // steps_collector.cc

struct StepDef {
  const char* name;
  void (*fn)();
  bool skip;  // --skip (set by main before any run)
};
std::span<StepDef> Steps();

// One run: the scenario with allocation `fail_at` failing, then the checks. Returns normally;
// the outcome is in g_report.
void RunOnce(uint64_t fail_at);

// Crash reporting in a run: a terminate, an abort, a crash or the alarm after timeout_s says
// where it happened, then the process dies as before.
void InstallCrashReporting(int timeout_s);

// ---------------------------------------------------------------------------------------------
// The driver (main.cc) and --repro (repro.cc)

[[noreturn]] void Usage(const char* msg);

struct ReproDef {
  const char* name;
  bool (*fn)();  // true when the defect showed (and it was reported with Violation)
  const char* what;
};
std::span<const ReproDef> Repros();
int RunRepros(const char* which);

}  // namespace brc_oom

#endif  // BRC_TESTS_OOM_SWEEP_OOM_SWEEP_H_
