// Concurrency stress for the cycle collector: seeded, bounded in time, invariant-checked.
//
//   brc_gc_stress [--scenario graph|finalizers|oldyoung|all] [--threads N] [--seconds S]
//                 [--seed X]
//
// Prints its parameters first and operations per second per scenario at the end; exits 1 on a
// violated invariant, naming it and the seed. Each scenario runs N worker threads for S seconds
// next to a dedicated collector thread that calls brc::Collect() in a loop (oldyoung: mostly
// brc::CollectYoung(), see below), while automatic collections run inside the workers'
// allocations (a small threshold; the marking-worker count alternates between 1 and 2, and a
// ballast of live nodes keeps the heap large enough for two marking threads to be used). A
// worker that sees too many live nodes calls brc::Collect() itself, so allocation cannot outrun
// collection. Every scenario ends with all roots dropped, the threads joined and collections
// run, and checks that brc's live-object count and the scenario's own construction/destruction
// counters are back where they started. Every collection's result (explicit or automatic,
// through a collection callback) must add up (unreachable == collected + uncollectable +
// resurrected, nothing found or promoted beyond what was examined) and report no uncollectable
// objects and no errors: every Clear() here drops every reference its Trace() reports. An
// explicit Collect() must report a full collection and CollectYoung() a young one.
//
//  graph       Workers build, share (a slot table and a hand-off queue), rewire and drop graphs
//              of tracked nodes that contain cycles. The collector thread also stops the world
//              and checks, while everyone is parked: the census object's count is 1 + the
//              references the workers say they hold; every node in the slot table is alive,
//              tracked, counted at least once per slot referencing it, and no lock is held by a
//              parked thread. Clear() never runs on a node whose edge another thread is using;
//              no thread ever reaches a node the collector cleared (roots, walks, slots,
//              hand-offs); no destructor sees a corrupted node; nothing is finalized.
//  finalizers  Workers create cycles of nodes whose Finalize() resurrects the node, creates new
//              garbage cycles, drops the WeakRefs it holds or makes a new WeakRef to itself;
//              workers hold WeakRefs (some with callbacks) and Lock() them, and pass nodes
//              around. Finalize() runs at most once per object and never after Clear(); Clear()
//              only after Finalize(); WeakRef::Lock() and the resurrection list never hand out
//              a destroyed or cleared object; a weak callback runs at most once and sees Lock()
//              return null; the finalizer count matches brc's statistics.
//  oldyoung    Young collections next to old objects. An old set of nodes is made first and
//              promoted by a full collection. Workers keep giving old nodes references to young
//              nodes (some made in constructors, some referencing old nodes back), moving them
//              between old nodes and taking them away, and make young garbage cycles: some
//              dropped at once, some hung on an old node for a while (across collections) and
//              then cut loose. A collector thread runs CollectYoung() in a loop and Collect()
//              every eighth time; automatic collections come with a small young_threshold;
//              constructors run CollectYoung() now and then. Round 1 marks with one worker,
//              round 2 with two (and phases with a large threshold, so young sets span many
//              pages). After each collection of the collector thread, with the world stopped:
//              every node reachable from the old set is intact, never cleared, tracked and
//              counted, and no edge lock is held. After each round, with automatic collection
//              off and every count known: a young collection finds exactly the young garbage
//              cycles (also those made by a thread that has exited), promotes exactly the
//              young survivors, and leaves every old node's count as the references to it
//              say; cycles cut loose after their promotion wait for the full collection, which
//              finds exactly them; a constructor's young collection leaves its object young.
//              At the end, everything cut loose and full collections run: every node made was
//              destroyed, Clear() ran at most once per node and as often as brc counts
//              collected objects, and brc counts young, full and automatic collections.
//
// Every wait is bounded: lock waits, stops of the world (brc's watchdog) and the scenario as a
// whole (a watchdog thread) fail the run instead of hanging.
#include <pthread.h>
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
#include <utility>
#include <vector>

#include "brc/brc.h"
#include "stress_common.h"

namespace {

using brc_stress::Clock;
using brc_stress::Deadline;
using brc_stress::HandoffQueue;
using brc_stress::Options;
using brc_stress::StartRun;
using brc_stress::TimeUp;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

// Work sizes (smaller under sanitizers, where every operation costs 5-20x more).
constexpr std::size_t kSlots = kSanitized ? 64 : 256;           // graph: shared slot table
constexpr std::size_t kWeakCells = kSanitized ? 32 : 128;       // finalizers: shared WeakRefs
constexpr std::size_t kMaxRoots = kSanitized ? 16 : 32;         // per worker
constexpr std::size_t kMaxWeaks = kSanitized ? 32 : 64;         // per worker (finalizers)
constexpr std::size_t kMaxCensusRefs = 8;                       // per worker (graph)
constexpr int kMaxRing = kSanitized ? 6 : 12;                   // nodes in a fresh graph ring
constexpr int kMaxFCycle = 6;                                   // nodes in a fresh FNode cycle
// Back-pressure: a worker that sees more live nodes of the scenario's type than this collects
// itself (an explicit Collect() racing the others), so that allocation cannot outrun the
// collector and the heap stays bounded.
constexpr int64_t kLiveLimit = kSanitized ? 60000 : 250000;
constexpr int kBallastNodes = 16384;  // about 24 heap pages: enough for 2 marking workers
constexpr int kBallastRing = 64;
constexpr int kMaxGeneration = 3;     // garbage made by finalizers of garbage made by ...
constexpr int kSettleRounds = 12;     // final collections allowed to reach an empty heap
constexpr brc::CollectorConfig kGcConfig = {
    .young_threshold = 500, .full_ratio = 0.25, .generational = true, .workers = 2};

constexpr uint64_t kAlive = 0xA11CE5A11CE5A11Cull;
constexpr uint64_t kDead = 0xDEADBEEFDEADBEEFull;

uint64_t g_seed = 0;
const char* g_scenario = "";

[[noreturn]] void Fail(const char* what) {
  std::fflush(stdout);
  std::fprintf(stderr, "brc_gc_stress: INVARIANT VIOLATED: %s (seed %llu)\n", what,
               static_cast<unsigned long long>(g_seed));
  std::fflush(stderr);
  std::_Exit(1);
}

// Prints one line of detail ("<scenario>: ...") and then fails like Fail(what).
[[noreturn]] __attribute__((format(printf, 2, 3))) void FailDetail(const char* what,
                                                                 const char* fmt, ...) {
  std::fflush(stdout);
  std::fprintf(stderr, "brc_gc_stress: %s: ", g_scenario);
  va_list args;
  va_start(args, fmt);
  std::vfprintf(stderr, fmt, args);
  va_end(args);
  std::fputc('\n', stderr);
  Fail(what);
}

void NameThread(const char* name) { pthread_setname_np(pthread_self(), name); }

constexpr auto kLockTimeout = std::chrono::seconds(kSanitized ? 120 : 30);

// A lock for data that mutators share (node edges, table slots). Holders never reach a
// safepoint, never allocate objects and never drop a reference while holding it (they swap
// Refs, or take one increment), so they never wait for a stop of the world. Waiters reach a
// safepoint on every spin, so a stop never waits for them. Hence no BlockingScope is needed,
// and `held()` seen true while the world is stopped means a thread parked holding it.
class SpinLock {
 public:
  bool try_lock() noexcept {
    return !held_.load(std::memory_order_relaxed) &&
           !held_.exchange(true, std::memory_order_acquire);
  }
  void lock() {
    if (try_lock()) return;
    Clock::time_point start = Clock::now();
    for (uint64_t spins = 1;; ++spins) {
      brc::Safepoint();
      std::this_thread::yield();
      if (try_lock()) return;
      if ((spins & 1023) == 0 && Clock::now() - start > kLockTimeout) {
        Fail("a node or slot lock stayed held for too long (its holder stalled)");
      }
    }
  }
  void unlock() noexcept { held_.store(false, std::memory_order_release); }
  bool held() const noexcept { return held_.load(std::memory_order_relaxed); }

 private:
  std::atomic<bool> held_{false};
};

// A strong reference that several mutators read and replace.
template <class T>
class SharedRef {
 public:
  // A new reference: one increment under the lock, never a free.
  brc::Ref<T> Load() const {
    std::lock_guard<SpinLock> lock(mu_);
    return ref_;
  }
  // Installs `r` and returns the previous reference, which the caller drops outside the lock.
  brc::Ref<T> Exchange(brc::Ref<T> r) {
    {
      std::lock_guard<SpinLock> lock(mu_);
      ref_.swap(r);
    }
    return r;
  }
  // Takes the reference out if it still points to `expected` (the caller drops it outside the
  // lock); otherwise leaves it and returns null.
  brc::Ref<T> TakeIf(const T* expected) {
    brc::Ref<T> out;
    {
      std::lock_guard<SpinLock> lock(mu_);
      if (ref_.get() == expected) ref_.swap(out);
    }
    return out;
  }
  // Without the lock: only with the world stopped (Trace, checks) or exclusive access.
  const brc::Ref<T>& Unsynchronized() const { return ref_; }
  brc::Ref<T>& Unsynchronized() { return ref_; }
  SpinLock& mu() const { return mu_; }

 private:
  mutable SpinLock mu_;
  brc::Ref<T> ref_;
};

// The same for a WeakRef (copying one takes the weak table's shard lock, not a count).
template <class T>
class SharedWeak {
 public:
  brc::WeakRef<T> Load() const {
    std::lock_guard<SpinLock> lock(mu_);
    return weak_;
  }
  brc::WeakRef<T> Exchange(brc::WeakRef<T> w) {
    {
      std::lock_guard<SpinLock> lock(mu_);
      std::swap(weak_, w);
    }
    return w;
  }

