// Marking: which tracked objects are garbage, found with the world stopped.
// (Overview of the collector's files: collector_internal.h.)
//
// The candidates are the tracked, unfrozen objects a collection examines: all of them in a
// full collection, only the young ones in a young collection. An object is young until a
// collection has examined it: its mark epoch (brc/detail/gc_word.h) is 0 from its construction
// until the first collection marks it (reachable) or takes it (garbage), and never 0 again, so
// promotion needs no pass of its own. On the candidates:
//  1. Count: trace each candidate and count, in each target's scratch (the owner half of its
//     header, which keeps the owner id as its base: no zeroing pass), the references it
//     receives from other candidates.
//  2. Mark: scan the candidates; put each one's owner back; one whose reference count exceeds
//     its internal count is referenced from outside the candidates (a stack, a global, an
//     untracked object, another thread, or, in a young collection, an old object): it is a
//     root. Everything reachable from a root through candidates gets this collection's epoch
//     (and its owner back, if the scan has not reached it yet). Reaching a non-candidate (an
//     old object in a young collection) stops there: its header is read, never written.
//  3. Collect: the candidates without the epoch are garbage (they get the epoch too: old if
//     they survive); only when there are any.
//
// Why no write barrier: a young collection must not free a young object that an old one still
// references. That reference is in the young object's reference count but not in its internal
// count (old objects are not traced), so the young object is a root. The count check is exact:
// counts are merged (every thread drained its queue, parked owners' queues are merged below),
// and no thread changes a count while the world is stopped.
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <new>
#include <vector>

#include "brc/refcount.h"
#include "brc/thread.h"
#include "collector_internal.h"
#include "mark_stack.h"
#include "no_destroy.h"
#include "parallel.h"
#include "thread_state.h"

