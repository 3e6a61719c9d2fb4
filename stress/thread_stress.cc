// Concurrency stress for threads that come and go, block, and saturate counts: seeded, bounded
// in time (every wait too), invariant-checked.
//
//   brc_thread_stress [--scenario threads|blocked|saturation|hot|all] [--threads N] [--seconds S]
//                     [--seed X]
//
// Prints its parameters first and, as each scenario ends, its operations per second and the
// extra figure it measures; exits 1 on a violated invariant, naming it and the seed. Each
// scenario ends with every object gone: per-type constructions equal destructions, and brc's
// live-object count is back where it started.
//
//  threads     Short-lived threads (about N alive at a time) attach, create leaves and tracked
//              nodes (sometimes in small cycles), pass them on through a hand-off queue and
//              exit while others still hold, and will drop, objects they own: those drops merge
//              on behalf of an exited owner, or queue to the next thread given its id. At the
//              end one brc::Collect() must leave nothing pinned.
//  blocked     One owner makes a large backlog of objects, hands every reference to N-1 holder
//              threads and spends most of the run inside a brc::BlockingScope. An object whose
//              holders have all dropped it while the owner is blocked must be freed at once
//              (merged on the owner's behalf): checked per object, and the peak number of
//              dropped-but-not-destroyed objects while it is blocked (and no collection
//              holds any) is reported and bounded by 4 x N. Holder 0 collects now and then.
//  saturation  Counts put next to the limits with brc::testing::SetCountsForTesting (shared
//              half just below kSharedSaturationMin, local half just below UINT32_MAX, shared
//              half just above kSharedNegativeLimit), then N threads and the owner count on the
//              object at once. It must become immortal, stay so, report kImmortalRefCount, and
//              never be freed by a decrement, balanced or not; FreeImmortalForTesting then runs
//              its destructor exactly once. Before that the owner drains its merge queue, which
//              may still hold the object: a non-owner's drop can queue it while it is mortal,
//              just before the owner's last increment makes it immortal (the entry's merge is
//              then a no-op, but freeing the object under a pending entry is a use after free).
//  hot         Per-thread counts (brc/hot.h). An owner thread makes 64 leaves and 32 tracked
//              nodes (a ring, each node holding a leaf), holds one reference to each until the
//              end and keeps counting on them and reaching safepoints. A quarter are switched
//              with CountPerThread by the owner up front (some under one StopTheWorld), another
//              quarter by the first worker threads, and the owner switches objects of a third
//              quarter now and then; the contention detector (on, with a small seeded
//              threshold, the configuration restored afterwards) is left the last quarter: the
//              workers hammer one of half of those at a time (the owner picks it; the other
//              half sees only incidental contention and may stay biased), while they also
//              take references, hand them to each other through a queue (slots go
//              negative, passes become due), drop them, lock weak references, call GetRefCount
//              (at least the references the caller holds plus the owner's), run merge passes,
//              collections and BlockingScopes, make temporaries that they switch and pass on
//              (ids recycled during the run), and exit or re-attach (slot arrays pass to reused
//              thread ids). The owner flips max_objects low and high (switches refused, then
//              allowed). At the end every count must be exact; then the owner drops its
//              references and each object must be freed by the rule: a biased one by that
//              DecRef, a per-thread one by the next merge pass, the node ring by one Collect(),
//              each destructor and weak callback exactly once, no hot object destroyed before.
//              Liveness: the owner waits for the last workers inside a BlockingScope; after
//              that, its safepoints alone must free every temporary nobody holds (a pass the
//              exiting workers owed must not be lost), and, last, the same case made
//              deterministic: one thread drops a per-thread object's last reference and exits
//              while the owner joins it in a BlockingScope.
//
// Rules followed throughout (README "What you must do"): every thread that touches an object
// holds a brc::ThreadScope and reaches brc::Safepoint() often; every sleep, join or condition
// wait of an attached thread is inside a brc::BlockingScope, where no object is touched.
#include <tbb/concurrent_queue.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "brc/brc.h"
#include "stress_common.h"
#include "brc/testing.h"

namespace {

using brc_stress::Clock;
using brc_stress::Deadline;
using brc_stress::HandoffQueue;
using brc_stress::Options;
using brc_stress::StartRun;
using brc_stress::TimeUp;

uint64_t g_seed = 0;
const char* g_scenario = "";
// Every wait is bounded by this (set from --seconds); the watchdog bounds a whole scenario.
std::chrono::steady_clock::duration g_wait_limit = std::chrono::seconds(60);

[[noreturn]] void Fail(const char* what) {
  std::fflush(stdout);
  std::fprintf(stderr, "brc_thread_stress: INVARIANT VIOLATED: %s: %s (seed %llu)\n", g_scenario,
               what, static_cast<unsigned long long>(g_seed));
  std::fflush(stderr);
  std::_Exit(1);
}

[[noreturn]] __attribute__((format(printf, 1, 2))) void FailF(const char* fmt, ...) {
  char buf[512];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, args);
  va_end(args);
  Fail(buf);
}

// One mt19937_64 per thread, seeded from --seed, the scenario and the thread's index.
uint64_t ThreadSeed(uint64_t seed, uint64_t scenario, uint64_t index) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + scenario * 0xBF58476D1CE4E5B9ull + index;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

void UpdateMax(std::atomic<int64_t>& max, int64_t v) {
  int64_t cur = max.load(std::memory_order_relaxed);
  while (v > cur && !max.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
  }
}