 private:
  mutable SpinLock mu_;
  brc::WeakRef<T> weak_;
};

// Tells the collection results apart from what this program expects of them. Runs on the
// collecting thread (a collection callback, world running) for automatic and explicit ones.
struct Expectations {
  bool finalizers = false;  // whether any collectable type declares Finalize()
};
Expectations g_expect;

std::atomic<uint64_t> g_max_stopped_us{0};  // the longest a collection held the world stopped
std::atomic<uint64_t> g_auto_young{0};      // automatic collections seen, by kind
std::atomic<uint64_t> g_auto_full{0};
std::atomic<uint64_t> g_max_young_scanned{0};  // the largest young set a collection examined

void NoteMax(std::atomic<uint64_t>& max, uint64_t v) {
  uint64_t seen = max.load(std::memory_order_relaxed);
  while (v > seen && !max.compare_exchange_weak(seen, v)) {
  }
}

void CheckCollectResult(const brc::CollectResult& r) {
  NoteMax(g_max_stopped_us, static_cast<uint64_t>(absl::ToInt64Microseconds(r.time_stopped)));
  if (r.unreachable != r.collected + r.uncollectable + r.resurrected) {
    FailDetail("a collection's counts do not add up (unreachable != collected + uncollectable + "
               "resurrected)",
               "unreachable %llu collected %llu uncollectable %llu resurrected %llu",
               static_cast<unsigned long long>(r.unreachable),
               static_cast<unsigned long long>(r.collected),
               static_cast<unsigned long long>(r.uncollectable),
               static_cast<unsigned long long>(r.resurrected));
  }
  if (r.uncollectable != 0) {
    FailDetail("a collection found uncollectable objects, but every Clear() drops every "
               "reference its Trace() reports",
               "uncollectable %llu of %llu unreachable",
               static_cast<unsigned long long>(r.uncollectable),
               static_cast<unsigned long long>(r.unreachable));
  }
  if (r.errors != 0) Fail("a collection reported errors, but nothing here throws");
  if (r.finalized > r.unreachable) Fail("a collection finalized more objects than it found");
  if (r.unreachable > r.scanned || r.promoted > r.scanned) {
    FailDetail("a collection found unreachable or promoted more objects than it examined",
               "%s collection: scanned %llu unreachable %llu promoted %llu",
               r.kind == brc::CollectKind::kYoung ? "young" : "full",
               static_cast<unsigned long long>(r.scanned),
               static_cast<unsigned long long>(r.unreachable),
               static_cast<unsigned long long>(r.promoted));
  }
  if (r.kind == brc::CollectKind::kYoung) NoteMax(g_max_young_scanned, r.scanned);
  if (r.automatic) {
    (r.kind == brc::CollectKind::kYoung ? g_auto_young : g_auto_full)
        .fetch_add(1, std::memory_order_relaxed);
  }
  if (!g_expect.finalizers && (r.finalized != 0 || r.resurrected != 0)) {
    Fail("a collection finalized or resurrected objects of types without Finalize()");
  }
}

// `kind`: what was asked for, kFull for brc::Collect() and kYoung for brc::CollectYoung().
void CheckCollect(const absl::StatusOr<brc::CollectResult>& r,
                  brc::CollectKind kind = brc::CollectKind::kFull) {
  const char* call = kind == brc::CollectKind::kYoung ? "CollectYoung" : "Collect";
  if (!r.ok()) {
    FailDetail("an explicit collection failed on an attached thread outside any collection",
               "brc::%s(): %s", call, r.status().ToString().c_str());
  }
  if (r->automatic) {
    FailDetail("an explicit collection returned a result marked automatic", "brc::%s()", call);
  }
  if (r->kind != kind) {
    FailDetail("an explicit collection reports the other kind than the one asked for",
               "brc::%s() returned kind %s", call,
               r->kind == brc::CollectKind::kYoung ? "young" : "full");
  }
  CheckCollectResult(*r);
}

void SetGcWorkers(int workers) {
  brc::CollectorConfig c = kGcConfig;
  c.workers = workers;
  if (absl::Status s = brc::SetCollectorConfig(c); !s.ok()) {
    FailDetail("SetCollectorConfig rejected a valid configuration", "%s", s.ToString().c_str());
  }
}

// Fails the run when a scenario does not finish in time, instead of hanging. A plain thread:
// it is not attached, so it never delays a stop of the world.
class HangWatchdog {
 public:
  HangWatchdog(const char* scenario, double limit_s)
      : thread_([this, scenario, limit_s] {
          std::unique_lock<std::mutex> lock(mu_);
          auto limit = std::chrono::duration<double>(limit_s);
          if (!cv_.wait_for(lock, limit, [this] { return done_; })) {
            std::fprintf(stderr, "brc_gc_stress: %s: not finished after %.0f s\n", scenario,
                         limit_s);
            Fail("the scenario hung (did not finish within its time limit)");
          }
        }) {}
  ~HangWatchdog() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

// ---------------------------------------------------------------------------------------------
// graph: churn of cyclic object graphs, with a census checked while the world is stopped.

std::atomic<uint64_t> g_max_heap_pages{0};  // the largest heap a collection walked
std::atomic<uint64_t> g_max_survivors{0};   // the most tracked objects a collection left alive

void NoteHeapPages() {
  brc::CollectorStats s = brc::GetCollectorStats();
  NoteMax(g_max_heap_pages, s.heap_pages);
  NoteMax(g_max_survivors, s.tracked);
}

std::atomic<int64_t> g_gnode_made{0};
std::atomic<int64_t> g_gnode_freed{0};
std::atomic<int64_t> g_census_made{0};
std::atomic<int64_t> g_census_freed{0};

struct GNode : brc::Object {
  static constexpr std::string_view kTypeName = "stress::GNode";
  static constexpr int kEdges = 3;

  explicit GNode(uint64_t node_id) : id(node_id) {
    g_gnode_made.fetch_add(1, std::memory_order_relaxed);
  }
  ~GNode() {
    if (canary != kAlive) Fail("a GNode's destructor found its canary corrupted (freed twice?)");
    canary = kDead;
    g_gnode_freed.fetch_add(1, std::memory_order_relaxed);
  }
  void Trace(brc::Visitor& v) const {
    for (const SharedRef<GNode>& e : edges) v.Visit(e.Unsynchronized());
  }
  // Only ever called on garbage: nothing else can reach the node, so no mutator holds the lock
  // of one of its edges. Takes each lock to say so, and drops the references outside it.
  void Clear() {
    if (canary != kAlive) Fail("Clear() ran on a destroyed GNode");
    cleared.store(true, std::memory_order_relaxed);
    brc::Ref<GNode> dropped[kEdges];
    for (int i = 0; i < kEdges; ++i) {
      SpinLock& mu = edges[i].mu();
      if (!mu.try_lock()) Fail("Clear() ran on a GNode whose edge another thread is using");
      dropped[i] = std::move(edges[i].Unsynchronized());
      mu.unlock();
    }
  }

