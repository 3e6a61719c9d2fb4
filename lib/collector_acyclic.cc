// The acyclic check: a collection that can prove, with one walk, that its examined objects
// hold no garbage. (Overview of the collector's files: collector_internal.h.)
//
// Garbage that reference counting has not freed needs a cycle: in a garbage set, every member
// has a reference count of at least one (count zero is freed, or waits in a queue and is a
// root: collector_mark.cc, MarkWith) and all its references come from other members, so
// following referrers from member to member never ends, and in a finite set it must come
// back. So when the candidates' references among themselves form no cycle, nothing is garbage.
// One walk over the candidates proves it, cheaper than the counting passes: one trace per
// candidate instead of two, no scratch count (so no owner to restore), and for most objects
// no stack. What a program builds (lists, trees, objects made from their parts) usually has
// no cycle, above all in the young set; a heap with parent links or rings has one, and the
// walk stops at the first it finds.
//
// The walk meets the candidates page by page, in allocation order as far as pages tell it
// (oldest page first, each in address order) or in the exact reverse (newest first).
//  * In order: a candidate whose references all lead to marked candidates or to no candidate
//    gets the epoch at once (marked: reachable, as marking would leave it). While every
//    candidate is like that, the walk's order is a topological order of the references, so
//    there is no cycle. Which order makes this the common case depends on the program: a
//    container made from its parts references older objects (oldest first suits it), a tree
//    built top down or a list grown at its tail references newer ones (newest first). The
//    schedule (collector.cc) starts oldest first and turns the walk around when most of a
//    check went depth first.
//  * Depth first, from a candidate that references an unmarked one: a candidate entered gets
//    the epoch and kGcOnPath, and its exit goes on the stack below its references (the pointer
//    with bit 0 set); popping the exit clears kGcOnPath. A reference to a candidate with
//    kGcOnPath leads to an object on the path from where this walk began (everything pushed
//    above an exit is popped before it): a cycle. Marked candidates without the bit are done
//    and have no path back to the current one.
// In a full collection a candidate entered while young also gets kGcWasYoung, so that a failed
// walk can be undone exactly. When the walk fails (a cycle, or a stack that cannot grow), the
// collection undoes it and counts as usual, and the schedule skips the check for a while
// (collector.cc).
#include <cstdint>
#include <cstring>

#include "collector_internal.h"
#include "mark_stack.h"
#include "thread_state.h"