// Constructions and destructions of one type, checked after each scenario.
struct TypeCounters {
  const char* name;
  std::atomic<int64_t> constructed{0};
  std::atomic<int64_t> destroyed{0};
};
TypeCounters g_payload{"Payload"};
TypeCounters g_node{"Node"};
TypeCounters g_owned{"Owned"};
TypeCounters g_owned_node{"OwnedNode"};
TypeCounters g_sat{"SatObject"};
TypeCounters g_hot_leaf{"HotLeaf"};
TypeCounters g_hot_node{"HotNode"};
TypeCounters g_temp_leaf{"TempLeaf"};
TypeCounters g_temp_node{"TempNode"};
TypeCounters* const g_all_types[] = {&g_payload,  &g_node,     &g_owned,     &g_owned_node,
                                     &g_sat,      &g_hot_leaf, &g_hot_node,  &g_temp_leaf,
                                     &g_temp_node};

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// For an attached thread: spins (reaching safepoints), then sleeps in short steps inside a
// BlockingScope, until done() holds. done() must read only atomics, never an object. Fails
// after g_wait_limit, so a lost wake-up or a hang elsewhere cannot hang the program.
template <class Pred>
void WaitUntil(Pred done, const char* what) {
  Clock::time_point start = Clock::now();
  for (uint32_t i = 0; !done(); ++i) {
    if (i < 64) {
      brc::Safepoint();
      std::this_thread::yield();
      continue;
    }
    {
      brc::BlockingScope blocking;
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
    if ((i & 63) == 0 && Clock::now() - start > g_wait_limit) {
      FailF("waiting for %s timed out", what);
    }
  }
}

// Fails the run if a scenario (whose threads may be stuck inside brc, out of reach of their own
// time-outs) has not finished long after its deadline. Runs on a thread that is not attached.
class Watchdog {
 public:
  explicit Watchdog(Clock::duration limit)
      : thread_([this, limit] {
          std::unique_lock<std::mutex> lock(mu_);
          if (!cv_.wait_for(lock, limit, [this] { return done_; })) {
            FailF("did not finish %.0f s after it started: a thread hangs",
                  std::chrono::duration<double>(limit).count());
          }
        }) {}
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

struct Result {
  uint64_t ops = 0;
  std::string extra;  // the scenario's own figure, printed after ops/s
};

std::string Format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string Format(const char* fmt, ...) {
  char buf[512];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, args);
  va_end(args);
  return buf;
}

// ------------------------------------------------------------------------------------------
// Scenario "threads": thread churn.

struct Payload : brc::Object {
  explicit Payload(uint64_t v) : value(v), check(~v) {
    g_payload.constructed.fetch_add(1, std::memory_order_relaxed);
  }
  ~Payload() {
    if (check != ~value) Fail("Payload corrupted before its destructor ran");
    check = 0;
    g_payload.destroyed.fetch_add(1, std::memory_order_relaxed);
  }
  uint64_t value;
  uint64_t check;
};

// Tracked: a Ref edge to another node (cycles) and one to a leaf. Edges are written only by the
// creating thread before the node is shared, and by the collector's Clear.
struct Node : brc::Object {
  explicit Node(uint64_t v) : value(v), check(~v) {
    g_node.constructed.fetch_add(1, std::memory_order_relaxed);
  }
  ~Node() {
    if (check != ~value) Fail("Node corrupted before its destructor ran");
    check = 0;
    g_node.destroyed.fetch_add(1, std::memory_order_relaxed);
  }
  void Trace(brc::Visitor& v) const {
    v.Visit(next);
    v.Visit(leaf);
  }
  void Clear() {
    next = nullptr;
    leaf = nullptr;
  }
  brc::Ref<Node> next;
  brc::Ref<Payload> leaf;
  uint64_t value;
  uint64_t check;
};

struct ChurnContext {
  HandoffQueue<brc::Object*> queue;  // each entry owns one reference
  std::atomic<int64_t> queued{0};    // approximate size of `queue`
  std::atomic<uint64_t> ops{0};
  std::atomic<uint64_t> cycles{0};
};

constexpr int64_t kChurnMaxQueued = 4096;

// One short-lived thread: attach, make, pass on, take, drop, exit. Objects it passes on carry
// their count in its local half, so whoever drops them last does so after it has exited (or
// while it exits), merging on its behalf, or queueing to the next thread that got its id.
void ChurnThread(ChurnContext& c, uint64_t seed, uint64_t index) {
  brc::ThreadScope attach;
  std::mt19937_64 rng(ThreadSeed(seed, 1, index));
  std::vector<brc::Ref<brc::Object>> held;
  auto push = [&](brc::Ref<brc::Object> r) {
    c.queue.push(r.Release());
    c.queued.fetch_add(1, std::memory_order_relaxed);
  };
  auto pop = [&]() -> brc::Ref<brc::Object> {
    brc::Object* p = nullptr;
    if (!c.queue.try_pop(p)) return nullptr;
    c.queued.fetch_sub(1, std::memory_order_relaxed);
    return brc::Ref<brc::Object>::Adopt(p);
  };
  auto drop_one = [&](uint64_t r) {
    size_t k = r % held.size();
    std::swap(held[k], held.back());
    held.pop_back();
  };
  int steps = 16 + static_cast<int>(rng() % 240);
  uint64_t ops = 0;
  for (int i = 0; i < steps; ++i, ++ops) {
    uint64_t r = rng();
    int what = static_cast<int>(r % 100);
    if (what < 35 && c.queued.load(std::memory_order_relaxed) > kChurnMaxQueued) {
      what = 50;  // the queue is long: take instead of make
    }
    if (what < 20) {
      auto p = brc::Make<Payload>(r);
      if (r & (1u << 8)) push(p);  // two references out, both in this thread's local half
      push(std::move(p));
    } else if (what < 35) {
      auto a = brc::Make<Node>(r);
      switch ((r >> 8) % 4) {
        case 0:  // a node with a leaf: no cycle
          a->leaf = brc::Make<Payload>(~r);
          push(std::move(a));
          break;
        case 1:  // a self-loop, reachable from the queue until someone drops it
          a->next = a;
          push(std::move(a));
          c.cycles.fetch_add(1, std::memory_order_relaxed);
          break;
        case 2: {  // a two-node cycle, with a leaf; both ends passed on
          auto b = brc::Make<Node>(r >> 1);
          b->leaf = brc::Make<Payload>(r >> 2);
          a->next = b;
          b->next = a;
          if (r & (1u << 12)) push(b);
          push(std::move(a));
          c.cycles.fetch_add(1, std::memory_order_relaxed);
          break;
        }
        default: {  // a three-node cycle that is garbage at once: only the collector frees it
          auto b = brc::Make<Node>(r >> 1);
          auto d = brc::Make<Node>(r >> 2);
          a->next = b;
          b->next = d;
          d->next = a;
          if (r & (1u << 12)) held.push_back(std::move(d));
          c.cycles.fetch_add(1, std::memory_order_relaxed);
          break;
        }
      }
    } else if (what < 75) {
      brc::Ref<brc::Object> got = pop();
      if (got) {
        if (held.size() >= 16) drop_one(r >> 16);
        held.push_back(std::move(got));
      }
    } else if (what < 85) {
      if (!held.empty()) push(held[(r >> 16) % held.size()]);  // a copy for another thread
    } else if (!held.empty()) {
      drop_one(r >> 16);
    }
    if ((i & 7) == 7) brc::Safepoint();
  }
  // On the way out, pass about half of what is held on to the threads that come next.
  for (auto& h : held) {
    if (rng() & 1) push(std::move(h));
  }
  held.clear();
  c.ops.fetch_add(ops, std::memory_order_relaxed);
}

Result Threads(const Options& o) {
  brc::ThreadScope attach;
  ChurnContext c;
  brc::Stats stats_before = brc::GetStats();
  struct Slot {
    std::thread thread;
    std::atomic<bool> done{false};
  };
  std::unique_ptr<Slot[]> slots(new Slot[o.threads]);
  std::mutex mu;
  std::condition_variable cv;
  uint64_t started = 0;
  auto start = [&](Slot& s) {
    s.done.store(false, std::memory_order_relaxed);
    uint64_t index = started++;
    s.thread = std::thread([&c, &s, &mu, &cv, seed = o.seed, index] {
      ChurnThread(c, seed, index);  // attached and detached in there
      {
        std::lock_guard<std::mutex> lock(mu);
        s.done.store(true, std::memory_order_release);
      }
      cv.notify_one();
    });
  };
  auto any_done = [&] {
    for (int i = 0; i < o.threads; ++i) {
      if (slots[i].done.load(std::memory_order_acquire)) return true;
    }
    return false;
  };
  Clock::time_point t0 = Clock::now();
  Clock::time_point end = Deadline(o.seconds);
  for (int i = 0; i < o.threads; ++i) start(slots[i]);
  while (!TimeUp(end)) {
    bool replaced = false;
    for (int i = 0; i < o.threads; ++i) {
      Slot& s = slots[i];
      if (!s.done.load(std::memory_order_acquire)) continue;
      {
        brc::BlockingScope blocking;
        s.thread.join();
      }
      start(s);
      replaced = true;
    }
    if (!replaced) {
      brc::BlockingScope blocking;
      std::unique_lock<std::mutex> lock(mu);
      cv.wait_for(lock, std::chrono::milliseconds(2), any_done);
    }
    brc::Safepoint();
  }
  {
    brc::BlockingScope blocking;
    for (int i = 0; i < o.threads; ++i) slots[i].thread.join();
  }
  double secs = SecondsSince(t0);

  // Every churn thread has exited. Drop what they left in the queue, then collect the cycles.
  brc::Object* p = nullptr;
  while (c.queue.try_pop(p)) brc::Ref<brc::Object>::Adopt(p).Reset();
  absl::StatusOr<brc::CollectResult> collected = brc::Collect();
  if (!collected.ok()) {
    FailF("brc::Collect() failed: %s", std::string(collected.status().message()).c_str());
  }
  if (collected->uncollectable != 0) Fail("the final collection found uncollectable objects");
  for (TypeCounters* t : {&g_payload, &g_node}) {
    int64_t made = t->constructed.load(), gone = t->destroyed.load();
    if (made != gone) {
      FailF("%lld %s objects still alive after every thread exited and brc::Collect() ran "
            "(%lld constructed, %lld destroyed): pinned",
            static_cast<long long>(made - gone), t->name, static_cast<long long>(made),
            static_cast<long long>(gone));
    }
  }
  brc::Stats stats_after = brc::GetStats();
  Result res;
  res.ops = c.ops.load();
  res.extra = Format("%.0f threads/s (%llu threads, %llu cycles, %llu merged for exited owners, "
                     "%llu collected at the end)",
                     static_cast<double>(started) / secs, static_cast<unsigned long long>(started),
                     static_cast<unsigned long long>(c.cycles.load()),
                     static_cast<unsigned long long>(stats_after.merges_for_owner -
                                                     stats_before.merges_for_owner),
                     static_cast<unsigned long long>(collected->collected));
  return res;
}

// ------------------------------------------------------------------------------------------
// Scenario "blocked": a blocked owner must pin nothing.

// Side record of one object the owner handed out: how many references the holders have, and
// whether all of them were dropped and whether it was destroyed. Lives outside the object (a
// holder reads it after its drop, when the object may be gone) and is deleted by whichever of
// "last drop done" and "destructor" comes second.
struct Track {
  explicit Track(int32_t n) : refs(n), unfinished(n) { live_tracks.fetch_add(1); }
  ~Track() { live_tracks.fetch_sub(1); }
  // A holder takes one (before its increment) or gives one up (before its decrement).
  void AddRef() {
    refs.fetch_add(1, std::memory_order_relaxed);
    unfinished.fetch_add(1, std::memory_order_relaxed);
  }
  std::atomic<int32_t> refs;        // references held and not being dropped yet
  std::atomic<int32_t> unfinished;  // references whose drop has not completed
  std::atomic<uint32_t> state{0};
  static std::atomic<int64_t> live_tracks;
};
std::atomic<int64_t> Track::live_tracks{0};
constexpr uint32_t kAllDropped = 1;
constexpr uint32_t kDestroyed = 2;

struct BlockedGlobals {
  // Odd while the owner is inside its BlockingScope: incremented (seq_cst) right after it enters
  // and right before it leaves.
  std::atomic<uint64_t> epoch{0};
  // Objects whose references were all dropped and that are not destroyed yet. A dropping
  // thread counts the object before it learns whether it is destroyed, so each drop in flight
  // may add one.
  std::atomic<int64_t> pinned{0};
  std::atomic<int64_t> peak_blocked{0};  // the largest `pinned` seen while the owner was blocked
  std::atomic<int64_t> peak_any{0};      // ... at any time (an attached owner frees late legally)
  std::atomic<int64_t> longest_entry_us{0};  // the owner's longest BlockingScope entry (drain)
  // Odd while a collection runs (from its kStart callback to its kStop callback).
  std::atomic<uint64_t> collecting{0};
};
BlockedGlobals g_blk;

void TrackDestroyed(Track* t) {
  // Every drop gives up its reference here before it decrements, so a destructor that runs
  // while this is not zero freed an object someone still references.
  if (t->refs.load(std::memory_order_acquire) != 0) {
    Fail("an object was destroyed while a holder still had a reference to it");
  }
  uint32_t old = t->state.fetch_or(kDestroyed, std::memory_order_acq_rel);
  if (old & kDestroyed) Fail("an object's destructor ran twice");
  if (old & kAllDropped) {
    g_blk.pinned.fetch_sub(1, std::memory_order_acq_rel);
    delete t;
  }
}

// The owner's leaf objects.
struct Owned : brc::Object {
  Owned(Track* t, uint64_t v) : track(t), value(v), check(~v) {
    g_owned.constructed.fetch_add(1, std::memory_order_relaxed);
  }
  ~Owned() {
    if (check != ~value) Fail("Owned corrupted before its destructor ran");
    check = 0;
    g_owned.destroyed.fetch_add(1, std::memory_order_relaxed);
    TrackDestroyed(track);
  }
  Track* track;
  uint64_t value;
  uint64_t check;
};

void DropTracked(brc::Object* ob, Track* t);

// The owner's tracked objects: each holds the only reference to a leaf of the owner's, so
// freeing the node (on a holder's thread, on the owner's behalf) drops a reference to another
// object of the blocked owner from inside a destructor.
struct OwnedNode : brc::Object {
  OwnedNode(Track* t, uint64_t v) : track(t), value(v), check(~v) {
    g_owned_node.constructed.fetch_add(1, std::memory_order_relaxed);
  }
  ~OwnedNode() {
    if (check != ~value) Fail("OwnedNode corrupted before its destructor ran");
    check = 0;
    DropLeaf();
    g_owned_node.destroyed.fetch_add(1, std::memory_order_relaxed);
    TrackDestroyed(track);
  }
  void Trace(brc::Visitor& v) const { v.Visit(leaf); }
  void Clear() { DropLeaf(); }  // never garbage here, but Clear must drop what Trace reports
  void DropLeaf() {
    if (leaf) DropTracked(leaf.Release(), leaf_track);
  }
  Track* track;
  brc::Ref<Owned> leaf;
  Track* leaf_track = nullptr;  // the node is the leaf's one holder
  uint64_t value;
  uint64_t check;
};

// Drops one reference a holder owns to an object of the owner's, and does the bookkeeping: the
// holder that finishes the last drop marks it all-dropped. If the owner stayed blocked from
// before this drop until after that mark, every drop of the object happened after the owner
// drained its queue on entering the scope (a drop that queued the object earlier reached it
// then: each drop is followed by a safepoint that pushes the dropper's hand-off buffer, before
// its bookkeeping, and a push that finds the owner blocked merges on its behalf), so one of the drops must have freed the object, merging on the owner's behalf, and
// all of them completed before the mark: the object must be destroyed already.
void DropTracked(brc::Object* ob, Track* t) {
  if (t->refs.fetch_sub(1, std::memory_order_acq_rel) <= 0) {
    Fail("more drops than references handed out (test bookkeeping)");
  }
  uint64_t e1 = g_blk.epoch.load(std::memory_order_seq_cst);
  brc::Ref<brc::Object>::Adopt(ob).Reset();
  // A drop for an attached owner waits in this thread's hand-off buffer until its next
  // safepoint (lib/handoff.cc): reach one, so that an earlier drop of this object by this
  // thread is with the owner (queued, or merged on its behalf) before the bookkeeping below.
  brc::Safepoint();
  if (t->unfinished.fetch_sub(1, std::memory_order_acq_rel) - 1 > 0) return;
  g_blk.pinned.fetch_add(1, std::memory_order_acq_rel);
  uint32_t old = t->state.fetch_or(kAllDropped, std::memory_order_acq_rel);
  if (old & kDestroyed) {
    g_blk.pinned.fetch_sub(1, std::memory_order_acq_rel);
    delete t;
    return;
  }
  int64_t now = g_blk.pinned.load(std::memory_order_acquire);
  uint64_t e2 = g_blk.epoch.load(std::memory_order_seq_cst);
  UpdateMax(g_blk.peak_any, now);
  if (e1 == e2 && (e1 & 1)) {
    Fail("an object whose last reference was dropped while its owner was blocked was not "
         "freed at once (pinned by the blocked owner)");
  }
}

// Samples `pinned` when the owner is blocked throughout the sample and no collection runs
// meanwhile. (A collection may find objects that a holder dropped into the owner's queue while
// the world was stopping: their count is zero but for the queue entry, so they are garbage. The
// collector holds them until it has cleared them, with the world running, and the owner may
// block meanwhile; they are held by the collector then, not on the blocked owner's behalf.)
void SampleBlockedPeak() {
  uint64_t c1 = g_blk.collecting.load(std::memory_order_seq_cst);
  uint64_t e1 = g_blk.epoch.load(std::memory_order_seq_cst);
  if (!(e1 & 1) || (c1 & 1)) return;
  int64_t now = g_blk.pinned.load(std::memory_order_acquire);
  if (g_blk.epoch.load(std::memory_order_seq_cst) == e1 &&
      g_blk.collecting.load(std::memory_order_seq_cst) == c1) {
    UpdateMax(g_blk.peak_blocked, now);
  }
}

struct BItem {
  brc::Object* ob;  // one reference, owned by whoever holds the item
  Track* track;
};

// The owner hands its references over in chunks, so that handing over a whole batch is quick.
using BChunk = std::vector<BItem>;
constexpr size_t kChunkSize = 64;

struct BlockedContext {
  HandoffQueue<BChunk*> backlog;  // made by the owner before it blocked
  HandoffQueue<BItem> pass;       // copies the holders pass to each other
  std::atomic<int64_t> backlog_left{0};  // references in chunks no holder has taken yet
  std::atomic<bool> stop{false};         // set by the owner after its last push
  std::atomic<int> producers_left{0};    // holders that may still push copies
  std::atomic<int> holders_done{0};
  std::atomic<uint64_t> ops{0};
  std::atomic<uint64_t> made{0};
  std::atomic<uint64_t> collections{0};
  double blocked_seconds = 0;  // owner only, read after join
  int holders = 0;
};

constexpr size_t kInitialBatch = 1 << 14;
#if defined(BRC_TSAN) || defined(__SANITIZE_ADDRESS__)
constexpr size_t kMaxBatch = 1 << 18;
#else
constexpr size_t kMaxBatch = 1 << 20;
#endif

// Blocks (inside a BlockingScope, epoch odd) in 1 ms steps until leave() says so; samples
// `pinned` meanwhile. leave() reads and writes atomics only. Returns the seconds spent blocked.
template <class Leave>
double OwnerBlock(Leave leave, const char* what) {
  Clock::time_point t0 = Clock::now();
  brc::BlockingScope blocking;  // drains this thread's queue first
  UpdateMax(g_blk.longest_entry_us,
            std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count());
  g_blk.epoch.fetch_add(1, std::memory_order_seq_cst);  // odd: blocked
  while (!leave()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    SampleBlockedPeak();
    if (Clock::now() - t0 > g_wait_limit) FailF("waiting for %s timed out", what);
  }
  g_blk.epoch.fetch_add(1, std::memory_order_seq_cst);  // even: about to leave
  return SecondsSince(t0);
}

void BlockedOwner(BlockedContext& c, const Options& o, Clock::time_point end) {
  brc::ThreadScope attach;
  std::mt19937_64 rng(ThreadSeed(o.seed, 2, 0));
  size_t batch = kInitialBatch;
  uint64_t made = 0;
  std::vector<BChunk*> staged;  // references made and not handed over yet
  for (bool last = false; !last;) {
    // Make the next batch, then hand it over all at once: the holders get none of it while it
    // is being made (they finish what they hold; drops of this thread's objects meanwhile queue
    // to it and are merged at its safepoints).
    staged.clear();
    size_t refs_made = 0;
    for (size_t i = 0; i < batch; ++i) {
      uint64_t r = rng();
      int refs = (r % 4 == 0) ? 2 : 1;
      auto* t = new Track(refs);
      brc::Ref<brc::Object> ob;
      if (r % 4 == 1) {
        auto n = brc::Make<OwnedNode>(t, r);
        n->leaf_track = new Track(1);
        n->leaf = brc::Make<Owned>(n->leaf_track, ~r);
        ob = std::move(n);
        ++made;
      } else {
        ob = brc::Make<Owned>(t, r);
      }
      ++made;
      // Every reference goes to the holders; the owner keeps none, so the objects' counts stay
      // in its local half: a holder's drop that takes the shared half below zero queues to it.
      if (staged.empty() || staged.back()->size() >= kChunkSize) {
        staged.push_back(new BChunk());
        staged.back()->reserve(kChunkSize + 1);
      }
      if (refs == 2) staged.back()->push_back(BItem{brc::Ref<brc::Object>(ob).Release(), t});
      staged.back()->push_back(BItem{ob.Release(), t});
      refs_made += refs;
      if ((i & 255) == 255) brc::Safepoint();
    }
    c.backlog_left.fetch_add(static_cast<int64_t>(refs_made), std::memory_order_relaxed);
    for (BChunk* chunk : staged) c.backlog.push(chunk);
    // Block until the holders have nearly used the batch up (they drop its objects meanwhile),
    // or, once the time is up, until they have dropped everything and finished.
    int64_t low = static_cast<int64_t>(batch / 64);
    double blocked = OwnerBlock(
        [&] {
          if (TimeUp(end)) {
            last = true;
            c.stop.store(true, std::memory_order_release);  // no more pushes
            return c.holders_done.load(std::memory_order_acquire) == c.holders;
          }
          return c.backlog_left.load(std::memory_order_relaxed) <= low;
        },
        "the holders to use up the backlog");
    c.blocked_seconds += blocked;
    if (blocked < 0.25 && batch < kMaxBatch) batch *= 2;
    brc::Safepoint();
  }
  c.made.store(made);
}

void BlockedHolder(BlockedContext& c, const Options& o, int index) {
  brc::ThreadScope attach;
  std::mt19937_64 rng(ThreadSeed(o.seed, 2, 1 + index));
  std::vector<BItem> ring;   // references this thread holds and works on
  std::vector<BItem> stash;  // references this thread took from the backlog, not used yet
  uint64_t ops = 0;
  auto take = [&](BItem& it) {
    if (c.pass.try_pop(it)) return true;
    if (stash.empty()) {
      BChunk* chunk = nullptr;
      if (!c.backlog.try_pop(chunk)) return false;
      c.backlog_left.fetch_sub(static_cast<int64_t>(chunk->size()), std::memory_order_relaxed);
      stash.swap(*chunk);
      delete chunk;
      if (stash.empty()) return false;
    }
    it = stash.back();
    stash.pop_back();
    return true;
  };
  auto drop = [&](size_t k) {
    BItem it = ring[k];
    ring[k] = ring.back();
    ring.pop_back();
    DropTracked(it.ob, it.track);
    SampleBlockedPeak();
    ++ops;
  };
  Clock::time_point last_collect = Clock::now();
  while (!c.stop.load(std::memory_order_acquire)) {
    bool got_any = false;
    for (int j = 0; j < 64; ++j) {
      BItem it;
      bool got = ring.size() < 32 && take(it);
      if (got) ring.push_back(it);
      got_any |= got;
      uint64_t r = rng();
      if (!ring.empty() && r % 8 == 0) {
        // Pass a copy on: a non-owner increment of a blocked owner's object.
        BItem& h = ring[(r >> 8) % ring.size()];
        h.track->AddRef();
        brc::IncRef(h.ob);
        c.pass.push(h);
        ++ops;
      }
      if (!ring.empty() && (ring.size() >= 16 || !got)) drop((r >> 16) % ring.size());
    }
    brc::Safepoint();
    // Now and then a full collection while the owner is blocked: it scans the owner's nodes
    // while holders merge on the owner's behalf around it.
    if (index == 0 && (g_blk.epoch.load(std::memory_order_relaxed) & 1) &&
        SecondsSince(last_collect) > 0.1) {
      absl::StatusOr<brc::CollectResult> r = brc::Collect();
      if (!r.ok()) FailF("brc::Collect() failed: %s", std::string(r.status().message()).c_str());
      // It may free objects whose last drop queued them to the owner just before the stop
      // (README: their logical count is zero); freeing a held one is caught by TrackDestroyed.
      c.collections.fetch_add(1, std::memory_order_relaxed);
      last_collect = Clock::now();
    }
    if (!got_any && ring.empty()) {
      brc::BlockingScope blocking;
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }
  while (!ring.empty()) drop(ring.size() - 1);
  c.producers_left.fetch_sub(1, std::memory_order_acq_rel);
  // Drop what is left: copies passed before the others stopped, and the owner's backlog.
  Clock::time_point t0 = Clock::now();
  for (uint32_t i = 0;; ++i) {
    BItem it;
    bool last_round = c.producers_left.load(std::memory_order_acquire) == 0;
    if (take(it)) {
      ring.push_back(it);
      drop(0);
      continue;
    }
    if (last_round) break;  // nobody pushes any more and both queues are empty
    brc::Safepoint();
    std::this_thread::yield();
    if ((i & 255) == 0 && Clock::now() - t0 > g_wait_limit) Fail("holder drain timed out");
  }
  c.ops.fetch_add(ops, std::memory_order_relaxed);
  c.holders_done.fetch_add(1, std::memory_order_acq_rel);
}

Result Blocked(const Options& o) {
  g_blk.pinned.store(0);
  g_blk.peak_blocked.store(0);
  g_blk.peak_any.store(0);
  g_blk.longest_entry_us.store(0);
  BlockedContext c;
  c.holders = std::max(1, o.threads - 1);
  c.producers_left.store(c.holders);
  uint64_t callback = brc::AddCollectCallback(
      [](brc::CollectPhase, const brc::CollectResult&) { g_blk.collecting.fetch_add(1); });
  brc::Stats stats_before = brc::GetStats();
  Clock::time_point t0 = Clock::now();
  Clock::time_point end = Deadline(o.seconds);
  std::vector<std::thread> pool;
  // Not attached: this thread only starts and joins.
  pool.emplace_back([&] { BlockedOwner(c, o, end); });
  for (int i = 0; i < c.holders; ++i) pool.emplace_back([&, i] { BlockedHolder(c, o, i); });
  for (auto& t : pool) t.join();
  double secs = SecondsSince(t0);
  brc::RemoveCollectCallback(callback);
  if (g_blk.collecting.load() & 1) Fail("a collection callback ran kStart without kStop");
  if (Track::live_tracks.load() != 0) {
    FailF("%lld handed-out objects were not both dropped by all holders and destroyed",
          static_cast<long long>(Track::live_tracks.load()));
  }
  if (g_blk.pinned.load() != 0) Fail("pinned count not back to zero");
  int64_t bound = 4 * o.threads;
  if (g_blk.peak_blocked.load() > bound) {
    FailF("peak of the blocked owner's objects dropped by all holders but not destroyed was "
          "%lld, above %lld",
          static_cast<long long>(g_blk.peak_blocked.load()), static_cast<long long>(bound));
  }
  brc::Stats stats_after = brc::GetStats();
  Result res;
  res.ops = c.ops.load();
  res.extra = Format("peak pinned while blocked %lld (bound %lld; %lld while attached), owner "
                     "blocked %.0f%% of the run (longest entry %.1f ms), %llu objects made, "
                     "%llu merged on its behalf, %llu collections",
                     static_cast<long long>(g_blk.peak_blocked.load()),
                     static_cast<long long>(bound), static_cast<long long>(g_blk.peak_any.load()),
                     100.0 * c.blocked_seconds / secs, g_blk.longest_entry_us.load() / 1000.0,
                     static_cast<unsigned long long>(c.made.load()),
                     static_cast<unsigned long long>(stats_after.merges_for_owner -
                                                     stats_before.merges_for_owner),
                     static_cast<unsigned long long>(c.collections.load()));
  return res;
}

// ------------------------------------------------------------------------------------------
// Scenario "saturation": racing a count into immortality.

struct SatObject : brc::Object {
  explicit SatObject(uint64_t v) : value(v), check(~v) {
    g_sat.constructed.fetch_add(1, std::memory_order_relaxed);
  }
  ~SatObject() {
    if (check != ~value) Fail("SatObject corrupted before its destructor ran");
    check = 0;
    g_sat.destroyed.fetch_add(1, std::memory_order_relaxed);
  }
  uint64_t value;
  uint64_t check;
};

enum SatMode : int {
  kSatShared,    // shared half just below kSharedSaturationMin: non-owner increments saturate
  kSatLocal,     // local half just below UINT32_MAX: the owner's increments saturate (or a
                 // merge whose sum does not fit, when a non-owner drop queues it)
  kSatNegative,  // shared half just above kSharedNegativeLimit: non-owner decrements saturate
  kSatModes
};
const char* const kSatModeNames[] = {"shared", "local", "negative"};

struct SatRound {
  SatObject* ob = nullptr;
  int mode = 0;
  int64_t phantom = 0;    // unbalanced decrements each worker may make before it is immortal
  int64_t target = 0;     // what each worker holds (shared) or drops (negative) at the barrier
  int64_t floor = 0;      // GetRefCount lower bound while not immortal; 0: not checked
  int64_t destroyed = 0;  // g_sat.destroyed during the round
};

struct SatContext {
  std::atomic<uint64_t> generation{0};  // bumped (release) once `round` is written
  SatRound round;
  std::atomic<int> arrived{0};
  std::atomic<int> finished{0};
  std::atomic<bool> quit{false};
  std::atomic<uint64_t> ops{0};
  int workers = 0;
  uint64_t late_entries = 0;  // owner only: queue entries still pending when a round ended
};

// The invariants checked on every thread, over and over, while the object is counted on.
struct SatChecker {
  const SatRound& r;
  bool immortal = false;
  void Check() {
    if (g_sat.destroyed.load(std::memory_order_relaxed) != r.destroyed) {
      FailF("a %s-saturating object's destructor ran during the run", kSatModeNames[r.mode]);
    }
    bool now = brc::IsImmortal(r.ob);
    if (immortal && !now) {
      FailF("%s saturation: an immortal object became mortal again", kSatModeNames[r.mode]);
    }
    int64_t rc = brc::GetRefCount(r.ob);
    if (now) {
      immortal = true;
      if (rc != brc::kImmortalRefCount) {
        FailF("%s saturation: GetRefCount of an immortal object is %lld, not kImmortalRefCount",
              kSatModeNames[r.mode], static_cast<long long>(rc));
      }
    } else if (r.floor > 0 && rc < r.floor) {
      FailF("%s saturation: GetRefCount %lld of an object with more than %lld references "
            "(small, negative or wrapped)",
            kSatModeNames[r.mode], static_cast<long long>(rc), static_cast<long long>(r.floor));
    }
  }
};

void SatWorker(SatContext& c, const Options& o, int index) {
  brc::ThreadScope attach;
  std::mt19937_64 rng(ThreadSeed(o.seed, 3, 1 + index));
  uint64_t seen = 0;
  uint64_t ops = 0;
  for (;;) {
    WaitUntil(
        [&] {
          return c.generation.load(std::memory_order_acquire) != seen ||
                 c.quit.load(std::memory_order_acquire);
        },
        "the next saturation round");
    if (c.quit.load(std::memory_order_acquire)) break;
    seen = c.generation.load(std::memory_order_acquire);
    const SatRound& r = c.round;
    brc::Object* ob = r.ob;
    SatChecker check{r};
    int64_t held = 0;              // increments this thread made and has not undone
    int64_t phantom = r.phantom;   // references of the preset count this thread may drop
    // Phase 1: a random mix of increments, balanced decrements and a few unbalanced ones
    // (dropping references the preset count stands for).
    int n = 256 + static_cast<int>(rng() % 768);
    for (int i = 0; i < n; ++i, ++ops) {
      uint64_t x = rng();
      switch (x % 4) {
        case 0:
        case 1:
          brc::IncRef(ob);
          ++held;
          break;
        case 2:
          if (held > 0) {
            brc::DecRef(ob);
            --held;
          }
          break;
        default:
          if (phantom > 0 || check.immortal) {
            brc::DecRef(ob);
            --phantom;
          }
          break;
      }
      if ((i & 15) == 15) {
        check.Check();
        brc::Safepoint();
      }
    }
    // Phase 2: push past the limit. Together with the others this is more than enough.
    if (r.mode == kSatShared) {
      for (; held < r.target; ++held, ++ops) brc::IncRef(ob);
    } else if (r.mode == kSatNegative) {
      for (; held > 0; --held, ++ops) brc::DecRef(ob);  // increments would offset the drops
      for (int64_t k = 0; k < r.target; ++k, ++ops) brc::DecRef(ob);
    }
    check.Check();
    c.arrived.fetch_add(1, std::memory_order_acq_rel);
    WaitUntil([&] { return c.arrived.load(std::memory_order_acquire) == c.workers + 1; },
              "the saturation barrier");
    check.Check();
    if (!check.immortal) {
      FailF("%s saturation: the object is not immortal after its count passed the limit",
            kSatModeNames[r.mode]);
    }
    // Phase 3: undo everything, and decrement more than was ever taken: immortality is sticky,
    // so none of this can free it.
    int extra = static_cast<int>(rng() % 64);
    for (int i = 0; held > 0 || i < extra; ++i, ++ops) {
      if (held > 0) {
        brc::DecRef(ob);
        --held;
      } else {
        brc::DecRef(ob);
      }
      if (rng() % 4 == 0) {
        brc::IncRef(ob);
        brc::DecRef(ob);
        ops += 2;
      }
      if ((i & 15) == 15) check.Check();
    }
    check.Check();
    c.finished.fetch_add(1, std::memory_order_acq_rel);
  }
  c.ops.fetch_add(ops, std::memory_order_relaxed);
}

Result Saturation(const Options& o) {
  brc::ThreadScope attach;
  SatContext c;
  c.workers = o.threads;
  std::mt19937_64 rng(ThreadSeed(o.seed, 3, 0));
  std::vector<std::thread> pool;
  for (int i = 0; i < c.workers; ++i) pool.emplace_back([&, i] { SatWorker(c, o, i); });
  uint64_t rounds[kSatModes] = {};
  uint64_t ops = 0;
  int64_t n = c.workers;
  brc::Stats stats_before = brc::GetStats();
  Clock::time_point t0 = Clock::now();
  Clock::time_point end = Deadline(o.seconds);
  for (uint64_t round = 0; !TimeUp(end); ++round) {
    SatRound r;
    r.mode = static_cast<int>(round % kSatModes);
    r.destroyed = g_sat.destroyed.load();
    brc::Ref<SatObject> sat = brc::Make<SatObject>(rng());
    r.ob = sat.get();
    r.phantom = static_cast<int64_t>(rng() % 16);
    int64_t owner_increments = 0;
    // This thread is the owner and nobody else knows the object yet: presetting is allowed.
    if (r.mode == kSatShared) {
      // True count 1 + (kSharedSaturationMin - d): the non-owners need d more to saturate,
      // plus what they drop unbalanced.
      int64_t d = 1 + static_cast<int64_t>(rng() % (256 * n));
      brc::testing::SetCountsForTesting(r.ob, 1, brc::kSharedSaturationMin - static_cast<int32_t>(d),
                                        brc::kStateDefault);
      r.target = (d + n * r.phantom + n - 1) / n + 1;
      r.floor = int64_t{1} << 27;
    } else if (r.mode == kSatLocal) {
      // The owner's d increments reach kLocalImmortal. No floor: a non-owner's unbalanced drop
      // queues the object, and its merge (Rc::ExplicitMerge) zeroes the local half a moment
      // before its CAS publishes the saturated sum, so a racing GetRefCount, which reads the
      // halves separately, may add the zeroed local half to the old shared one and report a
      // small or negative number (a racy snapshot, as documented, but one that never was).
      int64_t d = 1 + static_cast<int64_t>(rng() % 4096);
      brc::testing::SetCountsForTesting(r.ob, brc::kLocalImmortal - static_cast<uint32_t>(d), 0,
                                        brc::kStateDefault);
      owner_increments = d;
      r.floor = 0;
    } else {
      // True count 2^29 + kSharedNegativeLimit + d > 2^28; non-owner decrements take the
      // shared half to the limit and saturate it instead of going further.
      int64_t d = 1 + static_cast<int64_t>(rng() % (256 * n));
      brc::testing::SetCountsForTesting(r.ob, 1u << 29,
                                        brc::kSharedNegativeLimit + static_cast<int32_t>(d),
                                        brc::kStateDefault);
      r.target = (d + n - 1) / n + 1;
      r.floor = int64_t{1} << 27;
    }
    c.round = r;
    c.arrived.store(0, std::memory_order_relaxed);
    c.finished.store(0, std::memory_order_relaxed);
    c.generation.fetch_add(1, std::memory_order_acq_rel);
    SatChecker check{c.round};
    // The owner counts too: its local half, concurrently with the others' shared one.
    int64_t held = 0;
    for (int64_t i = 0; i < owner_increments; ++i, ++ops) {
      brc::IncRef(r.ob);
      ++held;
      if ((i & 63) == 63) {
        check.Check();
        brc::Safepoint();
      }
    }
    for (int i = 0; i < 256; ++i, ops += 2) {
      brc::IncRef(r.ob);
      if (i % 8 == 0) brc::Safepoint();
      brc::DecRef(r.ob);
    }
    check.Check();
    c.arrived.fetch_add(1, std::memory_order_acq_rel);
    WaitUntil([&] { return c.arrived.load(std::memory_order_acquire) == c.workers + 1; },
              "the saturation barrier");
    check.Check();
    if (!check.immortal) {
      FailF("%s saturation: the object is not immortal after its count passed the limit",
            kSatModeNames[r.mode]);
    }
    // Drop everything this thread has, its first reference included: nothing frees it.
    for (; held > 0; --held, ++ops) brc::DecRef(r.ob);
    sat.Reset();
    ++ops;
    check.Check();
    WaitUntil([&] { return c.finished.load(std::memory_order_acquire) == c.workers; },
              "the saturation round to finish");
    check.Check();
    if (g_sat.destroyed.load() != r.destroyed) Fail("a saturated object was freed");
    // A worker's unbalanced drop may have queued the object to this thread (it read the count
    // zero before the object became immortal) after this thread's last safepoint: the barrier
    // and the wait above can both succeed without polling. That entry still refers to the
    // object, so drain it first; merging it into an immortal object changes nothing. Every
    // worker has finished (the acquire above), so its pushes and the pending bit are visible
    // and one safepoint takes them all.
    c.late_entries += brc::testing::QueuedObjectsForTesting(brc::CurrentThreadId());
    brc::Safepoint();
    if (brc::testing::QueuedObjectsForTesting(brc::CurrentThreadId()) != 0) {
      Fail("the owner's merge queue still holds entries after a safepoint with every worker idle");
    }
    check.Check();
    brc::testing::FreeImmortalForTesting(r.ob);
    if (g_sat.destroyed.load() != r.destroyed + 1) {
      Fail("FreeImmortalForTesting did not run the destructor exactly once");
    }
    ++rounds[r.mode];
  }
  double secs = SecondsSince(t0);
  c.quit.store(true, std::memory_order_release);
  {
    brc::BlockingScope blocking;
    for (auto& t : pool) t.join();
  }
  brc::Stats stats_after = brc::GetStats();
  Result res;
  res.ops = ops + c.ops.load();
  uint64_t total = rounds[0] + rounds[1] + rounds[2];
  res.extra = Format("%.0f saturations/s (%llu shared, %llu local, %llu negative; %llu counted "
                     "saturated; %llu queue entries drained after the round)",
                     static_cast<double>(total) / secs,
                     static_cast<unsigned long long>(rounds[kSatShared]),
                     static_cast<unsigned long long>(rounds[kSatLocal]),
                     static_cast<unsigned long long>(rounds[kSatNegative]),
                     static_cast<unsigned long long>(stats_after.saturated -
                                                     stats_before.saturated),
                     static_cast<unsigned long long>(c.late_entries));
  return res;
}

// ------------------------------------------------------------------------------------------
// Scenario "hot": per-thread counts for hot shared objects.

// The scenario's objects: kHotLeaves leaves and kHotNodes tracked nodes, all owned by the owner
// thread, which holds one reference to each until the end. Node j holds leaf j and node j+1
// (a ring: only a collection frees the nodes, and leaves 0..kHotNodes-1 go with them).
constexpr int kHotLeaves = 64;
constexpr int kHotNodes = 32;
constexpr int kHot = kHotLeaves + kHotNodes;
constexpr int kHotMaxHeld = 64;       // references one worker holds at most
constexpr int64_t kHotMaxQueued = 4096;

struct HotGlobals {
  // Set by the owner just before it drops its references: a hot object's destructor before
  // then freed an object the owner still held.
  std::atomic<bool> ending{false};
  std::atomic<int> destroyed[kHot] = {};  // destructor runs, per object
  std::atomic<int> weak_callbacks[kHot] = {};
};
HotGlobals g_hot;

void HotDestroyed(int index, const char* type) {
  if (!g_hot.ending.load(std::memory_order_acquire)) {
    FailF("%s %d destroyed while its owner still held a reference", type, index);
  }
  if (g_hot.destroyed[index].fetch_add(1, std::memory_order_acq_rel) != 0) {
    FailF("%s %d destroyed twice", type, index);
  }
}

struct HotLeaf : brc::Object {
  HotLeaf(int i, uint64_t v) : index(i), value(v), check(~v) {
    g_hot_leaf.constructed.fetch_add(1, std::memory_order_relaxed);
  }
  ~HotLeaf() {
    if (check != ~value) Fail("HotLeaf corrupted before its destructor ran");
    check = 0;
    HotDestroyed(index, "HotLeaf");
    g_hot_leaf.destroyed.fetch_add(1, std::memory_order_relaxed);
  }
  int index;
  uint64_t value;
  uint64_t check;
};

// Edges written only by the owner before the objects are shared, and by the collector's Clear.
struct HotNode : brc::Object {
  HotNode(int i, uint64_t v) : index(i), value(v), check(~v) {
    g_hot_node.constructed.fetch_add(1, std::memory_order_relaxed);
  }
  ~HotNode() {
    if (check != ~value) Fail("HotNode corrupted before its destructor ran");
    check = 0;
    HotDestroyed(index, "HotNode");
    g_hot_node.destroyed.fetch_add(1, std::memory_order_relaxed);
  }
  void Trace(brc::Visitor& v) const {
    v.Visit(next);
    v.Visit(leaf);
  }
  void Clear() {
    next = nullptr;
    leaf = nullptr;
  }
  int index;
  brc::Ref<HotNode> next;
  brc::Ref<HotLeaf> leaf;
  uint64_t value;
  uint64_t check;
};

// A worker's short-lived objects, sometimes switched to per-thread counting by their maker and
// handed to other workers: they die in passes during the run, so per-thread ids are recycled
// while other threads have slots for them (a stale slot would free the next object with the id
// early, or leak it). A TempNode may point to itself: only a collection frees that one.
// Temporaries alive that are on no cycle (counting alone frees them).
std::atomic<int64_t> g_temps_acyclic_alive{0};

struct TempLeaf : brc::Object {
  explicit TempLeaf(uint64_t v) : value(v), check(~v) {
    g_temp_leaf.constructed.fetch_add(1, std::memory_order_relaxed);
    g_temps_acyclic_alive.fetch_add(1, std::memory_order_relaxed);
  }
  ~TempLeaf() {
    if (check != ~value) Fail("TempLeaf corrupted before its destructor ran");
    check = 0;
    g_temps_acyclic_alive.fetch_sub(1, std::memory_order_relaxed);
    g_temp_leaf.destroyed.fetch_add(1, std::memory_order_relaxed);
  }
  uint64_t value;
  uint64_t check;
};

struct TempNode : brc::Object {
  TempNode(uint64_t v, bool c) : cyclic(c), value(v), check(~v) {
    g_temp_node.constructed.fetch_add(1, std::memory_order_relaxed);
    if (!cyclic) g_temps_acyclic_alive.fetch_add(1, std::memory_order_relaxed);
  }
  ~TempNode() {
    if (check != ~value) Fail("TempNode corrupted before its destructor ran");
    check = 0;
    if (!cyclic) g_temps_acyclic_alive.fetch_sub(1, std::memory_order_relaxed);
    g_temp_node.destroyed.fetch_add(1, std::memory_order_relaxed);
  }
  void Trace(brc::Visitor& v) const { v.Visit(self); }
  void Clear() { self = nullptr; }
  brc::Ref<TempNode> self;
  bool cyclic;  // `self` points to it
  uint64_t value;
  uint64_t check;
};

// The references the owner's objects hold among themselves: node j holds leaf j and node j+1.
int HotExpectedCount(int i) { return i < kHotNodes || i >= kHotLeaves ? 2 : 1; }

// A reference in flight between workers. `index` is the hot object's, or -1 for a temporary.
struct HotItem {
  brc::Object* ob = nullptr;  // owns one reference
  int index = -1;
};

struct HotContext {
  brc::Object* objs[kHot] = {};  // the owner's objects; each kept alive by the owner
  std::vector<brc::WeakRef<brc::Object>> weaks;  // one per object, made by the owner
  HandoffQueue<HotItem> queue;
  std::atomic<int64_t> queued{0};
  std::atomic<bool> ready{false};         // the owner made and published the objects
  std::atomic<int> upfront_left{0};       // first-generation workers' switches still to do
  std::atomic<bool> stop{false};          // workers: finish the generation and exit
  std::atomic<bool> workers_done{false};  // every worker has exited
  std::atomic<int64_t> last_collect_ns{0};
  // The object the workers' hot loops hammer: index % 8 == 2 (index % 8 == 6 is left alone,
  // so that some objects may stay biased).
  std::atomic<int> target{2};
  std::atomic<uint64_t> ops{0};
  std::atomic<uint64_t> refcount_checks{0};
  std::atomic<uint64_t> temps{0};
  std::atomic<uint64_t> temps_switched{0};
  std::atomic<uint64_t> refused{0};       // switches refused for max_objects
  std::atomic<uint64_t> collections{0};
  std::atomic<uint64_t> threads_started{0};
  int workers = 0;
};

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             Clock::now().time_since_epoch())
      .count();
}

