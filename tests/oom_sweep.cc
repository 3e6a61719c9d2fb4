// Allocation-failure sweep (issue 10, section 2): one scripted scenario that uses every brc API
// that allocates, run once per N = 1, 2, 3, ... with exactly the N-th allocation failing, until a
// run completes without reaching N. After every run brc must be consistent.
//
// Why this kind of test: an allocation that fails is a path most code has never run. Testing it
// one case at a time misses the allocation nobody thought of (a vector that grows inside a
// noexcept function, a container that is not exception-safe, a lock held across a throw).
// SQLite tests out-of-memory this way: count the allocations of a script, then fail each one in
// turn.
//
// What counts as an allocation (one counter shared by every thread, armed only while the
// scenario runs, so the harness itself is never failed):
//  * every call of the brc::Allocator this program installs (brc::SetAllocator): it wraps the
//    built-in default and returns nullptr for the N-th allocation. brc takes object storage,
//    collector pages and its own lists (merge queues, the collector's work lists) from it. (With
//    an allocator installed brc bypasses its leaf heap, so the leaf heap's own page allocation
//    is not failed by this program.)
//  * every global operator new (all the usual overloads, aligned and nothrow included, are
//    replaced below): it throws std::bad_alloc (or returns nullptr, for nothrow) for the N-th.
//    brc's weak table, thread registry, std::function callbacks and std::thread use it.
//
// The scenario (--list-steps), on the main thread plus a helper thread and two short-lived ones:
// a heavy collection error handler; Make of leaf, tracked, large (> 8 KiB) and over-aligned
// (64, 4096) types, one whose constructor allocates; WeakRefs with and without callbacks, copies,
// Lock, a cancelled callback; a heavy stop-the-world watchdog handler; last references dropped
// by the owner with callbacks that throw, allocate or drop the next object; an automatic
// collection inside Make; objects queued to their owner by the helper (and back), and merged on
// behalf of a blocked owner; collections with finalizers that resurrect, throw and allocate, weak
// callbacks on garbage, a cycle through another thread's object and a collection callback;
// StopTheWorld (dropping a parked thread's object inside it), GetReferrers, GetReferents;
// Freeze/Unfreeze; SetAllocator while objects live; attach and detach (nested ThreadScope,
// BlockingScope, a thread that exits attached); an exited thread's pages released at this
// thread's safepoint after it dropped their objects; the helper's detach; parallel marking.
//
// What each step may see (the documented ways to fail): std::bad_alloc from Make, WeakRef,
// GetReferrers, GetReferents, std::thread, ThreadScope, AddCollectCallback and the other
// configuration calls (the step catches it and carries on); OK or ResourceExhausted from Collect,
// Freeze and Unfreeze; nothing at all from a decrement, a queue drain or an automatic collection
// (brc absorbs the failure). Anything else is a defect: another exception or status, a failure
// that surfaces twice, a terminate, an abort, a hang, the world left stopped.
//
// What is checked after every run (failures disarmed): everything is dropped and Collect() runs
// until it finds nothing; then every object made was destroyed exactly once (a per-object table:
// alive/destroyed, Clear() and Finalize() at most once), brc::GetStats().live_objects() is back
// where it started, every WeakRef reads expired, every weak callback registered ran exactly once
// (a cancelled one never), no thread holds the world stopped, and (ASan builds) LeakSanitizer
// finds nothing unreachable (brc's registry, heaps and caches stay reachable from its globals).
//
// How the runs are isolated: each run is a child process forked from the same untouched parent
// (which allocates nothing between runs), so each sees the same sequence of allocations (brc keeps
// capacity between runs: queues, the registry, the collector's lists; in one process the
// first-time allocations would fail only in the first runs), N names the same allocation every
// time, and a crash, terminate or hang is reported with its N. The sequence depends on addresses
// (the weak table's shards), so the program re-executes itself with address randomisation off
// and gives every thread the same malloc arena; threads inside a run are strictly sequenced (the
// main thread hands the helper one command at a time and waits). So `--only N` repeats exactly
// what the sweep saw. There is no randomness, so there is no seed.
//
//   brc_oom_sweep                  sweep every N, stop at the first failing one (exit 1)
//   brc_oom_sweep --keep-going     sweep every N and list every failing one
//   brc_oom_sweep --only N         run N alone, in this process (for gdb), with its allocation's
//                                  stack printed when it is failed
//   brc_oom_sweep --repro NAME|all|list   targeted reproductions of the defects it found: each
//                                  fails one chosen allocation on one thread, in a fresh process
//   brc_oom_sweep --persistent     every allocation from the N-th on fails (memory stays
//                                  exhausted: the failure paths' own allocations fail too)
//   other options: --from N, --step S, --max-runs M, --timeout SECONDS (per run, default 10; a
//   run that takes longer is reported as a hang), --in-process (no fork: runs share one process),
//   --skip STEP[,STEP...] (leave steps out, e.g. one that a known defect blocks), --list-steps,
//   --verbose (each run's result; with --only, each step's time), --trace / --trace-stacks (with
//   --only: list every allocation counted, with its step, size, address and caller).
#include <execinfo.h>
#include <malloc.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "brc/brc.h"
#include "brc/hot.h"
#include "brc/testing.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#include <sanitizer/common_interface_defs.h>
#define OOM_SANITIZED 1
#endif
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define OOM_LSAN 1
#endif

