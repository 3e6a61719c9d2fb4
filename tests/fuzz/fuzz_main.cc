// brc_fuzz: a libFuzzer target that drives brc's public API as a small object-graph program and
// checks every step against a model.
//
// The input. A byte string read as a sequence of operations: one opcode byte, then one byte per
// argument (a missing byte reads as 0), on at most kMaxObjects objects, kRoots root slots (Refs
// held by the fuzz thread), kWeaks WeakRef slots and kHelperSlots slots of the helper thread:
//   objects: make a leaf, a tracked Node, an FNode (tracked, with a finalizer) or a resurrecting
//     FNode (its finalizer stores a new reference to it in the run's resurrection list); link (a
//     tracked object's child slot takes a Ref to another root's object; itself included), unlink,
//     copy and drop roots, walk a child into a root, change a field, take an object back from the
//     resurrection list; MakeImmortal;
//   weak references: make (no callback; a callback that counts its runs; one that also holds a
//     strong reference to some object and drops it when it runs; one that holds a copy of its own
//     WeakRef and checks from inside that the target already reads expired), copy, drop, Lock()
//     and keep the result (an object in a dead cycle that no collection has found yet is revived);
//   a constructor that throws, optionally after making a WeakRef to `this`
//     (`WeakRef(Ref::NewRef(this))`, plain or with a callback) and, for a tracked one, after
//     taking a Ref to another object;
//   the collector: Collect(), Freeze()/Unfreeze(), GetReferents/GetReferrers, ReleaseFreeMemory;
//   the helper, a second std::thread that stays attached and runs one command at a time for the
//     fuzz thread: give it a reference (moved, or copied on either thread), take one back (moved
//     by either thread), drop one (then optionally Lock() a WeakRef at once, on the helper and on
//     the fuzz thread before its next safepoint), make objects (it owns them), link its objects,
//     Lock() or make WeakRefs, Collect()/Freeze()/Unfreeze(), read every reference count, or
//     exit and be replaced by a new thread (objects it owned are orphaned, its id reused; its
//     per-thread slots are spilled into the shared words);
//   per-thread counting (brc/hot.h), the opcode bytes 248..255 (kExtBase + ExtOp; before these
//     existed those bytes were aliases of the first eight operations, so every other byte of an
//     older input decodes as it did): CountPerThread of a root's object (also inside a
//     BlockingScope, which must fail with FailedPrecondition; or the contention detector's
//     switch, fed lost races by brc::testing::NoteContentionForTesting with detection on for
//     that operation only: picked at the threshold, switched at the next safepoint, counted in
//     GetStats().per_thread_detected), of a helper slot's object on the helper, of two roots'
//     objects under one brc::StopTheWorld (with MergePerThreadCounts in that stop), and of a
//     root's object right after the helper dropped a reference to it that the fuzz thread had
//     taken (its merge-queue entry is drained after the switch);
//     MergePerThreadCounts on either thread (also in a BlockingScope: FailedPrecondition); drop
//     a root, then Lock() a WeakRef at once, before the safepoint; SetPerThreadConfig with a
//     valid configuration (merge_interval 0 or kLongInterval, max_objects from 1 up, contention
//     detection off) or one field out of range (InvalidArgument, GetPerThreadConfig unchanged).
//
// Where each part lives (fuzz_model.h lists every file): how the fuzz thread waits for the
// helper, fuzz_helper.cc; the model's rules, fuzz_model.cc, and for per-thread counting,
// fuzz_per_thread.cc; what is checked after every operation and at the end of each input,
// fuzz_checks.cc; the acyclic check, fuzz_acyclic.cc. This file holds the libFuzzer entry
// points, the trace, and the loop that plays one input (Run::Go).
//
// Not modelled: real lost races feeding the contention detector (which objects it would switch
// depends on timing between threads, which the fuzzer does not control), so detection is on
// only inside the operation that feeds it by hand; SetPerThreadConfig never turns it on
// otherwise. Allocation failure while switching or growing slots (the OOM tests cover it).
//
// Automatic collections are disabled (brc::DisableCollector): the model decides when cycles die.
// A failed check prints what differs and aborts. To read an input as a program:
//   BRC_FUZZ_TRACE=1 build/fuzz/tests/fuzz/brc_fuzz crash-file      (every operation)
//   BRC_FUZZ_STATS=1 ...      (brc's heap pages and collections after each input)
// Build and run: scripts/fuzz.sh [seconds] (clang, ASan+UBSan, BRC_DEBUG, -DBRC_BUILD_FUZZ=ON);
// seed corpus: tests/fuzz/corpus/. The k*Enabled / kCheck* constants in fuzz_model.h switch
// off an operation or check that a known brc defect makes fail at once, so that fuzzing can go
// on.
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "brc/brc.h"
#include "brc/testing.h"
#include "fuzz_model.h"

