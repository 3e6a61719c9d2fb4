// fuzz_model.cc: the model that brc_fuzz checks brc against, written from brc's documented
// semantics and nothing else: the reference counts it expects (Counts), the deaths that counting
// causes (Settle, Kill: WeakRefs cleared, callbacks run, children dropped), what a collection
// finds, finalizes, resurrects and frees (Unreachable, ModelCollect), and whether a WeakRef's
// Lock() returns its target (Lockable). It runs on the fuzz thread, or on the helper inside a
// command while the fuzz thread waits for it (a Make there), never on both at once, and never
// touches brc objects. Per-thread counting's part of the model (limbo, merge passes) is in
// fuzz_per_thread.cc, the acyclic check's in fuzz_acyclic.cc.
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
#include <algorithm>
#include <vector>

#include "fuzz_model.h"

namespace brc_fuzz {

Rec* Run::NewRec(bool tracked) {
  if (recs_.size() >= static_cast<size_t>(kMaxObjects)) return nullptr;
  Rec& r = recs_.emplace_back();
  r.id = static_cast<int>(recs_.size()) - 1;
  r.tracked = tracked;
  return &r;
}

// The model's reference counts: roots, helper slots, edges of live objects, the resurrection
// list, references held by pending weak callbacks, and the collector's own references while
// a collection holds its garbage.
std::vector<int> Run::Counts() {
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
int Run::ClearWeakRefsTo(int x) {
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

void Run::Kill(Rec& r) {
  r.dead = true;
  ClearWeakRefsTo(r.id);
  for (int& c : r.child) c = -1;
}

// Replaces WeakRef w's model; a callback the old one registered is cancelled.
void Run::SetWeakModel(int w, WeakModel m) {
  if (wm_[w].cb != nullptr) wm_[w].cb->pending = false;
  wm_[w] = m;
}

// Reference counting: every object whose count is 0 dies, recursively; one counted per
// thread only goes into limbo (a merge pass frees it).
void Run::Settle() {
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
std::vector<int> Run::Unreachable(bool young) {
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
Run::Collected Run::ModelCollect(bool young) {
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

// Whether the model says weak[w].Lock() returns its target now.
bool Run::Lockable(int w) {
  int t = wm_[w].target;
  return t >= 0 && !R(t).dead && !wm_[w].cleared;
}

}  // namespace brc_fuzz