  SharedRef<GNode> edges[kEdges];
  std::atomic<bool> cleared{false};  // set by Clear(): no thread may reach the node afterwards
  const uint64_t id;
  uint64_t canary = kAlive;
};

// The object whose count is checked against the workers' published holdings. Tracked (with no
// references), so every collection sees it and must treat it as a root.
struct Census : brc::Object {
  static constexpr std::string_view kTypeName = "stress::Census";
  Census() { g_census_made.fetch_add(1, std::memory_order_relaxed); }
  ~Census() {
    if (canary != kAlive) Fail("the census object's destructor found its canary corrupted");
    canary = kDead;
    g_census_freed.fetch_add(1, std::memory_order_relaxed);
  }
  void Trace(brc::Visitor&) const {}
  void Clear() { Fail("the collector cleared the census object, which a thread still holds"); }
  uint64_t canary = kAlive;
};

void CheckGNode(const GNode* n, const char* where) {
  if (n->canary != kAlive) {
    FailDetail("a reachable GNode is destroyed or corrupted", "%s: node %p canary %llx", where,
               static_cast<const void*>(n), static_cast<unsigned long long>(n->canary));
  }
  if (!brc::IsTracked(n)) FailDetail("a reachable GNode is not tracked", "%s", where);
  if (n->cleared.load(std::memory_order_relaxed)) {
    FailDetail("a reachable GNode was cleared by the collector (it was not garbage)",
               "%s: node %p id %llx", where, static_cast<const void*>(n),
               static_cast<unsigned long long>(n->id));
  }
}

// Ring(s) of nodes that stay alive for the whole scenario, so that the heap has enough pages
// for parallel marking. `holder` keeps every node alive (edges may be rewired by workers).
std::vector<brc::Ref<GNode>> MakeBallast(uint64_t first_id) {
  std::vector<brc::Ref<GNode>> nodes;
  nodes.reserve(kBallastNodes);
  for (int i = 0; i < kBallastNodes; ++i) nodes.push_back(brc::Make<GNode>(first_id + i));
  for (int i = 0; i < kBallastNodes; ++i) {
    int ring = i / kBallastRing;
    int next = ring * kBallastRing + (i + 1) % kBallastRing;
    nodes[i]->edges[0].Exchange(nodes[next]);
    if (i % 7 == 0) nodes[i]->edges[1].Exchange(nodes[(i * 31 + 17) % kBallastNodes]);
  }
  return nodes;
}

struct alignas(64) Published {
  std::atomic<int64_t> census{0};  // census references this worker holds, at its safepoints
};

struct GraphShared {
  GraphShared(const Options& opts, const brc::Ref<Census>& c)
      : o(opts),
        census(c),
        slots(new SharedRef<GNode>[kSlots]),
        published(new Published[opts.threads]) {}
  const Options& o;
  const brc::Ref<Census>& census;  // read-only while the workers run
  std::unique_ptr<SharedRef<GNode>[]> slots;
  std::unique_ptr<Published[]> published;
  HandoffQueue<GNode*> handoff;
  Clock::time_point end;
  std::atomic<uint64_t> ops{0};
  std::atomic<uint64_t> stops{0};
};

void GraphWorker(GraphShared& g, int index) {
  char name[16];
  std::snprintf(name, sizeof(name), "gc-graph-%d", index);
  NameThread(name);
  brc::ThreadScope attach;
  std::mt19937_64 rng(g.o.seed + static_cast<uint64_t>(index));
  std::atomic<int64_t>& published = g.published[index].census;
  std::vector<brc::Ref<GNode>> roots;
  std::vector<brc::Ref<Census>> census_refs;
  uint64_t next_id = (static_cast<uint64_t>(index) + 1) << 40;
  uint64_t n = 0;

  auto add_root = [&](brc::Ref<GNode> r) {
    if (roots.size() < kMaxRoots) {
      roots.push_back(std::move(r));
    } else {
      roots[rng() % roots.size()] = std::move(r);
    }
  };
  auto pick = [&]() -> brc::Ref<GNode>* {
    return roots.empty() ? nullptr : &roots[rng() % roots.size()];
  };

  while (!TimeUp(g.end)) {
    for (int i = 0; i < 32; ++i, ++n) {
      uint64_t r = rng();
      uint64_t x = r >> 8;
      switch (r % 20) {
        case 0:
        case 1:
        case 2: {  // a new node in a cycle with an existing root
          brc::Ref<GNode> node = brc::Make<GNode>(next_id++);
          if (brc::Ref<GNode>* a = pick()) {
            node->edges[0].Exchange(*a);
            (*a)->edges[x % GNode::kEdges].Exchange(node);  // the old edge drops here
          }
          add_root(std::move(node));
          break;
        }
        case 3: {  // a fresh ring with chords: kept as a root or dropped at once (garbage)
          int k = 1 + static_cast<int>(x % kMaxRing);
          std::vector<brc::Ref<GNode>> ring;
          for (int j = 0; j < k; ++j) ring.push_back(brc::Make<GNode>(next_id++));
          for (int j = 0; j < k; ++j) {
            ring[j]->edges[0].Exchange(ring[(j + 1) % k]);
            if ((x >> (8 + j)) & 1) ring[j]->edges[1].Exchange(ring[rng() % k]);
          }
          if ((x >> 4) & 1) add_root(ring[0]);
          break;
        }
        case 4:
        case 5:
        case 6: {  // rewire one edge of a root
          brc::Ref<GNode>* a = pick();
          if (a == nullptr) break;
          brc::Ref<GNode> target;
          switch (x % 4) {
            case 0:
              target = *pick();
              break;
            case 1:  // two hops away
              target = (*a)->edges[(x >> 2) % GNode::kEdges].Load();
              if (target) target = target->edges[(x >> 4) % GNode::kEdges].Load();
              break;
            case 2:
              break;  // cut the edge
            case 3:
              target = *a;  // self-loop
              break;
          }
          (*a)->edges[(x >> 6) % GNode::kEdges].Exchange(std::move(target));
          break;
        }
        case 7:
        case 8: {  // walk a few edges, checking every node on the way
          brc::Ref<GNode>* a = pick();
          if (a == nullptr) break;
          brc::Ref<GNode> cur = *a;
          for (int step = 0; step < 8 && cur; ++step) {
            CheckGNode(cur.get(), "walk");
            cur = cur->edges[rng() % GNode::kEdges].Load();
          }
          if (cur && x % 4 == 0) add_root(std::move(cur));
          break;
        }
        case 9:
        case 10: {  // publish a root in the slot table
          brc::Ref<GNode>* a = pick();
          if (a != nullptr) g.slots[x % kSlots].Exchange(*a);
          break;
        }
        case 11:
        case 12: {  // take a node from the slot table
          brc::Ref<GNode> got = g.slots[x % kSlots].Load();
          if (got) {
            CheckGNode(got.get(), "slot table");
            add_root(std::move(got));
          }
          break;
        }
        case 13:
          g.slots[x % kSlots].Exchange(nullptr);
          break;
        case 14: {  // hand a reference to whichever thread pops it
          brc::Ref<GNode>* a = pick();
          if (a != nullptr) g.handoff.push(brc::Ref<GNode>(*a).Release());
          break;
        }
        case 15: {
          GNode* p = nullptr;
          if (g.handoff.try_pop(p)) {
            brc::Ref<GNode> got = brc::Ref<GNode>::Adopt(p);
            CheckGNode(got.get(), "hand-off queue");
            if (x % 2 == 0) add_root(std::move(got));
          }
          break;
        }
        case 16:
        case 17: {  // census references: the published count changes with no safepoint between
          if (x % 2 == 0 && census_refs.size() < kMaxCensusRefs) {
            census_refs.push_back(g.census);
          } else if (!census_refs.empty()) {
            census_refs.pop_back();
          }
          published.store(static_cast<int64_t>(census_refs.size()), std::memory_order_relaxed);
          break;
        }
        case 18:
        case 19:
          if (roots.empty()) break;
          if (x % 32 == 0) {
            roots.clear();  // drop every root at once
          } else {
            std::swap(roots[x % roots.size()], roots.back());
            roots.pop_back();
          }
          break;
      }
    }
    for (const brc::Ref<GNode>& root : roots) CheckGNode(root.get(), "a worker's root");
    if (g_gnode_made.load(std::memory_order_relaxed) - g_gnode_freed.load(std::memory_order_relaxed) >
        kLiveLimit) {
      CheckCollect(brc::Collect());
    }
    brc::Safepoint();
  }
  roots.clear();
  census_refs.clear();
  published.store(0, std::memory_order_relaxed);
  g.ops.fetch_add(n, std::memory_order_relaxed);
}

// With the world stopped by this thread: every other attached thread is parked at a safepoint
// (or blocked, touching no object), so the counts are exact and nobody holds a lock.
void CheckStoppedWorld(GraphShared& g, std::vector<const GNode*>* seen) {
  int64_t held = 0;
  for (int t = 0; t < g.o.threads; ++t) held += g.published[t].census.load(std::memory_order_relaxed);
  int64_t count = brc::GetRefCount(g.census.get());
  if (count != 1 + held) {
    FailDetail("census: with the world stopped, its count is not 1 + the references the "
               "workers hold",
               "GetRefCount %lld, expected 1 + %lld", static_cast<long long>(count),
               static_cast<long long>(held));
  }
  seen->clear();
  for (std::size_t s = 0; s < kSlots; ++s) {
    const SharedRef<GNode>& slot = g.slots[s];
    if (slot.mu().held()) Fail("a slot lock is held while the world is stopped");
    const GNode* n = slot.Unsynchronized().get();
    if (n == nullptr) continue;
    CheckGNode(n, "slot table, world stopped");
    if (brc::GetRefCount(n) < 1) Fail("a node in the slot table has a count below 1");
    for (const SharedRef<GNode>& e : n->edges) {
      if (e.mu().held()) Fail("an edge lock is held while the world is stopped");
      if (const GNode* m = e.Unsynchronized().get()) CheckGNode(m, "edge, world stopped");
    }
    seen->push_back(n);
  }
  std::sort(seen->begin(), seen->end());
  for (std::size_t i = 0; i < seen->size();) {
    std::size_t j = i;
    while (j < seen->size() && (*seen)[j] == (*seen)[i]) ++j;
    int64_t count_i = brc::GetRefCount((*seen)[i]);
    if (count_i < static_cast<int64_t>(j - i)) {
      FailDetail("a node's count is below the number of slots referencing it (world stopped)",
                 "GetRefCount %lld, %zu slots", static_cast<long long>(count_i), j - i);
    }
    i = j;
  }
}

void GraphCollector(GraphShared& g) {
  NameThread("gc-graph-coll");
  brc::ThreadScope attach;
  std::mt19937_64 rng(g.o.seed + static_cast<uint64_t>(g.o.threads));
  std::vector<const GNode*> seen;
  seen.reserve(kSlots);
  for (uint64_t i = 0; !TimeUp(g.end); ++i) {
    if (i % 8 == 0) SetGcWorkers((i / 8) % 2 == 0 ? 2 : 1);
    CheckCollect(brc::Collect());
    NoteHeapPages();
    {
      brc::StopTheWorld stop;
      CheckStoppedWorld(g, &seen);
    }
    g.stops.fetch_add(1, std::memory_order_relaxed);
    brc::Safepoint();
    {
      brc::BlockingScope blocking;  // touches no object
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % 2000));
    }
  }
}

uint64_t Graph(const Options& o) {
  brc::ThreadScope attach;
  g_expect.finalizers = false;
  SetGcWorkers(2);
  brc::Ref<Census> census = brc::Make<Census>();
  GraphShared g(o, census);
  std::vector<brc::Ref<GNode>> ballast = MakeBallast(0);
  for (std::size_t s = 0; s < kSlots; s += 2) {
    g.slots[s].Exchange(ballast[(s * 61) % ballast.size()]);
  }
  g.end = Deadline(o.seconds);
  std::vector<std::thread> pool;
  for (int t = 0; t < o.threads; ++t) pool.emplace_back(GraphWorker, std::ref(g), t);
  std::thread collector(GraphCollector, std::ref(g));
  {
    brc::BlockingScope blocking;  // joins wait; no object is touched here
    for (auto& t : pool) t.join();
    collector.join();
  }
  GNode* p = nullptr;
  while (g.handoff.try_pop(p)) brc::Ref<GNode>::Adopt(p).Reset();
  for (std::size_t s = 0; s < kSlots; ++s) g.slots[s].Exchange(nullptr);
  if (brc::GetRefCount(census.get()) != 1) {
    FailDetail("census: workers exited but its count is not 1", "GetRefCount %lld",
               static_cast<long long>(brc::GetRefCount(census.get())));
  }
  ballast.clear();
  census.Reset();
  CheckCollect(brc::Collect());
  brc::Safepoint();
  std::printf("brc_gc_stress: graph: %llu stops of the world checked\n",
              static_cast<unsigned long long>(g.stops.load()));
  if (g_gnode_made.load() != g_gnode_freed.load()) {
    FailDetail("GNode constructions and destructions differ after the final collection",
               "made %lld, freed %lld", static_cast<long long>(g_gnode_made.load()),
               static_cast<long long>(g_gnode_freed.load()));
  }
  if (g_census_made.load() != g_census_freed.load()) {
    Fail("the census object was not destroyed exactly once");
  }
  return g.ops.load();
}

// ---------------------------------------------------------------------------------------------
// finalizers: cycles whose finalizers resurrect, allocate, and drop or make weak references.

std::atomic<int64_t> g_fnode_made{0};
std::atomic<int64_t> g_fnode_freed{0};
std::atomic<uint64_t> g_finalize_calls{0};
std::atomic<uint64_t> g_resurrections{0};
std::atomic<uint64_t> g_weak_callbacks_run{0};
std::atomic<uint64_t> g_weak_locks_ok{0};

struct FNode;
// Filled by finalizers (any collecting thread), emptied by workers. Only moves happen under the
// lock (no count traffic, no safepoint, no allocation of objects), so it is never held across
// anything that waits for a stop of the world and needs no BlockingScope.
std::mutex g_fin_mu;
std::vector<brc::Ref<FNode>> g_resurrected;  // guarded by g_fin_mu
std::vector<brc::WeakRef<FNode>> g_fin_weaks;  // guarded by g_fin_mu: made by finalizers

struct FNode : brc::Object {
  static constexpr std::string_view kTypeName = "stress::FNode";
  enum Fate : uint8_t { kPlain, kResurrect, kGarbage, kDropWeak, kWeakToSelf };

  // Resurrection is rare: one resurrecting member keeps its whole cycle (and all it reaches)
  // alive for another round, so a common one would make most garbage survive a collection.
  static Fate FateOf(uint64_t seed) {
    uint64_t v = seed % 100;
    if (v < 4) return kResurrect;
    if (v < 20) return kGarbage;
    if (v < 40) return kDropWeak;
    if (v < 48) return kWeakToSelf;
    return kPlain;
  }