void CheckStatus(const absl::Status& s, const char* what) {
  if (!s.ok()) FailF("%s failed: %s", what, std::string(s.message()).c_str());
}

// Switches `ob` (the caller holds a reference). OK, or ResourceExhausted while the owner keeps
// max_objects low; anything else is a failure.
void HotSwitch(HotContext& c, brc::Object* ob, const char* who) {
  absl::Status s = brc::CountPerThread(ob);
  if (s.code() == absl::StatusCode::kResourceExhausted) {
    c.refused.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  if (!s.ok()) FailF("CountPerThread by %s failed: %s", who, std::string(s.message()).c_str());
  if (!brc::IsCountedPerThread(ob) && !brc::IsImmortal(ob)) {
    FailF("CountPerThread by %s returned OK but the object is not counted per thread", who);
  }
}

// A collection from a worker or the owner, at most one per 20 ms among them all.
void HotMaybeCollect(HotContext& c, uint64_t r) {
  int64_t now = NowNs();
  int64_t last = c.last_collect_ns.load(std::memory_order_relaxed);
  if (now - last < 20'000'000 ||
      !c.last_collect_ns.compare_exchange_strong(last, now, std::memory_order_relaxed)) {
    return;
  }
  absl::StatusOr<brc::CollectResult> res = (r & 1) ? brc::Collect() : brc::CollectYoung();
  if (!res.ok()) {
    FailF("brc::Collect%s() failed: %s", (r & 1) ? "" : "Young",
          std::string(res.status().message()).c_str());
  }
  c.collections.fetch_add(1, std::memory_order_relaxed);
}

// GetRefCount of hot object `i` counts at least the owner's reference and the `mine` the
// calling thread holds. Per-thread-counted objects: exact (the world is stopped to add the
// slots). The others: the owner never gives its references away, so its local half is at
// least 1 and every non-owner reference is one unit of the shared half, each non-negative.
void HotCheckCount(HotContext& c, int i, int64_t mine) {
  int64_t rc = brc::GetRefCount(c.objs[i]);
  if (rc != brc::kImmortalRefCount && rc < mine + 1) {
    FailF("GetRefCount of hot object %d (%s) is %lld; the caller holds %lld and the owner 1",
          i, brc::IsCountedPerThread(c.objs[i]) ? "per thread" : "biased",
          static_cast<long long>(rc), static_cast<long long>(mine));
  }
  c.refcount_checks.fetch_add(1, std::memory_order_relaxed);
}

// One attachment of a worker: take, drop, hand off, check; then leave (thread churn).
void HotWorkerGeneration(HotContext& c, std::mt19937_64& rng, int slot, bool first) {
  brc::ThreadScope attach;
  struct Held {
    brc::Ref<brc::Object> ref;
    int index;
  };
  std::vector<Held> held;
  held.reserve(kHotMaxHeld + 1);
  int mine[kHot] = {};  // references to each hot object in `held`
  std::vector<brc::WeakRef<TempLeaf>> weak_temps;
  auto hold = [&](brc::Ref<brc::Object> ref, int index) {
    if (index >= 0) ++mine[index];
    held.push_back(Held{std::move(ref), index});
  };
  auto drop = [&](size_t k) {
    if (held[k].index >= 0) --mine[held[k].index];
    std::swap(held[k], held.back());
    held.pop_back();  // the Ref's destructor drops it
  };
  auto push = [&](size_t k) {
    HotItem it{held[k].ref.Release(), held[k].index};
    if (held[k].index >= 0) --mine[held[k].index];
    std::swap(held[k], held.back());
    held.pop_back();
    c.queue.push(it);
    c.queued.fetch_add(1, std::memory_order_relaxed);
  };
  if (first) {
    // Up front, from this worker: the objects with index % 4 == 1 assigned to its slot.
    for (int i = 1; i < kHot; i += 4) {
      if ((i / 4) % c.workers != slot) continue;
      brc::Ref<brc::Object> ref = brc::Ref<brc::Object>::NewRef(c.objs[i]);
      CheckStatus(brc::CountPerThread(ref.get()), "CountPerThread up front by a worker");
      if (!brc::IsCountedPerThread(ref.get())) Fail("an up-front switch did not switch");
      c.upfront_left.fetch_sub(1, std::memory_order_acq_rel);
    }
  }
  int steps = 500 + static_cast<int>(rng() % 6000);
  uint64_t ops = 0;
  for (int step = 0; step < steps; ++step, ++ops) {
    uint64_t r = rng();
    int what = static_cast<int>(r % 1000);
    uint64_t hi = r >> 10;
    int i = static_cast<int>(hi % kHot);
    if (what < 300) {  // take a reference to a hot object
      if (held.size() >= kHotMaxHeld) drop(hi % held.size());
      hold(brc::Ref<brc::Object>::NewRef(c.objs[i]), i);
    } else if (what < 500) {  // drop one
      if (!held.empty()) drop(hi % held.size());
    } else if (what < 620) {  // hand one to another worker
      if (!held.empty()) {
        if (c.queued.load(std::memory_order_relaxed) < kHotMaxQueued) {
          push(hi % held.size());
        } else {
          drop(hi % held.size());
        }
      }
    } else if (what < 720) {  // take one handed over
      HotItem it;
      if (c.queue.try_pop(it)) {
        c.queued.fetch_sub(1, std::memory_order_relaxed);
        if (held.size() >= kHotMaxHeld) drop(hi % held.size());
        hold(brc::Ref<brc::Object>::Adopt(it.ob), it.index);
      }
    } else if (what < 735) {  // GetRefCount, of a hot object this thread holds if any
      if (!held.empty() && held[hi % held.size()].index >= 0) i = held[hi % held.size()].index;
      HotCheckCount(c, i, mine[i]);
    } else if (what < 760) {  // WeakRef::Lock of a hot object: alive, so it must lock
      brc::Ref<brc::Object> got = c.weaks[i].Lock();
      if (got.get() != c.objs[i]) {
        FailF("WeakRef::Lock of hot object %d returned %p, not the object, while its owner "
              "holds it", i, static_cast<void*>(got.get()));
      }
      if ((hi >> 8) & 1) hold(std::move(got), i);  // sometimes keep what Lock gave
    } else if (what < 768) {  // a temporary of this thread's, maybe switched and passed on
      c.temps.fetch_add(1, std::memory_order_relaxed);
      brc::Ref<brc::Object> t;
      if ((hi >> 8) % 4 == 0) {
        bool cyclic = (hi >> 10) & 1;
        brc::Ref<TempNode> n = brc::Make<TempNode>(r, cyclic);
        if (cyclic) n->self = n;  // garbage cycle once dropped
        t = std::move(n);
      } else {
        brc::Ref<TempLeaf> leaf = brc::Make<TempLeaf>(r);
        if (weak_temps.size() < 8) weak_temps.emplace_back(leaf);
        t = std::move(leaf);
      }
      if ((hi >> 12) % 4 != 0) {
        HotSwitch(c, t.get(), "a worker, on its temporary");
        if (brc::IsCountedPerThread(t.get())) c.temps_switched.fetch_add(1);
      }
      for (int k = static_cast<int>((hi >> 14) % 3); k > 0; --k) {
        if (held.size() >= kHotMaxHeld) drop(hi % held.size());
        hold(t, -1);
        if (c.queued.load(std::memory_order_relaxed) < kHotMaxQueued) push(held.size() - 1);
      }
    } else if (what < 778) {  // weak references to temporaries: null, or an intact object
      for (auto& w : weak_temps) {
        brc::Ref<TempLeaf> got = w.Lock();
        if (got && got->check != ~got->value) Fail("WeakRef::Lock returned a corrupt TempLeaf");
      }
      if (!weak_temps.empty() && (hi & 1)) weak_temps.erase(weak_temps.begin());
    } else if (what < 788) {  // GetRefCount of a per-thread temporary this thread holds
      for (size_t k = 0; k < held.size(); ++k) {
        if (held[k].index >= 0 || !brc::IsCountedPerThread(held[k].ref.get())) continue;
        int64_t n = 0;
        for (const Held& h : held) n += h.ref.get() == held[k].ref.get();
        int64_t rc = brc::GetRefCount(held[k].ref.get());
        if (rc != brc::kImmortalRefCount && rc < n) {
          FailF("GetRefCount of a per-thread temporary is %lld; this thread holds %lld",
                static_cast<long long>(rc), static_cast<long long>(n));
        }
        break;
      }
    } else if (what < 791) {
      CheckStatus(brc::MergePerThreadCounts(), "MergePerThreadCounts from a worker");
    } else if (what < 793) {
      HotMaybeCollect(c, hi);
    } else if (what < 803) {  // block for a moment, touching nothing
      brc::BlockingScope blocking;
      if (hi & 1) {
        std::this_thread::sleep_for(std::chrono::microseconds(20));
      } else {
        std::this_thread::yield();
      }
    } else {  // the hot loop: pairs from non-owners on the object they all hammer now
      brc::Object* ob = c.objs[(hi & 3) == 0 ? i : c.target.load(std::memory_order_relaxed)];
      for (int k = 0; k < 64; ++k) {
        brc::IncRef(ob);
        brc::DecRef(ob);
      }
      ops += 127;
    }
    if ((step & 7) == 7) brc::Safepoint();
  }
  // On the way out, pass about half of what is held to the workers that stay or come next.
  while (!held.empty()) {
    if ((rng() & 1) && c.queued.load(std::memory_order_relaxed) < kHotMaxQueued) {
      push(held.size() - 1);
    } else {
      drop(held.size() - 1);
    }
  }
  weak_temps.clear();
  c.ops.fetch_add(ops, std::memory_order_relaxed);
}

// One OS thread of a worker slot: one to three attachments, then it exits.
void HotWorker(HotContext& c, uint64_t seed, int slot, uint64_t index, bool first) {
  std::mt19937_64 rng(ThreadSeed(seed, 4, 1 + index));
  int generations = 1 + static_cast<int>(rng() % 3);
  // The first generation of a slot always runs: it makes the slot's up-front switches.
  for (int g = 0; g < generations && (g == 0 || !c.stop.load(std::memory_order_acquire)); ++g) {
    HotWorkerGeneration(c, rng, slot, first && g == 0);
  }
}

// The owner: makes the objects, switches a quarter of them, keeps counting on them and reaching
// safepoints until the workers are done, then checks every count and tears everything down.
void HotOwner(HotContext& c, const Options& o, std::string* extra) {
  brc::ThreadScope attach;
  std::mt19937_64 rng(ThreadSeed(o.seed, 4, 0));
  std::vector<brc::Ref<brc::Object>> mine;
  {
    std::vector<brc::Ref<HotNode>> nodes;
    std::vector<brc::Ref<HotLeaf>> leaves;
    for (int i = 0; i < kHotLeaves; ++i) leaves.push_back(brc::Make<HotLeaf>(i, rng()));
    for (int j = 0; j < kHotNodes; ++j) {
      nodes.push_back(brc::Make<HotNode>(kHotLeaves + j, rng()));
      nodes.back()->leaf = leaves[j];
    }
    for (int j = 0; j < kHotNodes; ++j) nodes[j]->next = nodes[(j + 1) % kHotNodes];
    for (auto& l : leaves) mine.push_back(std::move(l));
    for (auto& n : nodes) mine.push_back(std::move(n));
  }
  for (int i = 0; i < kHot; ++i) {
    c.objs[i] = mine[i].get();
    int index = i;
    c.weaks.emplace_back(mine[i], [index] {
      g_hot.weak_callbacks[index].fetch_add(1, std::memory_order_relaxed);
    });
  }
  // Up front, by the owner: index % 4 == 0, half of them one by one, the rest under one stop.
  for (int i = 0; i < kHot; i += 8) {
    CheckStatus(brc::CountPerThread(c.objs[i]), "CountPerThread up front by the owner");
  }
  {
    brc::StopTheWorld stop;
    for (int i = 4; i < kHot; i += 8) {
      CheckStatus(brc::CountPerThread(c.objs[i]), "CountPerThread under StopTheWorld");
    }
  }
  for (int i = 0; i < kHot; i += 4) {
    if (!brc::IsCountedPerThread(c.objs[i])) Fail("an up-front switch by the owner did not switch");
  }
  c.ready.store(true, std::memory_order_release);

  int own[kHot] = {};  // the owner's extra references, beyond mine[i]
  std::vector<std::pair<brc::Ref<brc::Object>, int>> extra_refs;
  brc::PerThreadConfig cfg = brc::GetPerThreadConfig();
  bool low = false;
  Clock::time_point phase = Clock::now();
  uint64_t ops = 0;
  for (uint64_t step = 0; !c.stop.load(std::memory_order_acquire); ++step, ++ops) {
    uint64_t r = rng();
    int what = static_cast<int>(r % 1000);
    int i = static_cast<int>((r >> 10) % kHot);
    if (what < 400) {
      if (extra_refs.size() < 32) {
        extra_refs.emplace_back(mine[i], i);
        ++own[i];
      }
    } else if (what < 800) {
      if (!extra_refs.empty()) {
        size_t k = (r >> 20) % extra_refs.size();
        --own[extra_refs[k].second];
        std::swap(extra_refs[k], extra_refs.back());
        extra_refs.pop_back();
      }
    } else if (what < 810) {
      HotCheckCount(c, i, own[i]);
    } else if (what < 812) {  // the third quarter, index % 4 == 3
      int k = (i & ~3) | 3;
      if (!brc::IsCountedPerThread(c.objs[k])) HotSwitch(c, c.objs[k], "the owner");
    } else if (what < 823) {
      CheckStatus(brc::MergePerThreadCounts(), "MergePerThreadCounts from the owner");
    } else if (what < 824) {
      HotMaybeCollect(c, r >> 20);
    } else {
      for (int k = 0; k < 8; ++k) {  // the owner's own pairs (its local half or its slot)
        brc::IncRef(c.objs[i]);
        brc::DecRef(c.objs[i]);
      }
    }
    if ((step & 7) == 7) brc::Safepoint();
    if ((step & 63) == 63) {
      // The next object for the workers to hammer: one the detector has not switched yet,
      // when there is one.
      if ((r >> 40) % 8 == 0 || brc::IsCountedPerThread(c.objs[c.target.load()])) {
        int first = static_cast<int>((r >> 44) % (kHot / 8));
        for (int k = 0; k < kHot / 8; ++k) {
          int t = 8 * ((first + k) % (kHot / 8)) + 2;
          if (!brc::IsCountedPerThread(c.objs[t]) || k == kHot / 8 - 1) {
            c.target.store(t, std::memory_order_relaxed);
            break;
          }
        }
      }
      // max_objects low for a while (switches are refused), then high again: only once every
      // worker has made its up-front switches, which must succeed.
      if (c.upfront_left.load(std::memory_order_acquire) == 0 &&
          Clock::now() - phase > std::chrono::milliseconds(low ? 50 : 200)) {
        low = !low;
        brc::PerThreadConfig next = cfg;
        next.max_objects = low ? kHot / 2 : int64_t{1} << 20;
        CheckStatus(brc::SetPerThreadConfig(next), "SetPerThreadConfig");
        phase = Clock::now();
      }
      brc::BlockingScope blocking;  // leave the cores to the workers for a moment
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
  CheckStatus(brc::SetPerThreadConfig(cfg), "SetPerThreadConfig");
  extra_refs.clear();
  // Every worker has exited. Drop what they left in the queue: then the owner's references are
  // the only ones, and every count is exact (HotExpectedCount).
  // Wait for the last workers inside a BlockingScope, as a thread joining them would: their
  // exits then happen while this thread is blocked, and a merge pass they owe (their last drops
  // took slots below zero) must still run at this thread's safepoints afterwards.
  {
    brc::BlockingScope blocking;
    Clock::time_point t0 = Clock::now();
    while (!c.workers_done.load(std::memory_order_acquire)) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      if (Clock::now() - t0 > g_wait_limit) Fail("waiting for the workers to exit timed out");
    }
  }
  // Take what the workers left in the queue without dropping it (a drop here would make this
  // thread's own slots due). The temporaries alive must soon be exactly the ones it holds: the
  // others' true counts are zero, and a due pass frees them at this thread's safepoints.
  std::vector<brc::Ref<brc::Object>> left;
  HotItem it;
  while (c.queue.try_pop(it)) left.push_back(brc::Ref<brc::Object>::Adopt(it.ob));
  c.queued.store(0);
  {
    std::vector<brc::Object*> temps;
    for (auto& ref : left) {
      if (std::find(c.objs, c.objs + kHot, ref.get()) == c.objs + kHot) temps.push_back(ref.get());
    }
    std::sort(temps.begin(), temps.end());
    int64_t held = std::unique(temps.begin(), temps.end()) - temps.begin();
    // Dead TempNodes on self-cycles wait for a collection: only the others count. (Held ones
    // on self-cycles are in `held` too, which can only hide a pinned object, never invent one.)
    auto alive = [] { return g_temps_acyclic_alive.load(); };
    Clock::time_point t0 = Clock::now();
    uint64_t passes0 = brc::GetStats().merge_passes;
    while (alive() > held) {
      brc::Safepoint();
      {
        brc::BlockingScope blocking;
        std::this_thread::sleep_for(std::chrono::microseconds(100));
      }
      if (Clock::now() - t0 > std::chrono::seconds(5)) {
        FailF("after the workers exited, %lld temporaries are alive but only %lld are held "
              "(temporaries on self-cycles not counted): a due merge pass did not run at the "
              "owner's safepoints for 5 s (%llu passes meanwhile)",
              static_cast<long long>(alive()), static_cast<long long>(held),
              static_cast<unsigned long long>(brc::GetStats().merge_passes - passes0));
      }
    }
  }
  left.clear();
  int switched = 0;
  for (int i = 0; i < kHot; ++i) {
    switched += brc::IsCountedPerThread(c.objs[i]);
    int64_t rc = brc::GetRefCount(c.objs[i]);
    if (rc != HotExpectedCount(i)) {
      FailF("hot object %d (%s): GetRefCount %lld with only the owner's references (%d) left",
            i, brc::IsCountedPerThread(c.objs[i]) ? "per thread" : "biased",
            static_cast<long long>(rc), HotExpectedCount(i));
    }
    if (g_hot.destroyed[i].load() != 0) FailF("hot object %d destroyed during the run", i);
  }
  // Teardown. Drop the owner's references; the rule: a per-thread-counted object is freed by
  // the first pass (or collection) after its true count reaches zero, a biased one at once.
  g_hot.ending.store(true, std::memory_order_release);
  mine.clear();
  for (int i = kHotNodes; i < kHotLeaves; ++i) {  // leaves no node holds
    if (!brc::IsCountedPerThread(c.objs[i]) && g_hot.destroyed[i].load() != 1) {
      FailF("biased hot leaf %d not freed by its owner's last DecRef", i);
    }
  }
  CheckStatus(brc::MergePerThreadCounts(), "MergePerThreadCounts at the end");
  for (int i = kHotNodes; i < kHotLeaves; ++i) {
    if (g_hot.destroyed[i].load() != 1) {
      FailF("hot leaf %d, dropped by everyone, not freed by the next merge pass", i);
    }
  }
  absl::StatusOr<brc::CollectResult> res = brc::Collect();
  if (!res.ok()) FailF("final Collect() failed: %s", std::string(res.status().message()).c_str());
  if (res->uncollectable != 0) Fail("the final collection found uncollectable objects");
  for (int i = kHotLeaves; i < kHot; ++i) {
    if (g_hot.destroyed[i].load() != 1) FailF("hot node %d not freed by the final Collect()", i);
  }
  CheckStatus(brc::MergePerThreadCounts(), "MergePerThreadCounts after the final Collect()");
  for (int i = 0; i < kHot; ++i) {
    if (g_hot.destroyed[i].load() != 1) {
      FailF("hot object %d destroyed %d times at the end", i, g_hot.destroyed[i].load());
    }
    if (g_hot.weak_callbacks[i].load() != 1) {
      FailF("hot object %d: its weak callback ran %d times", i, g_hot.weak_callbacks[i].load());
    }
    if (c.weaks[i].Lock()) FailF("WeakRef::Lock of freed hot object %d did not return null", i);
  }
  c.weaks.clear();
  // Last, the case above made deterministic: a thread drops the last reference to a
  // per-thread-counted object (its slot goes below zero: a pass is due) and exits while this
  // thread joins it inside a BlockingScope. The pass must still run at this thread's safepoints.
  {
    int64_t destroyed0 = g_temp_leaf.destroyed.load();
    brc::Ref<TempLeaf> x = brc::Make<TempLeaf>(rng());
    CheckStatus(brc::CountPerThread(x.get()), "CountPerThread on the last temporary");
    brc::Safepoint();  // runs (and so clears) whatever this thread itself still had pending
    std::thread t([raw = x.Release()] {
      brc::ThreadScope attach;
      brc::Ref<TempLeaf>::Adopt(raw).Reset();
    });
    {
      brc::BlockingScope blocking;
      t.join();
    }
    Clock::time_point t0 = Clock::now();
    while (g_temp_leaf.destroyed.load() == destroyed0) {
      brc::Safepoint();
      {
        brc::BlockingScope blocking;
        std::this_thread::sleep_for(std::chrono::microseconds(100));
      }
      if (Clock::now() - t0 > std::chrono::seconds(5)) {
        Fail("a per-thread-counted object whose last reference was dropped by a thread that "
             "then exited, while this one joined it in a BlockingScope, was not freed by 5 s of "
             "this thread's safepoints: the due merge pass was lost");
      }
    }
  }
  c.ops.fetch_add(ops, std::memory_order_relaxed);
  *extra = Format("%d/%d hot objects per thread at the end", switched, kHot);
}

Result Hot(const Options& o) {
  for (int i = 0; i < kHot; ++i) {
    g_hot.destroyed[i].store(0);
    g_hot.weak_callbacks[i].store(0);
  }
  g_hot.ending.store(false);
  HotContext c;
  c.workers = o.threads;
  for (int i = 1; i < kHot; i += 4) c.upfront_left.fetch_add(1);  // see HotWorkerGeneration
  std::mt19937_64 rng(ThreadSeed(o.seed, 4, 1u << 20));
  brc::PerThreadConfig saved = brc::GetPerThreadConfig();
  brc::PerThreadConfig cfg = saved;
  cfg.detect_contention = true;
  cfg.contention_threshold = 2 + static_cast<int>(rng() % 7);
  const int64_t intervals_us[] = {0, 100, 1000};
  cfg.merge_interval = absl::Microseconds(intervals_us[rng() % 3]);
  CheckStatus(brc::SetPerThreadConfig(cfg), "SetPerThreadConfig");
  brc::Stats before = brc::GetStats();
  std::string owner_extra;
  // This thread is not attached: it starts, joins and restarts threads, touching no object.
  std::thread owner([&] { HotOwner(c, o, &owner_extra); });
  Clock::time_point wait_start = Clock::now();
  while (!c.ready.load(std::memory_order_acquire)) {
    std::this_thread::sleep_for(std::chrono::microseconds(200));
    if (Clock::now() - wait_start > g_wait_limit) Fail("the owner never published its objects");
  }
  struct Slot {
    std::thread thread;
    std::atomic<bool> done{false};
  };
  std::unique_ptr<Slot[]> slots(new Slot[c.workers]);
  auto start = [&](int s, bool first) {
    slots[s].done.store(false, std::memory_order_relaxed);
    uint64_t index = c.threads_started.fetch_add(1);
    slots[s].thread = std::thread([&c, &slots, s, index, first, seed = o.seed] {
      HotWorker(c, seed, s, index, first);
      slots[s].done.store(true, std::memory_order_release);
    });
  };
  Clock::time_point end = Deadline(o.seconds);
  for (int s = 0; s < c.workers; ++s) start(s, true);
  while (!TimeUp(end)) {
    for (int s = 0; s < c.workers; ++s) {
      if (!slots[s].done.load(std::memory_order_acquire)) continue;
      slots[s].thread.join();
      start(s, false);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  c.stop.store(true, std::memory_order_release);
  for (int s = 0; s < c.workers; ++s) slots[s].thread.join();
  c.workers_done.store(true, std::memory_order_release);
  owner.join();
  if (c.upfront_left.load() != 0) Fail("not every up-front switch by a worker ran");
  CheckStatus(brc::SetPerThreadConfig(saved), "SetPerThreadConfig (restoring)");
  brc::Stats after = brc::GetStats();
  Result res;
  res.ops = c.ops.load();
  res.extra = Format(
      "%s; threshold %d, interval %lld us; %llu switched (%llu by the detector, %llu refused), "
      "%llu passes, %llu freed by passes, %llu temporaries (%llu per thread), %llu GetRefCount "
      "checks, %llu collections, %llu threads",
      owner_extra.c_str(), cfg.contention_threshold,
      static_cast<long long>(absl::ToInt64Microseconds(cfg.merge_interval)),
      static_cast<unsigned long long>(after.per_thread_switched - before.per_thread_switched),
      static_cast<unsigned long long>(after.per_thread_detected - before.per_thread_detected),
      static_cast<unsigned long long>(c.refused.load()),
      static_cast<unsigned long long>(after.merge_passes - before.merge_passes),
      static_cast<unsigned long long>(after.per_thread_freed - before.per_thread_freed),
      static_cast<unsigned long long>(c.temps.load()),
      static_cast<unsigned long long>(c.temps_switched.load()),
      static_cast<unsigned long long>(c.refcount_checks.load()),
      static_cast<unsigned long long>(c.collections.load()),
      static_cast<unsigned long long>(c.threads_started.load()));
  return res;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!StartRun("brc_thread_stress", "threads|blocked|saturation|hot", argc, argv, &o)) return 2;
  g_seed = o.seed;
  g_wait_limit = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(60.0 + 2.0 * o.seconds));
  struct Scenario {
    const char* name;
    Result (*run)(const Options&);
  };
  const Scenario scenarios[] = {
      {"threads", Threads}, {"blocked", Blocked}, {"saturation", Saturation}, {"hot", Hot}};
  bool ran = false;
  for (const Scenario& s : scenarios) {
    if (o.scenario != "all" && o.scenario != s.name) continue;
    ran = true;
    g_scenario = s.name;
    int64_t live_before = brc::GetStats().live_objects();
    auto start = Clock::now();
    Result res;
    {
      Watchdog watchdog(std::chrono::duration_cast<Clock::duration>(
          std::chrono::duration<double>(120.0 + 4.0 * o.seconds)));
      res = s.run(o);
    }
    double secs = SecondsSince(start);
    int64_t live_after = brc::GetStats().live_objects();
    if (live_after != live_before) {
      FailF("live objects %lld before, %lld after: objects leaked or freed twice",
            static_cast<long long>(live_before), static_cast<long long>(live_after));
    }
    for (TypeCounters* t : g_all_types) {
      if (t->constructed.load() != t->destroyed.load()) {
        FailF("%s: %lld constructed, %lld destroyed", t->name,
              static_cast<long long>(t->constructed.load()),
              static_cast<long long>(t->destroyed.load()));
      }
    }
    std::printf("brc_thread_stress: %-10s ok  %12.0f ops/s  %s\n", s.name, res.ops / secs,
                res.extra.c_str());
    std::fflush(stdout);
  }
  if (!ran) {
    std::fprintf(stderr, "brc_thread_stress: unknown scenario '%s'\n", o.scenario.c_str());
    return 2;
  }
  return 0;
}
