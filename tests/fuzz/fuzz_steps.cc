// fuzz_steps.cc: the operations the fuzz thread runs itself, one per opcode byte (Run::Step).
// Step reads the opcode byte and dispatches it: the bytes kExtBase..255 to the per-thread
// counting operations (fuzz_per_thread.cc), the helper's operations to HelperStep
// (fuzz_helper.cc), and the rest, by what they act on, to the functions below: the roots
// (make objects into them, drop, copy, set a field, MakeImmortal, take an object back from the
// resurrection list), the edges between objects (link, unlink, walk), WeakRefs (make, drop, copy,
// Lock()), a constructor that throws, and the collector (Collect, CollectYoung, Freeze/Unfreeze,
// GetReferents/GetReferrers, ReleaseFreeMemory, SetCollectorConfig with automatic collections).
// Each operation reads its argument bytes in a fixed order (a missing byte reads as 0), does it
// on brc, applies it to the model, and checks what brc returned at once; Run::Go then checks the
// whole state (fuzz_checks.cc). The opcode byte also carries one flag: the low bit of its
// quotient by kNumOps asks for a reset of the acyclic check's schedule before an operation that
// may collect (Step, MayCollect).
#include <algorithm>
#include <functional>

#include "brc/brc.h"
#include "brc/testing.h"
#include "fuzz_model.h"

namespace brc_fuzz {

// Whether `op` may run a collection (explicitly, or automatically inside a tracked Make).
bool Run::MayCollect(int op) {
  switch (op) {
    case kMakeNode: case kThrow: case kCollect: case kConfig: case kHMake: case kHCollect:
    case kCollectYoung:
      return true;
    default:
      return false;
  }
}

// Reads one opcode byte and runs its operation.
void Run::Step() {
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
    case kMakeNode:
    case kDropRoot:
    case kCopyRoot:
    case kSetValue:
    case kImmortal:
    case kTakeResurrected:
      RootStep(op);
      break;
    case kLink:
    case kUnlink:
    case kWalk:
      EdgeStep(op);
      break;
    case kMakeWeak:
    case kDropWeak:
    case kLockWeak:
    case kCopyWeak:
      WeakStep(op);
      break;
    case kThrow:
      ThrowStep();
      break;
    case kCollect:
    case kCollectYoung:
    case kFreeze:
    case kInspect:
    case kReleaseMemory:
    case kConfig:
      CollectorStep(op);
      break;
    default:
      HelperStep(op);
      break;
  }
}

// The roots: objects made into them, dropped, copied, changed, made immortal, taken back.
void Run::RootStep(int op) {
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
    case kSetValue: {
      int a = in_.Index(kRoots);
      uint32_t v = in_.Byte();
      Trace("root[%d]->value = %u", a, v);
      if (!roots_[a]) break;
      roots_[a]->value = v;
      R(root_m_[a]).value = v;
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
  }
}

// The edges: a root's object's child slots.
void Run::EdgeStep(int op) {
  switch (op) {
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
  }
}

// WeakRefs: made (with a callback or not), dropped, locked, copied.
void Run::WeakStep(int op) {
  switch (op) {
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
  }
}

// A constructor that throws, optionally after making a WeakRef to its own object and, for a
// tracked one, after taking a Ref to another object.
void Run::ThrowStep() {
  bool tracked = in_.Byte() & 1;
  int weak_mode = in_.Index(3), w = in_.Index(kWeaks), hold = in_.Index(kRoots);
  if (!kThrowWeakToSelfEnabled) weak_mode = 0;
  Trace("Make<%s> throws (weak to this: %s into weak[%d]; holds root[%d])",
        tracked ? "ThrowNode" : "ThrowLeaf",
        weak_mode == 0 ? "none" : weak_mode == 1 ? "plain" : "with callback", w, hold);
  Rec* r = NewRec(tracked);
  if (r == nullptr) return;
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
}

// The collector: explicit collections, Freeze/Unfreeze, inspection, returning memory, and its
// configuration.
void Run::CollectorStep(int op) {
  switch (op) {
    case kCollect:
    case kCollectYoung: {
      bool young = op == kCollectYoung;
      Trace(young ? "CollectYoung()" : "Collect()");
      bool acyclic = ModelAcyclic(young);
      brc::CollectorStats before = brc::GetCollectorStats();
      absl::StatusOr<brc::CollectResult> res = young ? brc::CollectYoung() : brc::Collect();
      CheckCollection(res, before, young, acyclic, "Collect()");
      break;
    }
    case kFreeze: {
      bool freeze = in_.Byte() & 1;
      Trace(freeze ? "Freeze()" : "Unfreeze()");
      absl::StatusOr<uint64_t> n = freeze ? brc::Freeze() : brc::Unfreeze();
      CheckFreeze(freeze, n);
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
    case kConfig:
      ConfigStep();
      break;
    case kReleaseMemory:
      Trace("ReleaseFreeMemory()");
      brc::ReleaseFreeMemory();
      break;
  }
}

// DisableCollector(), or SetCollectorConfig and EnableCollector() with the next automatic
// collection primed to come at a chosen tracked Make on each thread.
void Run::ConfigStep() {
  uint8_t b = in_.Byte();
  if (b % 4 == 0) {
    Trace("DisableCollector()");
    brc::DisableCollector();
    auto_collect_ = false;
    return;
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
}

}  // namespace brc_fuzz