namespace {

// ---------------------------------------------------------------------------------------------
// Failure injection

enum class Site : int { kNone, kBrcAllocator, kOperatorNew, kAny /* --repro: either */ };

const char* SiteName(Site s) {
  switch (s) {
    case Site::kNone: return "none";
    case Site::kBrcAllocator: return "brc::Allocator::Allocate";
    case Site::kOperatorNew: return "operator new";
    case Site::kAny: return "any";
  }
  return "?";
}

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
RunReport* g_report = nullptr;

// Relaxed: arming and disarming happen on the main thread while no other scenario thread runs
// (threads are started after arming and joined before disarming: their start and join order it).
std::atomic<bool> g_armed{false};
std::atomic<uint64_t> g_count{0};
uint64_t g_fail_at = 0;  // written only while disarmed; 0 never fails
bool g_print_injection = false;  // --only: print the failed allocation's stack at once
bool g_verbose = false;
bool g_persistent = false;  // --persistent: every allocation from the N-th on fails
// The harness's own bookkeeping allocations on this thread are never counted.
constinit thread_local int t_exempt = 0;
struct Exempt {
  Exempt() { ++t_exempt; }
  ~Exempt() { --t_exempt; }
};

// The step now running, for reports (written by the main thread, read anywhere).
std::atomic<const char*> g_step{"setup"};


void PrintStack(void* const* pcs, int depth) {
#ifdef OOM_SANITIZED
  int k = 0;
  for (int i = 0; i < depth; ++i) {
    char buf[4096] = {};
    // A return address: symbolize the call instruction before it. The result holds one string
    // per frame inlined at that address (innermost first), each ended by a NUL, then a NUL.
    __sanitizer_symbolize_pc(static_cast<char*>(pcs[i]) - 1, "%F %L", buf, sizeof(buf) - 1);
    for (const char* f = buf; *f != '\0' && f < buf + sizeof(buf); f += std::strlen(f) + 1) {
      std::fprintf(stderr, "    #%d %s\n", k++, f);
    }
  }
#else
  backtrace_symbols_fd(pcs, depth, STDERR_FILENO);
#endif
}

void PrintCurrentStack() {
#ifdef OOM_SANITIZED
  __sanitizer_print_stack_trace();
#else
  void* pcs[64];
  int n = backtrace(pcs, 64);
  backtrace_symbols_fd(pcs, n, STDERR_FILENO);
#endif
}

void PrintInjectionSite() {
  if (g_report == nullptr || g_report->injected_at.load() == 0) {
    std::fprintf(stderr, "  (no allocation was failed in this run)\n");
    return;
  }
  std::fprintf(stderr, "  allocation #%llu was failed (%s, step '%s'), here:\n",
               static_cast<unsigned long long>(g_report->injected_at.load()),
               SiteName(static_cast<Site>(g_report->site.load())), g_report->step);
  PrintStack(g_report->pcs, g_report->depth);
}

// The same from a forked child: symbolizing may allocate, and the sweep's parent must stay as
// it was for the next runs.
void PrintInjectionSiteAside() {
  std::fflush(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    PrintInjectionSite();
    std::fflush(nullptr);
    _exit(0);
  }
  if (pid > 0) {
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
  }
}

bool Injected() { return g_report->injected_at.load(std::memory_order_relaxed) != 0; }

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
TraceEntry* g_trace = nullptr;  // allocated (with malloc) by --trace
bool g_trace_stacks = false;
constinit thread_local TraceEntry* t_traced = nullptr;  // this thread's last traced entry

// Records what the traced allocation returned.
void* Traced(void* p) {
  if (t_traced != nullptr) t_traced->address = p;
  t_traced = nullptr;
  return p;
}
std::thread::id g_main_thread;

// Counts one allocation; true if it is the one to fail.
// --repro: failures armed on one thread only, counted from the moment they are armed.
constinit thread_local Site t_fail_site = Site::kNone;
constinit thread_local int t_fail_countdown = 0;  // the countdown-th next allocation fails
constinit thread_local bool t_fail_all = false;   // ... and every one after it

void RecordInjection(uint64_t n, Site site) {
  Exempt exempt;
  g_report->depth = backtrace(g_report->pcs, 64);
  g_report->site.store(static_cast<int>(site));
  std::snprintf(g_report->step, sizeof(g_report->step), "%s", g_step.load());
  g_report->injected_at.store(n);
  if (g_print_injection) {
    std::fprintf(stderr, "oom_sweep: failing allocation #%llu (%s) in step '%s':\n",
                 static_cast<unsigned long long>(n), SiteName(site), g_step.load());
    PrintStack(g_report->pcs, g_report->depth);
  }
}

// Fails, on this thread, the nth next allocation of `site` (and with `all`, every later one).
void FailOnThisThread(Site site, int nth, bool all = false) {
  t_fail_site = site;
  t_fail_countdown = nth;
  t_fail_all = all;
}
void StopFailing() { t_fail_site = Site::kNone; }

bool ShouldFail(Site site, std::size_t size) {
  if ((t_fail_site == site || t_fail_site == Site::kAny) && t_exempt == 0) {
    if (t_fail_countdown > 1) {
      --t_fail_countdown;
    } else {
      if (t_fail_countdown == 1) RecordInjection(1, site);
      t_fail_countdown = 0;
      if (!t_fail_all) t_fail_site = Site::kNone;
      return true;
    }
  }
  if (!g_armed.load(std::memory_order_relaxed) || t_exempt > 0) return false;
  uint64_t n = g_count.fetch_add(1, std::memory_order_relaxed) + 1;
  if (g_trace != nullptr && n < kTraceMax) {
    TraceEntry& e = g_trace[n];
    e = {g_step.load(), site, size, std::this_thread::get_id() == g_main_thread, {}, nullptr};
    t_traced = &e;
    if (g_trace_stacks) {
      Exempt exempt;
      backtrace(e.pcs, 10);
    }
  }
  if (n != g_fail_at) return g_persistent && g_fail_at != 0 && n > g_fail_at;
  RecordInjection(n, site);
  return true;
}

// A check failed: remember the first message for the parent and print every one.
void Violation(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void Violation(const char* fmt, ...) {
  Exempt exempt;
  char msg[768];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(msg, sizeof(msg), fmt, args);
  va_end(args);
  std::fprintf(stderr, "oom_sweep: CHECK FAILED (N=%llu, step '%s'): %s\n",
               static_cast<unsigned long long>(g_fail_at), g_step.load(), msg);
  bool expected = false;
  if (g_report->failed.compare_exchange_strong(expected, true)) {
    std::snprintf(g_report->failure, sizeof(g_report->failure), "%s", msg);
  }
}

// The brc allocator: the built-in default, failing on command.
class FailingAllocator final : public brc::Allocator {
 public:
  void* Allocate(std::size_t size, std::size_t align) noexcept override {
    if (ShouldFail(Site::kBrcAllocator, size)) return nullptr;
    return Traced(brc::DefaultAllocator().Allocate(size, align));
  }
  void Deallocate(void* p, std::size_t size, std::size_t align) noexcept override {
    brc::DefaultAllocator().Deallocate(p, size, align);
  }
  std::string_view Name() const noexcept override { return "oom-sweep"; }
};
FailingAllocator g_allocator;

void* NewOrNull(std::size_t size, std::size_t align) noexcept {
  if (ShouldFail(Site::kOperatorNew, size)) return nullptr;
  if (size == 0) size = 1;
  if (align <= alignof(std::max_align_t)) return Traced(std::malloc(size));
  void* p = nullptr;
  return Traced(posix_memalign(&p, align, size) == 0 ? p : nullptr);
}

void* NewOrThrow(std::size_t size, std::size_t align) {
  void* p = NewOrNull(size, align);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

}  // namespace

// The replaced global allocation functions (every form a program may replace, C++17).
void* operator new(std::size_t n) { return NewOrThrow(n, 0); }
void* operator new[](std::size_t n) { return NewOrThrow(n, 0); }
void* operator new(std::size_t n, std::align_val_t a) {
  return NewOrThrow(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a) {
  return NewOrThrow(n, static_cast<std::size_t>(a));
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return NewOrNull(n, 0); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return NewOrNull(n, 0); }
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return NewOrNull(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return NewOrNull(n, static_cast<std::size_t>(a));
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  std::free(p);
}

namespace {

using brc::Make;
using brc::Object;
using brc::Ref;
using brc::WeakRef;

// ---------------------------------------------------------------------------------------------
// The life table: each object made in a run gets an id; its constructor (last) marks it alive,
// its destructor marks it destroyed, Clear() and Finalize() count their calls.

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
const char* const kKindNames[kKinds] = {"Leaf",    "StringLeaf", "BigLeaf",
                                        "Aligned64Leaf", "Aligned4096Leaf", "Node",
                                        "BigNode", "Aligned64Node", "PageNode"};

constexpr int kMaxObjects = 4096;
enum Life : uint8_t { kNever = 0, kAlive = 1, kDestroyed = 2 };
std::atomic<uint8_t> g_life[kMaxObjects];
Kind g_kind[kMaxObjects];  // written before the id is published (kAlive, release)
std::atomic<uint8_t> g_clears[kMaxObjects];
std::atomic<uint8_t> g_finalizes[kMaxObjects];
std::atomic<int> g_next_id{0};

int Born(Kind kind) {
  int id = g_next_id.fetch_add(1, std::memory_order_relaxed);
  if (id >= kMaxObjects) {
    std::fprintf(stderr, "oom_sweep: more than %d objects in one run\n", kMaxObjects);
    std::abort();
  }
  g_kind[id] = kind;
  g_life[id].store(kAlive, std::memory_order_release);
  return id;
}

void Died(int id) {
  uint8_t old = g_life[id].exchange(kDestroyed, std::memory_order_acq_rel);
  if (old != kAlive) {
    Violation("object #%d (%s) destroyed %s", id, kKindNames[g_kind[id]],
              old == kDestroyed ? "twice" : "without having been constructed");
  }
}

void Cleared(int id) {
  if (g_clears[id].fetch_add(1, std::memory_order_relaxed) != 0) {
    Violation("object #%d (%s): Clear() called twice", id, kKindNames[g_kind[id]]);
  }
  if (g_life[id].load(std::memory_order_acquire) != kAlive) {
    Violation("object #%d (%s): Clear() on a dead object", id, kKindNames[g_kind[id]]);
  }
}

void Finalized(int id) {
  if (g_finalizes[id].fetch_add(1, std::memory_order_relaxed) != 0) {
    Violation("object #%d (%s): Finalize() called twice", id, kKindNames[g_kind[id]]);
  }
}

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

Ref<Object> g_resurrected;  // main thread (the collecting one) only

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

// ---------------------------------------------------------------------------------------------
// Weak references and their callbacks

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

struct Scenario {
  Ref<Object> held[32];
  WeakRec weak[kWeakSlots];
  Ref<Object> chain[kWeakSlots];  // dropped by the kCbDropChain callback of the same slot
  Ref<Object> handoff[8];         // passed between the main thread and others
};
Scenario* g_s = nullptr;
Scenario& S() { return *g_s; }

void RunCallback(int slot, CbAction action) {
  if (S().weak[slot].ran.fetch_add(1, std::memory_order_relaxed) != 0) {
    Violation("weak callback of slot %d ran twice", slot);
  }
  switch (action) {
    case kCbCount: break;
    case kCbThrow: throw std::runtime_error("weak callback throws on purpose");
    case kCbAllocate: {
      Ref<Leaf> scratch = Make<Leaf>(-2);
      break;
    }
    case kCbDropChain: S().chain[slot] = nullptr; break;
  }
}

// Large enough that std::function keeps it on the heap (an allocation the sweep fails).
struct WeakCallback {
  int slot;
  CbAction action;
  void* padding[4] = {};
  void operator()() const { RunCallback(slot, action); }
};

// ---------------------------------------------------------------------------------------------
// Steps run operations through Try, which sorts what they throw.

std::atomic<int> g_collector_errors{0};

void SurfacedBadAlloc(const char* what) {
  if (!Injected()) {
    Violation("%s threw std::bad_alloc, but no allocation was made to fail", what);
    return;
  }
  if (g_report->bad_allocs.fetch_add(1) + g_report->statuses.load() != 0 && !g_persistent) {
    Violation("%s threw std::bad_alloc: a second failure surfaced from one failed allocation",
              what);
  }
}

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

// Collect, Freeze, Unfreeze: OK or ResourceExhausted, never an exception.
void CheckStatus(const char* what, const absl::Status& s) {
  if (s.ok()) return;
  if (s.code() == absl::StatusCode::kResourceExhausted) {
    if (!Injected()) {
      Violation("%s returned ResourceExhausted, but no allocation was made to fail", what);
    } else if (g_report->statuses.fetch_add(1) + g_report->bad_allocs.load() != 0 &&
               !g_persistent) {
      Violation("%s: a second failure surfaced from one failed allocation", what);
    }
    return;
  }
  Exempt exempt;  // the harness's own formatting is never failed
  Violation("%s returned %s (documented: OK or ResourceExhausted): %.*s", what,
            std::string(absl::StatusCodeToString(s.code())).c_str(),
            static_cast<int>(s.message().size()), s.message().data());
}

void CheckWorldRunning(const char* after) {
  if (brc::IsWorldStoppedByThisThread()) {
    Violation("after %s this thread still holds the world stopped", after);
  }
}

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

void DoCollect() { TryStatus("brc::Collect", &brc::Collect); }
void DoCollectYoung() { TryStatus("brc::CollectYoung", &brc::CollectYoung); }

// A WeakRef with a callback in `slot`. If making it fails, it is made again: a failed WeakRef
// must leave the weak table able to make the next one (issue 10, defect 6).
void MakeWeak(int slot, const Ref<Object>& target, CbAction action) {
  WeakRec& w = S().weak[slot];
  for (int attempt = 0; attempt < 2 && !w.ref; ++attempt) {
    Try("WeakRef(target, callback)", [&] {
      w.ref.emplace(target, WeakCallback{slot, action});
      w.registered = static_cast<bool>(target);
    });
  }
}

void MakePlainWeak(int slot, const Ref<Object>& target) {
  WeakRec& w = S().weak[slot];
  for (int attempt = 0; attempt < 2 && !w.ref; ++attempt) {
    Try("WeakRef(target)", [&] { w.ref.emplace(target); });
  }
}

// Lock() on a WeakRef whose target the harness still holds must succeed.
void CheckLocks(int slot, const Ref<Object>& target) {
  WeakRec& w = S().weak[slot];
  if (!w.ref || !target) return;
  Ref<Object> locked = w.ref->Lock();
  if (locked.get() != target.get()) {
    Violation("WeakRef slot %d: Lock() returned %p while its target %p is alive", slot,
              static_cast<void*>(locked.get()), static_cast<void*>(target.get()));
  }
  if (w.ref->expired()) Violation("WeakRef slot %d: expired() while its target is alive", slot);
}

// ---------------------------------------------------------------------------------------------
// The helper thread: attached, polling its safepoint, running one command at a time for the
// main thread, which waits for each (so allocations happen in the same order every run).

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
Helper* g_helper = nullptr;

bool HelperRunning() { return g_helper != nullptr && g_helper->attached.load(); }

// Waiting threads poll (their safepoint, then a flag) with short sleeps rather than spinning: the
// machines this runs on are often busy, and a spinning waiter takes the core the thread it waits
// for needs. A stop of the world waits at most one pause for a polling thread to park.
void Pause() { std::this_thread::sleep_for(std::chrono::microseconds(50)); }

void HelperMain() {
  Helper& h = *g_helper;
  try {
    brc::ThreadScope attach;
    h.attached.store(true);
    h.started.store(true);
    int seen = 0;
    while (true) {
      brc::Safepoint();
      int posted = h.posted.load(std::memory_order_acquire);
      if (posted != seen) {
        h.command(h.arg);
        seen = posted;
        h.done.store(posted, std::memory_order_release);
      } else if (h.quit.load(std::memory_order_acquire)) {
        break;
      } else {
        Pause();
      }
    }
  } catch (const std::bad_alloc&) {
    SurfacedBadAlloc("ThreadScope (helper thread)");
  }
  if (brc::IsAttached()) Violation("the helper thread is still attached after its ThreadScope");
  h.attached.store(false);
  h.started.store(true);
}

// Runs `command` on the helper while this thread polls its safepoint (attached: what the helper
// drops of this thread's objects is queued to it).
void OnHelper(Command command, int arg) {
  if (!HelperRunning()) return;
  Helper& h = *g_helper;
  h.command = command;
  h.arg = arg;
  int n = h.posted.fetch_add(1, std::memory_order_release) + 1;
  while (h.done.load(std::memory_order_acquire) != n) {
    brc::Safepoint();
    Pause();
  }
  brc::Safepoint();
}

// The same while this thread is inside a BlockingScope: what the helper drops of this thread's
// objects is merged (and freed) on its behalf, on the helper.
void OnHelperWhileBlocked(Command command, int arg) {
  if (!HelperRunning()) return;
  Helper& h = *g_helper;
  brc::BlockingScope blocking;  // first, so that nothing the helper drops is queued to us
  h.command = command;
  h.arg = arg;
  int n = h.posted.fetch_add(1, std::memory_order_release) + 1;
  while (h.done.load(std::memory_order_acquire) != n) Pause();
}

void JoinBlocking(std::thread& t) {
  brc::BlockingScope blocking;
  t.join();
}

// Helper commands.
void CmdDropHandoff(int k) { S().handoff[k] = nullptr; }
void CmdDropAllHandoffs(int) {
  for (Ref<Object>& r : S().handoff) r = nullptr;
}
void CmdMakeNode(int k) {
  Try("Make<Node> (helper)", [&] { S().handoff[k] = Make<Node>(); });
}
void CmdMakeLeaf(int k) {
  Try("Make<Leaf> (helper)", [&] { S().handoff[k] = Make<Leaf>(k); });
}
void CmdNothing(int) {}

// ---------------------------------------------------------------------------------------------
// The scenario

template <class T, class... Args>
Ref<T> TryMake(const char* what, Args&&... args) {
  Ref<T> r;
  Try(what, [&] { r = Make<T>(std::forward<Args>(args)...); });
  return r;
}

// Every type, kept in held[] for the later steps: a live structure with a cycle.
void StepMake() {
  Ref<Object>* h = S().held;
  h[0] = TryMake<Leaf>("Make<Leaf>", 1);
  h[1] = TryMake<StringLeaf>("Make<StringLeaf>", 200);
  h[2] = TryMake<BigLeaf>("Make<BigLeaf>");
  h[3] = TryMake<Aligned64Leaf>("Make<Aligned64Leaf>");
  h[4] = TryMake<Aligned4096Leaf>("Make<Aligned4096Leaf>");
  Ref<Node> n = TryMake<Node>("Make<Node>");
  Ref<BigNode> big = TryMake<BigNode>("Make<BigNode>");
  Ref<Aligned64Node> a64 = TryMake<Aligned64Node>("Make<Aligned64Node>");
  Ref<PageNode> page = TryMake<PageNode>("Make<PageNode>");
  Link(n, 0, h[0]);
  Link(n, 1, big);
  Link(big, 0, n);  // a cycle, alive: held from outside
  Link(big, 1, a64);
  Link(a64, 0, page);
  Link(page, 0, h[2]);
  h[5] = std::move(n);
  h[6] = std::move(big);
  h[7] = std::move(a64);
  h[8] = std::move(page);
}

// Weak references (with and without callbacks, copies, Lock) to live objects, and one cancelled
// callback.
void StepWeak() {
  Ref<Object>* h = S().held;
  MakeWeak(0, h[0], kCbCount);
  MakePlainWeak(1, h[0]);  // a second WeakRef to the same object: shares its slot
  MakeWeak(2, h[1], kCbThrow);
  MakeWeak(3, h[2], kCbAllocate);
  MakeWeak(4, h[4], kCbCount);
  MakeWeak(5, h[5], kCbCount);
  MakeWeak(6, h[8], kCbCount);
  MakePlainWeak(7, h[7]);
  for (int slot : {0, 1}) CheckLocks(slot, h[0]);
  CheckLocks(5, h[5]);
  CheckLocks(7, h[7]);
  if (S().weak[0].ref) {
    WeakRef<Object> copy = *S().weak[0].ref;  // copies share the target, not the callback
    if (copy.Lock().get() != h[0].get()) Violation("a copied WeakRef does not lock its target");
  }
  // Cancelled: destroyed before its target dies, so its callback must never run.
  MakeWeak(8, h[3], kCbCount);
  if (S().weak[8].ref) {
    S().weak[8].ref.reset();
    S().weak[8].cancelled = true;
  }
}

// A stop-the-world watchdog handler large enough to live on the heap: each stop copies it.
void StepWatchdog() {
  struct Handler {
    void* state[6] = {};
    void operator()(const brc::LaggingThread&) const {}
  };
  Try("SetStopWatchdog", [] {
    absl::Status s = brc::SetStopWatchdog(absl::Seconds(600), Handler{});
    if (!s.ok()) Violation("SetStopWatchdog failed");
  });
}

void StepHelperStart() {
  Try("std::thread (helper)", [] { g_helper->thread = std::thread(HelperMain); });
  if (!g_helper->thread.joinable()) return;
  while (!g_helper->started.load()) {
    brc::Safepoint();
    Pause();
  }
}

// Objects with weak callbacks whose last reference this thread (the owner) drops: the callbacks
// run inside the decrement, one of them dropping the next object of a chain.
void StepWeakDrop() {
  Ref<Leaf> a = TryMake<Leaf>("Make<Leaf>", 10);
  Ref<Node> b = TryMake<Node>("Make<Node>");
  Ref<BigLeaf> c = TryMake<BigLeaf>("Make<BigLeaf>");
  Ref<Leaf> d = TryMake<Leaf>("Make<Leaf>", 11);
  Ref<Aligned64Leaf> e = TryMake<Aligned64Leaf>("Make<Aligned64Leaf>");
  MakeWeak(10, a, kCbCount);
  MakeWeak(11, b, kCbThrow);
  MakeWeak(12, c, kCbAllocate);
  MakeWeak(13, d, kCbDropChain);  // dropping d drops e, whose callback runs in turn
  MakeWeak(14, e, kCbCount);
  S().chain[13] = std::move(e);
  a = nullptr;
  b = nullptr;
  c = nullptr;
  d = nullptr;
}

// Enough tracked allocations to start an automatic collection inside Make (the threshold is 1,
// and an allocating thread reports every 64): garbage cycles with finalizers among them.
void StepAutoCollect() {
  for (int i = 0; i < 70; ++i) {
    Ref<Node> x = TryMake<Node>("Make<Node>", i % 10 == 0 ? kAllocateInFinalize : 0);
    if (i % 7 == 0) {
      Ref<Node> y = TryMake<Node>("Make<Node>");
      Link(x, 0, y);
      Link(y, 0, x);  // garbage cycle once both go
    }
  }
}

// The helper drops the last references to objects this thread owns: each is queued to this
// thread (a push onto its merge queue, which may fail) and freed by this thread's drain. Then
// the reverse: this thread drops the helper's objects, queued to the helper.
void StepQueue() {
  if (!HelperRunning()) return;
  brc::testing::ReleaseQueueMemoryForTesting();  // the first push needs a fresh allocation
  Ref<Object>* ho = S().handoff;
  ho[0] = TryMake<Leaf>("Make<Leaf>", 20);
  MakeWeak(20, ho[0], kCbCount);
  ho[1] = TryMake<Node>("Make<Node>");
  MakeWeak(21, ho[1], kCbAllocate);
  ho[2] = TryMake<BigLeaf>("Make<BigLeaf>");
  ho[3] = TryMake<Aligned4096Leaf>("Make<Aligned4096Leaf>");
  for (int k = 0; k < 4; ++k) OnHelper(CmdDropHandoff, k);
  // The other way: objects the helper owns, dropped here, queued to the helper.
  OnHelper(CmdMakeNode, 4);
  OnHelper(CmdMakeLeaf, 5);
  MakeWeak(22, ho[4], kCbCount);
  ho[4] = nullptr;
  OnHelper(CmdNothing, 0);  // the helper drains
  ho[5] = nullptr;
  OnHelper(CmdNothing, 0);
}

// The helper drops this thread's objects while this thread is blocked: merged and freed on the
// helper, weak callbacks included.
void StepBlockedOwner() {
  if (!HelperRunning()) return;
  Ref<Object>* ho = S().handoff;
  ho[0] = TryMake<Leaf>("Make<Leaf>", 30);
  MakeWeak(23, ho[0], kCbDropChain);
  S().chain[23] = TryMake<Node>("Make<Node>");
  MakeWeak(24, S().chain[23], kCbCount);
  ho[1] = TryMake<Node>("Make<Node>");
  OnHelperWhileBlocked(CmdDropAllHandoffs, 0);
}

// A collection with garbage of every tracked type: finalizers that resurrect, throw and
// allocate, weak callbacks on garbage, a cycle through an object another thread owns, and a
// collection callback. Then the resurrected object is dropped and collected.
// A young collection: young garbage (a cycle with a finalizer that allocates and a weak
// reference with a callback), and a young node held by an older one, which must survive.
void StepCollectYoung() {
  Ref<Node> holder = TryMake<Node>("Make<Node>");
  DoCollect();  // holder is old now
  {
    Ref<Node> y1 = TryMake<Node>("Make<Node>", kAllocateInFinalize);
    Ref<Node> y2 = TryMake<Node>("Make<Node>");
    Link(y1, 0, y2);
    Link(y2, 0, y1);
    MakeWeak(29, y1, kCbAllocate);
    Ref<Node> kept = TryMake<Node>("Make<Node>");
    Link(holder, 0, kept);
  }
  DoCollectYoung();
  DoCollectYoung();  // the promoted survivors: nothing to examine
}

void StepCollect() {
  struct OnCollect {
    void* state[6] = {};
    void operator()(brc::CollectPhase, const brc::CollectResult&) const {}
  };
  uint64_t callback_id = 0;
  Try("AddCollectCallback", [&] { callback_id = brc::AddCollectCallback(OnCollect{}); });
  {
    Ref<Node> r1 = TryMake<Node>("Make<Node>", kResurrect);
    Ref<Node> r2 = TryMake<Node>("Make<Node>", kThrowInFinalize);
    Ref<Node> r3 = TryMake<Node>("Make<Node>", kAllocateInFinalize);
    Link(r1, 0, r2);
    Link(r2, 0, r3);
    Link(r3, 0, r1);
    MakeWeak(30, r2, kCbCount);
    MakeWeak(31, r3, kCbThrow);
    Ref<BigNode> big = TryMake<BigNode>("Make<BigNode>");
    Ref<PageNode> page = TryMake<PageNode>("Make<PageNode>");
    Ref<Aligned64Node> a64 = TryMake<Aligned64Node>("Make<Aligned64Node>", kAllocateInFinalize);
    Link(big, 0, page);
    Link(page, 0, big);
    Link(page, 1, a64);
    Link(a64, 0, a64);  // and a self-cycle
    MakeWeak(32, a64, kCbDropChain);
    S().chain[32] = TryMake<Leaf>("Make<Leaf>", 32);
    MakeWeak(33, S().chain[32], kCbCount);
    MakeWeak(34, big, kCbAllocate);
    if (HelperRunning()) {
      OnHelper(CmdMakeNode, 6);  // owned by the helper, part of a garbage cycle with ours
      Ref<Node> mine = TryMake<Node>("Make<Node>");
      Link(mine, 0, S().handoff[6]);
      if (S().handoff[6]) Link(Ref<Node>::NewRef(static_cast<Node*>(S().handoff[6].get())), 0,
                               mine);
      OnHelper(CmdDropHandoff, 6);
    }
  }
  DoCollect();
  g_resurrected = nullptr;
  DoCollect();
  if (callback_id != 0) {
    Try("RemoveCollectCallback", [&] {
      if (!brc::RemoveCollectCallback(callback_id)) Violation("RemoveCollectCallback: not found");
    });
  }
}

// StopTheWorld with the helper attached (it parks); with the world stopped, drop an object the
// helper owns (queued to a parked owner), and list referrers. Then GetReferrers and GetReferents
// with the world running.
void StepStopTheWorld() {
  OnHelper(CmdMakeLeaf, 7);
  const Object* target = S().held[6].get();  // a BigNode, referenced by the Node in held[5]
  Try("brc::StopTheWorld", [&] {
    brc::StopTheWorld stop;
    S().handoff[7] = nullptr;
    if (target != nullptr) {
      std::vector<Ref<Object>> referrers = brc::GetReferrers(target);
      if (S().held[5] && referrers.size() != 1) {
        Violation("GetReferrers (world stopped) found %zu referrers, expected 1",
                  referrers.size());
      }
    }
  });
  CheckWorldRunning("brc::StopTheWorld");
  OnHelper(CmdNothing, 0);  // the helper drains what was queued to it
  if (target != nullptr) {
    Try("brc::GetReferrers", [&] {
      std::vector<Ref<Object>> referrers = brc::GetReferrers(target);
      if (S().held[5] && referrers.size() != 1) {
        Violation("GetReferrers found %zu referrers, expected 1", referrers.size());
      }
    });
    CheckWorldRunning("brc::GetReferrers");
  }
  if (S().held[5]) {
    Try("brc::GetReferents", [&] {
      std::vector<Ref<Object>> referents = brc::GetReferents(S().held[5].get());
      std::size_t expect = (S().held[0] ? 1 : 0) + (S().held[6] ? 1 : 0);
      if (referents.size() != expect) {
        Violation("GetReferents found %zu referents, expected %zu", referents.size(), expect);
      }
    });
  }
}

// Freeze what is alive, make garbage, collect (the frozen objects are left out), unfreeze,
// collect again.
void StepFreeze() {
  TryStatus("brc::Freeze", &brc::Freeze);
  {
    Ref<Node> x = TryMake<Node>("Make<Node>", kAllocateInFinalize);
    Ref<Node> y = TryMake<Node>("Make<Node>");
    Link(x, 0, y);
    Link(y, 0, x);
    MakeWeak(40, y, kCbCount);
  }
  DoCollect();
  TryStatus("brc::Unfreeze", &brc::Unfreeze);
  // An Unfreeze that ran out of memory changed nothing (documented): the caller retries, as a
  // user would, or the frozen objects stay out of collections for good.
  try {
    (void)brc::Unfreeze();
  } catch (...) {
  }
  DoCollect();
}

// Per-thread counts (brc/hot.h): switches (whose id tables may fail to grow: ResourceExhausted,
// nothing changed), counting through slots that may fail to grow (the shared word instead,
// silently), and a merge pass that frees the objects.
void StepPerThread() {
  Ref<Leaf> a = TryMake<Leaf>("Make<Leaf>", 60);
  Ref<Node> n = TryMake<Node>("Make<Node>");
  if (a == nullptr || n == nullptr) return;
  CheckStatus("brc::CountPerThread", brc::CountPerThread(a.get()));
  CheckStatus("brc::CountPerThread", brc::CountPerThread(n.get()));
  {
    Ref<Leaf> b = a;
    Ref<Node> m = n;
  }
  a = nullptr;
  n = nullptr;
  CheckStatus("brc::MergePerThreadCounts", brc::MergePerThreadCounts());
  CheckWorldRunning("brc::MergePerThreadCounts");
}

std::atomic<bool> g_main_blocked{false};  // the main thread is inside a BlockingScope

// A short-lived thread attaches (nested scopes), makes objects, drops one this thread owns
// (while this thread is blocked joining it), hands two of its own back and exits; this thread
// then drops objects whose owner has exited.
void ShortThreadMain() {
  try {
    brc::ThreadScope attach;
    brc::ThreadScope nested;
    Ref<Object>* ho = S().handoff;
    // Not before the main thread is blocked (else this drop would be queued to it instead).
    while (!g_main_blocked.load(std::memory_order_acquire)) {
      brc::Safepoint();
      Pause();
    }
    ho[0] = nullptr;  // the main thread's: merged and freed here, on its behalf
    Ref<Leaf> leaf = TryMake<Leaf>("Make<Leaf> (short thread)", 50);
    Ref<Node> node = TryMake<Node>("Make<Node> (short thread)");
    Link(node, 0, leaf);
    MakeWeak(41, leaf, kCbCount);
    Ref<Leaf> own = TryMake<Leaf>("Make<Leaf> (short thread)", 51);
    MakeWeak(42, own, kCbCount);
    own = nullptr;  // freed here, its callback runs here
    { brc::BlockingScope blocking; }
    ho[1] = std::move(node);
    ho[2] = std::move(leaf);
  } catch (const std::bad_alloc&) {
    SurfacedBadAlloc("ThreadScope (short thread)");
  }
  if (brc::IsAttached()) Violation("the short thread is still attached after its ThreadScope");
}

// A thread that attaches without a ThreadScope and exits attached: brc detaches it during its
// thread_local destruction.
void ExitAttachedMain() {
  try {
    brc::AttachCurrentThread();
  } catch (const std::bad_alloc&) {
    SurfacedBadAlloc("AttachCurrentThread (exiting thread)");
    return;
  }
  Ref<Leaf> leaf = TryMake<Leaf>("Make<Leaf> (exiting thread)", 53);
  S().handoff[3] = TryMake<Node>("Make<Node> (exiting thread)");  // outlives its owner
}

void StepAttachDetach() {
  S().handoff[0] = TryMake<Leaf>("Make<Leaf>", 52);
  MakeWeak(43, S().handoff[0], kCbCount);
  std::thread t;
  Try("std::thread (short thread)", [&] { t = std::thread(ShortThreadMain); });
  if (t.joinable()) {
    brc::BlockingScope blocking;
    g_main_blocked.store(true, std::memory_order_release);
    t.join();
  }
  g_main_blocked.store(false, std::memory_order_relaxed);
  S().handoff[0] = nullptr;
  S().handoff[1] = nullptr;  // owner exited: merged by this thread
  S().handoff[2] = nullptr;
  std::thread u;
  Try("std::thread (exiting thread)", [&] { u = std::thread(ExitAttachedMain); });
  if (u.joinable()) JoinBlocking(u);
  S().handoff[3] = nullptr;
}

// A thread makes a few tracked objects (a heap page of its own) and exits; this thread drops
// them, merging on behalf of the exited owner, so the blocks go back to that thread's orphaned
// page, and its next safepoint releases the page (lib/gc_heap.h, "Exited owners"). The release
// allocates nothing; the page goes back through the allocator's Deallocate.
void ReclaimThreadMain() {
  try {
    brc::ThreadScope attach;
    Ref<Node> a = TryMake<Node>("Make<Node> (reclaim thread)");
    Ref<Node> b = TryMake<Node>("Make<Node> (reclaim thread)");
    Link(a, 0, b);
    S().handoff[4] = std::move(a);
    S().handoff[5] = TryMake<Node>("Make<Node> (reclaim thread)");
  } catch (const std::bad_alloc&) {
    SurfacedBadAlloc("ThreadScope (reclaim thread)");
  }
}

void StepReclaim() {
  std::thread t;
  Try("std::thread (reclaim thread)", [&] { t = std::thread(ReclaimThreadMain); });
  if (t.joinable()) JoinBlocking(t);
  S().handoff[4] = nullptr;
  S().handoff[5] = nullptr;
  brc::Safepoint();
}

// SetAllocator while objects are alive: it stops the world to look, and must refuse.
void StepSetAllocator() {
  Try("brc::SetAllocator", [] {
    // Every object made so far may have failed to allocate (--persistent from an early N):
    // only then may it succeed.
    bool alive = brc::GetStats().live_objects() != 0;
    absl::Status s = brc::SetAllocator(&g_allocator);
    if (alive && s.code() != absl::StatusCode::kFailedPrecondition) {
      Exempt exempt;
      Violation("SetAllocator with objects alive returned %s (expected FAILED_PRECONDITION)",
                std::string(absl::StatusCodeToString(s.code())).c_str());
    }
  });
  CheckWorldRunning("brc::SetAllocator");
}

// A collection error handler large enough to live on the heap: each report copies it.
struct ErrorHandler {
  void* state[6] = {};
  void operator()(std::string_view) const {
    g_collector_errors.fetch_add(1, std::memory_order_relaxed);
  }
};
void StepErrorHandler() {
  Try("SetCollectorErrorHandler", [] { brc::SetCollectorErrorHandler(ErrorHandler{}); });
}

// Marking on two workers (oneTBB, or plain threads under TSan): the heap must have at least 16
// pages, so sixteen large tracked objects (a page each) in garbage pairs. Last, because which
// worker finds which garbage (and so grows its list) depends on timing under TSan.
void StepParallelCollect() {
  brc::CollectorConfig config = brc::GetCollectorConfig();
  config.workers = 2;
  if (!brc::SetCollectorConfig(config).ok()) Violation("SetCollectorConfig(workers = 2) failed");
  for (int i = 0; i < 8; ++i) {
    Ref<BigNode> x = TryMake<BigNode>("Make<BigNode>");
    Ref<BigNode> y = TryMake<BigNode>("Make<BigNode>", i == 0 ? kAllocateInFinalize : 0);
    Link(x, 0, y);
    Link(y, 0, x);
    if (i == 0) MakeWeak(45, x, kCbCount);
  }
  DoCollect();
  config.workers = 1;
  (void)brc::SetCollectorConfig(config);
}

// The helper is handed one more object to drain, then exits (its detach sweeps its heaps and
// gives its id back).
void StepHelperStop() {
  if (g_helper->thread.joinable()) {
    if (HelperRunning()) {
      OnHelper(CmdMakeNode, 3);
      MakeWeak(44, S().handoff[3], kCbCount);
      S().handoff[3] = nullptr;  // queued to the helper
    }
    g_helper->quit.store(true, std::memory_order_release);
    JoinBlocking(g_helper->thread);
  }
}

struct StepDef {
  const char* name;
  void (*fn)();
  bool skip;
};
StepDef g_steps[] = {
    {"error-handler", StepErrorHandler, false},
    {"make", StepMake, false},
    {"weak", StepWeak, false},
    {"watchdog", StepWatchdog, false},
    {"helper-start", StepHelperStart, false},
    {"weak-drop", StepWeakDrop, false},
    {"auto-collect", StepAutoCollect, false},
    {"queue", StepQueue, false},
    {"blocked-owner", StepBlockedOwner, false},
    {"collect-young", StepCollectYoung, false},
    {"collect", StepCollect, false},
    {"stop-the-world", StepStopTheWorld, false},
    {"freeze", StepFreeze, false},
    {"per-thread", StepPerThread, false},
    {"set-allocator", StepSetAllocator, false},
    {"attach-detach", StepAttachDetach, false},
    {"reclaim", StepReclaim, false},
    {"helper-stop", StepHelperStop, false},
    {"parallel-collect", StepParallelCollect, false},
};

// ---------------------------------------------------------------------------------------------
// One run: the scenario with allocation `fail_at` failing, then the checks. Returns normally;
// the outcome is in g_report.

void RunOnce(uint64_t fail_at) {
  // Fresh bookkeeping (a forked child starts with it fresh anyway).
  for (int i = 0; i < kMaxObjects; ++i) {
    g_life[i].store(kNever, std::memory_order_relaxed);
    g_clears[i].store(0, std::memory_order_relaxed);
    g_finalizes[i].store(0, std::memory_order_relaxed);
  }
  g_next_id.store(0);
  g_s = new Scenario();
  g_helper = new Helper();
  int64_t live_before = brc::GetStats().live_objects();

  g_fail_at = fail_at;
  g_count.store(0);
  g_armed.store(true);
  for (StepDef& step : g_steps) {
    if (step.skip) continue;
    g_step.store(step.name);
    auto t0 = std::chrono::steady_clock::now();
    step.fn();
    if (g_print_injection && g_verbose) {
      Exempt exempt;
      std::fprintf(stderr, "oom_sweep: step %s: %.2f ms\n", step.name,
                   std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                       .count());
    }
  }
  g_armed.store(false);
  g_report->allocations.store(g_count.load());
  if (g_trace != nullptr) {
    for (uint64_t i = 1; i <= g_count.load() && i < kTraceMax; ++i) {
      std::fprintf(stderr, "alloc %llu: %s %s %zu bytes%s at %p\n",
                   static_cast<unsigned long long>(i), g_trace[i].step,
                   SiteName(g_trace[i].site), g_trace[i].size,
                   g_trace[i].main_thread ? "" : " (other thread)", g_trace[i].address);
      if (g_trace_stacks) PrintStack(g_trace[i].pcs + 3, 7);
    }
  }
  g_step.store("checks");

  // Every thread of the run has ended; drop everything and collect until nothing is found.
  if (g_helper->thread.joinable()) {
    g_helper->quit.store(true);
    JoinBlocking(g_helper->thread);
  }
  g_resurrected = nullptr;
  for (Ref<Object>& r : S().handoff) r = nullptr;
  for (Ref<Object>& r : S().chain) r = nullptr;
  for (Ref<Object>& r : S().held) r = nullptr;
  for (int round = 0; round < 4; ++round) {
    absl::StatusOr<brc::CollectResult> r = brc::Collect();
    if (!r.ok()) {
      Violation("the final brc::Collect (no failures) returned %s",
                std::string(r.status().message()).c_str());
      break;
    }
    if (r->collected == 0 && !g_resurrected) break;
    g_resurrected = nullptr;
  }
  CheckWorldRunning("the final collections");
  brc::Safepoint();

  for (int slot = 0; slot < kWeakSlots; ++slot) {
    WeakRec& w = S().weak[slot];
    if (w.ref && !w.ref->expired()) {
      Violation("WeakRef slot %d is not expired after every object was dropped", slot);
    }
    if (w.ref && w.ref->Lock()) Violation("WeakRef slot %d still locks its target", slot);
    int ran = w.ran.load();
    if (w.cancelled && ran != 0) Violation("cancelled weak callback of slot %d ran", slot);
    if (w.registered && !w.cancelled && ran != 1) {
      Violation("weak callback of slot %d ran %d times (expected once)", slot, ran);
    }
    if (!w.registered && ran != 0) Violation("unregistered weak callback of slot %d ran", slot);
  }
  int leaked[kKinds] = {};
  for (int id = 0; id < g_next_id.load(); ++id) {
    if (g_life[id].load() == kAlive) {
      if (leaked[g_kind[id]]++ == 0) {
        Violation("object #%d (%s) was never destroyed", id, kKindNames[g_kind[id]]);
      }
    }
  }
  int64_t live_after = brc::GetStats().live_objects();
  if (live_after != live_before) {
    Violation("brc::GetStats().live_objects() is %lld, was %lld before the run",
              static_cast<long long>(live_after), static_cast<long long>(live_before));
  }
  delete g_s;  // the WeakRefs go
  g_s = nullptr;
  delete g_helper;
  g_helper = nullptr;
  if (brc::GetStats().live_objects() != live_before) {
    Violation("live objects changed when the WeakRefs were dropped");
  }
  // Restore the defaults this run changed.
  (void)brc::SetStopWatchdog(absl::Seconds(1));
  brc::SetCollectorErrorHandler(
      [](std::string_view) { g_collector_errors.fetch_add(1, std::memory_order_relaxed); });
  brc::CollectorConfig config = brc::GetCollectorConfig();
  config.workers = 1;
  (void)brc::SetCollectorConfig(config);
  brc::ReleaseFreeMemory();
  g_step.store("setup");
}

// ---------------------------------------------------------------------------------------------
// Crash reporting in a run: say where it died, then die as before (the sweep's parent, or
// --only at the moment of failing it, prints the failed allocation's stack).

void OnTerminate() {
  std::fprintf(stderr,
               "oom_sweep: std::terminate called (N=%llu, step '%s'): an exception escaped a "
               "noexcept function or a destructor?\n  terminate was called here:\n",
               static_cast<unsigned long long>(g_fail_at), g_step.load());
  PrintCurrentStack();
  std::fflush(stderr);
  std::signal(SIGABRT, SIG_DFL);
  std::abort();
}

void OnFatalSignal(int sig) {
  std::fprintf(stderr, "oom_sweep: signal %d (%s) in a run (N=%llu, step '%s'), here:\n", sig,
               strsignal(sig), static_cast<unsigned long long>(g_fail_at), g_step.load());
  if (sig != SIGALRM) PrintCurrentStack();
  std::fflush(stderr);
  std::signal(sig, SIG_DFL);
  raise(sig);
}

void InstallCrashReporting(int timeout_s) {
  std::set_terminate(OnTerminate);
  std::signal(SIGABRT, OnFatalSignal);
  std::signal(SIGALRM, OnFatalSignal);
#ifndef OOM_SANITIZED
  std::signal(SIGSEGV, OnFatalSignal);
  std::signal(SIGBUS, OnFatalSignal);
#endif
  alarm(static_cast<unsigned>(timeout_s));
}

// ---------------------------------------------------------------------------------------------
// The driver

struct Options {
  uint64_t from = 1;
  uint64_t step = 1;
  uint64_t max_runs = 0;  // 0: no limit
  uint64_t only = 0;
  int timeout_s = 10;
  bool keep_going = false;
  bool in_process = false;
  bool verbose = false;
  bool trace = false;
  const char* repro = nullptr;
};

[[noreturn]] void Usage(const char* msg) {
  std::fprintf(stderr,
               "oom_sweep: %s\nusage: brc_oom_sweep [--keep-going] [--only N] [--from N] "
               "[--step S] [--max-runs M] [--timeout SECONDS] [--in-process] [--persistent] "
               "[--skip STEP[,STEP...]] [--list-steps] [--verbose] [--trace] [--repro NAME|all|list]\n",
               msg);
  std::exit(2);
}

// ---------------------------------------------------------------------------------------------
// Targeted reproductions of the defects the sweep found (--repro NAME, or --repro all): each
// arms one failing allocation on one thread at the exact point, in a fresh process, and says
// whether brc misbehaved. A crash, terminate or abort also counts as reproduced.

// Each returns true when the defect showed (and it was reported with Violation).
bool ReproWeakTableRehash() {
  // The first WeakRef to an object whose weak-table shard is empty allocates twice: its slot,
  // then the shard map's first table. Fail the second; then make another WeakRef to it.
  Ref<Leaf> warm = Make<Leaf>(0);
  WeakRef<Leaf> first(warm);  // creates the table of shards
  for (int i = 1; i <= 16; ++i) {
    Ref<Leaf> x = Make<Leaf>(i);
    bool threw = false;
    FailOnThisThread(Site::kOperatorNew, 2);
    try {
      WeakRef<Leaf> w(x);
    } catch (const std::bad_alloc&) {
      threw = true;
    }
    StopFailing();
    if (!threw) continue;  // its shard's map had room: try another object
    std::printf("the shard map's first table could not be allocated; making another WeakRef\n");
    std::fflush(stdout);
    // Crashes here under ASan (frees absl's static empty group); in other builds the heap is
    // silently corrupted and a later allocation aborts.
    WeakRef<Leaf> again(x);
    if (again.Lock().get() != x.get()) {
      Violation("a WeakRef made after a failed one does not lock its live target");
      return true;
    }
    return false;
  }
  std::printf("not reproduced: no shard map needed to grow\n");
  return false;
}

bool ReproQuarantineFirstFree() {
  // BRC_DEBUG: the first object freed in a process creates the quarantine ring with new, inside
  // the decrement (noexcept).
  Ref<Leaf> x = Make<Leaf>(1);
  FailOnThisThread(Site::kOperatorNew, 1);
  x = nullptr;  // std::terminate here in a BRC_DEBUG build
  StopFailing();
  return false;
}

bool ReproDemangleLeak() {
  // A weak callback throws; building the report fails right after the exception's type name was
  // demangled (malloc): the demangled name is never freed.
  struct Throws {
    void* padding[4] = {};
    void operator()() const {
      std::runtime_error e("weak callback throws on purpose");
      FailOnThisThread(Site::kOperatorNew, 1);  // the std::string of the type name
      throw e;
    }
  };
  {
    Ref<Leaf> x = Make<Leaf>(1);
    WeakRef<Leaf> w(x, Throws{});
    x = nullptr;
  }
  StopFailing();
#ifdef OOM_LSAN
  if (__lsan_do_recoverable_leak_check() != 0) {
    Violation("memory leaked while reporting a weak callback's exception (report above)");
    return true;
  }
  return false;
#else
  std::printf("needs an AddressSanitizer build to see the leak\n");
  return false;
#endif
}

struct BigWatchdogHandler {
  void* state[6] = {};
  void operator()(const brc::LaggingThread&) const {}
};

bool ReproStopWorldHandlerCopy() {
  // StopWorld copies the watchdog handler after it has taken the stop lock and marked this
  // thread as the stopper; the copy's allocation fails.
  (void)brc::SetStopWatchdog(absl::Seconds(60), BigWatchdogHandler{});
  FailOnThisThread(Site::kOperatorNew, 1);
  try {
    brc::StopTheWorld stop;
  } catch (const std::bad_alloc&) {
  }
  StopFailing();
  if (brc::IsWorldStoppedByThisThread()) {
    Violation("StopTheWorld threw std::bad_alloc and left this thread holding the world "
              "stopped (the next stop aborts: stops do not nest)");
    return true;
  }
  return false;
}

bool ReproStopWorldCounted() {
  // StopWorld records each thread it waits for in a vector; with one more attached thread than
  // ever before, the vector grows while the world is half stopped.
  std::atomic<bool> attached{false}, quit{false};
  std::thread spinner([&] {
    brc::ThreadScope attach;
    attached = true;
    while (!quit) {
      brc::Safepoint();
      Pause();
    }
  });
  while (!attached) Pause();
  FailOnThisThread(Site::kOperatorNew, 1);
  bool threw = false;
  try {
    brc::StopTheWorld stop;
  } catch (const std::bad_alloc&) {
    threw = true;
  }
  StopFailing();
  if (threw && brc::IsWorldStoppedByThisThread()) {
    Violation("StopTheWorld threw std::bad_alloc with the world half stopped (another thread was "
              "asked to park and is never restarted)");
    std::fflush(nullptr);
    _exit(1);  // the spinner is parked for good: cannot join it
  }
  quit = true;
  JoinBlocking(spinner);
  return false;
}

bool ReproCollectCallbackCopy() {
  struct OnCollect {
    void* state[6] = {};
    void operator()(brc::CollectPhase, const brc::CollectResult&) const {}
  };
  uint64_t id = brc::AddCollectCallback(OnCollect{});
  FailOnThisThread(Site::kOperatorNew, 1);
  bool threw = false;
  try {
    (void)brc::Collect();
  } catch (const std::bad_alloc&) {
    threw = true;
  }
  StopFailing();
  brc::RemoveCollectCallback(id);
  if (threw) {
    Violation("brc::Collect threw std::bad_alloc (documented: ResourceExhausted)");
    return true;
  }
  return false;
}

bool ReproGetReferents() {
  Ref<Node> n = Make<Node>();
  n->a = Make<Leaf>(1);
  FailOnThisThread(Site::kOperatorNew, 1);
  try {
    (void)brc::GetReferents(n.get());  // std::terminate: the visitor is noexcept
  } catch (const std::bad_alloc&) {
  }
  StopFailing();
  return false;
}

bool ReproFreezeCollectPages() {
  Ref<Node> n = Make<Node>();
  FailOnThisThread(Site::kBrcAllocator, 1);  // the page list, with the world stopped
  absl::StatusOr<uint64_t> r = brc::Freeze();  // aborts: "a half-done mark cannot be undone"
  StopFailing();
  if (!r.ok() && r.status().code() != absl::StatusCode::kResourceExhausted) {
    Violation("Freeze returned %s", std::string(r.status().message()).c_str());
    return true;
  }
  if (r.ok()) (void)brc::Unfreeze();
  return false;
}

bool ReproDetachFreeIds() {
  // The registry's list of free thread ids grows when a thread detaches, inside ~ThreadScope.
  std::atomic<int> stage{0};
  auto body = [&](int me) {
    brc::ThreadScope attach;
    stage.fetch_add(1);
    while (stage.load() < 2 + me) Pause();  // thread 0 exits first, then thread 1
    if (me == 1) FailOnThisThread(Site::kOperatorNew, 1);
  };
  std::thread a(body, 0), b(body, 1);
  while (stage.load() < 2) brc::Safepoint();
  {
    brc::BlockingScope blocking;
    stage.store(2);
    a.join();
    stage.store(3);
    b.join();  // std::terminate on thread b if its detach cannot grow the list
  }
  return false;
}

bool ReproQueuePushFallback() {
  // Memory stays exhausted on a thread that drops the last reference to another thread's
  // object: the queue cannot grow, and the fallback (merge with the world stopped) allocates.
  (void)brc::SetStopWatchdog(absl::Seconds(60), BigWatchdogHandler{});
  Ref<Leaf> x = Make<Leaf>(1);
  std::atomic<bool> done{false};
  std::thread t([&] {
    brc::ThreadScope attach;
    Ref<Leaf> mine = std::move(x);
    FailOnThisThread(Site::kAny, 1, /*all=*/true);
    mine = nullptr;  // queued to the main thread... or std::terminate
    StopFailing();
    done = true;
  });
  while (!done) {
    brc::Safepoint();
    Pause();
  }
  JoinBlocking(t);
  return false;
}

struct ReproDef {
  const char* name;
  bool (*fn)();
  const char* what;
};
const ReproDef kRepros[] = {
    {"weak-table-rehash", ReproWeakTableRehash,
     "a failed WeakRef leaves the weak table's shard map corrupted"},
    {"quarantine-first-free", ReproQuarantineFirstFree,
     "BRC_DEBUG: the first free allocates the quarantine inside a noexcept decrement"},
    {"demangle-leak", ReproDemangleLeak,
     "the demangled exception type leaks when the report cannot be built"},
    {"stop-world-handler-copy", ReproStopWorldHandlerCopy,
     "StopTheWorld throws and leaves the world stopped (watchdog handler copy)"},
    {"stop-world-counted", ReproStopWorldCounted,
     "StopTheWorld throws with the world half stopped (list of counted threads)"},
    {"collect-callback-copy", ReproCollectCallbackCopy,
     "Collect throws std::bad_alloc instead of returning ResourceExhausted"},
    {"get-referents", ReproGetReferents, "GetReferents terminates (noexcept visitor grows a vector)"},
    {"freeze-collect-pages", ReproFreezeCollectPages,
     "Freeze aborts instead of returning ResourceExhausted"},
    {"detach-free-ids", ReproDetachFreeIds,
     "a detaching thread terminates (registry's free-id list grows in ~ThreadScope)"},
    {"queue-push-fallback", ReproQueuePushFallback,
     "under sustained OOM a decrement terminates (queue push fallback stops the world, which "
     "allocates)"},
};

// Runs one repro here; the exit status says whether it showed (1) or not (0).
int RunRepro(const ReproDef& r) {
  g_print_injection = true;
  std::printf("oom_sweep: repro %s: %s\n", r.name, r.what);
  std::fflush(stdout);
  InstallCrashReporting(30);
  bool showed = r.fn();
  alarm(0);
  std::printf("oom_sweep: repro %s: %s\n", r.name,
              showed ? "REPRODUCED" : "not reproduced (brc behaved)");
  return showed ? 1 : 0;
}

int RunRepros(const char* which) {
  int reproduced = 0;
  bool found = false;
  for (const ReproDef& r : kRepros) {
    if (std::strcmp(which, "all") != 0 && std::strcmp(which, r.name) != 0) continue;
    found = true;
    if (std::strcmp(which, "all") != 0) return RunRepro(r);
    std::fflush(nullptr);
    pid_t pid = fork();
    if (pid == 0) {
      std::memset(static_cast<void*>(g_report), 0, sizeof(RunReport));
      _exit(RunRepro(r));
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    bool showed = !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    reproduced += showed;
    std::printf("oom_sweep: repro %-24s %s\n", r.name,
                !showed                ? "not reproduced"
                : WIFSIGNALED(status) ? (WTERMSIG(status) == SIGABRT ? "REPRODUCED (abort)"
                                                                     : "REPRODUCED (signal)")
                                      : "REPRODUCED");
    std::fflush(stdout);
  }
  if (!found) Usage("unknown --repro name (names: see --repro list)");
  std::printf("oom_sweep: %d reproduced\n", reproduced);
  return reproduced != 0 ? 1 : 0;
}


uint64_t ParseCount(const char* s) {
  char* end = nullptr;
  unsigned long long v = std::strtoull(s, &end, 10);
  if (end == s || *end != '\0') Usage("not a number");
  return v;
}

Options ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) Usage("missing value");
      return argv[++i];
    };
    if (a == "--keep-going") {
      o.keep_going = true;
    } else if (a == "--in-process") {
      o.in_process = true;
    } else if (a == "--persistent") {
      g_persistent = true;
    } else if (a == "--verbose") {
      o.verbose = true;
    } else if (a == "--trace") {
      o.trace = true;
    } else if (a == "--trace-stacks") {
      o.trace = true;
      g_trace_stacks = true;
    } else if (a == "--only") {
      o.only = ParseCount(value());
    } else if (a == "--from") {
      o.from = ParseCount(value());
    } else if (a == "--step") {
      o.step = ParseCount(value());
      if (o.step == 0) Usage("--step must be at least 1");
    } else if (a == "--max-runs") {
      o.max_runs = ParseCount(value());
    } else if (a == "--timeout") {
      o.timeout_s = static_cast<int>(ParseCount(value()));
    } else if (a == "--skip") {
      std::string list = value();
      std::size_t pos = 0;
      while (pos <= list.size()) {
        std::size_t comma = list.find(',', pos);
        std::string name = list.substr(pos, comma == std::string::npos ? std::string::npos
                                                                       : comma - pos);
        bool found = false;
        for (StepDef& s : g_steps) {
          if (name == s.name) s.skip = found = true;
        }
        if (!found) Usage(("unknown step '" + name + "' (see --list-steps)").c_str());
        if (comma == std::string::npos) break;
        pos = comma + 1;
      }
    } else if (a == "--repro") {
      o.repro = value();
      if (std::strcmp(o.repro, "list") == 0) {
        for (const ReproDef& r : kRepros) std::printf("%-24s %s\n", r.name, r.what);
        std::exit(0);
      }
    } else if (a == "--list-steps") {
      for (const StepDef& s : g_steps) std::printf("%s\n", s.name);
      std::exit(0);
    } else {
      Usage(("unknown option " + std::string(a)).c_str());
    }
  }
  return o;
}

struct Outcome {
  bool ok;
  bool injected;
  char what[sizeof(RunReport::failure)];  // for a failure
};

// Runs allocation `n` failing, in a forked child (or here), and says how it went. The parent
// allocates nothing between runs, so every child starts from the same heap (and, with address
// randomisation off, the same addresses: the weak table's shards depend on them).
void RunN(uint64_t n, const Options& o, Outcome* out) {
  std::memset(static_cast<void*>(g_report), 0, sizeof(RunReport));
  out->ok = false;
  out->what[0] = '\0';
  if (o.in_process) {
    RunOnce(n);
  } else {
    std::fflush(nullptr);
    pid_t pid = fork();
    if (pid < 0) {
      std::perror("fork");
      std::exit(2);
    }
    if (pid == 0) {
      InstallCrashReporting(o.timeout_s);
      RunOnce(n);
#ifdef OOM_LSAN
      if (__lsan_do_recoverable_leak_check() != 0) {
        Violation("LeakSanitizer found memory leaked by this run (report above)");
      }
#endif
      std::fflush(nullptr);
      _exit(0);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
      if (errno != EINTR) {
        std::perror("waitpid");
        std::exit(2);
      }
    }
    out->injected = g_report->injected_at.load() != 0;
    if (WIFSIGNALED(status)) {
      int sig = WTERMSIG(status);
      if (sig == SIGALRM) {
        std::snprintf(out->what, sizeof(out->what), "hang: the run took longer than %d s",
                      o.timeout_s);
      } else if (sig == SIGABRT) {
        std::snprintf(out->what, sizeof(out->what),
                      "abort (std::terminate or a brc fatal check; see the run's output)");
      } else {
        std::snprintf(out->what, sizeof(out->what), "killed by signal %d (%s)", sig,
                      strsignal(sig));
      }
      return;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      std::snprintf(out->what, sizeof(out->what), "the run exited with status %d",
                    WEXITSTATUS(status));
      return;
    }
  }
  out->injected = g_report->injected_at.load() != 0;
  if (g_report->failed.load()) {
    std::snprintf(out->what, sizeof(out->what), "%s", g_report->failure);
    return;
  }
  out->ok = true;
}

// "N=12 (operator new in step 'weak'): <what>"
void Describe(uint64_t n, const Outcome& out, char* buf, std::size_t size) {
  if (out.injected) {
    std::snprintf(buf, size, "N=%llu (%s in step '%s'): %s", static_cast<unsigned long long>(n),
                  SiteName(static_cast<Site>(g_report->site.load())), g_report->step, out.what);
  } else {
    std::snprintf(buf, size, "N=%llu (no allocation failed): %s",
                  static_cast<unsigned long long>(n), out.what);
  }
}

// Runs again with address randomisation off (once), so that a run's allocation sequence, which
// depends on addresses through the weak table's shards, is the same in every invocation and
// `--only N` repeats what the sweep saw. Without personality(2) it goes on as it is.
void ReexecWithoutAslr(char** argv) {
  int persona = personality(0xffffffff);
  if (persona == -1 || (persona & ADDR_NO_RANDOMIZE) != 0) return;
  if (std::getenv("OOM_SWEEP_ASLR") != nullptr) return;  // keep randomisation: set by the user
  if (personality(static_cast<unsigned long>(persona | ADDR_NO_RANDOMIZE)) == -1) return;
  execv("/proc/self/exe", argv);
  // exec failed: carry on with randomisation on
}


}  // namespace