namespace brc::detail {
namespace {

// The number of the running collection (kGcEpochFirst .. kGcEpochLimit - 1), written into an
// object's header when it is marked reachable (brc/detail/gc_word.h lists the other values).
// Written by the collecting thread under the collection lock; read by marking workers
// (ParallelFor orders it).
uint32_t g_epoch = kGcEpochFirst - 1;

// ---- the scratch count, in the owner half of the header (brc/detail/gc_word.h) ----

// The owner of a tracked object outside a collection: none when its count is merged, else the
// thread whose heap holds it.
// A per-thread-counted object's owner half is kPerThreadOwner (2^31), and its scratch count
// stays above it: thread ids are below 2^20, and 2^31 - 2^20 references would be needed to
// reach it from below.
inline uint32_t OwnerFor(const Object* ob) noexcept {
  int32_t shared = Rc::shared(ob).load(std::memory_order_relaxed);
  if ((shared & kStateMask) == kStateMerged) return kNoOwner;
  if (Rc::Owner(ob) >= kPerThreadOwner) return kPerThreadOwner;
  return GcPageOf(ob)->heap->tid;
}
// Counts one more reference from another candidate. The scratch starts at the owner id (a few
// thousand at most) and cannot carry into the local half: that would take 2^32 references from
// other tracked objects, 128 GiB of them.
// A relaxed whole-word store: the world is stopped and only one marking thread writes the
// word (the one holding its part, with several workers: see "Parts" below).
inline void AddScratch(Object* ob) noexcept {
  std::atomic<uint64_t>& b = Rc::biased(ob);
  b.store(b.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}
// Puts the owner back and returns the references counted since the scratch was based, 0 if it
// was restored already (so it is safe to call twice). World stopped.
inline uint32_t TakeScratch(Object* ob) noexcept {
  uint64_t biased = Rc::biased(ob).load(std::memory_order_relaxed);
  uint32_t owner = OwnerFor(ob);
  Rc::SetBiased(ob, owner, LocalOf(biased));
  return OwnerOf(biased) - owner;
}

#ifdef BRC_DEBUG
// The owner must come back as gc_word.h says, or the collector would hand the object to the
// wrong thread (and count its references wrong): checked before any scratch is counted.
void CheckOwnerRestorable(const Object* ob) noexcept {
  if (BRC_UNLIKELY(Rc::Owner(ob) != OwnerFor(ob))) {
    ReportMisuse(ob, "internal error: a tracked object's owner is neither the thread of its "
                     "heap page nor, when its count is merged, none");
  }
}
#endif

[[noreturn]] void ReportOvercount(Object* ob) {
  ReportMisuse(ob, "a Trace() reports more references to this object than its reference count "
                   "(a Trace visits a reference its object does not hold, or visits one twice)");
}

// The mark pass's look at one candidate of a page of thread `tid`'s heap: puts its owner back
// and returns its true count (Rc::RefCount, inline, from one load of each word; immortal and
// saturated objects read as a count no Trace can reach) and, in *internal, the references
// counted from other candidates. Checked for every candidate, marked already or not, since a
// Trace that over-reports would otherwise let the collector free an object still referenced.
inline int64_t Settle(Object* ob, uint32_t tid, uint32_t* internal) noexcept {
  uint64_t biased = Rc::biased(ob).load(std::memory_order_relaxed);
  int32_t shared = Rc::shared(ob).load(std::memory_order_relaxed);
  uint32_t owner = (shared & kStateMask) == kStateMerged ? kNoOwner
                   : OwnerOf(biased) >= kPerThreadOwner     ? kPerThreadOwner
                                                            : tid;
  uint32_t local = LocalOf(biased);
  Rc::SetBiased(ob, owner, local);
  *internal = OwnerOf(biased) - owner;
  // Counted per thread: the local half is the id, and the collection's fold put every slot
  // into the shared word.
  if (BRC_UNLIKELY(owner == kPerThreadOwner)) local = 0;
  int32_t count = shared >> kSharedShift;
  int64_t total = local == kLocalImmortal || count >= kSharedSaturationMin
                      ? INT64_MAX
                      : int64_t{local} + count - ((shared & kStateMask) == kStateQueued ? 1 : 0);
  if (BRC_UNLIKELY(total < *internal)) ReportOvercount(ob);
  return total;
}

// Calls fn(object) for each block of pages [begin, end) that a collection of this kind looks
// at: from young_low in a young one, else from the first block; up to the bump.
template <bool kYoung, class Fn>
inline void ForEachBlock(const PageList& pages, std::size_t begin, std::size_t end, Fn&& fn) {
  for (std::size_t i = begin; i < end; ++i) {
    GcPage* p = pages[i];
    ForEachBlockOf(p, kYoung, [&](Object* ob) {
      fn(ob, p);
      return true;
    });
  }
}

// Walks the candidates of pages [begin, end).
template <bool kYoung, class Fn>
void ForEachCandidate(const PageList& pages, std::size_t begin, std::size_t end, uint32_t epoch,
                      Fn&& fn) {
  ForEachBlock<kYoung>(pages, begin, end, [&](Object* ob, GcPage*) {
    if (IsCandidateOf<kYoung>(GcBitsOf(ob), GcEpochOf(ob), epoch)) fn(ob);
  });
}

// The mark pass's walk: the candidates, and (in a young collection) those that marking has
// reached already, which carry this collection's epoch and still hold their scratch. Calls
// fn(object, its epoch, tid of the page's heap).
template <bool kYoung, class Fn>
void ForEachToSettle(const PageList& pages, std::size_t begin, std::size_t end, uint32_t epoch,
                     Fn&& fn) {
  ForEachBlock<kYoung>(pages, begin, end, [&](Object* ob, GcPage* p) {
    if ((GcBitsOf(ob) & (kGcTracked | kGcFrozen)) != kGcTracked) return;
    uint16_t ob_epoch = GcEpochOf(ob);
    if (kYoung && ob_epoch != 0 && ob_epoch != epoch) return;
    fn(ob, ob_epoch, p->heap->tid);
  });
}

// ---- parallel marking: parts ----
//
// With several workers the pages are split into parts, contiguous runs of the page list, one
// per worker (at most kMaxParts), and only the worker holding a part writes the headers of the
// objects on it: their scratch counts in the counting pass, their marks in the marking pass.
// A reference into another part is mailed to that part: counted by the part's worker once the
// counting pass is over, or marked from in the next round of the marking pass, which goes on in
// rounds until no mail is left (after kMaxRounds the collecting thread finishes alone, so a
// graph that keeps crossing parts costs a few rounds, not one per crossing). Every write is
// then a plain store. Shared headers would need an atomic read-modify-write per reference and
// per mark instead: on the KVM guests measured (AMD family 26) such an instruction costs about
// 5 ns, 20 times a plain add, and two workers that used them were slower than one.
constexpr int kMaxParts = 64;
constexpr int kMaxRounds = 8;
// The rounds the last counting mark took (for tests). Collection lock.
int g_mark_rounds = 0;

// References from one part into another. Its memory comes from mmap like a mark stack's (no
// Allocator may run while scratch counts are in use). It is kept between collections, but
// unlike a stack (which holds a path, about as deep from one collection to the next) a box
// holds a share of the heap's crossing references, so one large collection would leave it
// large for good: a box that held less than a quarter of its memory in a collection gives it
// back (ShrinkMailboxes).
struct Mailbox {
  MarkStack stack;
  std::size_t size = 0;
  std::size_t peak = 0;  // the most it held in this collection
  bool Push(Object* r) noexcept {
    if (BRC_UNLIKELY(size == stack.capacity) && !stack.Grow(size)) return false;
    stack.data[size++] = r;
    return true;
  }
  void Emptied() noexcept {
    peak = std::max(peak, size);
    size = 0;
  }
};

// Two sets of mailboxes, [set][from * kMaxParts + to]: a round reads one set and writes the
// other. A box is written by its `from` part's worker during a pass and read by its `to`
// part's worker after it (ParallelFor's join orders them). Collection lock.
Mailbox g_boxes[2][kMaxParts * kMaxParts];
// Per part: a push failed for want of memory (written by the part's worker).
bool g_mail_failed[kMaxParts];
// The most parts any collection used since the boxes were last shrunk: the boxes beyond the
// current parts may hold memory too.
int g_parts_used = 0;

inline Mailbox& Box(int set, int from, int to) noexcept {
  return g_boxes[set][from * kMaxParts + to];
}
// The part of a candidate's page (noted in its header before the passes); a page the split did
// not list (none should be) goes to the last part, which is still one writer per object.
inline int PartOf(const Object* ob, int parts) noexcept {
  int p = GcPageOf(ob)->mark_part;
  return p < parts ? p : parts - 1;
}
inline void Mail(int set, int from, int to, Object* r) noexcept {
  if (BRC_UNLIKELY(!Box(set, from, to).Push(r))) g_mail_failed[from] = true;
}

// Which part a marking visitor works for; kByParts false: one worker, no parts.
struct PartOfWorker {
  int part = 0;
  int parts = 1;
  int set = 0;  // the mailboxes it writes
};

// Pass 1: count, for each candidate, the references to it from other candidates. Buffered: the
// references that Traces report collect in buf_ and are counted when it fills, and by Flush
// at the end of the pass (counting needs no order). By parts, a reference into another part
// is mailed there instead (set 0).
template <bool kByParts, bool kYoung>
class CountVisitor final : public Visitor {
 public:
  explicit CountVisitor(uint32_t epoch, PartOfWorker me = {}) noexcept
      : Visitor(&Fn, buf_, buf_ + kBuffer), epoch_(epoch), me_(me) {}

  void Count(Object* ob) noexcept { TraceObject(ob, *this); }
  void Flush() noexcept {
    for (Object** r = buf_; r != next_; ++r) {
      if (!IsCandidateOf<kYoung>(GcBitsOf(*r), GcEpochOf(*r), epoch_)) continue;
      if constexpr (kByParts) {
        int to = PartOf(*r, me_.parts);
        if (to != me_.part) {
          Mail(0, me_.part, to, *r);
          continue;
        }
      }
      AddScratch(*r);
    }
    next_ = buf_;
  }

 private:
  static constexpr std::size_t kBuffer = 256;
  static void Fn(Visitor* self, Object* r) noexcept {  // the buffer is full
    auto* me = static_cast<CountVisitor*>(self);
    me->Flush();
    *me->next_++ = r;
  }
  uint32_t epoch_;
  PartOfWorker me_;
  Object* buf_[kBuffer];
};

// Marks `ob` (whose epoch read `seen`) reachable in this collection; true if this call did it
// (and must trace it). The caller is the only thread that writes `ob`'s epoch (the only
// worker, or the one holding its part).
inline bool Claim(Object* ob, uint16_t seen, uint32_t epoch) noexcept {
  if (seen == epoch) return false;
  GcSetEpoch(ob, epoch);
  return true;
}

}  // namespace

std::size_t g_stack_limit = 0;

namespace {

// Pass 2: mark everything reachable from a root (depth first, explicit stack): the loop that
// pops the references claims the candidates among them and traces those. When the stack could
// not grow, MarkFrom throws bad_alloc (a dropped reference may leave a live object unmarked).
// By parts, a candidate of another part is mailed there (the worker's set) instead.
template <bool kByParts, bool kYoung>
class MarkVisitor final : public StackVisitor {
 public:
  MarkVisitor(MarkStack* stack, uint32_t epoch, PartOfWorker me = {}) noexcept
      : StackVisitor(stack), epoch_(epoch), me_(me) {}

