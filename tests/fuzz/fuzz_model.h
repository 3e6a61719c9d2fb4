// fuzz_model.h: what the files of brc_fuzz share. The switches and sizes; the fuzz objects that
// brc manages (leaves, tracked Nodes, FNodes with a finalizer, constructors that throw); the
// model's record of each object, weak callback and WeakRef; the helper thread; the Reader that
// turns the input's bytes into operations and their arguments; and Run, which plays one input
// against brc and the model at once. fuzz_main.cc says what the fuzzer does as a whole. Run's
// members are defined by mechanism, one file each:
//   fuzz_main.cc        the libFuzzer entry points, tracing, and Run's step loop (Go)
//   fuzz_objects.cc     what brc calls on fuzz objects (destructor, Clear, Finalize, weak
//                       callbacks); making objects and WeakRefs, and the automatic collection a
//                       Make may run
//   fuzz_model.cc       the model's reference counts, deaths and collections
//   fuzz_steps.cc       the fuzz thread's own operations (Step, which dispatches every opcode)
//   fuzz_helper.cc      the helper thread, the fuzz thread's ways of waiting for it, and the
//                       operations it runs (HelperStep; a parkable drop during a collection)
//   fuzz_per_thread.cc  per-thread counting (brc/hot.h): its model (limbo, merge passes) and its
//                       operations (ExtStep: the opcode bytes kExtBase..255)
//   fuzz_acyclic.cc     the model of CollectResult::acyclic and of brc's schedule for the check
//   fuzz_checks.cc      the checks after every step, and the end of each input (Teardown)
// Everything is in namespace brc_fuzz; only the LLVMFuzzer* entry points are global.
#ifndef BRC_TESTS_FUZZ_FUZZ_MODEL_H_
#define BRC_TESTS_FUZZ_FUZZ_MODEL_H_

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string_view>
#include <thread>
#include <vector>

#include "brc/brc.h"
#include "brc/testing.h"

namespace brc_fuzz {

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

extern bool g_trace;  // BRC_FUZZ_TRACE=1: Trace prints every operation (fuzz_main.cc)
extern bool g_stats;  // BRC_FUZZ_STATS=1: one line of brc's memory figures after each input

// One line of the trace, printed only with BRC_FUZZ_TRACE=1 (fuzz_main.cc).
void Trace(const char* fmt, ...);
// A failed model check: prints what differs and aborts (fuzz_main.cc).
[[noreturn]] void Fail(const char* fmt, ...);

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
extern std::vector<brc::Ref<FzObject>>* g_resurrected;

// ---- the helper thread (fuzz_helper.cc) ----

// How the fuzz thread waits for a helper command (fuzz_helper.cc says what each one allows).
enum class Wait { kBlocking, kPoll, kSpin };
const char* WaitName(Wait w);

class Helper {
 public:
  Helper();
  ~Helper();

  // Runs `fn` on the helper and waits for it to finish.
  void Run(Wait wait, std::function<void()> fn);
  // Run in two halves, for a command that overlaps what the fuzz thread does meanwhile
  // (HelperParkDrop): Start hands `fn` over and returns at once; Done says whether it has
  // finished; FinishWithin waits for that inside a BlockingScope, false after `limit`.
  void Start(std::function<void()> fn);
  // Acquire: pairs with the helper's release store, so what the command wrote is visible.
  bool Done() const { return done_.load(std::memory_order_acquire); }
  bool FinishWithin(std::chrono::milliseconds limit);

  // Touched only by commands (on the helper) and by the fuzz thread while the helper is idle.
  brc::Ref<FzObject> slot[kHelperSlots];

 private:
  void Loop();

  std::mutex mu_;
  std::condition_variable cv_;
  std::function<void()> cmd_;
  bool has_cmd_ = false;
  bool quit_ = false;
  std::atomic<bool> done_{false};
  std::thread thread_;  // last: starts after the fields above exist
};

extern Helper* g_helper;  // the current helper; replaced by kHRestart
void StopHelperAtExit();

// The hold of a parkable drop (HelperParkDrop, fuzz_helper.cc): while the helper's countdown
// runs, its n-th fuzz-object destructor (OnDestroy) holds there until a stop of the world
// waits for the helper (brc::testing::StopRequestedForTesting), for at most a few seconds.
void MaybeHoldForStop();

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

// Plays one input: reads its operations from the Reader, runs each on brc and on the model, and
// checks after each that the two agree (Go); then takes everything apart (Teardown).
class Run {
 public:
  explicit Run(Reader& in);
  ~Run();
  // Plays the input: Step, then the checks, until the input ends; then Teardown.
  void Go();

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

