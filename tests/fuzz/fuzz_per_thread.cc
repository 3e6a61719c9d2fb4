// fuzz_per_thread.cc: per-thread counting (brc/hot.h) in brc_fuzz. The model's side: an object
// counted per thread whose count reaches 0 is not freed but waits "in limbo" (LimboIds) until a
// merge pass frees it (Free, ModelPass; the rule is spelled out with the others in
// fuzz_model.cc); PoolLive is what PerThreadConfig::max_objects limits; ModelSwitch is the
// status CountPerThread must return. The model learns that a pass ran at one of the fuzz
// thread's safepoints, or while it polled for the helper, from its GetThreadStats() (Safepoint,
// ApplyPasses): it never guesses timing. The operations: the opcode bytes kExtBase..255
// (ExtStep) switch objects on either thread, inside a BlockingScope (refused), under one held
// brc::StopTheWorld, or through the contention detector (DetectorSwitch); run merge passes on
// either thread; drop a reference and Lock() a WeakRef before the safepoint; and set the
// configuration, valid or not (PtConfig).
#include <vector>

#include "brc/brc.h"
#include "brc/testing.h"
#include "fuzz_model.h"

namespace brc_fuzz {

// ---- the model ----

// Objects counted per thread whose count is 0 and that no pass has freed yet.
std::vector<int> Run::LimboIds() {
  std::vector<int> count = Counts();
  std::vector<int> out;
  for (const Rec& r : recs_) {
    if (!r.dead && r.pt && !r.immortal && count[r.id] == 0) out.push_back(r.id);
  }
  return out;
}

// The objects a fold found dead are freed (their weak references cleared, callbacks run,
// children dropped), and counting follows.
void Run::Free(const std::vector<int>& ids) {
  for (int id : ids) {
    Trace("  (#%d, counted per thread, freed by a merge pass)", id);
    Kill(R(id));
  }
  Settle();
}

// A merge pass run by RunPass (MergePerThreadCounts, a due pass at a Safepoint): it folds and
// frees, and folds again as long as the frees left more in limbo (the last drops of a chain
// make another pass due, and RunPass runs it before it returns).
void Run::ModelPass() {
  for (std::vector<int> ids = LimboIds(); !ids.empty(); ids = LimboIds()) Free(ids);
}

// Live objects counted per thread: what brc's id pool holds (limbo and immortal included),
// which PerThreadConfig::max_objects limits.
int Run::PoolLive() {
  int n = 0;
  for (const Rec& r : recs_) n += (!r.dead && r.pt) ? 1 : 0;
  return n;
}

// CountPerThread(#id) returned `st` on an attached thread outside a BlockingScope: the
// model's status, and the switch.
void Run::ModelSwitch(int id, const absl::Status& st, const char* who) {
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
uint64_t Run::ThreadPasses() { return brc::GetThreadStats().merge_passes; }
// brc::Safepoint() on the fuzz thread; a pass it runs waits in passes_run_ for ApplyPasses().
void Run::Safepoint() {
  uint64_t before = ThreadPasses();
  brc::Safepoint();
  passes_run_ += ThreadPasses() - before;
}

// Applies to the model the passes that this thread ran since the last call (passes_run_).
void Run::ApplyPasses() {
  if (passes_run_ == 0) return;
  Trace("  (a merge pass ran on this thread at a safepoint)");
  passes_run_ = 0;
  ModelPass();
}

// ---- the operations ----

// The per-thread counting operations (brc/hot.h); the opcode byte was kExtBase + op.
void Run::ExtStep(int op) {
  switch (op) {
    case kPtSwitch:
    case kPtMerge:
    case kPtConfig:
    case kPtDropLock:
      PtStep(op);
      break;
    case kPtSwitchStopped:
      PtSwitchStopped();
      break;
    case kHPtSwitch:
    case kHPtMerge:
    case kHDropSwitch:
      HelperPtStep(op);
      break;
    default:
      Fail("unknown extended operation %d", op);
  }
}

// The fuzz thread's own per-thread counting operations, one at a time.
void Run::PtStep(int op) {
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
  }
}

// Two switches and a pass under one held brc::StopTheWorld.
void Run::PtSwitchStopped() {
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
}

// Per-thread counting on the helper, and the fuzz thread's switch right after a helper's drop.
void Run::HelperPtStep(int op) {
  Helper& hp = *g_helper;
  switch (op) {
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

}  // namespace brc_fuzz