  FNode(uint64_t s, int gen) : seed(s), generation(gen), fate(FateOf(s >> 32)) {
    g_fnode_made.fetch_add(1, std::memory_order_relaxed);
  }
  ~FNode() {
    if (canary != kAlive) Fail("an FNode's destructor found its canary corrupted (freed twice?)");
    if (finalized.load(std::memory_order_relaxed) > 1) Fail("Finalize() ran twice on one object");
    canary = kDead;
    g_fnode_freed.fetch_add(1, std::memory_order_relaxed);
  }
  void Trace(brc::Visitor& v) const {
    v.Visit(edges[0]);
    v.Visit(edges[1]);
  }
  void Clear() {
    if (canary != kAlive) Fail("Clear() ran on a destroyed FNode");
    if (finalized.load(std::memory_order_relaxed) != 1) {
      Fail("Clear() ran on an FNode whose Finalize() had not run exactly once");
    }
    cleared.store(true, std::memory_order_relaxed);
    brc::Ref<FNode> a = std::move(edges[0]);
    brc::Ref<FNode> b = std::move(edges[1]);
  }
  void Finalize();

  // Written by the creating thread before the node is shared, then only by Clear() (garbage:
  // nobody else can reach it). Others read them.
  brc::Ref<FNode> edges[2];
  // Written by the creating thread before the node is shared, then only by Finalize() and the
  // destructor; nobody else reads them.
  brc::WeakRef<FNode> weak[2];
  std::atomic<int> finalized{0};
  std::atomic<bool> cleared{false};
  const uint64_t seed;
  const int generation;
  const Fate fate;
  uint64_t canary = kAlive;
};

// What any thread may check on an FNode it holds a strong reference to.
void CheckHeldFNode(const FNode* n, const char* where) {
  if (n->canary != kAlive) {
    FailDetail("a strong reference leads to a destroyed FNode", "%s: node %p canary %llx", where,
               static_cast<const void*>(n), static_cast<unsigned long long>(n->canary));
  }
  if (n->cleared.load(std::memory_order_relaxed)) {
    FailDetail("a strong reference leads to an FNode the collector has cleared", "%s", where);
  }
  if (n->finalized.load(std::memory_order_relaxed) > 1) Fail("Finalize() ran twice on one object");
}

// A WeakRef<FNode> with a callback that checks it runs once, after the target is gone.
brc::WeakRef<FNode> WeakWithCallback(const brc::Ref<FNode>& target) {
  brc::WeakRef<FNode> plain(target);
  auto ran = std::make_shared<std::atomic<int>>(0);
  return brc::WeakRef<FNode>(target, [plain, ran] {
    if (ran->fetch_add(1) != 0) Fail("a weak-reference callback ran twice");
    if (plain.Lock() != nullptr) {
      Fail("WeakRef::Lock() returned the target inside its own weak-reference callback");
    }
    g_weak_callbacks_run.fetch_add(1, std::memory_order_relaxed);
  });
}

// A cycle of `k` fresh nodes (a ring with chords), each with a weak reference to the next.
std::vector<brc::Ref<FNode>> MakeFCycle(std::mt19937_64& rng, int k, int generation) {
  std::vector<brc::Ref<FNode>> nodes;
  nodes.reserve(k);
  for (int j = 0; j < k; ++j) nodes.push_back(brc::Make<FNode>(rng(), generation));
  for (int j = 0; j < k; ++j) {
    nodes[j]->edges[0] = nodes[(j + 1) % k];
    if (rng() % 3 == 0) nodes[j]->edges[1] = nodes[rng() % k];
    if (rng() % 2 == 0) nodes[j]->weak[0] = brc::WeakRef<FNode>(nodes[(j + 1) % k]);
  }
  return nodes;
}

// Runs on the collecting thread with the world running. The object is garbage (or was made
// reachable again by another finalizer of the same collection): no worker touches its weak[].
void FNode::Finalize() {
  if (canary != kAlive) Fail("Finalize() ran on a destroyed FNode");
  if (finalized.fetch_add(1, std::memory_order_relaxed) != 0) {
    Fail("Finalize() ran twice on one object");
  }
  if (cleared.load(std::memory_order_relaxed)) Fail("Finalize() ran after Clear()");
  g_finalize_calls.fetch_add(1, std::memory_order_relaxed);
  switch (fate) {
    case kResurrect: {
      brc::Ref<FNode> self = brc::Ref<FNode>::NewRef(this);
      {
        std::lock_guard<std::mutex> lock(g_fin_mu);
        g_resurrected.push_back(std::move(self));
      }
      g_resurrections.fetch_add(1, std::memory_order_relaxed);
      break;
    }
    case kGarbage:
      if (generation < kMaxGeneration) {
        std::mt19937_64 rng(seed);
        // A fresh small cycle, dropped at once: garbage for a later collection.
        std::vector<brc::Ref<FNode>> cycle =
            MakeFCycle(rng, 1 + static_cast<int>(rng() % 3), generation + 1);
        if (rng() % 2 == 0) cycle[0]->weak[1] = WeakWithCallback(cycle.back());
      }
      break;
    case kDropWeak:
      weak[0] = brc::WeakRef<FNode>();
      weak[1] = brc::WeakRef<FNode>();
      break;
    case kWeakToSelf: {
      // Unless something resurrects it, the collector must clear this one too before Clear().
      brc::WeakRef<FNode> w(brc::Ref<FNode>::NewRef(this));
      std::lock_guard<std::mutex> lock(g_fin_mu);
      g_fin_weaks.push_back(std::move(w));
      break;
    }
    case kPlain:
      break;
  }
}

struct FinShared {
  explicit FinShared(const Options& opts) : o(opts), weak_cells(new SharedWeak<FNode>[kWeakCells]) {}
  const Options& o;
  std::unique_ptr<SharedWeak<FNode>[]> weak_cells;
  HandoffQueue<FNode*> handoff;
  Clock::time_point end;
  std::atomic<uint64_t> ops{0};
};

void CheckLocked(const brc::Ref<FNode>& got, const char* where) {
  if (!got) return;
  g_weak_locks_ok.fetch_add(1, std::memory_order_relaxed);
  CheckHeldFNode(got.get(), where);
}

void FinWorker(FinShared& f, int index) {
  char name[16];
  std::snprintf(name, sizeof(name), "gc-fin-%d", index);
  NameThread(name);
  brc::ThreadScope attach;
  std::mt19937_64 rng(f.o.seed + static_cast<uint64_t>(index));
  std::vector<brc::Ref<FNode>> roots;
  std::vector<brc::WeakRef<FNode>> weaks;
  uint64_t n = 0;

  auto add_root = [&](brc::Ref<FNode> r) {
    if (roots.size() < kMaxRoots) {
      roots.push_back(std::move(r));
    } else {
      roots[rng() % roots.size()] = std::move(r);
    }
  };
  auto add_weak = [&](brc::WeakRef<FNode> w) {
    if (weaks.size() < kMaxWeaks) {
      weaks.push_back(std::move(w));
    } else {
      weaks[rng() % weaks.size()] = std::move(w);
    }
  };

  while (!TimeUp(f.end)) {
    for (int i = 0; i < 16; ++i, ++n) {
      uint64_t r = rng();
      uint64_t x = r >> 8;
      switch (r % 16) {
        case 0:
        case 1:
        case 2:
        case 3: {  // a new cycle, weakly referenced from here, from other nodes and the table
          std::vector<brc::Ref<FNode>> cycle =
              MakeFCycle(rng, 1 + static_cast<int>(x % kMaxFCycle), 0);
          if (!weaks.empty() && (x >> 4) % 2 == 0) {
            brc::Ref<FNode> other = weaks[rng() % weaks.size()].Lock();
            CheckLocked(other, "Lock() of a worker's WeakRef");
            if (other) {
              cycle[0]->weak[1] = (x >> 5) % 2 ? WeakWithCallback(other) : brc::WeakRef<FNode>(other);
            }
          }
          const brc::Ref<FNode>& target = cycle[rng() % cycle.size()];
          if ((x >> 6) % 4 == 0) {
            add_weak(WeakWithCallback(target));
          } else {
            add_weak(brc::WeakRef<FNode>(target));
          }
          if ((x >> 8) % 4 == 0) f.weak_cells[x % kWeakCells].Exchange(brc::WeakRef<FNode>(cycle[0]));
          switch ((x >> 10) % 8) {
            case 0:
            case 1:
              add_root(cycle[0]);
              break;
            case 2:
              f.handoff.push(brc::Ref<FNode>(cycle.back()).Release());
              break;
            default:
              break;  // dropped: garbage for the collector
          }
          break;
        }
        case 4:
        case 5:
        case 6:
          if (!weaks.empty()) CheckLocked(weaks[x % weaks.size()].Lock(), "Lock() of a worker's WeakRef");
          break;
        case 7:
          if (!weaks.empty()) {
            std::swap(weaks[x % weaks.size()], weaks.back());
            weaks.pop_back();
          }
          break;
        case 8:
        case 9: {  // another thread's WeakRef, from the shared table
          brc::WeakRef<FNode> w = f.weak_cells[x % kWeakCells].Load();
          brc::Ref<FNode> got = w.Lock();
          CheckLocked(got, "Lock() of a shared WeakRef");
          if (got && (x >> 8) % 8 == 0) add_root(std::move(got));
          break;
        }
        case 10:
          if (!roots.empty()) {
            std::swap(roots[x % roots.size()], roots.back());
            roots.pop_back();
          }
          break;
        case 11: {
          FNode* p = nullptr;
          if (f.handoff.try_pop(p)) {
            brc::Ref<FNode> got = brc::Ref<FNode>::Adopt(p);
            CheckHeldFNode(got.get(), "hand-off queue");
            if (x % 2 == 0) add_root(std::move(got));
          }
          break;
        }
        case 12: {  // the objects finalizers resurrected: alive, not cleared, finalized once
          std::vector<brc::Ref<FNode>> got;
          {
            std::lock_guard<std::mutex> lock(g_fin_mu);
            got.swap(g_resurrected);
          }
          for (brc::Ref<FNode>& res : got) {
            CheckHeldFNode(res.get(), "resurrection list");
            if (res->finalized.load(std::memory_order_relaxed) != 1) {
              Fail("a resurrected object was not finalized exactly once");
            }
            if (rng() % 8 == 0) add_weak(brc::WeakRef<FNode>(res));
            if (rng() % 8 == 0) add_root(std::move(res));
          }
          break;  // the rest drop here: already finalized, they are collected without it
        }
        case 13: {  // WeakRefs made by finalizers: cleared unless the object was resurrected
          std::vector<brc::WeakRef<FNode>> got;
          {
            std::lock_guard<std::mutex> lock(g_fin_mu);
            got.swap(g_fin_weaks);
          }
          for (brc::WeakRef<FNode>& w : got) CheckLocked(w.Lock(), "Lock() of a finalizer's WeakRef");
          break;
        }
        case 14: {  // follow strong edges from a root
          if (roots.empty()) break;
          brc::Ref<FNode> cur = roots[x % roots.size()];
          for (int step = 0; step < 6 && cur; ++step) {
            CheckHeldFNode(cur.get(), "walk");
            brc::Ref<FNode> next = cur->edges[rng() % 2];
            cur = std::move(next);
          }
          break;
        }
        case 15:  // publish one of this thread's WeakRefs
          if (!weaks.empty()) f.weak_cells[x % kWeakCells].Exchange(weaks[(x >> 8) % weaks.size()]);
          break;
      }
    }
    if (g_fnode_made.load(std::memory_order_relaxed) - g_fnode_freed.load(std::memory_order_relaxed) >
        kLiveLimit) {
      CheckCollect(brc::Collect());
    }
    brc::Safepoint();
  }
  roots.clear();
  weaks.clear();
  f.ops.fetch_add(n, std::memory_order_relaxed);
}

