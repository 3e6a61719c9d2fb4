// fuzz_objects.cc: the fuzz objects' side of brc_fuzz. What brc calls on them, run on whichever
// thread frees, clears or finalizes the object: the destructor checks the object's magic and
// counts (OnDestroy; in a parkable drop the chosen one then holds for a stop, fuzz_helper.cc),
// Clear() and Finalize() count their calls, and a resurrecting finalizer stores a new
// reference in the run's resurrection list. The weak callbacks' bodies (count their
// runs, hold and drop a reference, or check from inside that their target reads expired). And
// how the fuzzer makes objects and WeakRefs (Run::MakeInto, Run::MakeWeak): the model records
// each one; a tracked Make may run an automatic collection before it constructs, which the
// model replays (Run::AfterMake), and Run::Prime positions that collection at a chosen Make.
// The object types themselves are in fuzz_model.h.
#include <cstdio>
#include <functional>

#include "brc/brc.h"
#include "fuzz_model.h"

namespace brc_fuzz {

// Where finalizers put the objects they resurrect (the current run's list; a root).
std::vector<brc::Ref<FzObject>>* g_resurrected = nullptr;

void OnDestroy(FzObject* ob) {
  if (ob->magic != kMagic) Fail("destructor on an object whose magic is gone (%p)", (void*)ob);
  ob->rec->destroyed.fetch_add(1, std::memory_order_relaxed);
  ob->magic = 0;
  MaybeHoldForStop();  // a parkable drop's chosen destructor (fuzz_helper.cc)
}

void OnClear(FzObject* ob) { ob->rec->clears.fetch_add(1, std::memory_order_relaxed); }

void OnFinalize(FzObject* ob) {
  ob->rec->finalizes.fetch_add(1, std::memory_order_relaxed);
  if (ob->rec->resurrect) g_resurrected->push_back(brc::Ref<FzObject>::NewRef(ob));
}

// ---- making objects and WeakRefs ----

// A callback for a new WeakRef: kind 0 counts its runs; 1 also holds a reference to `held`
// (root or helper slot contents) and drops it when it runs; 2 holds a copy of its own WeakRef
// and checks from inside that the target already reads expired.
CbRec* Run::NewCallback(int kind, std::function<void()>* out, const brc::WeakRef<FzObject>* self,
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

// brc checks whether to collect automatically once every kGcAllocBatch (64, lib/gc_heap.h)
// tracked allocations of a thread. Makes throwaway tracked objects on the calling thread until
// a collection runs (the count is then 0), then 64 - n more: the n-th tracked Make from now
// checks (and, with threshold <= 3, collects). If 64 ever changes, collections just come at
// other Makes: the model follows whatever GetCollectorStats reports.
void Run::Prime(int n) {
  constexpr int kBatch = 64;
  bool collected = false;
  for (int i = 0; i < 2 * kBatch && !collected; ++i) {
    uint64_t before = brc::GetCollectorStats().collections;
    MaybeAutoCollect([] { (void)brc::Make<Dummy>(); });
    collected = brc::GetCollectorStats().collections != before;
  }
  for (int i = 0; i < kBatch - n; ++i) MaybeAutoCollect([] { (void)brc::Make<Dummy>(); });
}

// MaybeAutoCollect's check after a Make (or a Make that threw): if brc collected inside it, the
// model replays that collection, and brc's figures must be the model's.
void Run::AfterMake(const brc::CollectorStats& before) {
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
void Run::MakeInto(brc::Ref<FzObject>* where, int* model_slot, int kind, uint32_t value) {
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

// Names for the trace.
const char* Run::KindName(int kind) {
  static const char* const kNames[] = {"Leaf", "Node", "FNode", "FNode, resurrecting"};
  return kNames[kind];
}

const char* Run::CallbackName(int cb, int held) {
  static char buf[64];
  if (cb == 0) return "";
  if (cb == 1) return ", counting callback";
  if (cb == 3) return ", self-checking callback";
  std::snprintf(buf, sizeof(buf), ", callback holding the object of slot %d", held);
  return buf;
}

// weak[w] = WeakRef(target) with callback kind cb (0 none, 1 counting, 2 counting and
// holding `held`, 3 self-checking); the old weak[w] is dropped (cancelling its callback).
void Run::MakeWeak(int w, const brc::Ref<FzObject>& target, int cb,
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

}  // namespace brc_fuzz
