// objects.cc: what records a run's objects and sorts what a step sees. The life table marks each
// object alive when its constructor ends and destroyed in its destructor, and counts Clear() and
// Finalize(): a second destruction, a Clear() on a dead object or a second Finalize() is a
// violation at once, and RunOnce's checks find the objects never destroyed. The weak slots'
// callbacks count their runs (each must run exactly once, a cancelled one never). Try and
// CheckStatus hold the documented ways to fail: std::bad_alloc from the calls that throw, OK or
// ResourceExhausted from those that return a status, each only when an allocation was failed
// and (one allocation failing) only once a run; anything else is a violation.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "oom_sweep.h"

namespace brc_oom {

// ---------------------------------------------------------------------------------------------
// The life table

std::atomic<uint8_t> g_life[kMaxObjects];
Kind g_kind[kMaxObjects];
std::atomic<uint8_t> g_clears[kMaxObjects];
std::atomic<uint8_t> g_finalizes[kMaxObjects];
std::atomic<int> g_next_id{0};
Ref<Object> g_resurrected;

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
// Weak references and their callbacks

Scenario* g_s = nullptr;

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
// What a step may see

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

void DoCollect() { TryStatus("brc::Collect", &brc::Collect); }
void DoCollectYoung() { TryStatus("brc::CollectYoung", &brc::CollectYoung); }

}  // namespace brc_oom