void FinCollector(FinShared& f) {
  NameThread("gc-fin-coll");
  brc::ThreadScope attach;
  std::mt19937_64 rng(f.o.seed + static_cast<uint64_t>(f.o.threads));
  for (uint64_t i = 0; !TimeUp(f.end); ++i) {
    if (i % 8 == 0) SetGcWorkers((i / 8) % 2 == 0 ? 2 : 1);
    CheckCollect(brc::Collect());
    NoteHeapPages();
    brc::Safepoint();
    {
      brc::BlockingScope blocking;  // touches no object
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % 2000));
    }
  }
}

uint64_t Finalizers(const Options& o) {
  brc::ThreadScope attach;
  g_expect.finalizers = true;
  SetGcWorkers(2);
  uint64_t finalized_before = brc::GetCollectorStats().finalized;
  uint64_t finalize_calls_before = g_finalize_calls.load();
  FinShared f(o);
  std::vector<brc::Ref<GNode>> ballast = MakeBallast(1ull << 60);
  f.end = Deadline(o.seconds);
  std::vector<std::thread> pool;
  for (int t = 0; t < o.threads; ++t) pool.emplace_back(FinWorker, std::ref(f), t);
  std::thread collector(FinCollector, std::ref(f));
  {
    brc::BlockingScope blocking;  // joins wait; no object is touched here
    for (auto& t : pool) t.join();
    collector.join();
  }
  FNode* p = nullptr;
  while (f.handoff.try_pop(p)) brc::Ref<FNode>::Adopt(p).Reset();
  for (std::size_t c = 0; c < kWeakCells; ++c) f.weak_cells[c].Exchange(brc::WeakRef<FNode>());
  ballast.clear();
  // Final collections: each may finalize what was never finalized (resurrecting some, making
  // new garbage a generation deeper), so repeat until one finds nothing and nothing waits.
  bool settled = false;
  for (int round = 0; round < kSettleRounds && !settled; ++round) {
    std::vector<brc::Ref<FNode>> resurrected;
    std::vector<brc::WeakRef<FNode>> weaks;
    {
      std::lock_guard<std::mutex> lock(g_fin_mu);  // no other thread is left
      resurrected.swap(g_resurrected);
      weaks.swap(g_fin_weaks);
    }
    bool pending = !resurrected.empty() || !weaks.empty();
    for (brc::Ref<FNode>& res : resurrected) CheckHeldFNode(res.get(), "resurrection list");
    for (brc::WeakRef<FNode>& w : weaks) CheckLocked(w.Lock(), "Lock() of a finalizer's WeakRef");
    resurrected.clear();
    weaks.clear();
    absl::StatusOr<brc::CollectResult> r = brc::Collect();
    CheckCollect(r);
    brc::Safepoint();
    settled = !pending && r->unreachable == 0;
  }
  if (!settled) Fail("the heap did not settle: collections kept finding garbage at the end");
  uint64_t finalized = brc::GetCollectorStats().finalized - finalized_before;
  uint64_t calls = g_finalize_calls.load() - finalize_calls_before;
  std::printf("brc_gc_stress: finalizers: %llu finalized, %llu resurrected, %llu weak callbacks, "
              "%llu successful weak locks\n",
              static_cast<unsigned long long>(calls),
              static_cast<unsigned long long>(g_resurrections.load()),
              static_cast<unsigned long long>(g_weak_callbacks_run.load()),
              static_cast<unsigned long long>(g_weak_locks_ok.load()));
  if (finalized != calls) {
    FailDetail("brc's finalized count differs from the Finalize() calls made",
               "collector stats %llu, calls %llu", static_cast<unsigned long long>(finalized),
               static_cast<unsigned long long>(calls));
  }
  if (g_fnode_made.load() != g_fnode_freed.load()) {
    FailDetail("FNode constructions and destructions differ after the final collections",
               "made %lld, freed %lld", static_cast<long long>(g_fnode_made.load()),
               static_cast<long long>(g_fnode_freed.load()));
  }
  if (g_gnode_made.load() != g_gnode_freed.load()) {
    Fail("GNode (ballast) constructions and destructions differ after the final collections");
  }
  return f.ops.load();
}


// ---------------------------------------------------------------------------------------------
// oldyoung: old objects gaining and losing references to young ones while young collections run.
//
// A young collection examines only the objects allocated since the previous collection and
// counts every reference from outside that set (an old object's included) as a root; nothing
// records the old-to-young references. So the defects to look for are: a young object that an
// old one references collected anyway (it would be cleared or freed while reachable), an old
// object's collector state disturbed by a young collection that traced into it, a young object
// left out of the young set (garbage cycles among young objects never found by young
// collections), and a promoted object examined by a young collection again.

enum YRole : int {
  kRoleOld,   // in the old set: made before the workers start, alive until the scenario ends
  kRoleLink,  // a young node (or chain) hung on an old node, or held on a worker's stack
  kRoleRing,  // member of a ring (a garbage cycle, at once or once cut loose)
  kRoles
};
std::atomic<int64_t> g_ynode_made[kRoles];
std::atomic<int64_t> g_ynode_freed[kRoles];
std::atomic<uint64_t> g_yclears{0};           // Clear() calls on YNodes
std::atomic<bool> g_old_set_held{false};      // while set, freeing an old-set node is a defect
std::atomic<uint64_t> g_yinner_collections{0};  // CollectYoung() calls made inside constructors

int64_t LiveYNodes() {
  int64_t live = 0;
  for (int i = 0; i < kRoles; ++i) {
    live += g_ynode_made[i].load(std::memory_order_relaxed) -
            g_ynode_freed[i].load(std::memory_order_relaxed);
  }
  return live;
}

// A second copy of the id, scrambled: a node whose two disagree was overwritten or reused.
constexpr uint64_t IdCheck(uint64_t id) {
  return (id * 0x9E3779B97F4A7C15ull) ^ 0x5A5A5A5A5A5A5A5Aull;
}

struct YNode : brc::Object {
  static constexpr std::string_view kTypeName = "stress::YNode";
  static constexpr int kEdges = 3;

  // `children`: a chain of that many young nodes made inside this constructor (each Make may
  // run an automatic collection while this object is still under construction) and put in
  // edges[2]. `collect_inside`: the constructor also runs a young collection itself.
  YNode(uint64_t node_id, YRole r, int children = 0, bool collect_inside = false)
      : id(node_id), id_check(IdCheck(node_id)), role(r) {
    g_ynode_made[role].fetch_add(1, std::memory_order_relaxed);
    if (children > 0) {
      edges[2].Exchange(brc::Make<YNode>(node_id + (uint64_t{1} << 32), kRoleLink, children - 1));
    }
    if (collect_inside) {
      absl::StatusOr<brc::CollectResult> inner = brc::CollectYoung();
      CheckCollect(inner, brc::CollectKind::kYoung);
      g_yinner_collections.fetch_add(1, std::memory_order_relaxed);
    }
  }
  ~YNode() {
    if (canary != kAlive || id_check != IdCheck(id)) {
      Fail("a YNode's destructor found it corrupted (freed twice?)");
    }
    if (clears.load(std::memory_order_relaxed) > 1) Fail("Clear() ran twice on one YNode");
    if (role == kRoleOld && g_old_set_held.load(std::memory_order_relaxed)) {
      Fail("an old-set node was freed while the old set still held it");
    }
    canary = kDead;
    g_ynode_freed[role].fetch_add(1, std::memory_order_relaxed);
  }
  void Trace(brc::Visitor& v) const {
    for (const SharedRef<YNode>& e : edges) v.Visit(e.Unsynchronized());
  }
  // Only ever called on garbage, which no mutator can reach: no edge lock can be held.
  void Clear() {
    if (canary != kAlive) Fail("Clear() ran on a destroyed YNode");
    if (clears.fetch_add(1, std::memory_order_relaxed) != 0) Fail("Clear() ran twice on one YNode");
    if (role == kRoleOld && g_old_set_held.load(std::memory_order_relaxed)) {
      Fail("the collector cleared an old-set node while the old set still held it");
    }
    cleared.store(true, std::memory_order_relaxed);
    g_yclears.fetch_add(1, std::memory_order_relaxed);
    brc::Ref<YNode> dropped[kEdges];
    for (int i = 0; i < kEdges; ++i) {
      SpinLock& mu = edges[i].mu();
      if (!mu.try_lock()) Fail("Clear() ran on a YNode whose edge another thread is using");
      dropped[i] = std::move(edges[i].Unsynchronized());
      mu.unlock();
    }
  }

  SharedRef<YNode> edges[kEdges];
  std::atomic<int> clears{0};
  std::atomic<bool> cleared{false};    // set by Clear(): no thread may reach the node afterwards
  // The last stopped-world check that reached it: written only by the checking thread.
  mutable std::atomic<uint64_t> seen{0};
  const uint64_t id;
  const uint64_t id_check;
  const YRole role;
  uint64_t canary = kAlive;
};

