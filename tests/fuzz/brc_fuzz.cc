// brc_fuzz: a libFuzzer target that drives brc's public API as a small object-graph program and
// checks every step against a model.
//
// The input. A byte string read as a sequence of operations: one opcode byte, then one byte per
// argument (a missing byte reads as 0), on at most kMaxObjects objects, kRoots root slots (Refs
// held by the fuzz thread), kWeaks WeakRef slots and kHelperSlots slots of the helper thread:
//   objects: make a leaf, a tracked Node, an FNode (tracked, with a finalizer) or a resurrecting
//     FNode (its finalizer stores a new reference to it in the run's resurrection list); link (a
//     tracked object's child slot takes a Ref to another root's object; itself included), unlink,
//     copy and drop roots, walk a child into a root, change a field, take an object back from the
//     resurrection list; MakeImmortal;
//   weak references: make (no callback; a callback that counts its runs; one that also holds a
//     strong reference to some object and drops it when it runs; one that holds a copy of its own
//     WeakRef and checks from inside that the target already reads expired), copy, drop, Lock()
//     and keep the result (an object in a dead cycle that no collection has found yet is revived);
//   a constructor that throws, optionally after making a WeakRef to `this`
//     (`WeakRef(Ref::NewRef(this))`, plain or with a callback) and, for a tracked one, after
//     taking a Ref to another object;
//   the collector: Collect(), Freeze()/Unfreeze(), GetReferents/GetReferrers, ReleaseFreeMemory;
//   the helper, a second std::thread that stays attached and runs one command at a time for the
//     fuzz thread: give it a reference (moved, or copied on either thread), take one back (moved
//     by either thread), drop one (then optionally Lock() a WeakRef at once, on the helper and on
//     the fuzz thread before its next safepoint), make objects (it owns them), link its objects,
//     Lock() or make WeakRefs, Collect()/Freeze()/Unfreeze(), read every reference count, or
//     exit and be replaced by a new thread (objects it owned are orphaned, its id reused; its
//     per-thread slots are spilled into the shared words);
//   per-thread counting (brc/hot.h), the opcode bytes 248..255 (kExtBase + ExtOp; before these
//     existed those bytes were aliases of the first eight operations, so every other byte of an
//     older input decodes as it did): CountPerThread of a root's object (also inside a
//     BlockingScope, which must fail with FailedPrecondition; or the contention detector's
//     switch, fed lost races by brc::testing::NoteContentionForTesting with detection on for
//     that operation only: picked at the threshold, switched at the next safepoint, counted in
//     GetStats().per_thread_detected), of a helper slot's object on the helper, of two roots'
//     objects under one brc::StopTheWorld (with MergePerThreadCounts in that stop), and of a
//     root's object right after the helper dropped a reference to it that the fuzz thread had
//     taken (its merge-queue entry is drained after the switch);
//     MergePerThreadCounts on either thread (also in a BlockingScope: FailedPrecondition); drop
//     a root, then Lock() a WeakRef at once, before the safepoint; SetPerThreadConfig with a
//     valid configuration (merge_interval 0 or kLongInterval, max_objects from 1 up, contention
//     detection off) or one field out of range (InvalidArgument, GetPerThreadConfig unchanged).
// The fuzz thread waits for each helper command inside a BlockingScope (so the helper merges on
// its behalf), or polling Safepoint() (objects the helper drops are queued to it and freed when
// it drains), or spinning without a safepoint, only for commands that cannot stop the world: a
// dropped object then waits in the fuzz thread's queue with a count of 0 while WeakRefs to it
// are locked. The helper reports a command done only from inside its idle BlockingScope, so
// nothing the helper does overlaps what the fuzz thread does next: the model stays exact. A
// polling fuzz thread may run a due merge pass in its Safepoint(): only after the helper's
// command (it becomes due then, at the latest when the helper blocks and hands it over), so
// the model applies it after the command's own effects (ApplyPasses). With a long
// merge_interval no pass runs there, and a helper command that may run a pass (a collection,
// MergePerThreadCounts) is waited for blocking while objects are counted per thread: a polling
// fuzz thread would drain what the helper's frees queue to it while the helper's pass runs,
// and whether that pass or a later one frees what those drains leave in limbo is timing.
//
// The model knows every object's kind, field value and child edges, the roots, helper slots,
// resurrection list entries and pending callbacks that hold it, whether it is immortal, frozen
// or finalized, every WeakRef's target and callback. Its rules (brc's documented semantics):
//   * an object whose count reaches 0 dies at once, its WeakRefs are cleared and their pending
//     callbacks run (dropping what they hold); its children's counts drop, recursively;
//   * Collect() finds as garbage every tracked, unfrozen, mortal object that no root, helper
//     slot, resurrection list entry, pending callback's reference, immortal or frozen object
//     reaches (a frozen object is not scanned, so what it references is referenced "from
//     outside"); clears the WeakRefs to the garbage (callbacks run); finalizes each garbage FNode
//     once ever; if any finalizer ran, drops from the garbage whatever a resurrection made
//     reachable again (its WeakRefs stay cleared); Clear()s the rest once and frees it; counting
//     then frees what only the garbage held;
//   * Lock() returns the object exactly while it is alive and the WeakRef was not cleared. So an
//     object in an unreachable cycle that no collection has found yet is still returned (and the
//     fuzzer may store it in a root again), but not one whose count reached 0 and that merely
//     waits in its owner's queue (README: Lock never revives an object whose count reached 0);
//   * a throwing constructor's object never lives: a WeakRef it made to itself reads expired,
//     its callback runs once (what issue 10 asks for), its destructor never runs;
//   * an object counted per thread (CountPerThread succeeded; an immortal one is left as it is;
//     max_objects counts every per-thread object not yet freed, immortal ones included) is not
//     freed when its count reaches 0: it stays in limbo, alive, GetRefCount 0 (exact: it stops
//     the world), Lock() and GetReferrers still return it (Lock() revives it: brc/hot.h says a
//     Lock() between the last DecRef and the pass succeeds), until a merge pass frees it (its
//     WeakRefs cleared, callbacks run, children dropped). Passes: MergePerThreadCounts and a
//     due pass at a Safepoint() free everything in limbo and again what those frees leave there
//     (a chain); a pass inside a held StopTheWorld folds once; with merge_interval 0 a due pass
//     runs at the fuzz thread's next Safepoint() (after every step nothing is in limbo, unless
//     that safepoint's own drain made the pass due: then the following safepoint); a pass the
//     fuzz thread runs is seen in its GetThreadStats().merge_passes (the model does not guess
//     timing). A collection folds in its first stop (what is in limbo then is freed after the
//     marking, which saw it alive and referenced from outside), again in its second stop when
//     finalizers ran, and runs a pass at its end when a member of its garbage was counted per
//     thread; what else those frees leave in limbo waits. Each input starts with a pass and
//     merge_interval kLongInterval (no due pass at a safepoint while the input runs).
// After every operation (and a Safepoint(), so nothing waits in the fuzz thread's queue) every
// live object's destructor has not run, its header and fields (value, children) are the model's,
// IsTracked/IsImmortal/IsCountedPerThread agree, brc::GetRefCount equals the model's count
// (exact here: nothing counts concurrently); every dead object was destroyed exactly once;
// Clear() and Finalize() ran exactly as often as the model says; roots, helper slots and the
// resurrection list hold the model's objects; every WeakRef's expired() and Lock() agree with
// the model; every callback ran exactly as often as the model says (once per death of its
// target while its WeakRef lived, never after that WeakRef was dropped). Collect()'s
// unreachable, collected, resurrected, finalized, weak_callbacks, uncollectable and errors, and
// the counts Freeze()/Unfreeze() return, equal the model's; so do CountPerThread's statuses
// (OK, or ResourceExhausted at max_objects).
//
// The acyclic check (CollectResult::acyclic). Every collection, explicit or automatic, must
// report acyclic exactly when it tried the check and the model's candidate graph has no cycle.
// The candidates are the model's live, tracked, unfrozen objects (immortal ones included: they
// stay tracked), in a young collection only the young ones; either thread's objects alike (the
// helper's, and those a replaced helper left behind). The edges are their child slots that point
// at another candidate: a self-reference is a cycle; an edge to a leaf, a frozen or, in a young
// collection, an old object is none (none of those is examined, and a leaf's own references are
// not traced). What the model knows, and why that is enough:
//  * Young: the model's flag is exactly brc's "mark epoch 0": objects made since the last
//    collection that completed (an automatic one inside Make runs before the new object is
//    constructed, and the model marks that object dead until Make returns); Freeze promotes.
//  * Dead but still there: brc may examine objects the model already calls dead: one whose
//    count reached 0 while it waits in a merge queue (a collection merges parked threads' queues
//    in its stop and holds what it finds dead until the restart), and what only such objects
//    still reference. None of them lies on a cycle: such an object has no referrer, or dead
//    ones only, and the model kills an object only when no live object references it, so the
//    first member of a cycle to die would still have had a live referrer. Nodes on no cycle
//    change no answer, so the model needs no knowledge of them. (Garbage of a collection is
//    cleared and freed before Collect returns; Check verifies that after every step.) An object
//    in limbo is a candidate, alive, but on no cycle either: its count is 0, so nothing
//    references it.
//  * Callbacks and finalizers make no objects here; a resurrecting finalizer runs after the
//    check (in the collection's second half) and its object is old afterwards, as the model has
//    it (ModelCollect promotes before it finalizes).
// Whether a collection tries the check: the first of each kind after
// brc::testing::ResetAcyclicScheduleForTesting always does (each input starts with a reset, and
// the opcode byte of an operation that may collect asks for one before it: see Step); later ones
// follow brc's backoff, which the model follows too (kModelAcyclicSchedule); a collection that
// skipped the check must report false. GetCollectorStats().acyclic_collections grows by exactly
// one per acyclic collection (the only way to see an automatic collection's answer).
//
// End of each input: the helper drops its slots, the resurrection list and the callbacks that
// hold references are dropped, then the roots; Unfreeze(); collections until the model says only
// immortal objects are left (after each, immortal objects and leaves drop their children, and a
// MergePerThreadCounts frees what that left in limbo, a chain of per-thread objects included);
// each immortal object is then freed with brc::testing::FreeImmortalForTesting, so that
// LeakSanitizer stays quiet and "every object created was destroyed exactly once" holds with no
// exception; finally every WeakRef must read expired and every callback count match.
//
// Not modelled: real lost races feeding the contention detector (which objects it would switch
// depends on timing between threads, which the fuzzer does not control), so detection is on
// only inside the operation that feeds it by hand; SetPerThreadConfig never turns it on
// otherwise. Allocation failure while switching or growing slots (the OOM tests cover it).
//
// Automatic collections are disabled (brc::DisableCollector): the model decides when cycles die.
// A failed check prints what differs and aborts. To read an input as a program:
//   BRC_FUZZ_TRACE=1 build/fuzz/tests/fuzz/brc_fuzz crash-file      (every operation)
//   BRC_FUZZ_STATS=1 ...      (brc's heap pages and collections after each input)
// Build and run: scripts/fuzz.sh [seconds] (clang, ASan+UBSan, BRC_DEBUG, -DBRC_BUILD_FUZZ=ON);
// seed corpus: tests/fuzz/corpus/. The k*Enabled / kCheck* constants below switch off an
// operation or check that a known brc defect makes fail at once, so that fuzzing can go on.
#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "brc/brc.h"
#include "brc/testing.h"

