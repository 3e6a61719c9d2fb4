// fuzz_acyclic.cc: brc_fuzz's model of the acyclic check. ModelAcyclic is the model's answer
// (is there a cycle among the candidates?); ResetAcyclic and CheckAcyclic keep the model of
// brc's schedule for when a collection tries the check; CheckAcyclicResult (explicit
// collections) and CheckAcyclicStats (automatic ones, inside a Make) check every answer.
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
#include <algorithm>
#include <utility>
#include <vector>

#include "brc/brc.h"
#include "brc/testing.h"
#include "fuzz_model.h"

namespace brc_fuzz {

// The model's answer: no cycle among the candidates' references to candidates.
bool Run::ModelAcyclic(bool young) {
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
void Run::ResetAcyclic() {
  brc::testing::ResetAcyclicScheduleForTesting();
  sched_.fill(AcyclicSchedule{});
}

// One collection of kind `young` ran and reported `acyclic` (stats `before` and `after` it);
// the model's candidate graph was `model` (true: no cycle) when it ran.
void Run::CheckAcyclic(const brc::CollectorStats& before, const brc::CollectorStats& after,
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
void Run::CheckAcyclicResult(const brc::CollectorStats& before, bool young, bool acyclic,
                             bool model) {
  brc::CollectorStats after = brc::GetCollectorStats();
  FUZZ_CHECK(after.collections == before.collections + 1,
             "one explicit collection counted as %llu",
             (unsigned long long)(after.collections - before.collections));
  CheckAcyclic(before, after, young, acyclic, model);
}

// An automatic collection: its result is seen only in the stats.
void Run::CheckAcyclicStats(const brc::CollectorStats& before, const brc::CollectorStats& after,
                            bool young, bool model) {
  FUZZ_CHECK(after.acyclic_collections - before.acyclic_collections <= 1,
             "one automatic collection counted as %llu acyclic ones",
             (unsigned long long)(after.acyclic_collections - before.acyclic_collections));
  CheckAcyclic(before, after, young,
               after.acyclic_collections != before.acyclic_collections, model);
}

}  // namespace brc_fuzz
