// brc_bench, many threads: binary trees, one thread and one tree per thread, against counted
// and traced baselines. See threads_benchmark.cc for the names and conventions.
#ifdef BRC_BENCH_HAVE_BOEHM
// Thread support (GC_register_my_thread), without gc.h's macros that rename pthread_create:
// Google Benchmark's threads are registered by hand.
#define GC_THREADS
#define GC_NO_THREAD_REDIRECTS
#include <gc/gc.h>
#endif

#include "threads_common.h"

namespace brc_threads_bench {
namespace {

// ---------------------------------------------------------------------------------------------
// Scenario 4: binary trees. Each contender builds a complete tree of depth D with the same
// recursion, counts its nodes, and drops it.

constexpr int64_t TreeNodes(int depth) { return (int64_t{1} << (depth + 1)) - 1; }

template <class Make>
std::invoke_result_t<Make&> BuildTree(int depth, Make& make) {
  auto node = make();
  if (depth > 0) {
    node->left = BuildTree(depth - 1, make);
    node->right = BuildTree(depth - 1, make);
  }
  return node;
}

template <class P>
auto* RawNode(const P& p) {
  if constexpr (std::is_pointer_v<P>) {
    return p;
  } else {
    return p.get();
  }
}

template <class Node>
int64_t CountNodes(const Node* node) {
  return node->left ? 1 + CountNodes(RawNode(node->left)) + CountNodes(RawNode(node->right)) : 1;
}

// plain and atomic: an intrusive count in the node and a small owning handle.
struct PlainCount {
  int64_t n = 1;
  void Inc() noexcept { ++n; }
  bool Dec() noexcept { return --n == 0; }
};

struct AtomicCount {
  std::atomic<int64_t> n{1};
  // Relaxed: the caller already holds a reference.
  void Inc() noexcept { n.fetch_add(1, std::memory_order_relaxed); }
  // Acq_rel: the last decrement must see every other holder's writes before the delete.
  bool Dec() noexcept { return n.fetch_sub(1, std::memory_order_acq_rel) == 1; }
};

template <class Node>
class CountedRef {
 public:
  CountedRef() noexcept = default;
  static CountedRef Adopt(Node* node) noexcept {
    CountedRef r;
    r.node_ = node;
    return r;
  }
  CountedRef(const CountedRef& other) noexcept : node_(other.node_) {
    if (node_ != nullptr) node_->count.Inc();
  }
  CountedRef(CountedRef&& other) noexcept : node_(std::exchange(other.node_, nullptr)) {}
  CountedRef& operator=(CountedRef other) noexcept {
    std::swap(node_, other.node_);
    return *this;
  }
  ~CountedRef() {
    if (node_ != nullptr && node_->count.Dec()) delete node_;
  }
  Node* get() const noexcept { return node_; }
  Node* operator->() const noexcept { return node_; }
  explicit operator bool() const noexcept { return node_ != nullptr; }

 private:
  Node* node_ = nullptr;
};

template <class Count>
struct CountedNode {
  Count count;
  CountedRef<CountedNode> left, right;
};

struct SharedTreeNode {
  std::shared_ptr<SharedTreeNode> left, right;
};

struct BrcTreeNode : brc::Object {  // a leaf type as far as the collector goes: not tracked
  brc::Ref<BrcTreeNode> left, right;
};

struct TrackedTreeNode : brc::Object {  // tracked: lives in the collector's heap
  brc::Ref<TrackedTreeNode> left, right;
  void Trace(brc::Visitor& v) const {
    v.Visit(left);
    v.Visit(right);
  }
  void Clear() {
    left = nullptr;
    right = nullptr;
  }
};

struct AttachNothing {
  bool ok() const { return true; }
};

struct AttachBrc {
  brc::ThreadScope scope;
  bool ok() const { return true; }
};

// Google Benchmark lines a run's threads up when they enter and when they leave the timed loop.
// A brc thread waiting there while attached would hold up the stop of the world that an
// automatic collection on a thread still in its loop requests, and that thread would never
// arrive: a deadlock. So brc threads pass those two points inside a BlockingScope, left at the
// top of the first iteration and re-entered at the end of the last one.
class BrcLoopGuard {
 public:
  BrcLoopGuard() { blocking_.emplace(); }
  void IterationStart() {
    if (blocking_) blocking_.reset();
  }
  void IterationEnd(const benchmark::State& state) {
    if (++done_ >= state.max_iterations || state.error_occurred()) blocking_.emplace();
  }