namespace brc_fuzz {

bool g_trace = false;
bool g_stats = false;  // BRC_FUZZ_STATS=1: one line of brc's memory figures after each input

void Trace(const char* fmt, ...) {
  if (!g_trace) return;
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fputc('\n', stderr);
}

[[noreturn]] void Fail(const char* fmt, ...) {
  std::fprintf(stderr, "\nbrc_fuzz: MODEL CHECK FAILED: ");
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fprintf(stderr, "\n(rerun the input with BRC_FUZZ_TRACE=1 to see every operation)\n");
  std::abort();
}

// ---- one input's run ----

Run::Run(Reader& in) : in_(in) {
  // Every input starts with explicit collections only, and the default configuration.
  brc::DisableCollector();
  if (!brc::SetCollectorConfig(brc::CollectorConfig{}).ok()) Fail("SetCollectorConfig");
  wm_.fill(WeakModel{});
  g_resurrected = &resurrected_;
  // The check's schedule is global: afresh for each input, so that an input replays alone.
  ResetAcyclic();
  // Per-thread counting: the default configuration but a long merge_interval (no due pass
  // at a safepoint: objects stay in limbo until an explicit pass or a collection), from a
  // pass now (the interval counts from the last pass).
  brc::PerThreadConfig pt;
  pt.merge_interval = kLongInterval;
  if (!brc::SetPerThreadConfig(pt).ok()) Fail("SetPerThreadConfig");
  uint64_t before = ThreadPasses();
  absl::Status st = brc::MergePerThreadCounts();
  FUZZ_CHECK(st.ok(), "MergePerThreadCounts: %s", st.ToString().c_str());
  // The model learns of passes at safepoints from this thread's statistics: they must count.
  FUZZ_CHECK(ThreadPasses() == before + 1, "a merge pass did not count in GetThreadStats()");
}

Run::~Run() { g_resurrected = nullptr; }

void Run::Go() {
  int steps = 0;
  while (!in_.Done() && steps++ < 4096) {
    Step();
    ApplyPasses();
    // With merge_interval 0, a due pass runs at the fuzz thread's next safepoint: whatever is
    // in limbo (a slot went below zero for it, which marked a pass due, and a helper that
    // marked one handed it to this thread when it blocked) is freed there.
    // Except what only this safepoint's drain of its merge queue leaves in limbo: that pass
    // was not due when the safepoint looked, and runs at the following one.
    bool due = pt_interval0_ && !LimboIds().empty();
    bool queued = brc::testing::QueuedObjectsForTesting(brc::CurrentThreadId()) > 0;
    uint64_t detected = brc::GetStats().per_thread_detected;
    Safepoint();
    if (nominee_ >= 0) {
      // The safepoint switched the detector's nominee first (a failure, at max_objects, is
      // silent: the object stays as it was), then ran a due pass.
      Rec& r = R(nominee_);
      bool switched = !r.pt && !r.immortal && PoolLive() < pt_max_objects_;
      r.pt |= switched;
      nominee_ = -1;
      uint64_t grew = brc::GetStats().per_thread_detected - detected;
      FUZZ_CHECK(grew == (switched ? 1u : 0u),
                 "the detector's nominee #%d: per_thread_detected grew by %llu, model: %d",
                 r.id, (unsigned long long)grew, int(switched));
    }
    if (due && queued && passes_run_ == 0) {
      Trace("  (the safepoint's drain made a pass due: the next safepoint runs it)");
      Safepoint();
    }
    FUZZ_CHECK(!due || passes_run_ > 0,
               "objects in limbo, merge_interval 0, and no merge pass ran at the safepoint");
    ApplyPasses();
    Check("after step");
  }
  Teardown();
}

}  // namespace brc_fuzz

using brc_fuzz::Fail;
using brc_fuzz::g_helper;
using brc_fuzz::g_stats;
using brc_fuzz::g_trace;
using brc_fuzz::Helper;
using brc_fuzz::Reader;
using brc_fuzz::Run;
using brc_fuzz::StopHelperAtExit;

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  g_trace = std::getenv("BRC_FUZZ_TRACE") != nullptr;
  g_stats = std::getenv("BRC_FUZZ_STATS") != nullptr;
  brc::AttachCurrentThread();  // the fuzz thread stays attached until it exits
  brc::DisableCollector();     // the model decides when cycles die: explicit Collect() only
  brc::SetCollectorErrorHandler([](std::string_view message) {
    Fail("the collector reported an error: %.*s", static_cast<int>(message.size()),
         message.data());
  });
  g_helper = new Helper();
  std::atexit(StopHelperAtExit);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Reader in(data, size);
  {
    Run run(in);
    run.Go();
  }
  if (g_stats) {
    brc::CollectorStats cs = brc::GetCollectorStats();
    std::fprintf(stderr, "brc_fuzz stats: collector pages %llu (stats %llu), leaf pages %llu, "
                 "tracked %llu, collections %llu\n",
                 (unsigned long long)brc::testing::CollectorHeapPagesForTesting(),
                 (unsigned long long)cs.heap_pages,
                 (unsigned long long)brc::testing::LeafHeapPagesForTesting(),
                 (unsigned long long)cs.tracked, (unsigned long long)cs.collections);
  }
  return 0;
}
