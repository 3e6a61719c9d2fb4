// run.cc: one run of the scenario. The step table says what runs, in order (--list-steps,
// --skip); RunOnce resets the bookkeeping, arms the counter, runs the steps, disarms it, and then
// checks, with nothing failing: it drops everything and collects until nothing is found, and
// then every weak callback ran exactly once (a cancelled one never), every object made was
// destroyed, brc's live count is back where it started, and the world is running. It restores the
// settings the steps changed, so that --in-process runs can follow one another. Also here: the
// crash reporting of a run, which names the N and the step of a terminate, an abort, a crash or
// a hang (the alarm) before the process dies as it would have.
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

#include "oom_sweep.h"

namespace brc_oom {

// ---------------------------------------------------------------------------------------------
// The steps, in the order they run

namespace {

StepDef g_steps[] = {
    {"error-handler", StepErrorHandler, false},
    {"make", StepMake, false},
    {"weak", StepWeak, false},
    {"watchdog", StepWatchdog, false},
    {"helper-start", StepHelperStart, false},
    {"weak-drop", StepWeakDrop, false},
    {"auto-collect", StepAutoCollect, false},
    {"queue", StepQueue, false},
    {"blocked-owner", StepBlockedOwner, false},
    {"collect-young", StepCollectYoung, false},
    {"collect", StepCollect, false},
    {"stop-the-world", StepStopTheWorld, false},
    {"freeze", StepFreeze, false},
    {"per-thread", StepPerThread, false},
    {"set-allocator", StepSetAllocator, false},
    {"attach-detach", StepAttachDetach, false},
    {"reclaim", StepReclaim, false},
    {"helper-stop", StepHelperStop, false},
    {"parallel-collect", StepParallelCollect, false},
};

}  // namespace

std::span<StepDef> Steps() { return g_steps; }

// ---------------------------------------------------------------------------------------------
// One run

namespace {

// Fresh bookkeeping (a forked child starts with it fresh anyway), and a fresh scenario.
void ResetRun() {
  for (int i = 0; i < kMaxObjects; ++i) {
    g_life[i].store(kNever, std::memory_order_relaxed);
    g_clears[i].store(0, std::memory_order_relaxed);
    g_finalizes[i].store(0, std::memory_order_relaxed);
  }
  g_next_id.store(0);
  g_s = new Scenario();
  g_helper = new Helper();
}

// The steps with the counter armed; with --only --verbose, each step's time.
void RunSteps(uint64_t fail_at) {
  g_fail_at = fail_at;
  g_count.store(0);
  g_armed.store(true);
  for (StepDef& step : g_steps) {
    if (step.skip) continue;
    g_step.store(step.name);
    auto t0 = std::chrono::steady_clock::now();
    step.fn();
    if (g_print_injection && g_verbose) {
      Exempt exempt;
      std::fprintf(stderr, "oom_sweep: step %s: %.2f ms\n", step.name,
                   std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                       .count());
    }
  }
  g_armed.store(false);
  g_report->allocations.store(g_count.load());
  PrintTrace();
}

// Every thread of the run has ended; drop everything and collect until nothing is found.
void DropEverything() {
  if (g_helper->thread.joinable()) {
    g_helper->quit.store(true);
    JoinBlocking(g_helper->thread);
  }
  g_resurrected = nullptr;
  for (Ref<Object>& r : S().handoff) r = nullptr;
  for (Ref<Object>& r : S().chain) r = nullptr;
  for (Ref<Object>& r : S().held) r = nullptr;
  for (int round = 0; round < 4; ++round) {
    absl::StatusOr<brc::CollectResult> r = brc::Collect();
    if (!r.ok()) {
      Violation("the final brc::Collect (no failures) returned %s",
                std::string(r.status().message()).c_str());
      break;
    }
    if (r->collected == 0 && !g_resurrected) break;
    g_resurrected = nullptr;
  }
  CheckWorldRunning("the final collections");
  brc::Safepoint();
}

// Every WeakRef reads expired, every registered callback ran once, a cancelled one never.
void CheckWeakSlots() {
  for (int slot = 0; slot < kWeakSlots; ++slot) {
    WeakRec& w = S().weak[slot];
    if (w.ref && !w.ref->expired()) {
      Violation("WeakRef slot %d is not expired after every object was dropped", slot);
    }
    if (w.ref && w.ref->Lock()) Violation("WeakRef slot %d still locks its target", slot);
    int ran = w.ran.load();
    if (w.cancelled && ran != 0) Violation("cancelled weak callback of slot %d ran", slot);
    if (w.registered && !w.cancelled && ran != 1) {
      Violation("weak callback of slot %d ran %d times (expected once)", slot, ran);
    }
    if (!w.registered && ran != 0) Violation("unregistered weak callback of slot %d ran", slot);
  }
}

// Every object made was destroyed (one report per kind), brc's live count is back where it was,
// also once the WeakRefs are gone with the scenario.
void CheckObjectsGone(int64_t live_before) {
  int leaked[kKinds] = {};
  for (int id = 0; id < g_next_id.load(); ++id) {
    if (g_life[id].load() == kAlive) {
      if (leaked[g_kind[id]]++ == 0) {
        Violation("object #%d (%s) was never destroyed", id, kKindNames[g_kind[id]]);
      }
    }
  }
  int64_t live_after = brc::GetStats().live_objects();
  if (live_after != live_before) {
    Violation("brc::GetStats().live_objects() is %lld, was %lld before the run",
              static_cast<long long>(live_after), static_cast<long long>(live_before));
  }
  delete g_s;  // the WeakRefs go
  g_s = nullptr;
  delete g_helper;
  g_helper = nullptr;
  if (brc::GetStats().live_objects() != live_before) {
    Violation("live objects changed when the WeakRefs were dropped");
  }
}

// Restore the defaults this run changed.
void RestoreDefaults() {
  (void)brc::SetStopWatchdog(absl::Seconds(1));
  brc::SetCollectorErrorHandler(
      [](std::string_view) { g_collector_errors.fetch_add(1, std::memory_order_relaxed); });
  brc::CollectorConfig config = brc::GetCollectorConfig();
  config.workers = 1;
  (void)brc::SetCollectorConfig(config);
  brc::ReleaseFreeMemory();
}

}  // namespace

void RunOnce(uint64_t fail_at) {
  ResetRun();
  int64_t live_before = brc::GetStats().live_objects();
  RunSteps(fail_at);
  g_step.store("checks");
  DropEverything();
  CheckWeakSlots();
  CheckObjectsGone(live_before);
  RestoreDefaults();
  g_step.store("setup");
}

// ---------------------------------------------------------------------------------------------
// Crash reporting in a run: say where it died, then die as before (the sweep's parent, or
// --only at the moment of failing it, prints the failed allocation's stack).

namespace {

void OnTerminate() {
  std::fprintf(stderr,
               "oom_sweep: std::terminate called (N=%llu, step '%s'): an exception escaped a "
               "noexcept function or a destructor?\n  terminate was called here:\n",
               static_cast<unsigned long long>(g_fail_at), g_step.load());
  PrintCurrentStack();
  std::fflush(stderr);
  std::signal(SIGABRT, SIG_DFL);
  std::abort();
}

void OnFatalSignal(int sig) {
  std::fprintf(stderr, "oom_sweep: signal %d (%s) in a run (N=%llu, step '%s'), here:\n", sig,
               strsignal(sig), static_cast<unsigned long long>(g_fail_at), g_step.load());
  if (sig != SIGALRM) PrintCurrentStack();
  std::fflush(stderr);
  std::signal(sig, SIG_DFL);
  raise(sig);
}

}  // namespace

void InstallCrashReporting(int timeout_s) {
  std::set_terminate(OnTerminate);
  std::signal(SIGABRT, OnFatalSignal);
  std::signal(SIGALRM, OnFatalSignal);
#ifndef OOM_SANITIZED
  std::signal(SIGSEGV, OnFatalSignal);
  std::signal(SIGBUS, OnFatalSignal);
#endif
  alarm(static_cast<unsigned>(timeout_s));
}

}  // namespace brc_oom