  // In a full collection, a young object this worker claimed gets kGcWasYoung, so that a
  // collection that fails can make it young again (ResetScratch); ClearWasYoung after success.
  // The claim's winner is its only writer.
  static void NoteYoung(Object* ob, uint16_t seen) noexcept {
    if (!kYoung && seen == 0) GcSetBits(ob, kGcWasYoung, 0);
  }

  // Marks from `ob` if it is a candidate not marked yet (and, by parts, of this worker's
  // part).
  void MarkFromIfUnmarked(Object* ob) {
    uint16_t seen = GcEpochOf(ob);
    if (!IsCandidateOf<kYoung>(GcBitsOf(ob), seen, epoch_) || !Claim(ob, seen, epoch_)) return;
    NoteYoung(ob, seen);
    MarkFrom(ob);
  }

  // `root` is claimed (and noted) already.
  void MarkFrom(Object* root) {
    ++marked;
    TraceObject(root, *this);
    while (!empty()) {
      Object* r = Pop();
      // The epoch of another part's object may be changing meanwhile (its worker claims it):
      // either value read leads to the same outcome, since that worker decides.
      uint16_t seen = GcEpochOf(r);
      if (!IsCandidateOf<kYoung>(GcBitsOf(r), seen, epoch_)) continue;
      if constexpr (kByParts) {
        int to = PartOf(r, me_.parts);
        if (to != me_.part) {
          Mail(me_.set, me_.part, to, r);
          continue;
        }
      }
      if (!Claim(r, seen, epoch_)) continue;
      NoteYoung(r, seen);
      ++marked;
      TraceObject(r, *this);
    }
    if (BRC_UNLIKELY(out_of_memory())) throw std::bad_alloc();
  }
  uint64_t marked = 0;

