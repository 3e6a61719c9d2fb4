// fuzz_checks.cc: what brc_fuzz checks, and when. After every operation Run::Go calls Check,
// which compares the whole state with the model; some operations check what brc returned at
// once: Freeze()/Unfreeze()'s counts (CheckFreeze), GetReferents/GetReferrers (Inspect) and a
// collection's figures (CheckCollectResult). At the end of each input Teardown takes the graph
// apart so that every object dies, checking as it goes. A failed check aborts through Fail.
//
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
// End of each input: the helper drops its slots, the resurrection list and the callbacks that
// hold references are dropped, then the roots; Unfreeze(); collections until the model says only
// immortal objects are left (after each, immortal objects and leaves drop their children, and a
// MergePerThreadCounts frees what that left in limbo, a chain of per-thread objects included);
// each immortal object is then freed with brc::testing::FreeImmortalForTesting, so that
// LeakSanitizer stays quiet and "every object created was destroyed exactly once" holds with no
// exception; finally every WeakRef must read expired and every callback count match.
#include <algorithm>
#include <iterator>
#include <vector>

#include "brc/brc.h"
#include "brc/testing.h"
#include "fuzz_model.h"

namespace brc_fuzz {

// ---- after every operation ----

void Run::Check(const char* when) {
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

// Freeze() or Unfreeze() returned n: the model's tracked live objects change state.
void Run::CheckFreeze(bool freeze, const absl::StatusOr<uint64_t>& n) {
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

void Run::CheckCollection(const absl::StatusOr<brc::CollectResult>& res,
                          const brc::CollectorStats& before, bool young, bool acyclic,
                          const char* what) {
  FUZZ_CHECK(res.ok(), "%s failed: %s", what, res.status().ToString().c_str());
  FUZZ_CHECK(res->kind == (young ? brc::CollectKind::kYoung : brc::CollectKind::kFull),
             "CollectResult::kind is not the kind asked for");
  CheckAcyclicResult(before, young, res->acyclic, acyclic);
  Safepoint();
  Collected c = ModelCollect(young);
  CheckCollectResult(*res, c);
}

// ---- the end of each input ----

void Run::Teardown() {
  Trace("-- teardown --");
  TeardownDrop();
  // Round 0 collects the garbage; immortal objects then drop what they reference, which round 1
  // collects; objects that finalizers resurrect are dropped before the next round (each object
  // is finalized once, so they die in the next). Round 3 must find nothing left.
  for (int round = 0; round < 4; ++round) {
    if (!TeardownRound()) break;
  }
  TeardownFree();
}

// The helper's slots, the resurrection list, the callbacks that hold references and the roots
// are dropped; then Unfreeze().
void Run::TeardownDrop() {
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
}

// One round: a collection, then immortal objects and leaves drop what they reference, and a
// merge pass. Returns whether another round is needed.
bool Run::TeardownRound() {
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
  return left;
}

// What is left must be immortal: each is freed; then every WeakRef is dropped, and every
// callback and object must have run and died as often as the model says.
void Run::TeardownFree() {
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

}  // namespace brc_fuzz
