// steps_objects.cc: the scenario's steps that the main thread runs on its own objects. Make of
// every type (leaf, tracked, large, over-aligned, a constructor that allocates), kept alive as a
// structure with a cycle for the later steps; WeakRefs with and without callbacks, copies and
// Lock(), one cancelled; last references dropped by the owner, with weak callbacks that throw,
// allocate or drop the next object inside the decrement; per-thread counts (brc/hot.h); and the
// configuration calls that copy a handler onto the heap or must refuse (SetCollectorErrorHandler,
// SetStopWatchdog, SetAllocator while objects live).
#include <string>

#include "brc/hot.h"
#include "oom_sweep.h"

namespace brc_oom {
namespace {

// A collection error handler large enough to live on the heap: each report copies it.
struct ErrorHandler {
  void* state[6] = {};
  void operator()(std::string_view) const {
    g_collector_errors.fetch_add(1, std::memory_order_relaxed);
  }
};

}  // namespace

void StepErrorHandler() {
  Try("SetCollectorErrorHandler", [] { brc::SetCollectorErrorHandler(ErrorHandler{}); });
}

// Every type, kept in held[] for the later steps: a live structure with a cycle.
void StepMake() {
  Ref<Object>* h = S().held;
  h[0] = TryMake<Leaf>("Make<Leaf>", 1);
  h[1] = TryMake<StringLeaf>("Make<StringLeaf>", 200);
  h[2] = TryMake<BigLeaf>("Make<BigLeaf>");
  h[3] = TryMake<Aligned64Leaf>("Make<Aligned64Leaf>");
  h[4] = TryMake<Aligned4096Leaf>("Make<Aligned4096Leaf>");
  Ref<Node> n = TryMake<Node>("Make<Node>");
  Ref<BigNode> big = TryMake<BigNode>("Make<BigNode>");
  Ref<Aligned64Node> a64 = TryMake<Aligned64Node>("Make<Aligned64Node>");
  Ref<PageNode> page = TryMake<PageNode>("Make<PageNode>");
  Link(n, 0, h[0]);
  Link(n, 1, big);
  Link(big, 0, n);  // a cycle, alive: held from outside
  Link(big, 1, a64);
  Link(a64, 0, page);
  Link(page, 0, h[2]);
  h[5] = std::move(n);
  h[6] = std::move(big);
  h[7] = std::move(a64);
  h[8] = std::move(page);
}

// Weak references (with and without callbacks, copies, Lock) to live objects, and one cancelled
// callback.
void StepWeak() {
  Ref<Object>* h = S().held;
  MakeWeak(0, h[0], kCbCount);
  MakePlainWeak(1, h[0]);  // a second WeakRef to the same object: shares its slot
  MakeWeak(2, h[1], kCbThrow);
  MakeWeak(3, h[2], kCbAllocate);
  MakeWeak(4, h[4], kCbCount);
  MakeWeak(5, h[5], kCbCount);
  MakeWeak(6, h[8], kCbCount);
  MakePlainWeak(7, h[7]);
  for (int slot : {0, 1}) CheckLocks(slot, h[0]);
  CheckLocks(5, h[5]);
  CheckLocks(7, h[7]);
  if (S().weak[0].ref) {
    WeakRef<Object> copy = *S().weak[0].ref;  // copies share the target, not the callback
    if (copy.Lock().get() != h[0].get()) Violation("a copied WeakRef does not lock its target");
  }
  // Cancelled: destroyed before its target dies, so its callback must never run.
  MakeWeak(8, h[3], kCbCount);
  if (S().weak[8].ref) {
    S().weak[8].ref.reset();
    S().weak[8].cancelled = true;
  }
}

// A stop-the-world watchdog handler large enough to live on the heap: each stop copies it.
void StepWatchdog() {
  Try("SetStopWatchdog", [] {
    absl::Status s = brc::SetStopWatchdog(absl::Seconds(600), BigWatchdogHandler{});
    if (!s.ok()) Violation("SetStopWatchdog failed");
  });
}

// Objects with weak callbacks whose last reference this thread (the owner) drops: the callbacks
// run inside the decrement, one of them dropping the next object of a chain.
void StepWeakDrop() {
  Ref<Leaf> a = TryMake<Leaf>("Make<Leaf>", 10);
  Ref<Node> b = TryMake<Node>("Make<Node>");
  Ref<BigLeaf> c = TryMake<BigLeaf>("Make<BigLeaf>");
  Ref<Leaf> d = TryMake<Leaf>("Make<Leaf>", 11);
  Ref<Aligned64Leaf> e = TryMake<Aligned64Leaf>("Make<Aligned64Leaf>");
  MakeWeak(10, a, kCbCount);
  MakeWeak(11, b, kCbThrow);
  MakeWeak(12, c, kCbAllocate);
  MakeWeak(13, d, kCbDropChain);  // dropping d drops e, whose callback runs in turn
  MakeWeak(14, e, kCbCount);
  S().chain[13] = std::move(e);
  a = nullptr;
  b = nullptr;
  c = nullptr;
  d = nullptr;
}

// Per-thread counts (brc/hot.h): switches (whose id tables may fail to grow: ResourceExhausted,
// nothing changed), counting through slots that may fail to grow (the shared word instead,
// silently), and a merge pass that frees the objects.
void StepPerThread() {
  Ref<Leaf> a = TryMake<Leaf>("Make<Leaf>", 60);
  Ref<Node> n = TryMake<Node>("Make<Node>");
  if (a == nullptr || n == nullptr) return;
  CheckStatus("brc::CountPerThread", brc::CountPerThread(a.get()));
  CheckStatus("brc::CountPerThread", brc::CountPerThread(n.get()));
  {
    Ref<Leaf> b = a;
    Ref<Node> m = n;
  }
  a = nullptr;
  n = nullptr;
  CheckStatus("brc::MergePerThreadCounts", brc::MergePerThreadCounts());
  CheckWorldRunning("brc::MergePerThreadCounts");
}

// SetAllocator while objects are alive: it stops the world to look, and must refuse.
void StepSetAllocator() {
  Try("brc::SetAllocator", [] {
    // Every object made so far may have failed to allocate (--persistent from an early N):
    // only then may it succeed.
    bool alive = brc::GetStats().live_objects() != 0;
    absl::Status s = brc::SetAllocator(&g_allocator);
    if (alive && s.code() != absl::StatusCode::kFailedPrecondition) {
      Exempt exempt;
      Violation("SetAllocator with objects alive returned %s (expected FAILED_PRECONDITION)",
                std::string(absl::StatusCodeToString(s.code())).c_str());
    }
  });
  CheckWorldRunning("brc::SetAllocator");
}

}  // namespace brc_oom