 private:
  uint32_t epoch_;
  PartOfWorker me_;
};

// One per marking worker, on its own cache lines (the counters change per object).
struct alignas(64) WorkerState {
  MarkStack stack;
  uint64_t scanned = 0;
  uint64_t marked = 0;
  std::size_t next = 0, end = 0;  // pass 3: the worker's chunk of the garbage list
};

// The workers' states, at least `n` of them. Kept between collections (collection lock), so
// that the stacks keep their memory: fresh memory costs a page fault per 4 KiB, a large part
// of a collection's time. Throws bad_alloc.
std::vector<WorkerState>& WorkerStates(int n) {
  static NoDestroy<std::vector<WorkerState>> states;
  if (states.get().size() < static_cast<std::size_t>(n)) states.get().resize(n);
  return states.get();
}

constexpr std::size_t kGrain = 4;  // pages per chunk of a ParallelFor over pages

// Pass 2's look at one candidate of `tid`'s page, for the scan that settles them all: marking
// does not read owners, so each candidate is settled here, once, whether marking reached it
// before the scan or not.
template <bool kByParts, bool kYoung>
inline void SettleAndMarkFrom(MarkVisitor<kByParts, kYoung>& v, Object* ob, uint16_t seen,
                              uint32_t tid, uint32_t epoch) {
  uint32_t internal;
  int64_t count = Settle(ob, tid, &internal);
  // Count zero: dead, only waiting in a merge queue (its owner's drain is in progress further
  // up its stack, or the queue could not be merged here). It is no garbage, and what it
  // references stays alive until its destructor runs: treat it as a root, so that none of that
  // is cleared.
  if ((count > internal || count == 0) && Claim(ob, seen, epoch)) {
    v.NoteYoung(ob, seen);
    v.MarkFrom(ob);
  }
}

// Passes 1 and 2 with one worker.
template <bool kYoung>
void CountAndMarkSerial(const PageList& pages, uint32_t epoch, WorkerState& me) {
  CountVisitor<false, kYoung> count(epoch);
  ForEachCandidate<kYoung>(pages, 0, pages.size(), epoch, [&](Object* ob) {
    ++me.scanned;
    count.Count(ob);
  });
  count.Flush();
  MarkVisitor<false, kYoung> v(&me.stack, epoch);
  ForEachToSettle<kYoung>(pages, 0, pages.size(), epoch,
                          [&](Object* ob, uint16_t seen, uint32_t tid) {
                            SettleAndMarkFrom(v, ob, seen, tid, epoch);
                          });
  me.marked += v.marked;
}

void ThrowIfMailFailed(int parts) {
  for (int p = 0; p < parts; ++p) {
    if (BRC_UNLIKELY(g_mail_failed[p])) throw std::bad_alloc();
  }
}
bool MailWaiting(int set, int parts) noexcept {
  for (int from = 0; from < parts; ++from) {
    for (int to = 0; to < parts; ++to) {
      if (Box(set, from, to).size != 0) return true;
    }
  }
  return false;
}

// After marking by parts: the boxes that held less than a quarter of their memory (and more
// than the smallest growth) give it back; the next growth maps it again.
void ShrinkMailboxes(int parts) noexcept {
  g_parts_used = std::max(g_parts_used, parts);
  for (int set = 0; set < 2; ++set) {
    for (int from = 0; from < g_parts_used; ++from) {
      for (int to = 0; to < g_parts_used; ++to) {
        Mailbox& box = Box(set, from, to);
        MarkStack& s = box.stack;
        if (s.data != nullptr && s.capacity > kMinStackEntries && s.capacity / 4 > box.peak) {
          munmap(s.data, s.capacity * sizeof(Object*));
          s.data = nullptr;
          s.capacity = 0;
        }
        box.peak = 0;
      }
    }
  }
  g_parts_used = parts;
}

// Marks from every reference in `box` (mail of the last round) and empties it.
template <bool kByParts, bool kYoung>
void MarkFromBox(MarkVisitor<kByParts, kYoung>& v, Mailbox& box) {
  for (std::size_t i = 0; i < box.size; ++i) v.MarkFromIfUnmarked(box.stack.data[i]);
  box.Emptied();
}

// Pass 2 after round 0: round k marks from what round k - 1 mailed (set `in`), writing the
// other set, until no mail is left; round kMaxRounds - 1 is the collecting thread's alone,
// across parts, and mails nothing.
template <bool kYoung>
void MarkFromMail(int parts, uint32_t epoch, std::vector<WorkerState>& ws) {
  auto n = static_cast<std::size_t>(parts);
  int set = 0;
  for (int round = 1; MailWaiting(set, parts); ++round) {
    ThrowIfMailFailed(parts);
    g_mark_rounds = round + 1;
    int in = set;
    set ^= 1;
    if (round + 1 == kMaxRounds) {
      MarkVisitor<false, kYoung> v(&ws[0].stack, epoch);
      for (int from = 0; from < parts; ++from) {
        for (int to = 0; to < parts; ++to) MarkFromBox(v, Box(in, from, to));
      }
      ws[0].marked += v.marked;
      return;
    }
    ParallelFor(parts, n, 1, [&](std::size_t b, std::size_t e, int worker) {
      WorkerState& me = ws[static_cast<std::size_t>(worker)];
      for (auto part = static_cast<int>(b); part < static_cast<int>(e); ++part) {
        MarkVisitor<true, kYoung> v(&me.stack, epoch, {part, parts, set});
        for (int from = 0; from < parts; ++from) MarkFromBox(v, Box(in, from, part));
        me.marked += v.marked;
      }
    });
  }
}

// Passes 1 and 2 by parts (see "Parts" above), `parts` of them over the workers.
template <bool kYoung>
void CountAndMarkByParts(const PageList& pages, int parts, uint32_t epoch,
                         std::vector<WorkerState>& ws) {
  std::size_t begin[kMaxParts + 1];
  for (int p = 0; p <= parts; ++p) begin[p] = pages.size() * static_cast<std::size_t>(p) / parts;
  for (int p = 0; p < parts; ++p) {
    for (std::size_t i = begin[p]; i < begin[p + 1]; ++i) {
      pages[i]->mark_part = static_cast<uint16_t>(p);
    }
    g_mail_failed[p] = false;
  }
  for (int set = 0; set < 2; ++set) {
    for (int from = 0; from < parts; ++from) {
      for (int to = 0; to < parts; ++to) Box(set, from, to).size = 0;
    }
  }
  auto n = static_cast<std::size_t>(parts);
  // Pass 1, then each part counts the references mailed to it.
  ParallelFor(parts, n, 1, [&](std::size_t b, std::size_t e, int worker) {
    for (auto part = static_cast<int>(b); part < static_cast<int>(e); ++part) {
      CountVisitor<true, kYoung> v(epoch, {part, parts, 0});
      uint64_t scanned = 0;
      ForEachCandidate<kYoung>(pages, begin[part], begin[part + 1], epoch, [&](Object* ob) {
        ++scanned;
        v.Count(ob);
      });
      v.Flush();
      ws[static_cast<std::size_t>(worker)].scanned += scanned;
    }
  });
  ThrowIfMailFailed(parts);
  ParallelFor(parts, n, 1, [&](std::size_t b, std::size_t e, int) {
    for (auto to = static_cast<int>(b); to < static_cast<int>(e); ++to) {
      for (int from = 0; from < parts; ++from) {
        Mailbox& box = Box(0, from, to);
        for (std::size_t i = 0; i < box.size; ++i) AddScratch(box.stack.data[i]);
        box.Emptied();
      }
    }
  });
  // Pass 2, round 0: each part settles its candidates and marks from its roots; then the
  // rounds that mark from mail.
  ParallelFor(parts, n, 1, [&](std::size_t b, std::size_t e, int worker) {
    WorkerState& me = ws[static_cast<std::size_t>(worker)];
    for (auto part = static_cast<int>(b); part < static_cast<int>(e); ++part) {
      MarkVisitor<true, kYoung> v(&me.stack, epoch, {part, parts, 0});
      ForEachToSettle<kYoung>(pages, begin[part], begin[part + 1], epoch,
                              [&](Object* ob, uint16_t seen, uint32_t tid) {
                                SettleAndMarkFrom(v, ob, seen, tid, epoch);
                              });
      me.marked += v.marked;
    }
  });
  MarkFromMail<kYoung>(parts, epoch, ws);
  ThrowIfMailFailed(parts);
  ShrinkMailboxes(parts);
}

// Mark with one worker (serial) or several (by parts); see Mark below. With one worker,
// `take` runs on each garbage object as it is found; with several, afterwards.
template <bool kParallel, bool kYoung>
MarkResult MarkWith(const PageList& pages, int workers, uint32_t epoch,
                    absl::FunctionRef<void(Object*)> take,
                    absl::FunctionRef<void(std::size_t)> prepare, ObjectList* reuse) {
  int w_count = kParallel ? std::min(workers, kMaxParts) : 1;
  std::vector<WorkerState>& ws = WorkerStates(w_count);
  for (WorkerState& w : ws) {
    w.scanned = w.marked = 0;
    w.next = w.end = 0;
  }
#ifdef BRC_DEBUG
  ParallelFor(w_count, pages.size(), kGrain, [&](std::size_t b, std::size_t e, int) {
    ForEachCandidate<kYoung>(pages, b, e, epoch, [&](Object* ob) { CheckOwnerRestorable(ob); });
  });
#endif
  g_mark_rounds = 1;
  if constexpr (kParallel) {
    CountAndMarkByParts<kYoung>(pages, w_count, epoch, ws);
  } else {
    CountAndMarkSerial<kYoung>(pages, epoch, ws[0]);
  }
  MarkResult r;
  uint64_t marked = 0;
  for (int i = 0; i < w_count; ++i) {
    WorkerState& w = ws[static_cast<std::size_t>(i)];
    r.scanned += w.scanned;
    marked += w.marked;
  }
  if (marked == r.scanned) return r;  // everything reachable: no third pass
  // Pass 3. The garbage list is the reused buffer, sized before the pass (growing a vector of
  // a million entries page-faults its way through fresh memory several times over): workers
  // claim chunks of it through an atomic cursor (each worker one chunk at a time, across the
  // page ranges it is given) and leave the unused tail of their last chunk null. Everything
  // that may allocate (and so run an Allocator) happens before the pass, so that running out
  // of memory leaves nothing to undo but the marks (see ResetScratch), and every owner is back
  // by now (pass 2 settled every candidate).
  std::size_t expected = r.scanned - marked;
  constexpr std::size_t kChunk = 512;
  std::size_t room = kParallel ? expected + kChunk * static_cast<std::size_t>(w_count) : expected;
  prepare(expected);
  r.garbage = std::move(*reuse);
  r.garbage.assign(room, nullptr);
  std::atomic<std::size_t> cursor{0};
  ParallelFor(w_count, pages.size(), kGrain, [&](std::size_t b, std::size_t e, int worker) {
    WorkerState& me = ws[static_cast<std::size_t>(worker)];
    ForEachCandidate<kYoung>(pages, b, e, epoch, [&](Object* ob) {
      if (GcEpochOf(ob) == epoch) return;
      if (me.next == me.end) {
        std::size_t want = kParallel ? kChunk : room;
        // Relaxed: slot indices; the join publishes the stores.
        me.next = cursor.fetch_add(want, std::memory_order_relaxed);
        me.end = std::min(room, me.next + want);
      }
      // More than pass 2 left unmarked cannot be (no object is made or freed while the world
      // is stopped); should it happen, the extra one is not garbage this time.
      if (me.next >= me.end) return;
      // Garbage; it carries the epoch too, so that it is old if it survives. World stopped.
      GcSetBits(ob, kGcGarbage, 0);
      GcSetEpoch(ob, epoch);
      r.garbage[me.next++] = ob;
      if constexpr (!kParallel) take(ob);
    });
  });
  r.garbage.erase(std::remove(r.garbage.begin(), r.garbage.end(), nullptr), r.garbage.end());
  if constexpr (kParallel) {
    for (Object* ob : r.garbage) take(ob);
  }
  return r;
}

}  // namespace

MarkResult Mark(const PageList& pages, bool young, AcyclicWalk* acyclic_walk, int workers,
                uint32_t epoch, absl::FunctionRef<void(Object*)> take,
                absl::FunctionRef<void(std::size_t)> prepare, ObjectList* reuse) {
  bool acyclic = false;
  if (acyclic_walk != nullptr) {
    MarkResult r;
    acyclic = CheckAcyclic(pages, young, epoch, &WorkerStates(1)[0].stack, &r.scanned,
                           acyclic_walk);
#ifndef BRC_DEBUG
    if (acyclic) {
      r.acyclic = true;
      return r;
    }
#endif
    // BRC_DEBUG checks every proof: undone, then the counting passes must find no garbage
    // (and they check each Trace against the counts, which the walk cannot).
    UndoAcyclicCheck(pages, young, acyclic_walk->newest_first, epoch, r.scanned);
  }
  constexpr std::size_t kMinPagesPerWorker = 8;  // below this, threads cost more than they save
  if (pages.size() < kMinPagesPerWorker * static_cast<std::size_t>(workers)) {
    workers = std::max<int>(1, static_cast<int>(pages.size() / kMinPagesPerWorker));
  }
  MarkResult r;
  bool serial = workers <= 1;
  if (!serial) {
    // By parts, the counting pass mails every reference that crosses parts: about half of
    // them with two workers and random links, which one worker does not need memory for. When
    // that memory (or a stack) cannot be had, the marks are undone and one worker tries.
    try {
      r = young ? MarkWith<true, true>(pages, workers, epoch, take, prepare, reuse)
                : MarkWith<true, false>(pages, workers, epoch, take, prepare, reuse);
    } catch (const std::bad_alloc&) {
      ResetScratch(pages, young, epoch);
      serial = true;
    }
  }
  if (serial) {
    r = young ? MarkWith<false, true>(pages, 1, epoch, take, prepare, reuse)
              : MarkWith<false, false>(pages, 1, epoch, take, prepare, reuse);
  }
  if (acyclic) {  // BRC_DEBUG only
    BRC_CHECK(r.garbage.empty(), "the acyclic check passed a heap that holds garbage");
    r.acyclic = true;
  }
  return r;
}

void ResetScratch(const PageList& pages, bool young, uint32_t epoch) noexcept {
  // Every object of the pages that this collection examined: the candidates, and, in a young
  // collection, what it marked (no longer young by its flags, but it must be again).
  for (GcPage* p : pages) {
    ForEachBlockOf(p, young, [&](Object* ob) {
      uint8_t bits = GcBitsOf(ob);
      uint16_t seen = GcEpochOf(ob);
      bool marked_now = seen == epoch;
      bool candidate = young ? IsCandidateOf<true>(bits, seen, epoch)
                             : IsCandidateOf<false>(bits, seen, epoch);
      if (!candidate && !((bits & kGcTracked) && marked_now)) return true;
      TakeScratch(ob);  // idempotent: right whether or not its scratch was in use
      GcSetBits(ob, 0, kGcGarbage | kGcWasYoung);
      // Young again: what a young collection marked, and what a full one marked while young.
      if ((young && marked_now) || (bits & kGcWasYoung)) GcSetEpoch(ob, 0);
      return true;
    });
  }
}

uint32_t RunningCollectionEpoch() noexcept { return g_epoch; }

int LastMarkRounds() noexcept { return g_mark_rounds; }

void LimitMarkStacks(std::size_t max_entries) {
  g_stack_limit = max_entries;
  auto release = [](MarkStack& stack) {
    if (stack.data != nullptr) munmap(stack.data, stack.capacity * sizeof(Object*));
    stack.data = nullptr;
    stack.capacity = 0;
  };
  for (WorkerState& w : WorkerStates(0)) release(w.stack);
  for (auto& set : g_boxes) {
    for (Mailbox& box : set) release(box.stack);
  }
}

uint32_t NextEpoch() noexcept {
  if (++g_epoch < kGcEpochLimit) return g_epoch;
  // Wrap-around (every 65,534 collections): every examined object's mark becomes
  // kGcEpochOld, so that no stale mark can read as current and no old object reads as young.
  // Walks the heaps directly: no allocation.
  ForEachThreadState([](ThreadState* ts) {
    ForEachPage(ts->heap, [](GcPage* p) {
      for (uint32_t b = 0; b < p->bump; ++b) {
        Object* ob = p->object(b);
        if (GcEpochOf(ob) != 0) GcSetEpoch(ob, kGcEpochOld);  // young ones stay young
      }
    });
  });
  g_epoch = kGcEpochFirst;
  return g_epoch;
}

// ---- resurrection check, over the garbage set only ----

namespace {

class GarbageCountVisitor final : public Visitor {
 public:
  GarbageCountVisitor() noexcept : Visitor(&Fn) {}