// What a thread that reaches `n` (holding a reference, or with the world stopped) may check.
void CheckYNode(const YNode* n, const char* where) {
  if (n->canary != kAlive || n->id_check != IdCheck(n->id)) {
    FailDetail("a reachable YNode is destroyed or corrupted", "%s: node %p canary %llx", where,
               static_cast<const void*>(n), static_cast<unsigned long long>(n->canary));
  }
  if (n->cleared.load(std::memory_order_relaxed) ||
      n->clears.load(std::memory_order_relaxed) != 0) {
    FailDetail("a reachable YNode was cleared by the collector (it was not garbage)",
               "%s: node %p id %llx role %d", where, static_cast<const void*>(n),
               static_cast<unsigned long long>(n->id), static_cast<int>(n->role));
  }
  if (!brc::IsTracked(n)) FailDetail("a reachable YNode is not tracked", "%s", where);
}

constexpr std::size_t kOldNodes = kSanitized ? 2048 : 8192;
constexpr int kMaxYRing = 6;
constexpr std::size_t kMaxHanging = 64;   // per worker: rings hung on old nodes, not cut yet
constexpr uint64_t kSmallYoung = 256;     // young_threshold: automatic collections come often
constexpr uint64_t kLargeYoung = kSanitized ? 4096 : 32768;  // (round 2) young sets of many pages

// A ring of `k` fresh nodes with chords; with `old` set, some members also reference old nodes.
std::vector<brc::Ref<YNode>> MakeYRing(std::mt19937_64& rng, int k, uint64_t* next_id,
                                       const std::vector<brc::Ref<YNode>>* old) {
  std::vector<brc::Ref<YNode>> ring;
  ring.reserve(k);
  for (int j = 0; j < k; ++j) ring.push_back(brc::Make<YNode>((*next_id)++, kRoleRing));
  for (int j = 0; j < k; ++j) {
    ring[j]->edges[0].Exchange(ring[(j + 1) % k]);
    if (rng() % 3 == 0) ring[j]->edges[1].Exchange(ring[rng() % k]);
    if (old != nullptr && rng() % 4 == 0) ring[j]->edges[2].Exchange((*old)[rng() % old->size()]);
  }
  return ring;
}

struct OldYoungShared {
  explicit OldYoungShared(const Options& opts) : o(opts) {}
  const Options& o;
  // Filled before the workers start and emptied after they are joined; read-only meanwhile
  // (the nodes' edges change, under their locks).
  std::vector<brc::Ref<YNode>> old;
  int round = 0;
  Clock::time_point end;
  uint64_t check_epoch = 0;  // stopped-world checks so far (one checking thread at a time)
  std::atomic<uint64_t> ops{0};
  std::atomic<uint64_t> stops{0};
  std::atomic<uint64_t> max_reachable{0};
  std::atomic<uint64_t> rings{0};  // garbage cycles made
  std::atomic<uint64_t> hung{0};   // ... of which hung on an old node first
  std::atomic<uint64_t> cut{0};    // ... and cut loose again by the worker that hung them
};

// Every node reachable from the old set, with the world stopped by this thread (or no other
// thread attached): alive, intact, never cleared, tracked, counted, and no edge lock held.
uint64_t CheckOldSetReachable(OldYoungShared& s, std::vector<const YNode*>* stack) {
  const uint64_t epoch = ++s.check_epoch;
  uint64_t reached = 0;
  stack->clear();
  auto reach = [&](const YNode* n, const char* where) {
    if (n->seen.load(std::memory_order_relaxed) == epoch) return;
    n->seen.store(epoch, std::memory_order_relaxed);
    CheckYNode(n, where);
    if (brc::GetRefCount(n) < 1) FailDetail("a reachable YNode has a count below 1", "%s", where);
    ++reached;
    stack->push_back(n);
  };
  for (const brc::Ref<YNode>& o : s.old) {
    if (o->role != kRoleOld) Fail("the old set holds a node that is not an old-set node");
    reach(o.get(), "old set, world stopped");
  }
  while (!stack->empty()) {
    const YNode* n = stack->back();
    stack->pop_back();
    for (const SharedRef<YNode>& e : n->edges) {
      if (e.mu().held()) Fail("an edge lock is held while the world is stopped");
      const YNode* m = e.Unsynchronized().get();
      if (m != nullptr) reach(m, "reachable from the old set, world stopped");
    }
  }
  return reached;
}

void OldYoungWorker(OldYoungShared& s, int index) {
  char name[16];
  std::snprintf(name, sizeof(name), "gc-oy-%d", index);
  NameThread(name);
  brc::ThreadScope attach;
  std::mt19937_64 rng(s.o.seed * 7919 + static_cast<uint64_t>(s.round) * 1009 +
                      static_cast<uint64_t>(index));
  const std::vector<brc::Ref<YNode>>& old = s.old;
  uint64_t next_id = ((static_cast<uint64_t>(index) + 1) << 48) |
                     (static_cast<uint64_t>(s.round) << 44);
  std::vector<brc::Ref<YNode>> roots;  // young nodes held only on this thread's stack
  struct Hanging {
    std::size_t old_index;
    int edge;
    const YNode* head;  // compared, never dereferenced (it may be gone)
    uint64_t cut_at;    // in operations of this worker
  };
  std::vector<Hanging> hanging;
  uint64_t n = 0, rings = 0, hung = 0, cut = 0;

  auto old_at = [&](uint64_t k) -> YNode& { return *old[k % old.size()]; };
  auto add_root = [&](brc::Ref<YNode> r) {
    if (roots.size() < kMaxRoots) {
      roots.push_back(std::move(r));
    } else {
      roots[rng() % roots.size()] = std::move(r);
    }
  };
  auto cut_loose = [&](const Hanging& h) {
    brc::Ref<YNode> head = old[h.old_index]->edges[h.edge].TakeIf(h.head);
    if (head) {
      CheckYNode(head.get(), "a ring cut loose from an old node");
      ++cut;
    }
  };

  while (!TimeUp(s.end)) {
    for (int i = 0; i < 32; ++i, ++n) {
      uint64_t r = rng();
      uint64_t x = r >> 8;
      int e = static_cast<int>((x >> 2) % YNode::kEdges);
      switch (r % 20) {
        case 0:
        case 1:
        case 2: {  // an old node gains a young node (or a chain made in constructors)
          brc::Ref<YNode> y = brc::Make<YNode>(next_id++, kRoleLink, static_cast<int>(x % 3),
                                               (x >> 12) % 512 == 0);
          YNode& o = old_at(x >> 16);
          switch ((x >> 8) % 4) {
            case 0:  // back to its old node: a cycle through an old object
              y->edges[0].Exchange(brc::Ref<YNode>::NewRef(&o));
              break;
            case 1:
              y->edges[0].Exchange(old[(x >> 24) % old.size()]);
              break;
            default:
              break;
          }
          o.edges[e].Exchange(std::move(y));  // whatever it referenced before drops here
          break;
        }
        case 3:
        case 4: {  // a young garbage cycle that hangs on an old node for a while
          std::vector<brc::Ref<YNode>> ring =
              MakeYRing(rng, 1 + static_cast<int>(x % kMaxYRing), &next_id, &old);
          ++rings;
          std::size_t oi = (x >> 16) % old.size();
          const YNode* head = ring[(x >> 4) % ring.size()].get();
          old[oi]->edges[e].Exchange(ring[(x >> 4) % ring.size()]);
          if (hanging.size() >= kMaxHanging) {
            cut_loose(hanging.front());
            hanging.front() = hanging.back();
            hanging.pop_back();
          }
          hanging.push_back({oi, e, head, n + 16 + rng() % 4096});
          ++hung;
          break;
        }
        case 5:
        case 6:
        case 7: {  // a young garbage cycle at once (some members reference old nodes)
          MakeYRing(rng, 1 + static_cast<int>(x % kMaxYRing), &next_id,
                    (x >> 4) % 2 ? &old : nullptr);
          ++rings;
          break;
        }
        case 8:  // an old node loses a reference
          old_at(x >> 16).edges[e].Exchange(nullptr);
          break;
        case 9:
        case 10: {  // a node another old node references, now referenced from a second one too
          brc::Ref<YNode> got = old_at(x >> 16).edges[(x >> 8) % YNode::kEdges].Load();
          if (got) CheckYNode(got.get(), "an old node's edge");
          old_at(x >> 32).edges[e].Exchange(std::move(got));
          break;
        }
        case 11:  // an old node references another old node
          old_at(x >> 16).edges[e].Exchange(old[(x >> 32) % old.size()]);
          break;
        case 12:
        case 13:
        case 14: {  // walk from an old node, checking everything on the way
          brc::Ref<YNode> cur = old[(x >> 16) % old.size()];
          for (int step = 0; step < 8 && cur; ++step) {
            CheckYNode(cur.get(), "walk from an old node");
            cur = cur->edges[rng() % YNode::kEdges].Load();
          }
          if (cur && x % 8 == 0) add_root(std::move(cur));
          break;
        }
        case 15: {  // a young node only this thread's stack holds (some reference an old one)
          brc::Ref<YNode> y = brc::Make<YNode>(next_id++, kRoleLink, static_cast<int>(x % 2));
          if (x % 2 == 0) y->edges[0].Exchange(old[(x >> 16) % old.size()]);
          add_root(std::move(y));
          break;
        }
        case 16:  // ... and sometimes an old node references it as well
          if (!roots.empty()) {
            old_at(x >> 16).edges[e].Exchange(roots[(x >> 4) % roots.size()]);
          }
          break;
        case 17:
          if (!roots.empty()) {
            std::swap(roots[x % roots.size()], roots.back());
            roots.pop_back();
          }
          break;
        case 18: {  // a node hanging on an old one gains a young node of its own
          brc::Ref<YNode> got = old_at(x >> 16).edges[(x >> 8) % YNode::kEdges].Load();
          if (!got) break;
          CheckYNode(got.get(), "an old node's edge");
          brc::Ref<YNode> y = brc::Make<YNode>(next_id++, kRoleLink);
          if (x % 2 == 0) y->edges[0].Exchange(got);  // a cycle (it may run through old nodes)
          got->edges[e].Exchange(std::move(y));
          break;
        }
        case 19: {  // one old node's young node handed to another old node and taken away
          brc::Ref<YNode> got = old_at(x >> 16).edges[e].Exchange(nullptr);
          if (got) CheckYNode(got.get(), "taken from an old node");
          old_at(x >> 32).edges[(x >> 8) % YNode::kEdges].Exchange(std::move(got));
          break;
        }
      }
    }
    for (std::size_t h = 0; h < hanging.size();) {
      if (hanging[h].cut_at <= n) {
        cut_loose(hanging[h]);
        hanging[h] = hanging.back();
        hanging.pop_back();
      } else {
        ++h;
      }
    }
    for (const brc::Ref<YNode>& root : roots) CheckYNode(root.get(), "a worker's root");
    if (LiveYNodes() > kLiveLimit) CheckCollect(brc::Collect());
    brc::Safepoint();
  }
  for (const Hanging& h : hanging) cut_loose(h);
  roots.clear();
  s.ops.fetch_add(n, std::memory_order_relaxed);
  s.rings.fetch_add(rings, std::memory_order_relaxed);
  s.hung.fetch_add(hung, std::memory_order_relaxed);
  s.cut.fetch_add(cut, std::memory_order_relaxed);
}