namespace {

// ---- switches for what a known brc defect makes fail at once; all true once it is fixed ----
// Throwing constructors that make a WeakRef to their own object (issue 10, defect 1).
constexpr bool kThrowWeakToSelfEnabled = true;
// Lock() at once after a drop, while the dropped object (count 0) may wait in its owner's merge
// queue: must return null (issue 10, defect 9). False: no Lock() right after a helper's drop.
constexpr bool kLockNeverRevivesQueued = true;
// GetCollectorStats().frozen equals the frozen objects alive now (found by this fuzzer: a frozen
// object freed by counting was never subtracted; findings_test.cc).
constexpr bool kCheckFrozenStat = true;
// Which collections try the acyclic check: modelled after brc's backoff (README "The acyclic
// check"; lib/collector.cc): after a failed check the next 1, then 2, 4 .. kMaxAcyclicSkip
// collections of its kind skip it (failures in a row), a success resets it. False if that
// schedule changes: then only the first collection of each kind after a reset is known to try
// it, and the others are checked in one direction only (acyclic reported implies no cycle).
constexpr bool kModelAcyclicSchedule = true;
constexpr uint32_t kMaxAcyclicSkip = 64;

constexpr int kRoots = 8;
constexpr int kChildren = 3;
constexpr int kWeaks = 8;
constexpr int kHelperSlots = 4;
constexpr int kMaxObjects = 48;  // per input, thrown constructions included
// A merge_interval longer than any input runs (libFuzzer's -timeout is 10 s): no due pass at a
// safepoint within an input, since each input starts with a pass.
constexpr absl::Duration kLongInterval = absl::Seconds(10);
constexpr uint32_t kMagic = 0xB7C0FFEE;

bool g_trace = false;
bool g_stats = false;  // BRC_FUZZ_STATS=1: one line of brc's memory figures after each input

void Trace(const char* fmt, ...) {
  if (!g_trace) return;
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fputc('\n', stderr);
}

[[noreturn]] void Fail(const char* fmt, ...) {
  std::fprintf(stderr, "\nbrc_fuzz: MODEL CHECK FAILED: ");
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fprintf(stderr, "\n(rerun the input with BRC_FUZZ_TRACE=1 to see every operation)\n");
  std::abort();
}

#define FUZZ_CHECK(cond, ...)   \
  do {                          \
    if (!(cond)) Fail(__VA_ARGS__); \
  } while (0)

// ---- the objects ----

struct Rec;  // the model's record of one object (below)

// Every fuzz object has child slots. A tracked type reports them to the collector; a leaf does
// not (an untracked container: what it references counts as referenced from outside the tracked
// heap, and a cycle through a leaf is never collected).
struct FzObject : brc::Object {
  FzObject(Rec* r, uint32_t v) : rec(r), value(v) {}
  Rec* rec;
  uint32_t value;
  uint32_t magic = kMagic;
  brc::Ref<FzObject> child[kChildren];
};

void OnDestroy(FzObject* ob);

struct Leaf : FzObject {
  static constexpr std::string_view kTypeName = "brc_fuzz::Leaf";
  using FzObject::FzObject;
  ~Leaf() { OnDestroy(this); }
};

void OnClear(FzObject* ob);

struct Node : FzObject {
  static constexpr std::string_view kTypeName = "brc_fuzz::Node";
  using FzObject::FzObject;
  ~Node() { OnDestroy(this); }
  void Trace(brc::Visitor& v) const {
    for (const auto& c : child) v.Visit(c);
  }
  void Clear() {
    OnClear(this);
    for (auto& c : child) c = nullptr;
  }
};

// A tracked object with a finalizer, which counts its calls and, if its record says so,
// resurrects the object (stores a new reference to it in the run's resurrection list).
void OnFinalize(FzObject* ob);
struct FNode : Node {
  static constexpr std::string_view kTypeName = "brc_fuzz::FNode";
  using Node::Node;
  void Finalize() { OnFinalize(this); }
};

// A tracked object outside the model, made and dropped at once to position the per-thread
// allocation count at which brc checks for an automatic collection (Run::Prime).
struct Dummy : brc::Object {
  static constexpr std::string_view kTypeName = "brc_fuzz::Dummy";
  void Trace(brc::Visitor&) const {}
  void Clear() {}
};

// What a throwing constructor does before it throws.
struct ThrowPlan {
  int weak_mode = 0;                          // 0 none, 1 plain WeakRef, 2 with a callback
  brc::WeakRef<FzObject>* weak_out = nullptr;  // where the WeakRef to `this` goes
  std::function<void()> callback;
  brc::Ref<FzObject> hold;  // a tracked thrower keeps this in its child slot, then throws
};

struct FuzzThrow {};

template <class T>
void WeakToSelf(T* self, ThrowPlan* plan) {
  if (plan->weak_mode == 0) return;
  // The pattern issue 10 names: WeakRef(Ref<T>::NewRef(this)), converted to the slots' type.
  brc::Ref<FzObject> me(brc::Ref<T>::NewRef(self));
  if (plan->weak_mode == 1) {
    *plan->weak_out = brc::WeakRef<FzObject>(me);
  } else {
    *plan->weak_out = brc::WeakRef<FzObject>(me, std::move(plan->callback));
  }
}

struct ThrowLeaf : FzObject {
  static constexpr std::string_view kTypeName = "brc_fuzz::ThrowLeaf";
  ThrowLeaf(Rec* r, ThrowPlan* plan) : FzObject(r, 0) {
    WeakToSelf(this, plan);
    throw FuzzThrow{};
  }
  ~ThrowLeaf() { OnDestroy(this); }  // never runs: the constructor did not finish
};

struct ThrowNode : FzObject {
  static constexpr std::string_view kTypeName = "brc_fuzz::ThrowNode";
  ThrowNode(Rec* r, ThrowPlan* plan) : FzObject(r, 0) {
    held = plan->hold;
    WeakToSelf(this, plan);
    throw FuzzThrow{};
  }
  ~ThrowNode() { OnDestroy(this); }
  void Trace(brc::Visitor& v) const { v.Visit(held); }
  void Clear() { held = nullptr; }
  brc::Ref<FzObject> held;
};

// ---- the model ----

struct Rec {
  int id = 0;
  bool tracked = false;
  bool created = false;  // false: its constructor threw
  bool dead = false;     // the model says its destructor has run (or, if !created, never will)
  bool immortal = false;
  bool frozen = false;
  bool has_finalizer = false;  // an FNode
  bool resurrect = false;      // its finalizer resurrects it
  bool finalized = false;      // the model says Finalize() has run
  bool young = true;           // allocated since the last collection (and not frozen since)
  // Counted per thread (brc::CountPerThread succeeded on a mortal object). Such an object is
  // not freed when its count reaches 0: it stays "in limbo" (alive, count 0, Lock() still
  // succeeds) until the next merge pass (Limbo(), ModelPass()).
  bool pt = false;
  int expect_clears = 0;       // the model's count of Clear() calls (0 or 1)
  uint32_t value = 0;
  FzObject* ptr = nullptr;  // dereferenced only while the model says it is alive
  int child[kChildren] = {-1, -1, -1};
  std::atomic<int> destroyed{0};
  std::atomic<int> clears{0};
  std::atomic<int> finalizes{0};
};

struct CbRec {
  std::atomic<int> ran{0};
  std::atomic<int> bad{0};  // the callback saw its target still lockable
  int expected = 0;
  bool pending = true;  // the model: registered, neither run nor cancelled
  int held = -1;        // the object whose reference the callback holds until it runs, or -1
};

struct WeakModel {
  int target = -1;       // record id, -1 for an empty WeakRef
  CbRec* cb = nullptr;   // this WeakRef's own callback, if any
  bool cleared = false;  // a collection cleared it (its target was garbage, then resurrected)
};

// Where finalizers put the objects they resurrect (the current run's list; a root).
std::vector<brc::Ref<FzObject>>* g_resurrected = nullptr;

void OnDestroy(FzObject* ob) {
  if (ob->magic != kMagic) Fail("destructor on an object whose magic is gone (%p)", (void*)ob);
  ob->rec->destroyed.fetch_add(1, std::memory_order_relaxed);
  ob->magic = 0;
}

void OnClear(FzObject* ob) { ob->rec->clears.fetch_add(1, std::memory_order_relaxed); }

void OnFinalize(FzObject* ob) {
  ob->rec->finalizes.fetch_add(1, std::memory_order_relaxed);
  if (ob->rec->resurrect) g_resurrected->push_back(brc::Ref<FzObject>::NewRef(ob));
}

// ---- the helper thread ----

enum class Wait { kBlocking, kPoll, kSpin };
const char* WaitName(Wait w) {
  return w == Wait::kBlocking ? "blocking" : w == Wait::kPoll ? "poll" : "spin";
}

class Helper {
 public:
  Helper() : thread_([this] { Loop(); }) {}
  ~Helper() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      quit_ = true;
    }
    cv_.notify_all();
    if (brc::IsAttached()) {
      brc::BlockingScope blocking;  // joining is waiting: never hold up a stop of the world
      thread_.join();
    } else {
      thread_.join();
    }
  }

  // Runs `fn` on the helper and waits for it to finish.
  void Run(Wait wait, std::function<void()> fn) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      cmd_ = std::move(fn);
      has_cmd_ = true;
      done_.store(false, std::memory_order_relaxed);
    }
    cv_.notify_all();
    switch (wait) {
      case Wait::kBlocking: {
        brc::BlockingScope blocking;
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return done_.load(std::memory_order_relaxed); });
        break;
      }
      case Wait::kPoll:
        while (!done_.load(std::memory_order_acquire)) {
          brc::Safepoint();
          std::this_thread::yield();
        }
        break;
      case Wait::kSpin:
        while (!done_.load(std::memory_order_acquire)) std::this_thread::yield();
        break;
    }
    // Pairs with the helper's release store: what the command wrote is visible from here.
    std::atomic_thread_fence(std::memory_order_acquire);
  }

  // Touched only by commands (on the helper) and by the fuzz thread while the helper is idle.
  brc::Ref<FzObject> slot[kHelperSlots];

 private:
  void Loop() {
    brc::ThreadScope attach;
    bool ran = false;
    for (;;) {
      std::function<void()> fn;
      {
        // Idle: other threads merge what they drop on our behalf. A command counts as done only
        // once the helper is inside this scope (entering it drained the helper's queue), so the
        // fuzz thread's next drops never race with the helper's way back to it.
        brc::BlockingScope blocking;
        std::unique_lock<std::mutex> lock(mu_);
        if (ran) {
          done_.store(true, std::memory_order_release);
          cv_.notify_all();
        }
        cv_.wait(lock, [&] { return has_cmd_ || quit_; });
        if (!has_cmd_) break;
        fn = std::move(cmd_);
        has_cmd_ = false;
      }
      fn();
      fn = nullptr;
      ran = true;
    }
    for (auto& s : slot) s = nullptr;  // before the ThreadScope detaches
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::function<void()> cmd_;
  bool has_cmd_ = false;
  bool quit_ = false;
  std::atomic<bool> done_{false};
  std::thread thread_;  // last: starts after the fields above exist
};

Helper* g_helper = nullptr;

void StopHelperAtExit() {
  delete g_helper;
  g_helper = nullptr;
}

// ---- the input ----