int main(int argc, char** argv) {
  ReexecWithoutAslr(argv);
  // One malloc arena for every thread: a new thread's objects then land at addresses that
  // depend only on the order of allocations, not on which arena glibc hands the thread (the
  // weak table's shard, and so whether an insertion allocates, depends on the address).
  mallopt(M_ARENA_MAX, 1);
  Options o = ParseArgs(argc, argv);
  {
    void* warm[4];
    (void)backtrace(warm, 4);  // loads the unwinder now, not inside a failing allocation
#ifdef OOM_SANITIZED
    // Loads this program's symbols now, so that the children that print stacks inherit them.
    char buf[256];
    __sanitizer_symbolize_pc(reinterpret_cast<void*>(&ParseArgs), "%F", buf, sizeof(buf));
#endif
  }
  void* shared = mmap(nullptr, sizeof(RunReport), PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (shared == MAP_FAILED) {
    std::perror("mmap");
    return 2;
  }
  g_report = static_cast<RunReport*>(shared);
  g_main_thread = std::this_thread::get_id();
  g_verbose = o.verbose;
  if (o.trace) g_trace = static_cast<TraceEntry*>(std::calloc(kTraceMax, sizeof(TraceEntry)));
  if (absl::Status s = brc::SetAllocator(&g_allocator); !s.ok()) {
    std::fprintf(stderr, "oom_sweep: SetAllocator: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  // Automatic collections as often as brc allows (every 64 tracked allocations per thread).
  brc::CollectorConfig config;
  config.young_threshold = 1;
  config.full_ratio = 0;
  (void)brc::SetCollectorConfig(config);
  brc::SetCollectorErrorHandler([](std::string_view) {
    g_collector_errors.fetch_add(1, std::memory_order_relaxed);
  });
  brc::ThreadScope attach;  // the main thread stays attached; forked runs inherit it

  std::printf("oom_sweep: allocation-failure sweep (%s%s%s; address randomisation %s)\n",
              g_persistent ? "every allocation from the N-th on fails, " : "",
              o.in_process || o.only != 0 ? "in one process" : "one forked process per run",
              o.keep_going ? ", keep going" : "",
              (personality(0xffffffff) & ADDR_NO_RANDOMIZE) != 0 ? "off" : "on");
  for (const StepDef& s : g_steps) {
    if (s.skip) std::printf("oom_sweep: skipping step '%s'\n", s.name);
  }
  std::fflush(stdout);

  if (o.repro != nullptr) return RunRepros(o.repro);

  static Outcome out;
  static char line[sizeof(Outcome::what) + 128];
  if (o.only != 0) {
    g_print_injection = true;
    o.in_process = true;
    InstallCrashReporting(o.timeout_s);
    RunN(o.only, o, &out);
    alarm(0);
    if (out.ok) {
      std::printf("oom_sweep: run N=%llu: consistent (%llu allocations counted%s)\n",
                  static_cast<unsigned long long>(o.only),
                  static_cast<unsigned long long>(g_report->allocations.load()),
                  out.injected ? "" : "; none failed");
    } else {
      Describe(o.only, out, line, sizeof(line));
      std::printf("oom_sweep: FAILED at %s (the failed allocation's stack is above)\n", line);
    }
    return out.ok ? 0 : 1;
  }
  if (o.in_process) InstallCrashReporting(3600);

  auto start = std::chrono::steady_clock::now();
  // A first run with nothing failing: the scenario must be consistent as it is, and its count
  // says how many runs the sweep takes.
  RunN(0, o, &out);
  uint64_t total = g_report->allocations.load();
  if (!out.ok) {
    std::printf("oom_sweep: FAILED without any allocation failing: %s\n", out.what);
    return 1;
  }
  std::printf("oom_sweep: the scenario makes %llu allocations; sweeping N = %llu, %llu, ...",
              static_cast<unsigned long long>(total), static_cast<unsigned long long>(o.from),
              static_cast<unsigned long long>(o.from + o.step));
  if (o.max_runs != 0) {
    std::printf(" (at most %llu runs)", static_cast<unsigned long long>(o.max_runs));
  }
  std::printf("\n");
  std::fflush(stdout);

  // The failures, kept without allocating (see RunN).
  constexpr int kMaxListed = 256;
  static char failures[kMaxListed][sizeof(line)];
  int failed = 0;
  uint64_t runs = 0, absorbed = 0, bad_allocs = 0, statuses = 0;
  bool completed = false;
  uint64_t n = o.from;
  for (; o.max_runs == 0 || runs < o.max_runs; n += o.step) {
    RunN(n, o, &out);
    ++runs;
    if (!out.ok) {
      Describe(n, out, line, sizeof(line));
      std::printf("oom_sweep: FAILED at %s\n", line);
      std::fflush(stdout);
      PrintInjectionSiteAside();
      if (failed < kMaxListed) std::memcpy(failures[failed], line, sizeof(line));
      ++failed;
      if (!o.keep_going || !out.injected) break;
      continue;
    }
    if (o.verbose) {
      std::printf("oom_sweep: N=%llu ok\n", static_cast<unsigned long long>(n));
      std::fflush(stdout);
    }
    if (!out.injected) {
      completed = true;
      break;
    }
    bad_allocs += g_report->bad_allocs.load() > 0;
    statuses += g_report->statuses.load() > 0;
    absorbed += g_report->bad_allocs.load() == 0 && g_report->statuses.load() == 0;
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (completed) {
    std::printf("oom_sweep: %llu runs; the last (N=%llu) completed with no allocation failing\n",
                static_cast<unsigned long long>(runs), static_cast<unsigned long long>(n));
    if (o.step == 1 && o.from == 1 && n != total + 1) {
      std::printf("oom_sweep: WARNING: the first run made %llu allocations, so N=%llu should "
                  "have been the first to complete: the allocation sequence varies (expected "
                  "only in step parallel-collect of TSan builds, whose marking threads split "
                  "the heap by timing)\n",
                  static_cast<unsigned long long>(total),
                  static_cast<unsigned long long>(total + 1));
    }
  } else if (failed == 0) {
    std::printf("oom_sweep: stopped after %llu runs (--max-runs), before the end\n",
                static_cast<unsigned long long>(runs));
  }
  std::printf("oom_sweep: of the runs with a failed allocation, %llu saw std::bad_alloc, %llu "
              "ResourceExhausted, %llu nothing (absorbed by brc); %.1f s\n",
              static_cast<unsigned long long>(bad_allocs),
              static_cast<unsigned long long>(statuses),
              static_cast<unsigned long long>(absorbed), secs);
  if (failed != 0) {
    std::printf("oom_sweep: %d failing run(s)%s:\n", failed,
                o.keep_going ? "" : " (stopped at the first; --keep-going lists them all)");
    for (int i = 0; i < failed && i < kMaxListed; ++i) std::printf("  %s\n", failures[i]);
    std::printf("oom_sweep: rerun one with: brc_oom_sweep --only N [the same --skip]\n");
    return 1;
  }
  return 0;
}