void SetOldYoungConfig(int workers, uint64_t young_threshold) {
  brc::CollectorConfig c;
  c.young_threshold = young_threshold;
  c.full_ratio = 0.25;
  c.generational = true;
  c.workers = workers;
  if (absl::Status st = brc::SetCollectorConfig(c); !st.ok()) {
    FailDetail("SetCollectorConfig rejected a valid configuration", "%s", st.ToString().c_str());
  }
}

// Young collections in a loop, a full one now and then, and the stopped-world check.
void OldYoungCollector(OldYoungShared& s, int workers) {
  NameThread("gc-oy-coll");
  brc::ThreadScope attach;
  std::mt19937_64 rng(s.o.seed * 7919 + static_cast<uint64_t>(s.round) * 1009 + 1000);
  std::vector<const YNode*> stack;
  for (uint64_t i = 0; !TimeUp(s.end); ++i) {
    // With two marking workers, phases with a large threshold and longer pauses between
    // collections give young sets of many pages (small sets are always marked serially).
    bool large = workers > 1 && (i / 4) % 2 == 1;
    if (workers > 1 && i % 4 == 0) SetOldYoungConfig(workers, large ? kLargeYoung : kSmallYoung);
    if (i % 8 == 7) {
      CheckCollect(brc::Collect(), brc::CollectKind::kFull);
    } else {
      CheckCollect(brc::CollectYoung(), brc::CollectKind::kYoung);
    }
    NoteHeapPages();
    uint64_t reached;
    {
      brc::StopTheWorld stop;
      reached = CheckOldSetReachable(s, &stack);
    }
    NoteMax(s.max_reachable, reached);
    s.stops.fetch_add(1, std::memory_order_relaxed);
    brc::Safepoint();
    {
      brc::BlockingScope blocking;  // touches no object
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % (large ? 20000 : 1000)));
    }
  }
}

// Fails unless `r` (an explicit collection, checked already) examined, found and promoted
// exactly the given numbers of objects.
void ExpectCounts(const char* step, const brc::CollectResult& r, uint64_t scanned,
                  uint64_t unreachable, uint64_t promoted) {
  if (r.scanned != scanned || r.unreachable != unreachable || r.collected != unreachable ||
      (r.kind == brc::CollectKind::kYoung && r.promoted != promoted)) {
    FailDetail("a collection of a known heap examined, found or promoted the wrong objects",
               "%s: %s collection scanned %llu (expected %llu), unreachable %llu, collected %llu "
               "(expected %llu), promoted %llu (expected %llu)",
               step, r.kind == brc::CollectKind::kYoung ? "young" : "full",
               static_cast<unsigned long long>(r.scanned), static_cast<unsigned long long>(scanned),
               static_cast<unsigned long long>(r.unreachable),
               static_cast<unsigned long long>(r.collected),
               static_cast<unsigned long long>(unreachable),
               static_cast<unsigned long long>(r.promoted),
               static_cast<unsigned long long>(promoted));
  }
}

void ExpectRingsFreed(const char* step, int64_t freed_before, int64_t expected) {
  int64_t freed = g_ynode_freed[kRoleRing].load() - freed_before;
  if (freed != expected) {
    FailDetail("young garbage cycles were not freed by the collection that found them",
               "%s: %lld ring nodes freed, expected %lld", step, static_cast<long long>(freed),
               static_cast<long long>(expected));
  }
}

// After a round, with only this thread attached and automatic collection off, so that every
// count is known: a young collection finds exactly the young garbage cycles (some of them
// referencing old nodes), keeps and promotes the young cycles hung on old nodes and the young
// nodes on this stack, and changes no old node's count except by the references the collected
// cycles dropped. The hung cycles, cut loose once promoted, are for the next full collection,
// not the next young one. A constructor that runs a young collection leaves its own object
// young.
void ExactYoungCheck(OldYoungShared& s, std::mt19937_64& rng) {
  const std::vector<brc::Ref<YNode>>& old = s.old;
  constexpr int kRings = 32, kHung = 16, kLocal = 16;
  const std::size_t stride = old.size() / kHung;
  uint64_t next_id = uint64_t{0xE} << 56 | static_cast<uint64_t>(s.round) << 44;
  std::vector<const YNode*> stack;
  brc::DisableCollector();
  for (int h = 0; h < kHung; ++h) old[h * stride]->edges[2].Exchange(nullptr);
  CheckCollect(brc::Collect());  // everything collectable goes: the young set below is known
  brc::Safepoint();
  absl::StatusOr<brc::CollectResult> r = brc::CollectYoung();
  CheckCollect(r, brc::CollectKind::kYoung);
  ExpectCounts("right after a full collection", *r, 0, 0, 0);
  std::vector<int64_t> counts(old.size());
  for (std::size_t i = 0; i < old.size(); ++i) counts[i] = brc::GetRefCount(old[i].get());
  int64_t ring_freed = g_ynode_freed[kRoleRing].load();

  // Half of the cycles are made by this thread, half by a thread that exits before the young
  // collection (its heap and young pages wait for the next thread that gets its id).
  uint64_t garbage = 0, kept = 0;
  auto make_cycles = [&](std::mt19937_64& g, uint64_t* id, int half) {
    for (int k = half * kRings / 2; k < (half + 1) * kRings / 2; ++k) {
      // garbage at once, some referencing old nodes
      garbage += MakeYRing(g, 1 + static_cast<int>(g() % kMaxYRing), id, &old).size();
    }
    for (int h = half * kHung / 2; h < (half + 1) * kHung / 2; ++h) {
      // hung on an old node, which they reference back
      std::vector<brc::Ref<YNode>> ring =
          MakeYRing(g, 1 + static_cast<int>(g() % kMaxYRing), id, nullptr);
      kept += ring.size();
      ring.back()->edges[2].Exchange(old[h * stride]);
      old[h * stride]->edges[2].Exchange(ring[0]);
    }
  };
  make_cycles(rng, &next_id, 0);
  std::thread maker([&] {
    NameThread("gc-oy-maker");
    brc::ThreadScope attach;
    std::mt19937_64 g(rng());
    uint64_t id = next_id | uint64_t{1} << 40;
    make_cycles(g, &id, 1);
  });
  {
    brc::BlockingScope blocking;  // the join waits; no object is touched here
    maker.join();
  }
  std::vector<brc::Ref<YNode>> local;
  for (int l = 0; l < kLocal; ++l) local.push_back(brc::Make<YNode>(next_id++, kRoleLink));
  kept += kLocal;
  r = brc::CollectYoung();
  CheckCollect(r, brc::CollectKind::kYoung);
  brc::Safepoint();
  ExpectCounts("young cycles made after a full collection", *r, garbage + kept, garbage, kept);
  ExpectRingsFreed("young garbage cycles", ring_freed, static_cast<int64_t>(garbage));
  CheckOldSetReachable(s, &stack);
  for (std::size_t i = 0; i < old.size(); ++i) {
    int64_t expected = counts[i] + (i % stride == 0 && i / stride < kHung ? 1 : 0);
    if (brc::GetRefCount(old[i].get()) != expected) {
      FailDetail("a young collection changed an old node's count by other than the references "
                 "of the cycles it collected",
                 "old node %zu: count %lld, expected %lld", i,
                 static_cast<long long>(brc::GetRefCount(old[i].get())),
                 static_cast<long long>(expected));
    }
  }

  for (int h = 0; h < kHung; ++h) old[h * stride]->edges[2].Exchange(nullptr);
  local.clear();  // freed by their counts
  r = brc::CollectYoung();
  CheckCollect(r, brc::CollectKind::kYoung);
  ExpectCounts("promoted cycles cut loose, then a young collection", *r, 0, 0, 0);
  r = brc::Collect();
  CheckCollect(r);
  brc::Safepoint();
  if (r->unreachable != kept - kLocal || r->collected != kept - kLocal) {
    FailDetail("a full collection did not find exactly the promoted cycles that were cut loose",
               "unreachable %llu, collected %llu, expected %llu",
               static_cast<unsigned long long>(r->unreachable),
               static_cast<unsigned long long>(r->collected),
               static_cast<unsigned long long>(kept - kLocal));
  }
  ExpectRingsFreed("promoted cycles, cut loose", ring_freed,
                   static_cast<int64_t>(garbage + kept - kLocal));
  for (std::size_t i = 0; i < old.size(); ++i) {
    if (brc::GetRefCount(old[i].get()) != counts[i]) {
      FailDetail("an old node's count did not return to its value before the cycles",
                 "old node %zu: count %lld, expected %lld", i,
                 static_cast<long long>(brc::GetRefCount(old[i].get())),
                 static_cast<long long>(counts[i]));
    }
  }

  // A young collection run by a constructor: it finds the young cycle made before it, not the
  // object under construction, which is young afterwards and found by the next one.
  ring_freed = g_ynode_freed[kRoleRing].load();
  MakeYRing(rng, 3, &next_id, &old);
  uint64_t inner_before = g_yinner_collections.load();
  brc::CollectorStats before = brc::GetCollectorStats();
  brc::Ref<YNode> x = brc::Make<YNode>(next_id++, kRoleRing, 0, /*collect_inside=*/true);
  brc::Safepoint();
  brc::CollectorStats after = brc::GetCollectorStats();
  if (g_yinner_collections.load() != inner_before + 1 ||
      after.young_collections != before.young_collections + 1 ||
      after.collected != before.collected + 3) {
    FailDetail("a young collection run inside a constructor did not collect the young cycle "
               "made before it",
               "young collections +%llu, collected +%llu (expected +1, +3)",
               static_cast<unsigned long long>(after.young_collections - before.young_collections),
               static_cast<unsigned long long>(after.collected - before.collected));
  }
  ExpectRingsFreed("a cycle collected inside a constructor", ring_freed, 3);
  // No allocation from here to the check: one would list x's page as young again and hide a
  // page that the inner collection took off the young list with x still under construction.
  x->edges[0].Exchange(x);  // a garbage cycle of one
  x.Reset();
  r = brc::CollectYoung();
  CheckCollect(r, brc::CollectKind::kYoung);
  brc::Safepoint();
  ExpectCounts("an object whose constructor ran a young collection", *r, 1, 1, 0);
  ExpectRingsFreed("an object whose constructor ran a young collection", ring_freed, 3 + 1);
  brc::EnableCollector();
}