class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool Done() const { return pos_ >= size_; }
  uint8_t Byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  int Index(int n) { return Byte() % n; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// ---- one input's run ----

class Run {
 public:
  explicit Run(Reader& in) : in_(in) {
    // Every input starts with explicit collections only, and the default configuration.
    brc::DisableCollector();
    if (!brc::SetCollectorConfig(brc::CollectorConfig{}).ok()) Fail("SetCollectorConfig");
    wm_.fill(WeakModel{});
    g_resurrected = &resurrected_;
    // The check's schedule is global: afresh for each input, so that an input replays alone.
    ResetAcyclic();
    // Per-thread counting: the default configuration but a long merge_interval (no due pass
    // at a safepoint: objects stay in limbo until an explicit pass or a collection), from a
    // pass now (the interval counts from the last pass).
    brc::PerThreadConfig pt;
    pt.merge_interval = kLongInterval;
    if (!brc::SetPerThreadConfig(pt).ok()) Fail("SetPerThreadConfig");
    uint64_t before = ThreadPasses();
    absl::Status st = brc::MergePerThreadCounts();
    FUZZ_CHECK(st.ok(), "MergePerThreadCounts: %s", st.ToString().c_str());
    // The model learns of passes at safepoints from this thread's statistics: they must count.
    FUZZ_CHECK(ThreadPasses() == before + 1, "a merge pass did not count in GetThreadStats()");
  }
  ~Run() { g_resurrected = nullptr; }

  void Go() {
    int steps = 0;
    while (!in_.Done() && steps++ < 4096) {
      Step();
      ApplyPasses();
      // With merge_interval 0, a due pass runs at the fuzz thread's next safepoint: whatever is
      // in limbo (a slot went below zero for it, which marked a pass due, and a helper that
      // marked one handed it to this thread when it blocked) is freed there.
      // Except what only this safepoint's drain of its merge queue leaves in limbo: that pass
      // was not due when the safepoint looked, and runs at the following one.
      bool due = pt_interval0_ && !LimboIds().empty();
      bool queued = brc::testing::QueuedObjectsForTesting(brc::CurrentThreadId()) > 0;
      uint64_t detected = brc::GetStats().per_thread_detected;
      Safepoint();
      if (nominee_ >= 0) {
        // The safepoint switched the detector's nominee first (a failure, at max_objects, is
        // silent: the object stays as it was), then ran a due pass.
        Rec& r = R(nominee_);
        bool switched = !r.pt && !r.immortal && PoolLive() < pt_max_objects_;
        r.pt |= switched;
        nominee_ = -1;
        uint64_t grew = brc::GetStats().per_thread_detected - detected;
        FUZZ_CHECK(grew == (switched ? 1u : 0u),
                   "the detector's nominee #%d: per_thread_detected grew by %llu, model: %d",
                   r.id, (unsigned long long)grew, int(switched));
      }
      if (due && queued && passes_run_ == 0) {
        Trace("  (the safepoint's drain made a pass due: the next safepoint runs it)");
        Safepoint();
      }
      FUZZ_CHECK(!due || passes_run_ > 0,
                 "objects in limbo, merge_interval 0, and no merge pass ran at the safepoint");
      ApplyPasses();
      Check("after step");
    }
    Teardown();
  }

 private:
  enum Op : uint8_t {
    kMakeLeaf, kMakeNode, kLink, kUnlink, kDropRoot, kCopyRoot, kWalk, kSetValue,
    kMakeWeak, kDropWeak, kLockWeak, kCopyWeak, kThrow, kCollect, kFreeze, kImmortal,
    kInspect, kReleaseMemory,
    kTakeResurrected, kConfig,
    kHGive, kHTake, kHDrop, kHMake, kHLink, kHLock, kHCollect, kHRestart, kHWeak, kHCheck,
    kCollectYoung,
    kNumOps
  };
  // Per-thread counting (brc/hot.h). Reached through opcode bytes kExtBase.. only, so that the
  // other opcode bytes of inputs written before these existed still decode as they did (those
  // bytes were aliases of kMakeLeaf..kMakeWeak).
  enum ExtOp : uint8_t {
    kPtSwitch, kPtMerge, kPtConfig, kPtDropLock, kPtSwitchStopped,
    kHPtSwitch, kHPtMerge, kHDropSwitch,
    kNumExtOps
  };
  static constexpr int kExtBase = 256 - kNumExtOps;
  static_assert(kExtBase / kNumOps == 8 && kExtBase % kNumOps == 0,
                "the extended opcodes take exactly the bytes whose quotient is 8");

  // --- model helpers ---

  Rec* NewRec(bool tracked) {
    if (recs_.size() >= static_cast<size_t>(kMaxObjects)) return nullptr;
    Rec& r = recs_.emplace_back();
    r.id = static_cast<int>(recs_.size()) - 1;
    r.tracked = tracked;
    return &r;
  }
  Rec& R(int id) { return recs_[static_cast<size_t>(id)]; }
  FzObject* PtrOf(int id) { return id < 0 ? nullptr : R(id).ptr; }
  int IdOf(const brc::Ref<FzObject>& ref) { return ref ? ref->rec->id : -1; }

  // The model's reference counts: roots, helper slots, edges of live objects, the resurrection
  // list, references held by pending weak callbacks, and the collector's own references while
  // a collection holds its garbage.
  std::vector<int> Counts() {
    std::vector<int> count(recs_.size(), 0);
    for (int id : root_m_) if (id >= 0) ++count[id];
    for (int id : helper_m_) if (id >= 0) ++count[id];
    for (int id : resurrected_m_) ++count[id];
    for (int id : gc_hold_) ++count[id];
    for (const CbRec& cb : cbs_) if (cb.pending && cb.held >= 0) ++count[cb.held];
    for (const Rec& r : recs_) {
      if (r.dead) continue;
      for (int c : r.child) if (c >= 0) ++count[c];
    }
    return count;
  }

  // Runs the model's side of `x`'s weak references being cleared: callbacks of WeakRefs that
  // are still registered run (and drop what they hold). Returns how many ran.
  int ClearWeakRefsTo(int x) {
    int ran = 0;
    for (WeakModel& w : wm_) {
      if (w.target != x || w.cleared) continue;
      w.cleared = true;
      if (w.cb != nullptr && w.cb->pending) {
        ++w.cb->expected;
        w.cb->pending = false;
        ++ran;
      }
    }
    return ran;
  }

  void Kill(Rec& r) {
    r.dead = true;
    ClearWeakRefsTo(r.id);
    for (int& c : r.child) c = -1;
  }

  // Replaces WeakRef w's model; a callback the old one registered is cancelled.
  void SetWeakModel(int w, WeakModel m) {
    if (wm_[w].cb != nullptr) wm_[w].cb->pending = false;
    wm_[w] = m;
  }

  // Reference counting: every object whose count is 0 dies, recursively; one counted per
  // thread only goes into limbo (a merge pass frees it).
  void Settle() {
    for (bool changed = true; changed;) {
      changed = false;
      std::vector<int> count = Counts();
      for (Rec& r : recs_) {
        if (!r.dead && !r.immortal && !r.pt && count[r.id] == 0) {
          Kill(r);
          changed = true;
        }
      }
    }
  }

  // Tracked, unfrozen, mortal objects that nothing outside the tracked heap reaches: no root,
  // helper slot, resurrection list entry, pending callback's reference, immortal or frozen
  // object (frozen objects are not scanned: what they reference counts as referenced from
  // outside).
  // With `young`, a young collection's view: only young tracked objects can be garbage, and
  // every old object is a root (its references are in the counts, not traced).
  std::vector<int> Unreachable(bool young = false) {
    std::vector<bool> reached(recs_.size(), false);
    std::vector<int> stack;
    auto push = [&](int id) {
      if (id >= 0 && !reached[id]) {
        reached[id] = true;
        stack.push_back(id);
      }
    };
    for (int id : root_m_) push(id);
    for (int id : helper_m_) push(id);
    for (int id : resurrected_m_) push(id);
    for (const CbRec& cb : cbs_) if (cb.pending) push(cb.held);
    // Objects in limbo: the collection's fold finds them dead and holds them, each with a
    // count of 1 that no tracked object explains, until the world restarts: from outside.
    for (int id : LimboIds()) push(id);
    for (const Rec& r : recs_) {
      if (r.dead) continue;
      if (r.immortal || r.frozen || (young && !r.young)) push(r.id);
      if (!r.tracked) {
        for (int c : r.child) push(c);  // a leaf's references are not traced: from outside
      }
    }
    while (!stack.empty()) {
      int id = stack.back();
      stack.pop_back();
      for (int c : R(id).child) push(c);
    }
    std::vector<int> garbage;
    for (const Rec& r : recs_) {
      if (!r.dead && r.tracked && !reached[r.id] && (!young || r.young)) garbage.push_back(r.id);
    }
    return garbage;
  }

  // The model of one collection (brc/collector.h's steps): take a reference on the garbage and
  // clear its weak references (their callbacks run, dropping what they hold); finalizers run
  // once per object ever, and resurrecting ones put their object on the resurrection list; if
  // any ran, whatever is reachable again leaves the garbage; Clear() the rest, drop the
  // collector's references, and let counting free what only the garbage held.
  struct Collected {
    uint64_t unreachable = 0;
    uint64_t callbacks = 0;
    uint64_t finalized = 0;
    uint64_t resurrected = 0;
    uint64_t collected = 0;
  };
  Collected ModelCollect(bool young = false) {
    Collected c;
    // Stop 1 folds the per-thread counts first: what is in limbo now is freed once the world
    // restarts (no further pass: what those frees leave in limbo waits), after the marking,
    // which saw it alive.
    std::vector<int> fold = LimboIds();
    std::vector<int> garbage = Unreachable(young);
    // Promotion, in the same stop: whatever exists now is old (garbage included: what is
    // resurrected stays old).
    for (Rec& r : recs_) {
      if (!r.dead) r.young = false;
    }
    c.unreachable = garbage.size();
    gc_hold_ = garbage;
    for (int id : garbage) c.callbacks += ClearWeakRefsTo(id);
    Free(fold);
    for (int id : garbage) {
      Rec& r = R(id);
      if (!r.has_finalizer || r.finalized) continue;
      r.finalized = true;
      ++c.finalized;
      if (r.resurrect) resurrected_m_.push_back(id);
    }
    if (c.finalized > 0) {
      // Stop 2 (only when finalizers ran) folds again: what is in limbo by now is freed after
      // it (it reaches no garbage: it was reachable in stop 1, so nothing it references is
      // garbage).
      std::vector<int> fold2 = LimboIds();
      std::vector<int> still = Unreachable(/*young=*/false);
      std::vector<int> kept;
      for (int id : garbage) {
        if (std::find(still.begin(), still.end(), id) != still.end()) kept.push_back(id);
      }
      c.resurrected = garbage.size() - kept.size();
      garbage = kept;
      Free(fold2);
    }
    bool pt = false;
    for (int id : garbage) {
      Rec& r = R(id);
      ++r.expect_clears;
      pt |= r.pt;
      for (int& k : r.child) k = -1;
    }
    c.collected = garbage.size();
    gc_hold_.clear();
    Settle();
    // A member counted per thread is freed by the pass the collection runs at its end
    // (MergePerThreadCounts), which frees whatever else is in limbo then too.
    if (pt) ModelPass();
    return c;
  }

  // --- per-thread counting (brc/hot.h) ---

  // Objects counted per thread whose count is 0 and that no pass has freed yet.
  std::vector<int> LimboIds() {
    std::vector<int> count = Counts();
    std::vector<int> out;
    for (const Rec& r : recs_) {
      if (!r.dead && r.pt && !r.immortal && count[r.id] == 0) out.push_back(r.id);
    }
    return out;
  }
  // The objects a fold found dead are freed (their weak references cleared, callbacks run,
  // children dropped), and counting follows.
  void Free(const std::vector<int>& ids) {
    for (int id : ids) {
      Trace("  (#%d, counted per thread, freed by a merge pass)", id);
      Kill(R(id));
    }
    Settle();
  }
  // A merge pass run by RunPass (MergePerThreadCounts, a due pass at a Safepoint): it folds and
  // frees, and folds again as long as the frees left more in limbo (the last drops of a chain
  // make another pass due, and RunPass runs it before it returns).
  void ModelPass() {
    for (std::vector<int> ids = LimboIds(); !ids.empty(); ids = LimboIds()) Free(ids);
  }
  // Live objects counted per thread: what brc's id pool holds (limbo and immortal included),
  // which PerThreadConfig::max_objects limits.
  int PoolLive() {
    int n = 0;
    for (const Rec& r : recs_) n += (!r.dead && r.pt) ? 1 : 0;
    return n;
  }
  // CountPerThread(#id) returned `st` on an attached thread outside a BlockingScope: the
  // model's status, and the switch.
  void ModelSwitch(int id, const absl::Status& st, const char* who) {
    Rec& r = R(id);
    absl::StatusCode want = absl::StatusCode::kOk;
    if (!r.immortal && !r.pt) {
      if (PoolLive() >= pt_max_objects_) {
        want = absl::StatusCode::kResourceExhausted;
      } else {
        r.pt = true;
      }
    }
    if (!st.ok()) Trace("  (CountPerThread(#%d): %s)", id, st.ToString().c_str());
    FUZZ_CHECK(st.code() == want, "CountPerThread(#%d) on %s: %s, model: %s", id, who,
               st.ToString().c_str(), absl::StatusCodeToString(want).c_str());
  }
  // The merge passes this thread has run (its own statistics): how the model learns that a
  // Safepoint() or a polling wait ran a due pass.
  static uint64_t ThreadPasses() { return brc::GetThreadStats().merge_passes; }
  // brc::Safepoint() on the fuzz thread; a pass it runs waits in passes_run_ for ApplyPasses().
  void Safepoint() {
    uint64_t before = ThreadPasses();
    brc::Safepoint();
    passes_run_ += ThreadPasses() - before;
  }
  // Helper::Run; a pass the fuzz thread runs while it polls (kPoll) waits in passes_run_. Such
  // a pass runs after the command (see kPtConfig), so the model applies it after the command's
  // own effects.
  void HRun(Wait wait, std::function<void()> fn) {
    uint64_t before = ThreadPasses();
    g_helper->Run(wait, std::move(fn));
    passes_run_ += ThreadPasses() - before;
  }
  void ApplyPasses() {
    if (passes_run_ == 0) return;
    Trace("  (a merge pass ran on this thread at a safepoint)");
    passes_run_ = 0;
    ModelPass();
  }
  // The wait for a helper command that may run a merge pass (a collection, a pass): with a
  // long merge_interval the fuzz thread must block (a polling fuzz thread would drain what the
  // helper's frees queue to it while the helper's pass runs, and the pass frees what that
  // leaves in limbo or not, by timing); with merge_interval 0 the step ends with every due pass
  // run either way.
  Wait ReadPassWait(bool stops_world) {
    Wait w = ReadWait(stops_world);
    if (!pt_interval0_ && PoolLive() > 0) w = Wait::kBlocking;
    return w;
  }

  // --- the checks ---

  void Check(const char* when) {
    std::vector<int> count = Counts();
    for (Rec& r : recs_) {
      int destroyed = r.destroyed.load(std::memory_order_relaxed);
      FUZZ_CHECK(r.clears.load() == r.expect_clears, "%s: Clear() ran %d times on #%d, model: %d",
                 when, r.clears.load(), r.id, r.expect_clears);
      FUZZ_CHECK(r.finalizes.load() == (r.finalized ? 1 : 0),
                 "%s: Finalize() ran %d times on #%d, model: %d", when, r.finalizes.load(), r.id,
                 r.finalized ? 1 : 0);
      if (!r.created) {
        FUZZ_CHECK(destroyed == 0, "%s: #%d's constructor threw, yet its destructor ran", when,
                   r.id);
        continue;
      }
      if (r.dead) {
        FUZZ_CHECK(destroyed == 1, "%s: #%d (%s) should be destroyed once, destructor ran %d times",
                   when, r.id, r.tracked ? "tracked" : "leaf", destroyed);
        continue;
      }
      FUZZ_CHECK(destroyed == 0, "%s: #%d (%s) should be alive (count %d%s), destructor ran %d times",
                 when, r.id, r.tracked ? "tracked" : "leaf", count[r.id],
                 r.immortal ? ", immortal" : "", destroyed);
      FzObject* p = r.ptr;
      FUZZ_CHECK(p->magic == kMagic && p->rec == &r, "%s: #%d's fields were overwritten", when, r.id);
      FUZZ_CHECK(p->value == r.value, "%s: #%d value %u, expected %u", when, r.id, p->value,
                 r.value);
      FUZZ_CHECK(brc::IsTracked(p) == r.tracked, "%s: IsTracked(#%d) is %d", when, r.id,
                 brc::IsTracked(p));
      FUZZ_CHECK(brc::IsImmortal(p) == r.immortal, "%s: IsImmortal(#%d) is %d", when, r.id,
                 brc::IsImmortal(p));
      FUZZ_CHECK(brc::IsCountedPerThread(p) == r.pt, "%s: IsCountedPerThread(#%d) is %d", when,
                 r.id, brc::IsCountedPerThread(p));
      int64_t expect = r.immortal ? brc::kImmortalRefCount : count[r.id];
      int64_t got = brc::GetRefCount(p);
      if (got != expect) {
        brc::testing::Counts c = brc::testing::GetCounts(p);
        Fail("%s: GetRefCount(#%d) = %lld, model says %lld (owner %u local %u shared %d state %d "
             "flags %u; fuzz thread %u)",
             when, r.id, (long long)got, (long long)expect, c.owner, c.local, c.shared_count,
             (int)c.state, c.flags, brc::CurrentThreadId());
      }
      for (int k = 0; k < kChildren; ++k) {
        FUZZ_CHECK(p->child[k].get() == PtrOf(r.child[k]),
                   "%s: #%d child %d is not the model's #%d", when, r.id, k, r.child[k]);
      }
    }
    for (int i = 0; i < kRoots; ++i) {
      FUZZ_CHECK(roots_[i].get() == PtrOf(root_m_[i]), "%s: root %d is not the model's #%d", when,
                 i, root_m_[i]);
    }
    for (int h = 0; h < kHelperSlots; ++h) {
      FUZZ_CHECK(g_helper->slot[h].get() == PtrOf(helper_m_[h]),
                 "%s: helper slot %d is not the model's #%d", when, h, helper_m_[h]);
    }
    {
      std::vector<int> have;
      for (const auto& ref : resurrected_) have.push_back(IdOf(ref));
      std::vector<int> want = resurrected_m_;
      std::sort(have.begin(), have.end());
      std::sort(want.begin(), want.end());
      FUZZ_CHECK(have == want, "%s: %zu objects resurrected, model: %zu", when, have.size(),
                 want.size());
    }
    for (int w = 0; w < kWeaks; ++w) {
      int t = wm_[w].target;
      bool dead = t < 0 || R(t).dead || wm_[w].cleared;
      FUZZ_CHECK(weaks_[w].expired() == dead, "%s: weak %d (to #%d) expired() is %d, model: %s",
                 when, w, t, weaks_[w].expired(), dead ? "dead" : "alive");
      brc::Ref<FzObject> locked = weaks_[w].Lock();
      FUZZ_CHECK((locked == nullptr) == dead, "%s: weak %d (to #%d) Lock() gave %p, model: %s",
                 when, w, t, (void*)locked.get(), dead ? "dead" : "alive");
      if (locked) FUZZ_CHECK(locked.get() == R(t).ptr, "%s: weak %d locked a different object",
                             when, w);
    }
    for (CbRec& cb : cbs_) {
      FUZZ_CHECK(cb.ran.load() == cb.expected,
                 "%s: weak callback %d (holding #%d) ran %d times, model says %d", when,
                 static_cast<int>(&cb - &cbs_.front()), cb.held, cb.ran.load(), cb.expected);
      FUZZ_CHECK(cb.bad.load() == 0, "%s: a weak callback could still Lock() its target", when);
    }
    if (kCheckFrozenStat) {
      uint64_t frozen = 0;
      for (const Rec& r : recs_) frozen += (!r.dead && r.frozen) ? 1 : 0;
      uint64_t stat = brc::GetCollectorStats().frozen;
      FUZZ_CHECK(stat == frozen, "%s: GetCollectorStats().frozen = %llu, model: %llu", when,
                 (unsigned long long)stat, (unsigned long long)frozen);
    }
  }

  // --- operations ---

  // A callback for a new WeakRef: kind 0 counts its runs; 1 also holds a reference to `held`
  // (root or helper slot contents) and drops it when it runs; 2 holds a copy of its own WeakRef
  // and checks from inside that the target already reads expired.
  CbRec* NewCallback(int kind, std::function<void()>* out, const brc::WeakRef<FzObject>* self,
                     const brc::Ref<FzObject>* held) {
    CbRec* cb = &cbs_.emplace_back();
    if (kind == 0 || (kind == 1 && !*held)) {
      *out = [cb] { cb->ran.fetch_add(1, std::memory_order_relaxed); };
    } else if (kind == 1) {
      cb->held = IdOf(*held);
      *out = [cb, keep = *held]() mutable {
        cb->ran.fetch_add(1, std::memory_order_relaxed);
        keep = nullptr;  // may free it, here on the thread that runs the callback
      };
    } else {
      // Holds a copy of the WeakRef (a WeakRef inside its own slot's callback) and checks that
      // the target is already cleared when the callback runs.
      brc::WeakRef<FzObject> copy = *self;
      *out = [cb, copy] {
        cb->ran.fetch_add(1, std::memory_order_relaxed);
        if (!copy.expired() || copy.Lock() != nullptr) cb->bad.fetch_add(1);
      };
    }
    return cb;
  }

  // Runs `make` (a brc::Make): if that ran an automatic collection (GetCollectorStats says so),
  // the model collects too, and the collection's figures must match.
  template <class Fn>
  void MaybeAutoCollect(Fn&& make) {
    // The model as the collection (if any) sees it: Make collects before it constructs, and
    // the callers mark the object being made dead until Make returns.
    acyclic_at_make_[0] = ModelAcyclic(true);
    acyclic_at_make_[1] = ModelAcyclic(false);
    brc::CollectorStats before = brc::GetCollectorStats();
    bool done = false;
    struct Finish {
      Run* run;
      const brc::CollectorStats& before;
      bool& done;
      ~Finish() {
        if (!done) run->AfterMake(before);  // a throwing Make checks here
      }
    } finish{this, before, done};
    make();
    done = true;
    AfterMake(before);
  }
  // brc checks whether to collect automatically once every kGcAllocBatch (64, lib/gc_heap.h)
  // tracked allocations of a thread. Makes throwaway tracked objects on the calling thread until
  // a collection runs (the count is then 0), then 64 - n more: the n-th tracked Make from now
  // checks (and, with threshold <= 3, collects). If 64 ever changes, collections just come at
  // other Makes: the model follows whatever GetCollectorStats reports.
  void Prime(int n) {
    constexpr int kBatch = 64;
    bool collected = false;
    for (int i = 0; i < 2 * kBatch && !collected; ++i) {
      uint64_t before = brc::GetCollectorStats().collections;
      MaybeAutoCollect([] { (void)brc::Make<Dummy>(); });
      collected = brc::GetCollectorStats().collections != before;
    }
    for (int i = 0; i < kBatch - n; ++i) MaybeAutoCollect([] { (void)brc::Make<Dummy>(); });
  }

  void AfterMake(const brc::CollectorStats& before) {
    brc::CollectorStats after = brc::GetCollectorStats();
    if (after.collections == before.collections) return;
    FUZZ_CHECK(auto_collect_, "a collection ran inside Make with automatic collection off");
    FUZZ_CHECK(after.collections == before.collections + 1 &&
                   after.automatic_collections == before.automatic_collections + 1,
               "Make ran %llu collections (%llu automatic), expected one automatic",
               (unsigned long long)(after.collections - before.collections),
               (unsigned long long)(after.automatic_collections - before.automatic_collections));
    bool young = after.young_collections != before.young_collections;
    Trace("  (an automatic %s collection ran inside Make)", young ? "young" : "full");
    CheckAcyclicStats(before, after, young, acyclic_at_make_[young ? 0 : 1]);
    Collected c = ModelCollect(young);
    auto same = [](uint64_t got, uint64_t want, const char* what) {
      FUZZ_CHECK(got == want, "automatic collection: %s %llu, model: %llu", what,
                 (unsigned long long)got, (unsigned long long)want);
    };
    same(after.collected - before.collected, c.collected, "collected");
    same(after.resurrected - before.resurrected, c.resurrected, "resurrected");
    same(after.finalized - before.finalized, c.finalized, "finalized");
    same(after.uncollectable - before.uncollectable, 0, "uncollectable");
    same(after.errors - before.errors, 0, "errors");
  }

  // kind: 0 leaf, 1 tracked, 2 tracked with a finalizer, 3 the same, resurrecting.
  void MakeInto(brc::Ref<FzObject>* where, int* model_slot, int kind, uint32_t value) {
    Rec* r = NewRec(kind != 0);
    if (r == nullptr) return;
    r->has_finalizer = kind >= 2;
    r->resurrect = kind == 3;
    r->dead = true;  // to the model it does not exist yet (an automatic collection may run first)
    brc::Ref<FzObject> ob;
    MaybeAutoCollect([&] {
      if (kind == 0) {
        ob = brc::Make<Leaf>(r, value);
      } else if (kind == 1) {
        ob = brc::Make<Node>(r, value);
      } else {
        ob = brc::Make<FNode>(r, value);
      }
    });
    r->dead = false;
    r->created = true;
    r->value = value;
    r->ptr = ob.get();
    *where = std::move(ob);
    *model_slot = r->id;
  }

  static const char* KindName(int kind) {
    static const char* const kNames[] = {"Leaf", "Node", "FNode", "FNode, resurrecting"};
    return kNames[kind];
  }
  static const char* CallbackName(int cb, int held) {
    static char buf[64];
    if (cb == 0) return "";
    if (cb == 1) return ", counting callback";
    if (cb == 3) return ", self-checking callback";
    std::snprintf(buf, sizeof(buf), ", callback holding the object of slot %d", held);
    return buf;
  }

  // weak[w] = WeakRef(target) with callback kind cb (0 none, 1 counting, 2 counting and
  // holding `held`, 3 self-checking); the old weak[w] is dropped (cancelling its callback).
  void MakeWeak(int w, const brc::Ref<FzObject>& target, int cb,
                const brc::Ref<FzObject>& held) {
    brc::WeakRef<FzObject> made(target);
    WeakModel m{IdOf(target), nullptr, false};
    if (cb != 0 && target) {
      std::function<void()> fn;
      m.cb = NewCallback(cb - 1, &fn, &made, &held);
      made = brc::WeakRef<FzObject>(target, std::move(fn));
    }
    weaks_[w] = std::move(made);
    SetWeakModel(w, m);
  }

  // Whether the model says weak[w].Lock() returns its target now.
  bool Lockable(int w) {
    int t = wm_[w].target;
    return t >= 0 && !R(t).dead && !wm_[w].cleared;
  }

  FzObject* ObjAt(int root) { return PtrOf(root_m_[root]); }

  Wait ReadWait(bool stops_world) {
    Wait w = static_cast<Wait>(in_.Index(3));
    if (w == Wait::kSpin && stops_world) w = Wait::kPoll;
    return w;
  }

  // Whether `op` may run a collection (explicitly, or automatically inside a tracked Make).
  static bool MayCollect(int op) {
    switch (op) {
      case kMakeNode: case kThrow: case kCollect: case kConfig: case kHMake: case kHCollect:
      case kCollectYoung:
        return true;
      default:
        return false;
    }
  }

  void Step() {
    // The opcode byte's quotient is spare (existing inputs decode as before): its low bit asks
    // for a reset of the acyclic check's schedule before an operation that may collect, so that
    // its collections try the check; without it they follow the backoff.
    uint8_t raw = in_.Byte();
    if (raw >= kExtBase) {
      ExtStep(raw - kExtBase);
      return;
    }
    int op = raw % kNumOps;
    if (MayCollect(op) && ((raw / kNumOps) & 1)) {
      Trace("(ResetAcyclicScheduleForTesting)");
      ResetAcyclic();
    }
    switch (op) {
      case kMakeLeaf:
      case kMakeNode: {
        int a = in_.Index(kRoots);
        uint32_t v = in_.Byte();
        int kind = op == kMakeLeaf ? 0 : 1 + in_.Index(3);
        Trace("root[%d] = Make<%s>(%u)", a, KindName(kind), v);
        MakeInto(&roots_[a], &root_m_[a], kind, v);
        Settle();
        break;
      }
      case kLink: {
        int a = in_.Index(kRoots), k = in_.Index(kChildren), b = in_.Index(kRoots);
        FzObject* n = ObjAt(a);
        Trace("root[%d]->child[%d] = root[%d]%s", a, k, b, n ? "" : " (skipped: empty)");
        if (n == nullptr) break;
        n->child[k] = roots_[b];
        R(root_m_[a]).child[k] = root_m_[b];
        Settle();
        break;
      }
      case kUnlink: {
        int a = in_.Index(kRoots), k = in_.Index(kChildren);
        FzObject* n = ObjAt(a);
        Trace("root[%d]->child[%d] = null%s", a, k, n ? "" : " (skipped)");
        if (n == nullptr) break;
        R(root_m_[a]).child[k] = -1;
        n->child[k] = nullptr;
        Settle();
        break;
      }
      case kDropRoot: {
        int a = in_.Index(kRoots);
        Trace("root[%d] = null", a);
        roots_[a] = nullptr;
        root_m_[a] = -1;
        Settle();
        break;
      }
      case kCopyRoot: {
        int a = in_.Index(kRoots), b = in_.Index(kRoots);
        Trace("root[%d] = root[%d]", b, a);
        roots_[b] = roots_[a];
        root_m_[b] = root_m_[a];
        Settle();
        break;
      }
      case kWalk: {
        int a = in_.Index(kRoots), k = in_.Index(kChildren), b = in_.Index(kRoots);
        FzObject* n = ObjAt(a);
        Trace("root[%d] = root[%d]->child[%d]%s", b, a, k, n ? "" : " (skipped)");
        if (n == nullptr) break;
        int target = R(root_m_[a]).child[k];
        roots_[b] = n->child[k];  // a copy: n stays alive, since root[a] still holds it
        root_m_[b] = target;
        Settle();
        break;
      }
      case kSetValue: {
        int a = in_.Index(kRoots);
        uint32_t v = in_.Byte();
        Trace("root[%d]->value = %u", a, v);
        if (!roots_[a]) break;
        roots_[a]->value = v;
        R(root_m_[a]).value = v;
        break;
      }
      case kMakeWeak: {
        int w = in_.Index(kWeaks), a = in_.Index(kRoots), cb = in_.Index(4), b = in_.Index(kRoots);
        Trace("weak[%d] = WeakRef(root[%d]%s)", w, a, CallbackName(cb, b));
        MakeWeak(w, roots_[a], cb, roots_[b]);
        Settle();
        break;
      }
      case kDropWeak: {
        int w = in_.Index(kWeaks);
        Trace("weak[%d] = {}", w);
        weaks_[w] = brc::WeakRef<FzObject>();
        SetWeakModel(w, WeakModel{});
        Settle();
        break;
      }
      case kLockWeak: {
        int w = in_.Index(kWeaks), a = in_.Index(kRoots);
        bool keep = in_.Byte() & 1;
        Trace("%sweak[%d].Lock()", keep ? "root[x] = " : "", w);
        brc::Ref<FzObject> got = weaks_[w].Lock();
        int t = wm_[w].target;
        bool alive = Lockable(w);
        FUZZ_CHECK((got != nullptr) == alive, "weak %d (to #%d) Lock() gave %p, model: %s", w, t,
                   (void*)got.get(), alive ? "alive" : "dead");
        if (keep) {
          roots_[a] = std::move(got);
          root_m_[a] = alive ? t : -1;
        }
        got = nullptr;
        Settle();
        break;
      }
      case kCopyWeak: {
        int a = in_.Index(kWeaks), b = in_.Index(kWeaks);
        Trace("weak[%d] = weak[%d] (no callback)", b, a);
        weaks_[b] = weaks_[a];
        SetWeakModel(b, WeakModel{wm_[a].target, nullptr, wm_[a].cleared});
        Settle();
        break;
      }
      case kThrow: {
        bool tracked = in_.Byte() & 1;
        int weak_mode = in_.Index(3), w = in_.Index(kWeaks), hold = in_.Index(kRoots);
        if (!kThrowWeakToSelfEnabled) weak_mode = 0;
        Trace("Make<%s> throws (weak to this: %s into weak[%d]; holds root[%d])",
              tracked ? "ThrowNode" : "ThrowLeaf",
              weak_mode == 0 ? "none" : weak_mode == 1 ? "plain" : "with callback", w, hold);
        Rec* r = NewRec(tracked);
        if (r == nullptr) break;
        r->dead = true;  // never lives
        ThrowPlan plan;
        plan.weak_mode = weak_mode;
        plan.weak_out = &weaks_[w];
        CbRec* cb = nullptr;
        if (weak_mode == 2) {
          cb = &cbs_.emplace_back();
          plan.callback = [cb] { cb->ran.fetch_add(1, std::memory_order_relaxed); };
        }
        if (tracked) plan.hold = roots_[hold];
        bool threw = false;
        try {
          MaybeAutoCollect([&] {
            if (tracked) {
              (void)brc::Make<ThrowNode>(r, &plan);
            } else {
              (void)brc::Make<ThrowLeaf>(r, &plan);
            }
          });
        } catch (const FuzzThrow&) {
          threw = true;
        }
        FUZZ_CHECK(threw, "the throwing constructor did not throw");
        plan.hold = nullptr;
        if (weak_mode != 0) {
          // A WeakRef to an object whose construction failed: cleared, its callback run once.
          SetWeakModel(w, WeakModel{r->id, cb, true});
          if (cb != nullptr) {
            cb->expected = 1;
            cb->pending = false;
          }
        }
        Settle();
        break;
      }
      case kCollect:
      case kCollectYoung: {
        bool young = op == kCollectYoung;
        Trace(young ? "CollectYoung()" : "Collect()");
        bool acyclic = ModelAcyclic(young);
        brc::CollectorStats before = brc::GetCollectorStats();
        absl::StatusOr<brc::CollectResult> res = young ? brc::CollectYoung() : brc::Collect();
        FUZZ_CHECK(res.ok(), "Collect() failed: %s", res.status().ToString().c_str());
        FUZZ_CHECK(res->kind == (young ? brc::CollectKind::kYoung : brc::CollectKind::kFull),
                   "CollectResult::kind is not the kind asked for");
        CheckAcyclicResult(before, young, res->acyclic, acyclic);
        Safepoint();
        Collected c = ModelCollect(young);
        CheckCollectResult(*res, c);
        break;
      }
      case kFreeze: {
        bool freeze = in_.Byte() & 1;
        Trace(freeze ? "Freeze()" : "Unfreeze()");
        absl::StatusOr<uint64_t> n = freeze ? brc::Freeze() : brc::Unfreeze();
        CheckFreeze(freeze, n);
        break;
      }
      case kImmortal: {
        int a = in_.Index(kRoots);
        Trace("MakeImmortal(root[%d])", a);
        if (!roots_[a]) break;
        brc::MakeImmortal(roots_[a].get());
        R(root_m_[a]).immortal = true;
        break;
      }
      case kInspect: {
        int a = in_.Index(kRoots);
        bool referrers = in_.Byte() & 1;
        Trace("%s(root[%d])", referrers ? "GetReferrers" : "GetReferents", a);
        if (!roots_[a]) break;
        Inspect(a, referrers);
        break;
      }
      case kTakeResurrected: {
        int a = in_.Index(kRoots);
        Trace("root[%d] = the last resurrected object", a);
        if (resurrected_.empty()) break;
        int id = IdOf(resurrected_.back());
        auto it = std::find(resurrected_m_.begin(), resurrected_m_.end(), id);
        FUZZ_CHECK(it != resurrected_m_.end(), "#%d was resurrected, the model says not", id);
        resurrected_m_.erase(it);
        roots_[a] = std::move(resurrected_.back());
        resurrected_.pop_back();
        root_m_[a] = id;
        Settle();
        break;
      }
      case kConfig: {
        uint8_t b = in_.Byte();
        if (b % 4 == 0) {
          Trace("DisableCollector()");
          brc::DisableCollector();
          auto_collect_ = false;
          break;
        }
        brc::CollectorConfig config;
        config.young_threshold = b % 4;  // 1..3 tracked allocations
        config.full_ratio = (b / 4) % 2 ? 0.25 : 0.0;  // 0: full whenever the old heap grew
        config.generational = (b & 0x80) == 0;
        config.workers = 1 + (b / 8) % 3;  // > 1: parallel marking (oneTBB) on large heaps
        Trace("SetCollectorConfig(young_threshold %llu, full_ratio %.2f, generational %d, workers "
              "%d); EnableCollector()",
              (unsigned long long)config.young_threshold, config.full_ratio,
              int(config.generational), config.workers);
        absl::Status st = brc::SetCollectorConfig(config);
        FUZZ_CHECK(st.ok(), "SetCollectorConfig: %s", st.ToString().c_str());
        brc::EnableCollector();
        auto_collect_ = true;
        // Make the automatic collection come at a chosen tracked Make on each thread, whatever
        // earlier inputs left in the per-thread allocation counts.
        int n = 1 + (b >> 5), n2 = 1 + ((b >> 3) & 3);
        Prime(n);
        g_helper->Run(Wait::kBlocking, [&] { Prime(n2); });
        Trace("  (primed: an automatic collection at the %d-th tracked Make here, the %d-th on "
              "the helper)", n, n2);
        break;
      }
      case kReleaseMemory:
        Trace("ReleaseFreeMemory()");
        brc::ReleaseFreeMemory();
        break;

      // --- the helper ---
      case kHGive: {
        int a = in_.Index(kRoots), h = in_.Index(kHelperSlots), how = in_.Index(3);
        Wait wait = ReadWait(false);
        Trace("helper slot[%d] = root[%d] (%s, wait %s)", h, a,
              how == 0 ? "moved" : how == 1 ? "copied here" : "copied there", WaitName(wait));
        int id = root_m_[a];
        brc::Ref<FzObject>* src = &roots_[a];
        if (how == 0) {
          brc::Ref<FzObject> moved = std::move(roots_[a]);
          root_m_[a] = -1;
          HRun(wait, [&] { g_helper->slot[h] = std::move(moved); });
        } else if (how == 1) {
          brc::Ref<FzObject> copy = *src;
          HRun(wait, [&] { g_helper->slot[h] = std::move(copy); });
        } else {
          HRun(wait, [&] { g_helper->slot[h] = *src; });
        }
        helper_m_[h] = id;
        Settle();
        break;
      }
      default:
        HelperStep(op);
        break;
    }
  }

  // Freeze() or Unfreeze() returned n: the model's tracked live objects change state.
  void CheckFreeze(bool freeze, const absl::StatusOr<uint64_t>& n) {
    uint64_t expect = 0;
    for (Rec& r : recs_) {
      if (!r.dead && r.tracked && r.frozen != freeze) {
        r.frozen = freeze;
        r.young = false;  // Freeze promotes; Unfreeze leaves them old
        ++expect;
      }
    }
    FUZZ_CHECK(n.ok(), "Freeze/Unfreeze failed: %s", n.status().ToString().c_str());
    FUZZ_CHECK(*n == expect, "%s() returned %llu, model: %llu", freeze ? "Freeze" : "Unfreeze",
               (unsigned long long)*n, (unsigned long long)expect);
  }

  // --- the acyclic check (see the top of the file) ---

  // The model's answer: no cycle among the candidates' references to candidates.
  bool ModelAcyclic(bool young) {
    auto candidate = [&](int id) {
      if (id < 0) return false;
      const Rec& r = R(id);
      return !r.dead && r.created && r.tracked && !r.frozen && (!young || r.young);
    };
    // Depth-first, three colours: 0 not seen, 1 on the path, 2 done.
    std::vector<uint8_t> colour(recs_.size(), 0);
    std::vector<std::pair<int, int>> path;  // (object, next child slot to look at)
    for (const Rec& start : recs_) {
      if (!candidate(start.id) || colour[start.id] != 0) continue;
      colour[start.id] = 1;
      path.emplace_back(start.id, 0);
      while (!path.empty()) {
        auto& [id, k] = path.back();
        if (k == kChildren) {
          colour[id] = 2;
          path.pop_back();
          continue;
        }
        int c = R(id).child[k++];
        if (!candidate(c)) continue;
        if (colour[c] == 1) return false;  // back to the path: a cycle (a self-reference too)
        if (colour[c] == 0) {
          colour[c] = 1;
          path.emplace_back(c, 0);
        }
      }
    }
    return true;
  }

  // brc's and the model's schedule both start afresh: the next collection of each kind tries.
  void ResetAcyclic() {
    brc::testing::ResetAcyclicScheduleForTesting();
    sched_.fill(AcyclicSchedule{});
  }

  // One collection of kind `young` ran and reported `acyclic` (stats `before` and `after` it);
  // the model's candidate graph was `model` (true: no cycle) when it ran.
  void CheckAcyclic(const brc::CollectorStats& before, const brc::CollectorStats& after,
                    bool young, bool acyclic, bool model) {
    const char* kind = young ? "young" : "full";
    uint64_t grew = after.acyclic_collections - before.acyclic_collections;
    FUZZ_CHECK(grew == (acyclic ? 1u : 0u),
               "a %s collection with acyclic %d: CollectorStats::acyclic_collections grew by %llu",
               kind, int(acyclic), (unsigned long long)grew);
    // True only when proven: whatever the schedule, the model must agree.
    FUZZ_CHECK(!acyclic || model,
               "a %s collection reported acyclic, but the model's candidates hold a cycle", kind);
    AcyclicSchedule& s = sched_[young ? 0 : 1];
    if (!s.known) {
      Trace("  (%s collection: acyclic %d, model %d; not known whether it tried)", kind,
            int(acyclic), int(model));
      return;
    }
    bool tried = s.skip == 0;
    Trace("  (%s collection: acyclic %d, model %d, %s)", kind, int(acyclic), int(model),
          tried ? "tried" : "skipped by the backoff");
    if (tried) {
      FUZZ_CHECK(acyclic == model,
                 "a %s collection that tried the acyclic check reported acyclic %d, model: %d",
                 kind, int(acyclic), int(model));
    } else {
      FUZZ_CHECK(!acyclic, "a %s collection that the backoff should skip reported acyclic",
                 kind);
    }
    if (!kModelAcyclicSchedule) {
      s.known = false;
    } else if (tried) {
      s.backoff = acyclic ? 0 : std::min(std::max(1u, 2 * s.backoff), kMaxAcyclicSkip);
      s.skip = s.backoff;
    } else {
      --s.skip;
    }
  }
  // An explicit collection: exactly one ran.
  void CheckAcyclicResult(const brc::CollectorStats& before, bool young, bool acyclic,
                          bool model) {
    brc::CollectorStats after = brc::GetCollectorStats();
    FUZZ_CHECK(after.collections == before.collections + 1,
               "one explicit collection counted as %llu",
               (unsigned long long)(after.collections - before.collections));
    CheckAcyclic(before, after, young, acyclic, model);
  }
  // An automatic collection: its result is seen only in the stats.
  void CheckAcyclicStats(const brc::CollectorStats& before, const brc::CollectorStats& after,
                         bool young, bool model) {
    FUZZ_CHECK(after.acyclic_collections - before.acyclic_collections <= 1,
               "one automatic collection counted as %llu acyclic ones",
               (unsigned long long)(after.acyclic_collections - before.acyclic_collections));
    CheckAcyclic(before, after, young,
                 after.acyclic_collections != before.acyclic_collections, model);
  }

  void HelperStep(int op);
  void ExtStep(int op);
  void PtConfig(uint8_t b);
  void DetectorSwitch(int a, int threshold, int races);
  void Inspect(int a, bool referrers);
  void CheckCollectResult(const brc::CollectResult& res, const Collected& c);
  void Teardown();

  Reader& in_;
  std::deque<Rec> recs_;
  std::deque<CbRec> cbs_;
  std::array<brc::Ref<FzObject>, kRoots> roots_;
  std::array<int, kRoots> root_m_{-1, -1, -1, -1, -1, -1, -1, -1};
  std::array<int, kHelperSlots> helper_m_{-1, -1, -1, -1};
  std::array<brc::WeakRef<FzObject>, kWeaks> weaks_;
  std::array<WeakModel, kWeaks> wm_;
  std::vector<brc::Ref<FzObject>> resurrected_;  // filled by resurrecting finalizers
  std::vector<int> resurrected_m_;
  std::vector<int> gc_hold_;  // the model's collector references, during ModelCollect
  bool auto_collect_ = false;  // automatic collections enabled (kConfig)
  // The model of brc's acyclic-check schedule, [young, full] (README): the next
  // collection of the kind tries the check when skip is 0. known: false once the model has
  // lost track (kModelAcyclicSchedule off), until the next reset.
  struct AcyclicSchedule {
    bool known = true;
    uint32_t skip = 0;
    uint32_t backoff = 0;
  };
  std::array<AcyclicSchedule, 2> sched_;
  bool acyclic_at_make_[2] = {true, true};  // ModelAcyclic(young, full) before a Make
  // Per-thread counting: the configuration set (merge_interval 0 or kLongInterval), and merge
  // passes this thread ran at safepoints or while polling, not yet applied to the model.
  bool pt_interval0_ = false;
  int64_t pt_max_objects_ = brc::PerThreadConfig{}.max_objects;
  uint64_t passes_run_ = 0;
  int nominee_ = -1;  // the contention detector picked this object: switched at the safepoint
};


void Run::HelperStep(int op) {
  Helper& hp = *g_helper;
  switch (op) {
    case kHTake: {
      int h = in_.Index(kHelperSlots), a = in_.Index(kRoots);
      bool there = in_.Byte() & 1;
      Wait wait = ReadWait(false);
      Trace("root[%d] = helper slot[%d] (moved %s, wait %s)", a, h,
            there ? "by the helper" : "by this thread", WaitName(wait));
      if (there) {
        // The helper also drops what root[a] held before.
        HRun(wait, [&] { roots_[a] = std::move(hp.slot[h]); });
      } else {
        roots_[a] = std::move(hp.slot[h]);
      }
      root_m_[a] = helper_m_[h];
      helper_m_[h] = -1;
      Settle();
      break;
    }
    case kHDrop: {
      int h = in_.Index(kHelperSlots);
      uint8_t lock_byte = in_.Byte();
      Wait wait = ReadWait(false);
      // Optionally, right after the drop (the dropped object may now sit in this thread's
      // queue with a count of 0): the helper Lock()s weak[w] into slot h, and/or this thread
      // Lock()s weak[w2] before its next safepoint.
      bool helper_lock = kLockNeverRevivesQueued && (lock_byte & 1);
      bool main_lock = kLockNeverRevivesQueued && (lock_byte & 2);
      int w = (lock_byte >> 2) % kWeaks, w2 = (lock_byte >> 5) % kWeaks;
      Trace("helper drops slot[%d]%s (wait %s)%s", h,
            helper_lock ? ", then Lock()s a weak into it" : "", WaitName(wait),
            main_lock ? "; then this thread Lock()s a weak before its safepoint" : "");
      FzObject* helper_got = nullptr;
      HRun(wait, [&] {
        hp.slot[h] = nullptr;
        if (helper_lock) {
          hp.slot[h] = weaks_[w].Lock();
          helper_got = hp.slot[h].get();
        }
      });
      Trace("  (objects now queued to the fuzz thread: %zu)",
            g_trace ? brc::testing::QueuedObjectsForTesting(brc::CurrentThreadId()) : 0);
      helper_m_[h] = -1;
      Settle();
      if (helper_lock) {
        int t = wm_[w].target;
        bool alive = Lockable(w);
        FUZZ_CHECK((helper_got != nullptr) == alive,
                   "helper's weak %d (to #%d) Lock() right after the drop gave %p, model: %s", w,
                   t, (void*)helper_got, alive ? "alive" : "dead");
        helper_m_[h] = alive ? t : -1;
      }
      ApplyPasses();  // a pass this thread ran while it polled came after the helper's Lock()
      if (main_lock) {
        int t = wm_[w2].target;
        bool alive = Lockable(w2);
        brc::Ref<FzObject> got = weaks_[w2].Lock();
        FUZZ_CHECK((got != nullptr) == alive,
                   "weak %d (to #%d) Lock() before the safepoint gave %p, model: %s", w2, t,
                   (void*)got.get(), alive ? "alive" : "dead");
      }
      Settle();
      break;
    }
    case kHMake: {
      int h = in_.Index(kHelperSlots), kind = in_.Index(4);
      uint32_t v = in_.Byte();
      // Make may collect: stops the world, and passes
      Wait wait = auto_collect_ && kind != 0 ? ReadPassWait(true) : ReadWait(false);
      Trace("helper slot[%d] = Make<%s>(%u) on the helper (wait %s)", h, KindName(kind), v,
            WaitName(wait));
      HRun(wait, [&] { MakeInto(&hp.slot[h], &helper_m_[h], kind, v); });
      Settle();
      break;
    }
    case kHLink: {
      int h = in_.Index(kHelperSlots), k = in_.Index(kChildren), h2 = in_.Index(kHelperSlots);
      Wait wait = ReadWait(false);
      int id = helper_m_[h];
      bool node = id >= 0;
      Trace("helper: slot[%d]->child[%d] = slot[%d]%s (wait %s)", h, k, h2,
            node ? "" : " (skipped: empty)", WaitName(wait));
      if (!node) break;
      HRun(wait, [&] { hp.slot[h]->child[k] = hp.slot[h2]; });
      R(id).child[k] = helper_m_[h2];
      Settle();
      break;
    }
    case kHLock: {
      int w = in_.Index(kWeaks), h = in_.Index(kHelperSlots);
      Wait wait = ReadWait(false);
      Trace("helper slot[%d] = weak[%d].Lock() on the helper (wait %s)", h, w, WaitName(wait));
      FzObject* got = nullptr;
      HRun(wait, [&] {
        hp.slot[h] = weaks_[w].Lock();
        got = hp.slot[h].get();
      });
      int t = wm_[w].target;
      bool alive = Lockable(w);
      FUZZ_CHECK((got != nullptr) == alive, "helper's weak %d (to #%d) Lock() gave %p, model: %s",
                 w, t, (void*)got, alive ? "alive" : "dead");
      helper_m_[h] = alive ? t : -1;
      Settle();
      break;
    }
    case kHCollect: {
      int what = in_.Index(3);
      Wait wait = what == 0 ? ReadPassWait(true) : ReadWait(true);
      static const char* const kWhat[] = {"Collect()", "Freeze()", "Unfreeze()"};
      Trace("%s on the helper (wait %s)", kWhat[what], WaitName(wait));
      if (what == 0) {
        bool acyclic = ModelAcyclic(false);
        brc::CollectorStats before = brc::GetCollectorStats();
        absl::StatusOr<brc::CollectResult> res;
        HRun(wait, [&] { res = brc::Collect(); });
        FUZZ_CHECK(res.ok(), "Collect() on the helper failed: %s",
                   res.status().ToString().c_str());
        FUZZ_CHECK(res->kind == brc::CollectKind::kFull, "the helper's Collect() was not full");
        CheckAcyclicResult(before, false, res->acyclic, acyclic);
        Safepoint();
        Collected c = ModelCollect();
        CheckCollectResult(*res, c);
      } else {
        absl::StatusOr<uint64_t> n;
        HRun(wait, [&] { n = what == 1 ? brc::Freeze() : brc::Unfreeze(); });
        CheckFreeze(what == 1, n);
      }
      break;
    }
    case kHCheck: {
      Wait wait = ReadWait(PoolLive() > 0);  // GetRefCount of one counted per thread stops it
      Trace("the helper checks every reference count (wait %s)", WaitName(wait));
      std::vector<int> count = Counts();
      std::vector<int64_t> got(recs_.size(), -1);
      HRun(wait, [&] {
        for (const Rec& r : recs_) {
          if (r.created && !r.dead) got[r.id] = brc::GetRefCount(r.ptr);
        }
      });
      for (const Rec& r : recs_) {
        if (!r.created || r.dead) continue;
        int64_t expect = r.immortal ? brc::kImmortalRefCount : count[r.id];
        FUZZ_CHECK(got[r.id] == expect, "GetRefCount(#%d) on the helper = %lld, model: %lld",
                   r.id, (long long)got[r.id], (long long)expect);
      }
      break;
    }
    case kHWeak: {
      int w = in_.Index(kWeaks), h = in_.Index(kHelperSlots), cb = in_.Index(4),
          h2 = in_.Index(kHelperSlots);
      Wait wait = ReadWait(false);
      Trace("helper: weak[%d] = WeakRef(slot[%d]%s) (wait %s)", w, h, CallbackName(cb, h2),
            WaitName(wait));
      HRun(wait, [&] { MakeWeak(w, hp.slot[h], cb, hp.slot[h2]); });
      Settle();
      break;
    }
    case kHRestart: {
      Trace("the helper exits (dropping its slots); a new helper starts");
      delete g_helper;
      g_helper = new Helper();
      helper_m_.fill(-1);
      Settle();
      break;
    }
    default:
      Fail("unknown operation %d", op);
  }
}

// The per-thread counting operations (brc/hot.h); the opcode byte was kExtBase + op.
void Run::ExtStep(int op) {
  Helper& hp = *g_helper;
  switch (op) {
    case kPtSwitch: {
      int a = in_.Index(kRoots);
      uint8_t m = in_.Byte();
      bool blocked = (m & 3) == 1;
      if ((m & 3) == 2) {
        DetectorSwitch(a, 1 + (m >> 2) % 4, (m >> 4) % 5);
        break;
      }
      Trace("CountPerThread(root[%d])%s", a, blocked ? " inside a BlockingScope" : "");
      if (!roots_[a]) break;
      FzObject* p = roots_[a].get();
      if (blocked) {
        absl::Status st;
        {
          brc::BlockingScope blocking;
          st = brc::CountPerThread(p);
        }
        FUZZ_CHECK(st.code() == absl::StatusCode::kFailedPrecondition,
                   "CountPerThread in a BlockingScope: %s", st.ToString().c_str());
      } else {
        ModelSwitch(root_m_[a], brc::CountPerThread(p), "the fuzz thread");
      }
      break;
    }
    case kPtMerge: {
      bool blocked = in_.Byte() & 1;
      Trace("MergePerThreadCounts()%s", blocked ? " inside a BlockingScope" : "");
      absl::Status st;
      if (blocked) {
        {
          brc::BlockingScope blocking;
          st = brc::MergePerThreadCounts();
        }
        FUZZ_CHECK(st.code() == absl::StatusCode::kFailedPrecondition,
                   "MergePerThreadCounts in a BlockingScope: %s", st.ToString().c_str());
      } else {
        st = brc::MergePerThreadCounts();
        FUZZ_CHECK(st.ok(), "MergePerThreadCounts: %s", st.ToString().c_str());
        ModelPass();
      }
      break;
    }
    case kPtConfig:
      PtConfig(in_.Byte());
      break;
    case kPtDropLock: {
      int a = in_.Index(kRoots), w = in_.Index(kWeaks), b = in_.Index(kRoots);
      Trace("root[%d] = null; root[%d] = weak[%d].Lock() at once (before the safepoint)", a, b,
            w);
      roots_[a] = nullptr;
      root_m_[a] = -1;
      Settle();
      // An object counted per thread that the drop left in limbo is still returned (and lives
      // on in root[b]); any other whose count reached 0 is gone.
      brc::Ref<FzObject> got = weaks_[w].Lock();
      int t = wm_[w].target;
      bool alive = Lockable(w);
      FUZZ_CHECK((got != nullptr) == alive, "weak %d (to #%d) Lock() after the drop gave %p, "
                 "model: %s", w, t, (void*)got.get(), alive ? "alive" : "dead");
      roots_[b] = std::move(got);
      root_m_[b] = alive ? t : -1;
      Settle();
      break;
    }
    case kPtSwitchStopped: {
      int a = in_.Index(kRoots), b = in_.Index(kRoots);
      bool merge = in_.Byte() & 1;
      Trace("under one brc::StopTheWorld: CountPerThread(root[%d]), CountPerThread(root[%d])%s",
            a, b, merge ? ", MergePerThreadCounts()" : "");
      absl::Status s1, s2, s3;
      {
        // The switches and the pass use the caller's stop; the pass's frees run in it too, and
        // it folds once (no second pass for what those frees leave in limbo).
        brc::StopTheWorld stop;
        if (roots_[a]) s1 = brc::CountPerThread(roots_[a].get());
        if (roots_[b]) s2 = brc::CountPerThread(roots_[b].get());
        if (merge) s3 = brc::MergePerThreadCounts();
      }
      if (roots_[a]) ModelSwitch(root_m_[a], s1, "the fuzz thread, world stopped");
      if (roots_[b]) ModelSwitch(root_m_[b], s2, "the fuzz thread, world stopped");
      if (merge) {
        FUZZ_CHECK(s3.ok(), "MergePerThreadCounts with the world stopped: %s",
                   s3.ToString().c_str());
        Free(LimboIds());
      }
      break;
    }
    case kHPtSwitch: {
      int h = in_.Index(kHelperSlots);
      Wait wait = ReadWait(true);
      int id = helper_m_[h];
      Trace("CountPerThread(helper slot[%d]) on the helper%s (wait %s)", h,
            id < 0 ? " (skipped: empty)" : "", WaitName(wait));
      if (id < 0) break;
      absl::Status st;
      HRun(wait, [&] { st = brc::CountPerThread(hp.slot[h].get()); });
      ModelSwitch(id, st, "the helper");
      break;
    }
    case kHPtMerge: {
      Wait wait = ReadPassWait(true);
      Trace("MergePerThreadCounts() on the helper (wait %s)", WaitName(wait));
      absl::Status st;
      HRun(wait, [&] { st = brc::MergePerThreadCounts(); });
      FUZZ_CHECK(st.ok(), "MergePerThreadCounts on the helper: %s", st.ToString().c_str());
      ModelPass();
      break;
    }
    case kHDropSwitch: {
      int h = in_.Index(kHelperSlots), a = in_.Index(kRoots);
      Wait wait = ReadWait(false);
      // A reference this thread took and gave the helper is queued back to this thread when
      // the helper drops it: switched before this thread drains it, the queue entry's
      // reference goes through the per-thread count.
      Trace("helper drops slot[%d] (wait %s); this thread then switches root[%d] before its "
            "safepoint", h, WaitName(wait), a);
      HRun(wait, [&] { hp.slot[h] = nullptr; });
      helper_m_[h] = -1;
      Settle();
      ApplyPasses();
      if (roots_[a]) {
        ModelSwitch(root_m_[a], brc::CountPerThread(roots_[a].get()), "the fuzz thread");
      }
      break;
    }
    default:
      Fail("unknown extended operation %d", op);
  }
}

// The contention detector, fed `races` lost races on root[a]'s object through
// brc::testing::NoteContentionForTesting with detection on (threshold `threshold`) for just
// this operation, after ResetContentionForTesting: the fuzz thread's table then holds only
// these (the helper is idle, so no real race adds to it). The object is picked when `races`
// reaches the threshold and it is mortal and not counted per thread yet; the pick holds a
// reference until this thread's next safepoint, which switches it (Go). Detection is off again
// before the safepoint: the switch of a picked object does not depend on it.
void Run::DetectorSwitch(int a, int threshold, int races) {
  Trace("contention detector: %d lost races on root[%d] (threshold %d)", races, a, threshold);
  if (!roots_[a]) return;
  brc::PerThreadConfig before = brc::GetPerThreadConfig();
  brc::PerThreadConfig on = before;
  on.detect_contention = true;
  on.contention_threshold = threshold;
  absl::Status st = brc::SetPerThreadConfig(on);
  FUZZ_CHECK(st.ok(), "SetPerThreadConfig (detection on): %s", st.ToString().c_str());
  brc::testing::ResetContentionForTesting();
  for (int i = 0; i < races; ++i) brc::testing::NoteContentionForTesting(roots_[a].get());
  st = brc::SetPerThreadConfig(before);
  FUZZ_CHECK(st.ok(), "SetPerThreadConfig (detection off): %s", st.ToString().c_str());
  const Rec& r = R(root_m_[a]);
  if (races >= threshold && !r.immortal && !r.pt) {
    Trace("  (#%d picked: switched at the safepoint)", r.id);
    nominee_ = r.id;
  }
}

// SetPerThreadConfig with a valid configuration (merge_interval 0 or kLongInterval, a few
// max_objects, contention detection off) or one field out of range, which must be refused
// with InvalidArgument and change nothing.
void Run::PtConfig(uint8_t b) {
  brc::PerThreadConfig before = brc::GetPerThreadConfig();
  brc::PerThreadConfig c;
  c.merge_interval = (b & 2) ? absl::ZeroDuration() : kLongInterval;
  static const int64_t kMax[] = {1, 2, 3, 4, 8, kMaxObjects, int64_t{1} << 20, int64_t{1} << 30};
  c.max_objects = kMax[(b >> 2) & 7];
  static const int kThreshold[] = {1, 7, 64, 1 << 20};
  c.contention_threshold = kThreshold[(b >> 5) & 3];
  const char* bad = nullptr;
  if (b & 1) {
    switch ((b >> 1) & 7) {
      case 0: c.contention_threshold = 0; bad = "contention_threshold 0"; break;
      case 1: c.contention_threshold = -5; bad = "contention_threshold -5"; break;
      case 2: c.contention_threshold = (1 << 20) + 1; bad = "contention_threshold 2^20+1"; break;
      case 3: c.merge_interval = -absl::Nanoseconds(1); bad = "merge_interval -1 ns"; break;
      case 4:
        c.merge_interval = absl::Seconds(10) + absl::Nanoseconds(1);
        bad = "merge_interval 10 s + 1 ns";
        break;
      case 5: c.merge_interval = absl::InfiniteDuration(); bad = "merge_interval infinite"; break;
      case 6: c.max_objects = 0; bad = "max_objects 0"; break;
      default: c.max_objects = (int64_t{1} << 30) + 1; bad = "max_objects 2^30+1"; break;
    }
  }
  Trace("SetPerThreadConfig(merge_interval %s, max_objects %lld, contention_threshold %d)%s%s",
        absl::FormatDuration(c.merge_interval).c_str(), (long long)c.max_objects,
        c.contention_threshold, bad ? ": invalid, " : "", bad ? bad : "");
  absl::Status st = brc::SetPerThreadConfig(c);
  brc::PerThreadConfig after = brc::GetPerThreadConfig();
  const brc::PerThreadConfig& want = bad ? before : c;
  if (bad) {
    FUZZ_CHECK(st.code() == absl::StatusCode::kInvalidArgument,
               "SetPerThreadConfig with %s: %s, expected InvalidArgument", bad,
               st.ToString().c_str());
  } else {
    FUZZ_CHECK(st.ok(), "SetPerThreadConfig: %s", st.ToString().c_str());
    pt_interval0_ = c.merge_interval == absl::ZeroDuration();
    pt_max_objects_ = c.max_objects;
  }
  FUZZ_CHECK(after.detect_contention == want.detect_contention &&
                 after.contention_threshold == want.contention_threshold &&
                 after.merge_interval == want.merge_interval &&
                 after.max_objects == want.max_objects,
             "GetPerThreadConfig() after SetPerThreadConfig%s is not %s", bad ? " (refused)" : "",
             bad ? "the configuration before" : "the one set");
}

void Run::Inspect(int a, bool referrers) {
  const Rec& r = R(root_m_[a]);
  std::vector<const brc::Object*> want;
  std::vector<const brc::Object*> have;
  if (!referrers) {
    std::vector<brc::Ref<brc::Object>> got = brc::GetReferents(r.ptr);
    if (r.tracked) {
      for (int c : r.child) if (c >= 0) want.push_back(R(c).ptr);
    }
    for (const auto& g : got) have.push_back(g.get());
  } else {
    std::vector<brc::Ref<brc::Object>> got = brc::GetReferrers(r.ptr);
    for (const Rec& o : recs_) {
      if (o.dead || !o.tracked) continue;
      if (std::find(std::begin(o.child), std::end(o.child), r.id) != std::end(o.child)) {
        want.push_back(o.ptr);
      }
    }
    for (const auto& g : got) have.push_back(g.get());
    std::sort(have.begin(), have.end());
    have.erase(std::unique(have.begin(), have.end()), have.end());
  }
  std::sort(want.begin(), want.end());
  std::sort(have.begin(), have.end());
  FUZZ_CHECK(have == want, "%s(#%d): %zu objects, model: %zu",
             referrers ? "GetReferrers" : "GetReferents", r.id, have.size(), want.size());
}

void Run::CheckCollectResult(const brc::CollectResult& res, const Collected& c) {
  auto same = [](uint64_t got, uint64_t want, const char* what) {
    FUZZ_CHECK(got == want, "Collect(): %s %llu, model: %llu", what, (unsigned long long)got,
               (unsigned long long)want);
  };
  same(res.unreachable, c.unreachable, "unreachable");
  same(res.collected, c.collected, "collected");
  same(res.resurrected, c.resurrected, "resurrected");
  same(res.finalized, c.finalized, "finalized");
  same(res.weak_callbacks, c.callbacks, "weak_callbacks");
  same(res.uncollectable, 0, "uncollectable");
  same(res.errors, 0, "errors");
}

void Run::Teardown() {
  Trace("-- teardown --");
  brc::DisableCollector();
  auto_collect_ = false;
  g_helper->Run(Wait::kBlocking, [&] {
    for (auto& s : g_helper->slot) s = nullptr;
  });
  helper_m_.fill(-1);
  Settle();
  resurrected_.clear();
  resurrected_m_.clear();
  Settle();
  // A callback that holds a reference keeps that object alive until it runs or is cancelled:
  // cancel those (drop their WeakRefs) so that everything can die.
  for (int w = 0; w < kWeaks; ++w) {
    if (wm_[w].cb != nullptr && wm_[w].cb->pending && wm_[w].cb->held >= 0) {
      weaks_[w] = brc::WeakRef<FzObject>();
      SetWeakModel(w, WeakModel{});
      Settle();  // what the cancelled callback held may die now, running other callbacks
    }
  }
  for (auto& r : roots_) r = nullptr;
  root_m_.fill(-1);
  Settle();
  Safepoint();
  ApplyPasses();
  Check("teardown, roots dropped");

  uint64_t frozen = 0;
  for (Rec& r : recs_) {
    if (!r.dead && r.frozen) ++frozen;
    r.frozen = false;
  }
  absl::StatusOr<uint64_t> n = brc::Unfreeze();
  FUZZ_CHECK(n.ok(), "teardown Unfreeze() failed: %s", n.status().ToString().c_str());
  FUZZ_CHECK(*n == frozen, "teardown Unfreeze() returned %llu, model: %llu",
             (unsigned long long)*n, (unsigned long long)frozen);

  // Round 0 collects the garbage; immortal objects then drop what they reference, which round 1
  // collects; objects that finalizers resurrect are dropped before the next round (each object
  // is finalized once, so they die in the next). Round 3 must find nothing left.
  for (int round = 0; round < 4; ++round) {
    resurrected_.clear();
    resurrected_m_.clear();
    Settle();
    bool acyclic = ModelAcyclic(false);
    brc::CollectorStats before = brc::GetCollectorStats();
    absl::StatusOr<brc::CollectResult> res = brc::Collect();
    FUZZ_CHECK(res.ok(), "teardown Collect() failed: %s", res.status().ToString().c_str());
    CheckAcyclicResult(before, false, res->acyclic, acyclic);
    Safepoint();
    Collected c = ModelCollect();
    CheckCollectResult(*res, c);
    ApplyPasses();
    Check("teardown, collected");
    // Immortal objects and leaves (never collected through) drop what they reference.
    for (Rec& r : recs_) {
      if (r.dead || (!r.immortal && r.tracked)) continue;
      // A leaf in a cycle dies as soon as its last child slot lets go: hold it meanwhile.
      brc::Ref<FzObject> keep = brc::Ref<FzObject>::NewRef(r.ptr);
      for (int k = 0; k < kChildren; ++k) {
        r.child[k] = -1;
        keep->child[k] = nullptr;
      }
      keep = nullptr;
      Settle();
    }
    Safepoint();
    ApplyPasses();
    // What counting per thread left in limbo (a chain of such objects included) goes now.
    absl::Status st = brc::MergePerThreadCounts();
    FUZZ_CHECK(st.ok(), "teardown MergePerThreadCounts: %s", st.ToString().c_str());
    ModelPass();
    Check("teardown, immortal objects unlinked");
    // Another round only if the model says something mortal is still alive (each collection
    // walks the whole collector heap, which BRC_DEBUG's quarantine keeps large).
    bool left = !resurrected_m_.empty();
    for (const Rec& r : recs_) left = left || (!r.dead && !r.immortal);
    if (!left) break;
  }
  for (Rec& r : recs_) {
    if (r.dead) continue;
    FUZZ_CHECK(r.immortal, "teardown: #%d is alive but not immortal", r.id);
    brc::testing::FreeImmortalForTesting(r.ptr);
    Kill(r);
  }
  Safepoint();
  ApplyPasses();
  Check("teardown, immortal objects freed");
  for (int w = 0; w < kWeaks; ++w) {
    weaks_[w] = brc::WeakRef<FzObject>();
    SetWeakModel(w, WeakModel{});
  }
  for (CbRec& cb : cbs_) {
    FUZZ_CHECK(cb.ran.load() == cb.expected, "end: a weak callback ran %d times, model says %d",
               cb.ran.load(), cb.expected);
  }
  for (const Rec& r : recs_) {
    int want = r.created ? 1 : 0;
    FUZZ_CHECK(r.destroyed.load() == want, "end: #%d destroyed %d times, expected %d", r.id,
               r.destroyed.load(), want);
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  g_trace = std::getenv("BRC_FUZZ_TRACE") != nullptr;
  g_stats = std::getenv("BRC_FUZZ_STATS") != nullptr;
  brc::AttachCurrentThread();  // the fuzz thread stays attached until it exits
  brc::DisableCollector();     // the model decides when cycles die: explicit Collect() only
  brc::SetCollectorErrorHandler([](std::string_view message) {
    Fail("the collector reported an error: %.*s", static_cast<int>(message.size()),
         message.data());
  });
  g_helper = new Helper();
  std::atexit(StopHelperAtExit);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Reader in(data, size);
  {
    Run run(in);
    run.Go();
  }
  if (g_stats) {
    brc::CollectorStats cs = brc::GetCollectorStats();
    std::fprintf(stderr, "brc_fuzz stats: collector pages %llu (stats %llu), leaf pages %llu, "
                 "tracked %llu, collections %llu\n",
                 (unsigned long long)brc::testing::CollectorHeapPagesForTesting(),
                 (unsigned long long)cs.heap_pages,
                 (unsigned long long)brc::testing::LeafHeapPagesForTesting(),
                 (unsigned long long)cs.tracked, (unsigned long long)cs.collections);
  }
  return 0;
}