namespace brc::detail {
namespace {

// Calls fn(object) for each block of `pages` that a collection of this kind looks at, until fn
// returns false.
template <bool kYoung, bool kNewestFirst, class Fn>
inline bool ForEachBlockUntil(const PageList& pages, Fn&& fn) {
  // Oldest first: pages last to first (a heap lists its young pages newest first, and
  // YoungPages keeps that order), each in address order, the order a page is bump-allocated
  // in (or reused in, after frees in reverse order). Newest first is the exact reverse.
  if constexpr (kNewestFirst) {
    for (GcPage* p : pages) {
      if (!ForEachBlockOfBackward(p, kYoung, fn)) return false;
    }
  } else {
    for (auto it = pages.rbegin(); it != pages.rend(); ++it) {
      if (!ForEachBlockOf(*it, kYoung, fn)) return false;
    }
  }
  return true;
}

// True when the candidates of `pages` hold no cycle: then each has the epoch, *scanned counts
// them, and nothing else changed (but kGcWasYoung, see ClearWasYoung). False when a cycle
// was found or the stack could not grow: then UndoAcyclicCheck, with *scanned the objects
// marked so far. *deep counts the candidates the depth-first part marked.
template <bool kYoung, bool kNewestFirst>
bool CheckAcyclicOf(const PageList& pages, uint32_t epoch, MarkStack* stack, uint64_t* scanned,
                    uint64_t* deep) noexcept {
  StackVisitor v(stack);
  uint64_t n = 0;
  uint64_t entered = 0;
  // Marks a candidate (its bits and epoch as read), on the path or not.
  auto Mark = [&](Object* e, uint8_t bits, uint16_t seen, uint8_t on_path) {
    uint8_t set = on_path | (kYoung || seen != 0 ? 0 : kGcWasYoung);
    if (set != 0) Rc::gc_bits(e).store(bits | set, std::memory_order_relaxed);
    GcSetEpoch(e, epoch);  // world stopped
    ++n;
  };
  auto exit_of = [](Object* e) {
    return reinterpret_cast<Object*>(reinterpret_cast<uintptr_t>(e) | 1);
  };
  // Enters a candidate: marks it on the path, pushes its exit and traces it.
  auto Enter = [&](Object* e, uint8_t bits, uint16_t seen) {
    Mark(e, bits, seen, kGcOnPath);
    ++entered;
    v.Push(exit_of(e));
    TraceObject(e, v);
  };
  // True when `ob` (a reference) needs entering: a candidate not marked yet. (Marked ones
  // carry the epoch; only they can carry kGcOnPath.)
  auto to_enter = [&](const Object* ob) {
    return IsCandidateOf<kYoung>(GcBitsOf(ob), GcEpochOf(ob), epoch);
  };
  bool acyclic = ForEachBlockUntil<kYoung, kNewestFirst>(pages, [&](Object* start) {
    uint8_t start_bits = GcBitsOf(start);
    uint16_t start_seen = GcEpochOf(start);
    if (!IsCandidateOf<kYoung>(start_bits, start_seen, epoch)) return true;
    // In order: an object whose references all lead to marked objects or to no candidate is
    // done at once (the walk order is then a topological order so far). Most are, when the
    // walk meets objects in the order they were made and objects reference older ones.
    TraceObject(start, v);
    bool in_order = true;
    for (Object** r = v.bottom(); in_order && r != v.top(); ++r) in_order = !to_enter(*r);
    if (in_order) {
      v.Clear();
      Mark(start, start_bits, start_seen, 0);
      return !v.out_of_memory();  // a reference may be missing: no proof
    }
    // Out of order (or its own referent): a depth-first walk from it, as if entered, with its
    // references (on the stack already) above its exit.
    v.Push(nullptr);  // room for the exit
    if (v.out_of_memory()) return false;
    Object** bottom = v.bottom();
    std::memmove(bottom + 1, bottom,
                 static_cast<std::size_t>(v.top() - 1 - bottom) * sizeof(Object*));
    bottom[0] = exit_of(start);
    Mark(start, start_bits, start_seen, kGcOnPath);
    ++entered;
    while (!v.empty()) {
      Object* e = v.Pop();
      auto tag = reinterpret_cast<uintptr_t>(e);
      if (tag & 1) {  // the exit of an object whose references are all done
        GcSetBits(reinterpret_cast<Object*>(tag - 1), 0, kGcOnPath);  // world stopped
        continue;
      }
      uint8_t bits = GcBitsOf(e);
      uint16_t seen = GcEpochOf(e);
      if (IsCandidateOf<kYoung>(bits, seen, epoch)) {
        Enter(e, bits, seen);
      } else if (bits & kGcOnPath) {
        return false;  // marked and on the path: a cycle
      }  // else done already, or not examined
    }
    return !v.out_of_memory();  // a reference may be missing: no proof
  });
  *scanned = n;  // on failure: how many it marked, for the undo
  *deep = entered;
  return acyclic;
}

}  // namespace

// After a full collection's successful mark or acyclic check: clears kGcWasYoung, which only
// objects young before it can carry (they lie in the young pages). No allocation: walks the
// heaps' young lists directly.
void ClearWasYoung() noexcept {
  ForEachThreadState([](ThreadState* ts) {
    ForEachYoungPage(ts->heap, [](GcPage* p) {
      ForEachBlockOf(p, /*from_young_low=*/true, [](Object* ob) {
        if (GcBitsOf(ob) & kGcWasYoung) GcSetBits(ob, 0, kGcWasYoung);
        return true;
      });
    });
  });
}

namespace {

// After a CheckAcyclic that returned false having marked `marked` objects: every one of them
// has its epoch back (0 if it was young, else one that reads as old) and neither of its bits.
// The walk stops at the last of them: a check that met a cycle early (a heap of rings) costs
// no walk of the whole heap to undo.
template <bool kYoung, bool kNewestFirst>
void UndoAcyclicCheckOf(const PageList& pages, uint32_t epoch, uint64_t marked) noexcept {
  ForEachBlockUntil<kYoung, kNewestFirst>(pages, [&](Object* ob) {
#ifndef BRC_DEBUG
    if (marked == 0) return false;
#endif
    uint8_t bits = GcBitsOf(ob);
    if ((bits & kGcTracked) && GcEpochOf(ob) == epoch) {
      GcSetEpoch(ob, kYoung || (bits & kGcWasYoung) ? 0 : kGcEpochOld);
      GcSetBits(ob, 0, kGcOnPath | kGcWasYoung);
      --marked;
    }
    return true;
  });
  // Nothing but the check gives an object the running epoch before counting starts (so the
  // walk above could stop at the last one). BRC_DEBUG walks all and checks it.
  BRC_CHECK(marked == 0, "the acyclic check's undo found other objects with its epoch");
}

}  // namespace

bool CheckAcyclic(const PageList& pages, bool young, uint32_t epoch, MarkStack* stack,
                  uint64_t* scanned, AcyclicWalk* walk) noexcept {
  uint64_t* deep = &walk->deep;
  if (walk->newest_first) {
    return young ? CheckAcyclicOf<true, true>(pages, epoch, stack, scanned, deep)
                 : CheckAcyclicOf<false, true>(pages, epoch, stack, scanned, deep);
  }
  return young ? CheckAcyclicOf<true, false>(pages, epoch, stack, scanned, deep)
               : CheckAcyclicOf<false, false>(pages, epoch, stack, scanned, deep);
}

void UndoAcyclicCheck(const PageList& pages, bool young, bool newest_first, uint32_t epoch,
                      uint64_t marked) noexcept {
  // The check's own order: what it marked lies mostly near where it started.
  if (newest_first) {
    young ? UndoAcyclicCheckOf<true, true>(pages, epoch, marked)
          : UndoAcyclicCheckOf<false, true>(pages, epoch, marked);
  } else {
    young ? UndoAcyclicCheckOf<true, false>(pages, epoch, marked)
          : UndoAcyclicCheckOf<false, false>(pages, epoch, marked);
  }
}

}  // namespace brc::detail