 private:
  std::optional<brc::BlockingScope> blocking_;
  benchmark::IterationCount done_ = 0;
};

struct NoLoopGuard {
  void IterationStart() {}
  void IterationEnd(const benchmark::State&) {}
};

struct PlainTrees {
  using Node = CountedNode<PlainCount>;
  using Attach = AttachNothing;
  using LoopGuard = NoLoopGuard;
  static CountedRef<Node> MakeNode() { return CountedRef<Node>::Adopt(new Node()); }
};

struct AtomicTrees {
  using Node = CountedNode<AtomicCount>;
  using Attach = AttachNothing;
  using LoopGuard = NoLoopGuard;
  static CountedRef<Node> MakeNode() { return CountedRef<Node>::Adopt(new Node()); }
};

struct SharedPtrTrees {
  using Attach = AttachNothing;
  using LoopGuard = NoLoopGuard;
  static std::shared_ptr<SharedTreeNode> MakeNode() { return std::make_shared<SharedTreeNode>(); }
};

struct BrcTrees {
  using Attach = AttachBrc;
  using LoopGuard = BrcLoopGuard;
  static brc::Ref<BrcTreeNode> MakeNode() { return brc::Make<BrcTreeNode>(); }
};

// brc::ParkableFrees around the timed loop as well: with one tree per thread, another thread's
// automatic collection would otherwise wait for this thread's whole drop of a tree (131k frees
// and more) before it could stop the world. The loop holds no lock, as the scope requires.
class BrcParkableLoopGuard : public BrcLoopGuard {
 private:
  brc::ParkableFrees parkable_;
};

struct BrcTrackedTrees {
  using Attach = AttachBrc;
  using LoopGuard = BrcParkableLoopGuard;
  // A safepoint per node: the allocation path does not park, and with one tree per thread the
  // other threads' automatic collections wait for this one to reach a safepoint.
  static brc::Ref<TrackedTreeNode> MakeNode() {
    brc::Safepoint();
    return brc::Make<TrackedTreeNode>();
  }
};

#ifdef BRC_BENCH_HAVE_BOEHM
struct GcNode {
  GcNode* left;
  GcNode* right;
};

// GC_INIT once, on the main thread (Setup callbacks run there). Thread registration is switched
// on only for the per-thread runs, which come after every single-thread one.
void InitBoehm() {
  static std::once_flag once;
  std::call_once(once, [] { GC_INIT(); });
}
void BoehmSetup(const benchmark::State&) { InitBoehm(); }
void BoehmThreadsSetup(const benchmark::State&) {
  InitBoehm();
  static std::once_flag once;
  std::call_once(once, [] { GC_allow_register_threads(); });
}

// Registers a Google Benchmark thread with the collector (its stack becomes a root, and it is
// stopped during collections); the main thread is registered already.
class AttachBoehm {
 public:
  AttachBoehm() {
    if (GC_thread_is_registered()) {
      ok_ = true;
      return;
    }
    GC_stack_base base;
    ok_ = registered_ = GC_get_stack_base(&base) == GC_SUCCESS &&
                        GC_register_my_thread(&base) == GC_SUCCESS;
  }
  ~AttachBoehm() {
    if (registered_) GC_unregister_my_thread();
  }
  AttachBoehm(const AttachBoehm&) = delete;
  AttachBoehm& operator=(const AttachBoehm&) = delete;
  bool ok() const { return ok_; }

