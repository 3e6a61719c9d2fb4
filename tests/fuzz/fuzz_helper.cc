// fuzz_helper.cc: brc_fuzz's second thread. The Helper is a std::thread that stays attached to
// brc and runs one command (a std::function) at a time for the fuzz thread, which waits for each
// one in a way the input chooses (ReadWait, ReadPassWait, HRun); the helper's operations
// (HelperStep) give it references, take them back, drop them (and Lock() WeakRefs at once after),
// make and link objects on it, make and Lock() WeakRefs there, collect, freeze and unfreeze from
// it, read every reference count from it, or replace it with a new thread (kHRestart: what it
// owned is orphaned, its per-thread slots spilled into the shared words). A parkable drop
// (kHDrop with the lock byte kParkDropByte, HelperParkDrop) overlaps the two threads on purpose:
// the helper drops a slot inside brc::ParkableFrees and holds at a chosen destructor of the
// cascade (MaybeHoldForStop) until the fuzz thread's collection or StopTheWorld waits for it.
//
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
#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "brc/brc.h"
#include "brc/testing.h"
#include "fuzz_model.h"

namespace brc_fuzz {

// ---- the helper thread ----

const char* WaitName(Wait w) {
  return w == Wait::kBlocking ? "blocking" : w == Wait::kPoll ? "poll" : "spin";
}

Helper::Helper() : thread_([this] { Loop(); }) {}

Helper::~Helper() {
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

void Helper::Start(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    cmd_ = std::move(fn);
    has_cmd_ = true;
    done_.store(false, std::memory_order_relaxed);
  }
  cv_.notify_all();
}

bool Helper::FinishWithin(std::chrono::milliseconds limit) {
  bool done;
  {
    brc::BlockingScope blocking;
    std::unique_lock<std::mutex> lock(mu_);
    done = cv_.wait_for(lock, limit, [&] { return done_.load(std::memory_order_relaxed); });
  }
  // Pairs with the helper's release store: what the command wrote is visible from here.
  std::atomic_thread_fence(std::memory_order_acquire);
  return done;
}

void Helper::Run(Wait wait, std::function<void()> fn) {
  Start(std::move(fn));
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

void Helper::Loop() {
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

Helper* g_helper = nullptr;

void StopHelperAtExit() {
  delete g_helper;
  g_helper = nullptr;
}

// ---- the fuzz thread's waits ----

// Helper::Run; a pass the fuzz thread runs while it polls (kPoll) waits in passes_run_. Such
// a pass runs after the command (see kPtConfig), so the model applies it after the command's
// own effects.
void Run::HRun(Wait wait, std::function<void()> fn) {
  uint64_t before = ThreadPasses();
  g_helper->Run(wait, std::move(fn));
  passes_run_ += ThreadPasses() - before;
}

// Reads from the input how the fuzz thread waits for the next helper command; one that may stop
// the world is never waited for spinning (the fuzz thread would never reach a safepoint).
Wait Run::ReadWait(bool stops_world) {
  Wait w = static_cast<Wait>(in_.Index(3));
  if (w == Wait::kSpin && stops_world) w = Wait::kPoll;
  return w;
}

// The wait for a helper command that may run a merge pass (a collection, a pass): with a
// long merge_interval the fuzz thread must block (a polling fuzz thread would drain what the
// helper's frees queue to it while the helper's pass runs, and the pass frees what that
// leaves in limbo or not, by timing); with merge_interval 0 the step ends with every due pass
// run either way.
Wait Run::ReadPassWait(bool stops_world) {
  Wait w = ReadWait(stops_world);
  if (!pt_interval0_ && PoolLive() > 0) w = Wait::kBlocking;
  return w;
}

// ---- the helper's operations ----

// The helper's operations (Step sends every helper opcode here), by what they act on.
void Run::HelperStep(int op) {
  switch (op) {
    case kHGive:
    case kHTake:
    case kHDrop:
      HelperRefStep(op);
      break;
    case kHMake:
    case kHLink:
    case kHLock:
    case kHWeak:
    case kHRestart:
      HelperObjectStep(op);
      break;
    case kHCollect:
    case kHCheck:
      HelperCollectStep(op);
      break;
    default:
      Fail("unknown operation %d", op);
  }
}

// References between the fuzz thread's roots and the helper's slots.
void Run::HelperRefStep(int op) {
  Helper& hp = *g_helper;
  switch (op) {
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
    case kHDrop:
      HelperDrop();
      break;
  }
}

// The lock byte of kHDrop that asks for a parkable drop (HelperParkDrop) instead: with neither
// Lock() asked for (bits 0 and 1 clear) the other bits were never read, and no input of the
// checked-in corpus used this value.
constexpr uint8_t kParkDropByte = 0xFC;

// The helper drops a slot's reference; optionally Lock()s at once, there and here.
void Run::HelperDrop() {
  Helper& hp = *g_helper;
  int h = in_.Index(kHelperSlots);
  uint8_t lock_byte = in_.Byte();
  if (lock_byte == kParkDropByte) {
    HelperParkDrop(h);
    return;
  }
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
}

// ---- a parkable drop ----

namespace {
// The hold's state: the helper's countdown to the destructor that holds (thread-local: only
// the helper's own frees count), and what the fuzz thread reads: reset by the fuzz thread
// while the helper is idle, then written by the helper only (release/acquire below).
thread_local int t_hold_countdown = 0;
std::atomic<bool> g_hold_reached{false};
std::atomic<bool> g_hold_timed_out{false};
constexpr std::chrono::seconds kHoldLimit{5};
}  // namespace

void MaybeHoldForStop() {
  if (t_hold_countdown == 0 || --t_hold_countdown != 0) return;
  // Release: the fuzz thread's acquire load then sees the frees counted before the hold.
  g_hold_reached.store(true, std::memory_order_release);
  auto deadline = std::chrono::steady_clock::now() + kHoldLimit;
  while (!brc::testing::StopRequestedForTesting()) {
    if (std::chrono::steady_clock::now() > deadline) {
      // Relaxed: read after the fuzz thread has waited for the command to finish.
      g_hold_timed_out.store(true, std::memory_order_relaxed);
      return;
    }
    std::this_thread::yield();
  }
}

// kHDrop with the lock byte kParkDropByte: the helper drops slot h inside brc::ParkableFrees,
// and its k-th destructor of the cascade (k from the input) holds until a stop of the world
// waits for it; the fuzz thread meanwhile runs CollectYoung(), Collect() or a StopTheWorld
// (from the input), and the helper then finishes the cascade. The objects dying (the model's
// Settle of the drop) leave the collector's view as their frees begin, and what they still
// reference counts as referenced from outside: so the collection collects exactly what the
// model collects both before the drop and after it, whenever those agree; where they differ
// (what the dying objects alone keep alive), how far the cascade got decides, and a
// StopTheWorld runs instead. In that stop nothing may be freed. Afterwards every dying object
// is freed once (Check). Only with no object counted per thread (whether a pass folds one in
// limbo before or after the helper's decrement would be timing).
void Run::HelperParkDrop(int h) {
  Helper& hp = *g_helper;
  uint8_t kb = in_.Byte();
  int what = in_.Index(3);
  static const char* const kWhat[] = {"CollectYoung()", "Collect()", "a StopTheWorld"};
  int id = helper_m_[h];
  bool pool = PoolLive() > 0;
  Trace("helper drops slot[%d] inside ParkableFrees; this thread runs %s during the cascade%s",
        h, kWhat[what], id < 0 ? " (skipped: empty)" : pool ? " (skipped: per-thread)" : "");
  if (id < 0 || pool) return;
  bool young = what == 0, collect = what < 2;
  bool acyclic = collect && ModelAcyclic(young);
  std::vector<int> before_drop = collect ? Unreachable(young) : std::vector<int>{};
  std::vector<bool> was_dead;
  for (const Rec& r : recs_) was_dead.push_back(r.dead);
  helper_m_[h] = -1;
  Settle();
  std::vector<int> dying;
  for (const Rec& r : recs_) {
    if (r.dead && !was_dead[r.id]) dying.push_back(r.id);
  }
  if (collect && Unreachable(young) != before_drop) {
    Trace("  (what the drop leaves unreachable depends on the cascade's progress: a "
          "StopTheWorld instead)");
    collect = false;
  }
  int k = 1 + kb % std::max<int>(1, static_cast<int>(dying.size()));
  Trace("  (%zu objects die; the helper's free number %d holds)", dying.size(), k);
  auto destroyed = [&] {
    int n = 0;
    for (int d : dying) n += R(d).destroyed.load(std::memory_order_relaxed);
    return n;
  };
  // Relaxed: the helper is idle; handing it the command (under its mutex) publishes these.
  g_hold_reached.store(false, std::memory_order_relaxed);
  g_hold_timed_out.store(false, std::memory_order_relaxed);
  uint64_t passes = ThreadPasses();
  hp.Start([&hp, h, k] {
    t_hold_countdown = k;
    {
      brc::ParkableFrees parkable;
      hp.slot[h] = nullptr;
    }
    t_hold_countdown = 0;
  });
  // No safepoint here: the helper's frees never stop the world, and this thread's queue
  // (what the helper drops of its objects) waits for the collection's stop.
  auto deadline = std::chrono::steady_clock::now() + kHoldLimit;
  while (!g_hold_reached.load(std::memory_order_acquire) && !hp.Done()) {
    FUZZ_CHECK(std::chrono::steady_clock::now() < deadline,
               "the helper's parkable drop neither held nor finished within 5 s");
    std::this_thread::yield();
  }
  brc::CollectorStats before = brc::GetCollectorStats();
  absl::StatusOr<brc::CollectResult> res;
  if (collect) {
    res = young ? brc::CollectYoung() : brc::Collect();
  } else {
    brc::StopTheWorld stop;
    int seen = destroyed();
    for (int i = 0; i < 100; ++i) std::this_thread::yield();
    FUZZ_CHECK(destroyed() == seen, "a dying object was freed with the world stopped");
  }
  FUZZ_CHECK(hp.FinishWithin(std::chrono::seconds(10)),
             "the helper's parkable drop did not finish within 10 s");
  passes_run_ += ThreadPasses() - passes;
  FUZZ_CHECK(!g_hold_timed_out.load(std::memory_order_relaxed),
             "the helper's held destructor saw no stop requested within 5 s");
  // Relaxed: the command has finished (FinishWithin's fence).
  bool held = g_hold_reached.load(std::memory_order_relaxed);
  Trace("  (the helper held: %s)", held ? "yes" : "no, it ran fewer frees");
  if (collect) {
    std::string label = std::string(kWhat[what]) + " during the cascade";
    CheckCollection(res, before, young, acyclic, label.c_str());
  }
  Settle();
}

// Objects and WeakRefs made, linked and locked on the helper; a new helper thread.
void Run::HelperObjectStep(int op) {
  Helper& hp = *g_helper;
  switch (op) {
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
  }
}

// A collection, Freeze() or Unfreeze() on the helper; every reference count read there.
void Run::HelperCollectStep(int op) {
  switch (op) {
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
  }
}

}  // namespace brc_fuzz