uint64_t OldYoung(const Options& o) {
  brc::ThreadScope attach;
  g_expect.finalizers = false;
  brc::CollectorStats gc_before = brc::GetCollectorStats();
  uint64_t clears_before = g_yclears.load();
  int64_t made_before[kRoles], freed_before[kRoles];
  for (int i = 0; i < kRoles; ++i) {
    made_before[i] = g_ynode_made[i].load();
    freed_before[i] = g_ynode_freed[i].load();
  }
  uint64_t auto_young_before = g_auto_young.load(), auto_full_before = g_auto_full.load();
  uint64_t inner_before = g_yinner_collections.load();
  g_max_young_scanned.store(0);
  std::mt19937_64 rng(o.seed * 7919 + 77);
  OldYoungShared s(o);
  std::vector<const YNode*> stack;

  // The old set: made first, linked into rings, then promoted by a full collection.
  SetOldYoungConfig(1, kSmallYoung);
  brc::DisableCollector();
  s.old.reserve(kOldNodes);
  for (std::size_t i = 0; i < kOldNodes; ++i) {
    s.old.push_back(brc::Make<YNode>((uint64_t{0xF} << 56) | i, kRoleOld));
  }
  for (std::size_t i = 0; i < kOldNodes; ++i) {
    s.old[i]->edges[0].Exchange(s.old[(i / 64) * 64 + (i + 1) % 64]);
  }
  g_old_set_held.store(true);
  CheckCollect(brc::Collect());
  // (A full collection reports promoted 0: the field counts a young collection's survivors.)
  absl::StatusOr<brc::CollectResult> r = brc::CollectYoung();
  CheckCollect(r, brc::CollectKind::kYoung);
  ExpectCounts("the old set, right after the full collection that promoted it", *r, 0, 0, 0);
  brc::EnableCollector();

  for (int round = 0; round < 2; ++round) {
    const int workers = round + 1;
    SetOldYoungConfig(workers, kSmallYoung);
    s.round = round;
    s.end = Deadline(o.seconds / 2);
    std::vector<std::thread> pool;
    for (int t = 0; t < o.threads; ++t) pool.emplace_back(OldYoungWorker, std::ref(s), t);
    std::thread collector(OldYoungCollector, std::ref(s), workers);
    {
      brc::BlockingScope blocking;  // joins wait; no object is touched here
      for (auto& t : pool) t.join();
      collector.join();
    }
    CheckOldSetReachable(s, &stack);
    ExactYoungCheck(s, rng);
  }

  // Cut everything loose: all that is left is garbage, cycles included, young or old.
  for (const brc::Ref<YNode>& n : s.old) {
    for (SharedRef<YNode>& e : n->edges) e.Exchange(nullptr);
  }
  g_old_set_held.store(false);
  s.old.clear();
  int settle = 0;
  auto all_freed = [&] {
    for (int i = 0; i < kRoles; ++i) {
      if (g_ynode_made[i].load() - made_before[i] != g_ynode_freed[i].load() - freed_before[i]) {
        return false;
      }
    }
    return true;
  };
  while (settle < 2) {
    ++settle;
    CheckCollect(brc::Collect());
    brc::Safepoint();
    if (all_freed()) break;
  }
  if (!all_freed()) {
    FailDetail("YNode constructions and destructions differ after cutting everything loose and "
               "two full collections",
               "made/freed: old %lld/%lld, links %lld/%lld, ring nodes %lld/%lld",
               static_cast<long long>(g_ynode_made[kRoleOld].load() - made_before[kRoleOld]),
               static_cast<long long>(g_ynode_freed[kRoleOld].load() - freed_before[kRoleOld]),
               static_cast<long long>(g_ynode_made[kRoleLink].load() - made_before[kRoleLink]),
               static_cast<long long>(g_ynode_freed[kRoleLink].load() - freed_before[kRoleLink]),
               static_cast<long long>(g_ynode_made[kRoleRing].load() - made_before[kRoleRing]),
               static_cast<long long>(g_ynode_freed[kRoleRing].load() - freed_before[kRoleRing]));
  }
  brc::CollectorStats gc = brc::GetCollectorStats();
  uint64_t young = gc.young_collections - gc_before.young_collections;
  uint64_t full = gc.full_collections - gc_before.full_collections;
  uint64_t automatic = gc.automatic_collections - gc_before.automatic_collections;
  uint64_t clears = g_yclears.load() - clears_before;
  if (young == 0 || full == 0 || automatic == 0) {
    FailDetail("the collector statistics miss a kind of collection that ran",
               "young %llu, full %llu, automatic %llu", static_cast<unsigned long long>(young),
               static_cast<unsigned long long>(full), static_cast<unsigned long long>(automatic));
  }
  if (gc.collections - gc_before.collections != young + full) {
    Fail("the collector statistics' collections differ from young + full collections");
  }
  if (gc.collected - gc_before.collected != clears) {
    FailDetail("the collector statistics' collected count differs from the Clear() calls made",
               "collected %llu, Clear() %llu",
               static_cast<unsigned long long>(gc.collected - gc_before.collected),
               static_cast<unsigned long long>(clears));
  }
  std::printf("brc_gc_stress: oldyoung: %llu stops of the world checked (up to %llu reachable "
              "nodes); %llu garbage cycles, %llu hung on old nodes, %llu cut loose; %llu young "
              "and %llu full collections (%llu and %llu automatic, %llu in constructors; young "
              "sets up to %llu objects); final collections: %d\n",
              static_cast<unsigned long long>(s.stops.load()),
              static_cast<unsigned long long>(s.max_reachable.load()),
              static_cast<unsigned long long>(s.rings.load()),
              static_cast<unsigned long long>(s.hung.load()),
              static_cast<unsigned long long>(s.cut.load()), static_cast<unsigned long long>(young),
              static_cast<unsigned long long>(full),
              static_cast<unsigned long long>(g_auto_young.load() - auto_young_before),
              static_cast<unsigned long long>(g_auto_full.load() - auto_full_before),
              static_cast<unsigned long long>(g_yinner_collections.load() - inner_before),
              static_cast<unsigned long long>(g_max_young_scanned.load()), settle);
  return s.ops.load();
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!StartRun("brc_gc_stress", "graph|finalizers|oldyoung", argc, argv, &o)) return 2;
  g_seed = o.seed;
  // A stop of the world that waits this long for a thread is a hang: fail, naming the thread.
  const double stop_limit_s = kSanitized ? 120 : 30;
  absl::Status wd = brc::SetStopWatchdog(absl::Seconds(5), [stop_limit_s](const brc::LaggingThread& t) {
    std::fprintf(stderr,
                 "brc_gc_stress: %s: stop of the world waits for thread %u (os tid %lld, \"%s\") "
                 "for %lld ms\n",
                 g_scenario, t.id, static_cast<long long>(t.os_tid), t.name.c_str(),
                 static_cast<long long>(absl::ToInt64Milliseconds(t.waited)));
    if (absl::ToDoubleSeconds(t.waited) >= stop_limit_s) {
      Fail("a stop of the world waited too long for a thread to reach a safepoint");
    }
  });
  if (!wd.ok()) Fail("SetStopWatchdog rejected a valid timeout");
  brc::SetCollectorErrorHandler([](std::string_view message) {
    FailDetail("the collector reported an error", "%.*s", static_cast<int>(message.size()),
               message.data());
  });
  uint64_t callback_id = brc::AddCollectCallback(
      [](brc::CollectPhase phase, const brc::CollectResult& r) {
        if (phase == brc::CollectPhase::kStop) CheckCollectResult(r);
      });
  struct Scenario {
    const char* name;
    uint64_t (*run)(const Options&);
  };
  const Scenario scenarios[] = {
      {"graph", Graph}, {"finalizers", Finalizers}, {"oldyoung", OldYoung}};
  bool ran = false;
  for (const Scenario& s : scenarios) {
    if (o.scenario != "all" && o.scenario != s.name) continue;
    ran = true;
    g_scenario = s.name;
    int64_t live_before = brc::GetStats().live_objects();
    brc::CollectorStats gc_before = brc::GetCollectorStats();
    g_max_heap_pages.store(0);
    g_max_survivors.store(0);
    g_max_stopped_us.store(0);
    auto start = Clock::now();
    uint64_t ops;
    {
      HangWatchdog watchdog(s.name, o.seconds * 10 + (kSanitized ? 300 : 120));
      ops = s.run(o);
    }
    double secs = std::chrono::duration<double>(Clock::now() - start).count();
    int64_t live_after = brc::GetStats().live_objects();
    if (live_after != live_before) {
      FailDetail("objects leaked or freed twice (live-object count changed)",
                 "live objects %lld before, %lld after", static_cast<long long>(live_before),
                 static_cast<long long>(live_after));
    }
    brc::CollectorStats gc = brc::GetCollectorStats();
    std::printf("brc_gc_stress: %-10s ok  %12.0f ops/s  (%llu collections, %llu automatic; "
                "world stopped up to %.2f ms per collection; up to %llu pages, %llu "
                "survivors)\n",
                s.name, static_cast<double>(ops) / secs,
                static_cast<unsigned long long>(gc.collections - gc_before.collections),
                static_cast<unsigned long long>(gc.automatic_collections -
                                                gc_before.automatic_collections),
                static_cast<double>(g_max_stopped_us.load()) / 1000.0,
                static_cast<unsigned long long>(g_max_heap_pages.load()),
                static_cast<unsigned long long>(g_max_survivors.load()));
    std::fflush(stdout);
  }
  brc::RemoveCollectCallback(callback_id);

  if (!ran) {
    std::fprintf(stderr, "brc_gc_stress: unknown scenario '%s'\n", o.scenario.c_str());
    return 2;
  }
  return 0;
}