 private:
  bool ok_ = false;
  bool registered_ = false;
};

// Nodes are never freed by hand: the collector reclaims a tree once nothing points to it.
struct BoehmTrees {
  using Attach = AttachBoehm;
  using LoopGuard = NoLoopGuard;
  static GcNode* MakeNode() {
    void* p = GC_MALLOC(sizeof(GcNode));  // zeroed
    if (p == nullptr) throw std::bad_alloc();
    return static_cast<GcNode*>(p);
  }
};
#endif  // BRC_BENCH_HAVE_BOEHM

// ns_per_node is wall-clock time around the timed loop, not the CPU-time column: Boehm marks on
// helper threads, whose CPU time the benchmark thread's clock does not see.
template <class Tree>
void BM_BinaryTrees(benchmark::State& state) {
  const int depth = static_cast<int>(state.range(0));
  const int64_t nodes = TreeNodes(depth);
  typename Tree::Attach attach;
  if (!attach.ok()) state.SkipWithError("could not attach the thread");
  auto make = &Tree::MakeNode;
  // One tree first, untimed, so that every contender is measured warm, as a program that
  // keeps building trees is: at depth 20 (64 MiB per tree) a repetition may time a single
  // tree, and brc's would otherwise be the first of a freshly attached thread (each call of
  // this function attaches, and a detaching thread gives its cached pages back): 16,000 page
  // faults on fresh memory, about 40 ms of a 100 ms tree on a KVM guest, against malloc's
  // arena, warm from the earlier depths.
  if (attach.ok()) {
    auto warm = BuildTree(depth, make);
    if (CountNodes(RawNode(warm)) != nodes) state.SkipWithError("wrong tree size");
  }
  auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    auto root = BuildTree(depth, make);
    if (CountNodes(RawNode(root)) != nodes) state.SkipWithError("wrong tree size");
  }  // the tree is dropped at the end of each iteration
  std::chrono::duration<double, std::nano> wall = std::chrono::steady_clock::now() - start;
  state.SetItemsProcessed(state.iterations() * nodes);
  if (state.iterations() > 0) {
    state.counters["ns_per_node"] =
        wall.count() / (static_cast<double>(state.iterations()) * static_cast<double>(nodes));
  }
}

template <class Tree>
void BM_BinaryTreesPerThread(benchmark::State& state) {
  const int depth = static_cast<int>(state.range(0));
  const int64_t nodes = TreeNodes(depth);
  typename Tree::Attach attach;
  if (!attach.ok()) state.SkipWithError("could not attach the thread");
  auto make = &Tree::MakeNode;
  {
    typename Tree::LoopGuard guard;  // ends before the thread detaches
    for (auto _ : state) {
      guard.IterationStart();
      {
        auto root = BuildTree(depth, make);
        if (CountNodes(RawNode(root)) != nodes) state.SkipWithError("wrong tree size");
      }
      guard.IterationEnd(state);
    }
  }
  state.SetItemsProcessed(state.iterations() * nodes);
}

template <class Tree>
void RegisterSingleTrees(const std::string& contender, HookFn setup = nullptr) {
  auto* b = benchmark::RegisterBenchmark(("BM_BinaryTrees/" + contender).c_str(),
                                         &BM_BinaryTrees<Tree>);
  b->ArgName("depth")->Unit(benchmark::kMillisecond);
  if (QuickMode()) {
    b->Arg(16);
  } else {
    b->DenseRange(16, 20);
  }
  if (setup != nullptr) b->Setup(setup);
}

template <class Tree>
void RegisterPerThreadTrees(const std::string& contender, HookFn setup = nullptr) {
  auto* b = Threaded("BM_BinaryTreesPerThread/" + contender, &BM_BinaryTreesPerThread<Tree>,
                     CountingThreads());
  b->ArgName("depth")->Unit(benchmark::kMillisecond)->Arg(16);
  if (!QuickMode()) b->Arg(20);
  if (setup != nullptr) b->Setup(setup);
}

}  // namespace

void RegisterTrees() {
  // Every single-thread tree benchmark is registered (and so runs) before any per-thread one:
  // Boehm switches to thread registration only for the latter.
  RegisterSingleTrees<PlainTrees>("plain");
  RegisterSingleTrees<AtomicTrees>("atomic");
  RegisterSingleTrees<SharedPtrTrees>("shared_ptr");
  RegisterSingleTrees<BrcTrees>("brc");
  RegisterSingleTrees<BrcTrackedTrees>("brc_tracked");
#ifdef BRC_BENCH_HAVE_BOEHM
  RegisterSingleTrees<BoehmTrees>("boehm", &BoehmSetup);
#endif
  RegisterPerThreadTrees<PlainTrees>("plain");
  RegisterPerThreadTrees<AtomicTrees>("atomic");
  RegisterPerThreadTrees<SharedPtrTrees>("shared_ptr");
  RegisterPerThreadTrees<BrcTrees>("brc");
  RegisterPerThreadTrees<BrcTrackedTrees>("brc_tracked");
#ifdef BRC_BENCH_HAVE_BOEHM
  RegisterPerThreadTrees<BoehmTrees>("boehm", &BoehmThreadsSetup);
#endif
}

}  // namespace brc_threads_bench
