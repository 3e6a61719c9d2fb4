// steps_threads.cc: the helper thread and the scenario's steps between threads. The helper is
// attached and polls its safepoint; the main thread posts it one command at a time and waits for
// each, so allocations happen in the same order every run. The steps: objects dropped by a
// thread that does not own them, each a push onto the owner's merge queue (both ways), and
// merged on the helper for an owner blocked in a BlockingScope; short-lived threads that attach
// (nested ThreadScope, BlockingScope), hand objects back and exit, one of them still attached;
// an exited thread's page released at this thread's safepoint once its objects are dropped; and
// the helper's own detach at the end.
#include <chrono>
#include <new>

#include "brc/testing.h"
#include "oom_sweep.h"

namespace brc_oom {

// ---------------------------------------------------------------------------------------------
// The helper thread

Helper* g_helper = nullptr;

bool HelperRunning() { return g_helper != nullptr && g_helper->attached.load(); }

// Waiting threads poll (their safepoint, then a flag) with short sleeps rather than spinning: the
// machines this runs on are often busy, and a spinning waiter takes the core the thread it waits
// for needs. A stop of the world waits at most one pause for a polling thread to park.
void Pause() { std::this_thread::sleep_for(std::chrono::microseconds(50)); }

namespace {

void HelperMain() {
  Helper& h = *g_helper;
  try {
    brc::ThreadScope attach;
    h.attached.store(true);
    h.started.store(true);
    int seen = 0;
    while (true) {
      brc::Safepoint();
      int posted = h.posted.load(std::memory_order_acquire);
      if (posted != seen) {
        h.command(h.arg);
        seen = posted;
        h.done.store(posted, std::memory_order_release);
      } else if (h.quit.load(std::memory_order_acquire)) {
        break;
      } else {
        Pause();
      }
    }
  } catch (const std::bad_alloc&) {
    SurfacedBadAlloc("ThreadScope (helper thread)");
  }
  if (brc::IsAttached()) Violation("the helper thread is still attached after its ThreadScope");
  h.attached.store(false);
  h.started.store(true);
}

}  // namespace

// Runs `command` on the helper while this thread polls its safepoint (attached: what the helper
// drops of this thread's objects is queued to it).
void OnHelper(Command command, int arg) {
  if (!HelperRunning()) return;
  Helper& h = *g_helper;
  h.command = command;
  h.arg = arg;
  int n = h.posted.fetch_add(1, std::memory_order_release) + 1;
  while (h.done.load(std::memory_order_acquire) != n) {
    brc::Safepoint();
    Pause();
  }
  brc::Safepoint();
}

// The same while this thread is inside a BlockingScope: what the helper drops of this thread's
// objects is merged (and freed) on its behalf, on the helper.
void OnHelperWhileBlocked(Command command, int arg) {
  if (!HelperRunning()) return;
  Helper& h = *g_helper;
  brc::BlockingScope blocking;  // first, so that nothing the helper drops is queued to us
  h.command = command;
  h.arg = arg;
  int n = h.posted.fetch_add(1, std::memory_order_release) + 1;
  while (h.done.load(std::memory_order_acquire) != n) Pause();
}

void JoinBlocking(std::thread& t) {
  brc::BlockingScope blocking;
  t.join();
}

// Helper commands.
void CmdDropHandoff(int k) { S().handoff[k] = nullptr; }
void CmdDropAllHandoffs(int) {
  for (Ref<Object>& r : S().handoff) r = nullptr;
}
void CmdMakeNode(int k) {
  Try("Make<Node> (helper)", [&] { S().handoff[k] = Make<Node>(); });
}
void CmdMakeLeaf(int k) {
  Try("Make<Leaf> (helper)", [&] { S().handoff[k] = Make<Leaf>(k); });
}
void CmdNothing(int) {}

// ---------------------------------------------------------------------------------------------
// The steps

// Starts the helper and waits until it has attached (or given up).
void StepHelperStart() {
  Try("std::thread (helper)", [] { g_helper->thread = std::thread(HelperMain); });
  if (!g_helper->thread.joinable()) return;
  while (!g_helper->started.load()) {
    brc::Safepoint();
    Pause();
  }
}

// The helper drops the last references to objects this thread owns: each is queued to this
// thread (a push onto its merge queue, which may fail) and freed by this thread's drain. Then
// the reverse: this thread drops the helper's objects, queued to the helper.
void StepQueue() {
  if (!HelperRunning()) return;
  brc::testing::ReleaseQueueMemoryForTesting();  // the first push needs a fresh allocation
  Ref<Object>* ho = S().handoff;
  ho[0] = TryMake<Leaf>("Make<Leaf>", 20);
  MakeWeak(20, ho[0], kCbCount);
  ho[1] = TryMake<Node>("Make<Node>");
  MakeWeak(21, ho[1], kCbAllocate);
  ho[2] = TryMake<BigLeaf>("Make<BigLeaf>");
  ho[3] = TryMake<Aligned4096Leaf>("Make<Aligned4096Leaf>");
  for (int k = 0; k < 4; ++k) OnHelper(CmdDropHandoff, k);
  // The other way: objects the helper owns, dropped here, queued to the helper.
  OnHelper(CmdMakeNode, 4);
  OnHelper(CmdMakeLeaf, 5);
  MakeWeak(22, ho[4], kCbCount);
  ho[4] = nullptr;
  OnHelper(CmdNothing, 0);  // the helper drains
  ho[5] = nullptr;
  OnHelper(CmdNothing, 0);
}

// The helper drops this thread's objects while this thread is blocked: merged and freed on the
// helper, weak callbacks included.
void StepBlockedOwner() {
  if (!HelperRunning()) return;
  Ref<Object>* ho = S().handoff;
  ho[0] = TryMake<Leaf>("Make<Leaf>", 30);
  MakeWeak(23, ho[0], kCbDropChain);
  S().chain[23] = TryMake<Node>("Make<Node>");
  MakeWeak(24, S().chain[23], kCbCount);
  ho[1] = TryMake<Node>("Make<Node>");
  OnHelperWhileBlocked(CmdDropAllHandoffs, 0);
}

namespace {

std::atomic<bool> g_main_blocked{false};  // the main thread is inside a BlockingScope

// A short-lived thread attaches (nested scopes), makes objects, drops one this thread owns
// (while this thread is blocked joining it), hands two of its own back and exits; this thread
// then drops objects whose owner has exited.
void ShortThreadMain() {
  try {
    brc::ThreadScope attach;
    brc::ThreadScope nested;
    Ref<Object>* ho = S().handoff;
    // Not before the main thread is blocked (else this drop would be queued to it instead).
    while (!g_main_blocked.load(std::memory_order_acquire)) {
      brc::Safepoint();
      Pause();
    }
    ho[0] = nullptr;  // the main thread's: merged and freed here, on its behalf
    Ref<Leaf> leaf = TryMake<Leaf>("Make<Leaf> (short thread)", 50);
    Ref<Node> node = TryMake<Node>("Make<Node> (short thread)");
    Link(node, 0, leaf);
    MakeWeak(41, leaf, kCbCount);
    Ref<Leaf> own = TryMake<Leaf>("Make<Leaf> (short thread)", 51);
    MakeWeak(42, own, kCbCount);
    own = nullptr;  // freed here, its callback runs here
    { brc::BlockingScope blocking; }
    ho[1] = std::move(node);
    ho[2] = std::move(leaf);
  } catch (const std::bad_alloc&) {
    SurfacedBadAlloc("ThreadScope (short thread)");
  }
  if (brc::IsAttached()) Violation("the short thread is still attached after its ThreadScope");
}

// A thread that attaches without a ThreadScope and exits attached: brc detaches it during its
// thread_local destruction.
void ExitAttachedMain() {
  try {
    brc::AttachCurrentThread();
  } catch (const std::bad_alloc&) {
    SurfacedBadAlloc("AttachCurrentThread (exiting thread)");
    return;
  }
  Ref<Leaf> leaf = TryMake<Leaf>("Make<Leaf> (exiting thread)", 53);
  S().handoff[3] = TryMake<Node>("Make<Node> (exiting thread)");  // outlives its owner
}

}  // namespace

void StepAttachDetach() {
  S().handoff[0] = TryMake<Leaf>("Make<Leaf>", 52);
  MakeWeak(43, S().handoff[0], kCbCount);
  std::thread t;
  Try("std::thread (short thread)", [&] { t = std::thread(ShortThreadMain); });
  if (t.joinable()) {
    brc::BlockingScope blocking;
    g_main_blocked.store(true, std::memory_order_release);
    t.join();
  }
  g_main_blocked.store(false, std::memory_order_relaxed);
  S().handoff[0] = nullptr;
  S().handoff[1] = nullptr;  // owner exited: merged by this thread
  S().handoff[2] = nullptr;
  std::thread u;
  Try("std::thread (exiting thread)", [&] { u = std::thread(ExitAttachedMain); });
  if (u.joinable()) JoinBlocking(u);
  S().handoff[3] = nullptr;
}

namespace {

// A thread makes a few tracked objects (a heap page of its own) and exits; this thread drops
// them, merging on behalf of the exited owner, so the blocks go back to that thread's orphaned
// page, and its next safepoint releases the page (lib/gc_heap.h, "Exited owners"). The release
// allocates nothing; the page goes back through the allocator's Deallocate.
void ReclaimThreadMain() {
  try {
    brc::ThreadScope attach;
    Ref<Node> a = TryMake<Node>("Make<Node> (reclaim thread)");
    Ref<Node> b = TryMake<Node>("Make<Node> (reclaim thread)");
    Link(a, 0, b);
    S().handoff[4] = std::move(a);
    S().handoff[5] = TryMake<Node>("Make<Node> (reclaim thread)");
  } catch (const std::bad_alloc&) {
    SurfacedBadAlloc("ThreadScope (reclaim thread)");
  }
}

}  // namespace

void StepReclaim() {
  std::thread t;
  Try("std::thread (reclaim thread)", [&] { t = std::thread(ReclaimThreadMain); });
  if (t.joinable()) JoinBlocking(t);
  S().handoff[4] = nullptr;
  S().handoff[5] = nullptr;
  brc::Safepoint();
}

// The helper is handed one more object to drain, then exits (its detach sweeps its heaps and
// gives its id back).
void StepHelperStop() {
  if (g_helper->thread.joinable()) {
    if (HelperRunning()) {
      OnHelper(CmdMakeNode, 3);
      MakeWeak(44, S().handoff[3], kCbCount);
      S().handoff[3] = nullptr;  // queued to the helper
    }
    g_helper->quit.store(true, std::memory_order_release);
    JoinBlocking(g_helper->thread);
  }
}

}  // namespace brc_oom