 private:
  static void Fn(Visitor*, Object* r) noexcept {
    if (GcBitsOf(r) & kGcGarbage) AddScratch(r);
  }
};

class ResurrectVisitor final : public Visitor {
 public:
  explicit ResurrectVisitor(ObjectList* stack) noexcept : Visitor(&Fn), stack_(stack) {}

 private:
  static void Fn(Visitor* self, Object* r) noexcept {
    if (!(GcBitsOf(r) & kGcGarbage)) return;
    GcSetBits(r, 0, kGcGarbage);  // world stopped
    static_cast<ResurrectVisitor*>(self)->stack_->push_back(r);
  }
  ObjectList* stack_;
};

}  // namespace

void FindResurrected(const ObjectList& garbage) {
  // Each member is pushed at most once (its kGcGarbage is cleared first): reserved before any
  // scratch is counted, so that the Allocator (user code) never runs while one is in use.
  ObjectList stack;
  stack.reserve(garbage.size());
#ifdef BRC_DEBUG
  for (Object* ob : garbage) CheckOwnerRestorable(ob);
#endif
  // Every member's owner is back however this ends.
  struct Restore {
    const ObjectList& garbage;
    ~Restore() {
      for (Object* ob : garbage) TakeScratch(ob);
    }
  } restore{garbage};
  GarbageCountVisitor count;
  for (Object* ob : garbage) TraceObject(ob, count);
  ResurrectVisitor mark(&stack);
  for (Object* ob : garbage) {
    if (!(GcBitsOf(ob) & kGcGarbage)) continue;  // already resurrected through another member
    // The references from other members, counted on the owner id as the base.
    uint32_t owner = OwnerFor(ob);
    uint32_t internal = OwnerOf(Rc::biased(ob).load(std::memory_order_relaxed)) - owner;
    // The true count as Settle reads it: an object counted per thread has its id, not a count,
    // in the local half (and the stop's fold put every slot into the shared word).
    int64_t count;
    if (Rc::IsImmortal(ob)) {
      count = kImmortalRefCount;
    } else {
      int32_t shared = Rc::shared(ob).load(std::memory_order_relaxed);
      int64_t local = owner == kPerThreadOwner ? 0 : Rc::Local(ob);
      count = local + (shared >> kSharedShift) -
              ((shared & kStateMask) == kStateQueued ? 1 : 0);
    }
    int64_t outside = count - 1 - internal;
    if (outside <= 0) continue;
    GcSetBits(ob, 0, kGcGarbage);
    stack.push_back(ob);
    while (!stack.empty()) {
      Object* x = stack.back();
      stack.pop_back();
      TraceObject(x, mark);
    }
  }
}

}  // namespace brc::detail