  // --- model helpers (fuzz_model.cc) ---

  Rec* NewRec(bool tracked);
  Rec& R(int id) { return recs_[static_cast<size_t>(id)]; }
  FzObject* PtrOf(int id) { return id < 0 ? nullptr : R(id).ptr; }
  int IdOf(const brc::Ref<FzObject>& ref) { return ref ? ref->rec->id : -1; }
  std::vector<int> Counts();
  int ClearWeakRefsTo(int x);
  void Kill(Rec& r);
  void SetWeakModel(int w, WeakModel m);
  void Settle();
  std::vector<int> Unreachable(bool young = false);
  // What one collection did, in the model's figures (ModelCollect).
  struct Collected {
    uint64_t unreachable = 0;
    uint64_t callbacks = 0;
    uint64_t finalized = 0;
    uint64_t resurrected = 0;
    uint64_t collected = 0;
  };
  Collected ModelCollect(bool young = false);
  bool Lockable(int w);
  FzObject* ObjAt(int root) { return PtrOf(root_m_[root]); }

  // --- making objects and WeakRefs (fuzz_objects.cc) ---

  CbRec* NewCallback(int kind, std::function<void()>* out, const brc::WeakRef<FzObject>* self,
                     const brc::Ref<FzObject>* held);
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
  void Prime(int n);
  void AfterMake(const brc::CollectorStats& before);
  void MakeInto(brc::Ref<FzObject>* where, int* model_slot, int kind, uint32_t value);
  static const char* KindName(int kind);
  static const char* CallbackName(int cb, int held);
  void MakeWeak(int w, const brc::Ref<FzObject>& target, int cb, const brc::Ref<FzObject>& held);

  // --- the fuzz thread's operations (fuzz_steps.cc) ---

  static bool MayCollect(int op);
  void Step();
  void RootStep(int op);
  void EdgeStep(int op);
  void WeakStep(int op);
  void ThrowStep();
  void CollectorStep(int op);
  void ConfigStep();

  // --- the helper's operations (fuzz_helper.cc) ---

  void HRun(Wait wait, std::function<void()> fn);
  Wait ReadWait(bool stops_world);
  Wait ReadPassWait(bool stops_world);
  void HelperStep(int op);
  void HelperRefStep(int op);
  void HelperDrop();
  void HelperParkDrop(int h);
  void HelperObjectStep(int op);
  void HelperCollectStep(int op);

  // --- per-thread counting (fuzz_per_thread.cc) ---

  std::vector<int> LimboIds();
  void Free(const std::vector<int>& ids);
  void ModelPass();
  int PoolLive();
  void ModelSwitch(int id, const absl::Status& st, const char* who);
  static uint64_t ThreadPasses();
  void Safepoint();
  void ApplyPasses();
  void ExtStep(int op);
  void PtStep(int op);
  void PtSwitchStopped();
  void HelperPtStep(int op);
  void PtConfig(uint8_t b);
  void DetectorSwitch(int a, int threshold, int races);

  // --- the acyclic check (fuzz_acyclic.cc) ---

  bool ModelAcyclic(bool young);
  void ResetAcyclic();
  void CheckAcyclic(const brc::CollectorStats& before, const brc::CollectorStats& after,
                    bool young, bool acyclic, bool model);
  void CheckAcyclicResult(const brc::CollectorStats& before, bool young, bool acyclic,
                          bool model);
  void CheckAcyclicStats(const brc::CollectorStats& before, const brc::CollectorStats& after,
                         bool young, bool model);

  // --- the checks, and the end of the input (fuzz_checks.cc) ---

  void Check(const char* when);
  void CheckFreeze(bool freeze, const absl::StatusOr<uint64_t>& n);
  void Inspect(int a, bool referrers);
  void CheckCollectResult(const brc::CollectResult& res, const Collected& c);
  // A collection the fuzz thread ran (`what` names it in a failure), against the model: its
  // status and kind, the acyclic check's answer, then (after a safepoint) the figures.
  void CheckCollection(const absl::StatusOr<brc::CollectResult>& res,
                       const brc::CollectorStats& before, bool young, bool acyclic,
                       const char* what);
  void Teardown();
  void TeardownDrop();
  bool TeardownRound();
  void TeardownFree();

  // The run's state: the fuzz thread's, also written by helper commands while the fuzz thread
  // waits for them (HRun).
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

}  // namespace brc_fuzz

#endif  // BRC_TESTS_FUZZ_FUZZ_MODEL_H_
