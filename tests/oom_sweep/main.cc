// Allocation-failure sweep (issue 10, section 2): one scripted scenario that uses every brc API
// that allocates, run once per N = 1, 2, 3, ... with exactly the N-th allocation failing, until a
// run completes without reaching N. After every run brc must be consistent.
//
// Why this kind of test: an allocation that fails is a path most code has never run. Testing it
// one case at a time misses the allocation nobody thought of (a vector that grows inside a
// noexcept function, a container that is not exception-safe, a lock held across a throw).
// SQLite tests out-of-memory this way: count the allocations of a script, then fail each one in
// turn.
//
// What counts as an allocation (one counter shared by every thread, armed only while the
// scenario runs, so the harness itself is never failed):
//  * every call of the brc::Allocator this program installs (brc::SetAllocator): it wraps the
//    built-in default and returns nullptr for the N-th allocation. brc takes object storage,
//    collector pages and its own lists (merge queues, the collector's work lists) from it. (With
//    an allocator installed brc bypasses its leaf heap, so the leaf heap's own page allocation
//    is not failed by this program.)
//  * every global operator new (all the usual overloads, aligned and nothrow included, are
//    replaced below): it throws std::bad_alloc (or returns nullptr, for nothrow) for the N-th.
//    brc's weak table, thread registry, std::function callbacks and std::thread use it.
//
// The scenario (--list-steps), on the main thread plus a helper thread and two short-lived ones:
// a heavy collection error handler; Make of leaf, tracked, large (> 8 KiB) and over-aligned
// (64, 4096) types, one whose constructor allocates; WeakRefs with and without callbacks, copies,
// Lock, a cancelled callback; a heavy stop-the-world watchdog handler; last references dropped
// by the owner with callbacks that throw, allocate or drop the next object; an automatic
// collection inside Make; objects queued to their owner by the helper (and back), and merged on
// behalf of a blocked owner; collections with finalizers that resurrect, throw and allocate, weak
// callbacks on garbage, a cycle through another thread's object and a collection callback;
// StopTheWorld (dropping a parked thread's object inside it), GetReferrers, GetReferents;
// Freeze/Unfreeze; SetAllocator while objects live; attach and detach (nested ThreadScope,
// BlockingScope, a thread that exits attached); an exited thread's pages released at this
// thread's safepoint after it dropped their objects; the helper's detach; parallel marking.
//
// What each step may see (the documented ways to fail): std::bad_alloc from Make, WeakRef,
// GetReferrers, GetReferents, std::thread, ThreadScope, AddCollectCallback and the other
// configuration calls (the step catches it and carries on); OK or ResourceExhausted from Collect,
// Freeze and Unfreeze; nothing at all from a decrement, a queue drain or an automatic collection
// (brc absorbs the failure). Anything else is a defect: another exception or status, a failure
// that surfaces twice, a terminate, an abort, a hang, the world left stopped.
//
// What is checked after every run (failures disarmed): everything is dropped and Collect() runs
// until it finds nothing; then every object made was destroyed exactly once (a per-object table:
// alive/destroyed, Clear() and Finalize() at most once), brc::GetStats().live_objects() is back
// where it started, every WeakRef reads expired, every weak callback registered ran exactly once
// (a cancelled one never), no thread holds the world stopped, and (ASan builds) LeakSanitizer
// finds nothing unreachable (brc's registry, heaps and caches stay reachable from its globals).
//
// How the runs are isolated: each run is a child process forked from the same untouched parent
// (which allocates nothing between runs), so each sees the same sequence of allocations (brc keeps
// capacity between runs: queues, the registry, the collector's lists; in one process the
// first-time allocations would fail only in the first runs), N names the same allocation every
// time, and a crash, terminate or hang is reported with its N. The sequence depends on addresses
// (the weak table's shards), so the program re-executes itself with address randomisation off
// and gives every thread the same malloc arena; threads inside a run are strictly sequenced (the
// main thread hands the helper one command at a time and waits). So `--only N` repeats exactly
// what the sweep saw. There is no randomness, so there is no seed.
//
//   brc_oom_sweep                  sweep every N, stop at the first failing one (exit 1)
//   brc_oom_sweep --keep-going     sweep every N and list every failing one
//   brc_oom_sweep --only N         run N alone, in this process (for gdb), with its allocation's
//                                  stack printed when it is failed
//   brc_oom_sweep --repro NAME|all|list   targeted reproductions of the defects it found: each
//                                  fails one chosen allocation on one thread, in a fresh process
//   brc_oom_sweep --persistent     every allocation from the N-th on fails (memory stays
//                                  exhausted: the failure paths' own allocations fail too)
//   other options: --from N, --step S, --max-runs M, --timeout SECONDS (per run, default 10; a
//   run that takes longer is reported as a hang), --in-process (no fork: runs share one process),
//   --skip STEP[,STEP...] (leave steps out, e.g. one that a known defect blocks), --list-steps,
//   --verbose (each run's result; with --only, each step's time), --trace / --trace-stacks (with
//   --only: list every allocation counted, with its step, size, address and caller).
//
// The program's files, one mechanism each, are listed in oom_sweep.h. This one holds the driver:
// the options, one run in a forked child (RunN), the sweep over N and its summary, and main.
#include <execinfo.h>
#include <malloc.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "oom_sweep.h"

#ifdef OOM_SANITIZED
#include <sanitizer/common_interface_defs.h>
#endif
#ifdef OOM_LSAN
#include <sanitizer/lsan_interface.h>
#endif

namespace brc_oom {

// Says what was wrong and how to call the program; exits with status 2.
[[noreturn]] void Usage(const char* msg) {
  std::fprintf(stderr,
               "oom_sweep: %s\nusage: brc_oom_sweep [--keep-going] [--only N] [--from N] "
               "[--step S] [--max-runs M] [--timeout SECONDS] [--in-process] [--persistent] "
               "[--skip STEP[,STEP...]] [--list-steps] [--verbose] [--trace] "
               "[--repro NAME|all|list]\n",
               msg);
  std::exit(2);
}

namespace {

// ---------------------------------------------------------------------------------------------
// The options

struct Options {
  uint64_t from = 1;
  uint64_t step = 1;
  uint64_t max_runs = 0;  // 0: no limit
  uint64_t only = 0;
  int timeout_s = 10;
  bool keep_going = false;
  bool in_process = false;
  bool verbose = false;
  bool trace = false;
  const char* repro = nullptr;
};

uint64_t ParseCount(const char* s) {
  char* end = nullptr;
  unsigned long long v = std::strtoull(s, &end, 10);
  if (end == s || *end != '\0') Usage("not a number");
  return v;
}

// --skip STEP[,STEP...]: marks the steps left out.
void SkipSteps(const std::string& list) {
  std::size_t pos = 0;
  while (pos <= list.size()) {
    std::size_t comma = list.find(',', pos);
    std::string name = list.substr(pos, comma == std::string::npos ? std::string::npos
                                                                   : comma - pos);
    bool found = false;
    for (StepDef& s : Steps()) {
      if (name == s.name) s.skip = found = true;
    }
    if (!found) Usage(("unknown step '" + name + "' (see --list-steps)").c_str());
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
}

Options ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) Usage("missing value");
      return argv[++i];
    };
    if (a == "--keep-going") {
      o.keep_going = true;
    } else if (a == "--in-process") {
      o.in_process = true;
    } else if (a == "--persistent") {
      g_persistent = true;
    } else if (a == "--verbose") {
      o.verbose = true;
    } else if (a == "--trace") {
      o.trace = true;
    } else if (a == "--trace-stacks") {
      o.trace = true;
      g_trace_stacks = true;
    } else if (a == "--only") {
      o.only = ParseCount(value());
    } else if (a == "--from") {
      o.from = ParseCount(value());
    } else if (a == "--step") {
      o.step = ParseCount(value());
      if (o.step == 0) Usage("--step must be at least 1");
    } else if (a == "--max-runs") {
      o.max_runs = ParseCount(value());
    } else if (a == "--timeout") {
      o.timeout_s = static_cast<int>(ParseCount(value()));
    } else if (a == "--skip") {
      SkipSteps(value());
    } else if (a == "--repro") {
      o.repro = value();
      if (std::strcmp(o.repro, "list") == 0) {
        for (const ReproDef& r : Repros()) std::printf("%-24s %s\n", r.name, r.what);
        std::exit(0);
      }
    } else if (a == "--list-steps") {
      for (const StepDef& s : Steps()) std::printf("%s\n", s.name);
      std::exit(0);
    } else {
      Usage(("unknown option " + std::string(a)).c_str());
    }
  }
  return o;
}

// ---------------------------------------------------------------------------------------------
// One run, forked

struct Outcome {
  bool ok;
  bool injected;
  char what[sizeof(RunReport::failure)];  // for a failure
};

// Runs allocation `n` failing, in a forked child (or here), and says how it went. The parent
// allocates nothing between runs, so every child starts from the same heap (and, with address
// randomisation off, the same addresses: the weak table's shards depend on them).
void RunN(uint64_t n, const Options& o, Outcome* out) {
  std::memset(static_cast<void*>(g_report), 0, sizeof(RunReport));
  out->ok = false;
  out->what[0] = '\0';
  if (o.in_process) {
    RunOnce(n);
  } else {
    std::fflush(nullptr);
    pid_t pid = fork();
    if (pid < 0) {
      std::perror("fork");
      std::exit(2);
    }
    if (pid == 0) {
      InstallCrashReporting(o.timeout_s);
      RunOnce(n);
#ifdef OOM_LSAN
      if (__lsan_do_recoverable_leak_check() != 0) {
        Violation("LeakSanitizer found memory leaked by this run (report above)");
      }
#endif
      std::fflush(nullptr);
      _exit(0);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
      if (errno != EINTR) {
        std::perror("waitpid");
        std::exit(2);
      }
    }
    out->injected = g_report->injected_at.load() != 0;
    if (WIFSIGNALED(status)) {
      int sig = WTERMSIG(status);
      if (sig == SIGALRM) {
        std::snprintf(out->what, sizeof(out->what), "hang: the run took longer than %d s",
                      o.timeout_s);
      } else if (sig == SIGABRT) {
        std::snprintf(out->what, sizeof(out->what),
                      "abort (std::terminate or a brc fatal check; see the run's output)");
      } else {
        std::snprintf(out->what, sizeof(out->what), "killed by signal %d (%s)", sig,
                      strsignal(sig));
      }
      return;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      std::snprintf(out->what, sizeof(out->what), "the run exited with status %d",
                    WEXITSTATUS(status));
      return;
    }
  }
  out->injected = g_report->injected_at.load() != 0;
  if (g_report->failed.load()) {
    std::snprintf(out->what, sizeof(out->what), "%s", g_report->failure);
    return;
  }
  out->ok = true;
}

// "N=12 (operator new in step 'weak'): <what>"
void Describe(uint64_t n, const Outcome& out, char* buf, std::size_t size) {
  if (out.injected) {
    std::snprintf(buf, size, "N=%llu (%s in step '%s'): %s", static_cast<unsigned long long>(n),
                  SiteName(static_cast<Site>(g_report->site.load())), g_report->step, out.what);
  } else {
    std::snprintf(buf, size, "N=%llu (no allocation failed): %s",
                  static_cast<unsigned long long>(n), out.what);
  }
}

// ---------------------------------------------------------------------------------------------
// Setting up, --only, and the sweep

// Runs again with address randomisation off (once), so that a run's allocation sequence, which
// depends on addresses through the weak table's shards, is the same in every invocation and
// `--only N` repeats what the sweep saw. Without personality(2) it goes on as it is.
void ReexecWithoutAslr(char** argv) {
  int persona = personality(0xffffffff);
  if (persona == -1 || (persona & ADDR_NO_RANDOMIZE) != 0) return;
  if (std::getenv("OOM_SWEEP_ASLR") != nullptr) return;  // keep randomisation: set by the user
  if (personality(static_cast<unsigned long>(persona | ADDR_NO_RANDOMIZE)) == -1) return;
  execv("/proc/self/exe", argv);
  // exec failed: carry on with randomisation on
}
// The parent's setup, once, before any run: the unwinder and the symbols loaded, the report
// shared with the children, the failing allocator installed, automatic collections as often as
// brc allows. False (after saying why) when the sweep cannot run.
bool SetUp(const Options& o) {
  {
    void* warm[4];
    (void)backtrace(warm, 4);  // loads the unwinder now, not inside a failing allocation
#ifdef OOM_SANITIZED
    // Loads this program's symbols now, so that the children that print stacks inherit them.
    char buf[256];
    __sanitizer_symbolize_pc(reinterpret_cast<void*>(&ParseArgs), "%F", buf, sizeof(buf));
#endif
  }
  void* shared = mmap(nullptr, sizeof(RunReport), PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (shared == MAP_FAILED) {
    std::perror("mmap");
    return false;
  }
  g_report = static_cast<RunReport*>(shared);
  g_main_thread = std::this_thread::get_id();
  g_verbose = o.verbose;
  if (o.trace) g_trace = static_cast<TraceEntry*>(std::calloc(kTraceMax, sizeof(TraceEntry)));
  if (absl::Status s = brc::SetAllocator(&g_allocator); !s.ok()) {
    std::fprintf(stderr, "oom_sweep: SetAllocator: %s\n", std::string(s.message()).c_str());
    return false;
  }
  // Automatic collections as often as brc allows (every 64 tracked allocations per thread).
  brc::CollectorConfig config;
  config.young_threshold = 1;
  config.full_ratio = 0;
  (void)brc::SetCollectorConfig(config);
  brc::SetCollectorErrorHandler([](std::string_view) {
    g_collector_errors.fetch_add(1, std::memory_order_relaxed);
  });
  return true;
}

void PrintBanner(const Options& o) {
  std::printf("oom_sweep: allocation-failure sweep (%s%s%s; address randomisation %s)\n",
              g_persistent ? "every allocation from the N-th on fails, " : "",
              o.in_process || o.only != 0 ? "in one process" : "one forked process per run",
              o.keep_going ? ", keep going" : "",
              (personality(0xffffffff) & ADDR_NO_RANDOMIZE) != 0 ? "off" : "on");
  for (const StepDef& s : Steps()) {
    if (s.skip) std::printf("oom_sweep: skipping step '%s'\n", s.name);
  }
  std::fflush(stdout);
}

// The outcomes, formatted without allocating (see RunN).
constexpr std::size_t kLineSize = sizeof(Outcome::what) + 128;

// --only N: run N alone, in this process, with its failed allocation's stack printed.
int RunOnly(Options o) {
  static Outcome out;
  static char line[kLineSize];
  g_print_injection = true;
  o.in_process = true;
  InstallCrashReporting(o.timeout_s);
  RunN(o.only, o, &out);
  alarm(0);
  if (out.ok) {
    std::printf("oom_sweep: run N=%llu: consistent (%llu allocations counted%s)\n",
                static_cast<unsigned long long>(o.only),
                static_cast<unsigned long long>(g_report->allocations.load()),
                out.injected ? "" : "; none failed");
  } else {
    Describe(o.only, out, line, sizeof(line));
    std::printf("oom_sweep: FAILED at %s (the failed allocation's stack is above)\n", line);
  }
  return out.ok ? 0 : 1;
}

// What the sweep saw, kept without allocating (see RunN).
constexpr int kMaxListed = 256;
struct Tally {
  uint64_t runs = 0, absorbed = 0, bad_allocs = 0, statuses = 0;
  uint64_t n = 0;          // the last N run (past it when --max-runs stopped the sweep)
  bool completed = false;  // the last run failed no allocation
  int failed = 0;
  char failures[kMaxListed][kLineSize];
};

// Runs N = from, from + step, ... until a run fails no allocation (the end), a run fails (with
// --keep-going, only one in which no allocation was failed), or --max-runs.
void SweepRuns(const Options& o, Tally* t) {
  static Outcome out;
  static char line[kLineSize];
  uint64_t n = o.from;
  for (; o.max_runs == 0 || t->runs < o.max_runs; n += o.step) {
    RunN(n, o, &out);
    ++t->runs;
    if (!out.ok) {
      Describe(n, out, line, sizeof(line));
      std::printf("oom_sweep: FAILED at %s\n", line);
      std::fflush(stdout);
      PrintInjectionSiteAside();
      if (t->failed < kMaxListed) std::memcpy(t->failures[t->failed], line, sizeof(line));
      ++t->failed;
      if (!o.keep_going || !out.injected) break;
      continue;
    }
    if (o.verbose) {
      std::printf("oom_sweep: N=%llu ok\n", static_cast<unsigned long long>(n));
      std::fflush(stdout);
    }
    if (!out.injected) {
      t->completed = true;
      break;
    }
    t->bad_allocs += g_report->bad_allocs.load() > 0;
    t->statuses += g_report->statuses.load() > 0;
    t->absorbed += g_report->bad_allocs.load() == 0 && g_report->statuses.load() == 0;
  }
  t->n = n;
}

// The sweep's summary; its exit status.
int PrintSummary(const Options& o, const Tally& t, uint64_t total, double secs) {
  if (t.completed) {
    std::printf("oom_sweep: %llu runs; the last (N=%llu) completed with no allocation failing\n",
                static_cast<unsigned long long>(t.runs), static_cast<unsigned long long>(t.n));
    if (o.step == 1 && o.from == 1 && t.n != total + 1) {
      std::printf("oom_sweep: WARNING: the first run made %llu allocations, so N=%llu should "
                  "have been the first to complete: the allocation sequence varies (expected "
                  "only in step parallel-collect of TSan builds, whose marking threads split "
                  "the heap by timing)\n",
                  static_cast<unsigned long long>(total),
                  static_cast<unsigned long long>(total + 1));
    }
  } else if (t.failed == 0) {
    std::printf("oom_sweep: stopped after %llu runs (--max-runs), before the end\n",
                static_cast<unsigned long long>(t.runs));
  }
  std::printf("oom_sweep: of the runs with a failed allocation, %llu saw std::bad_alloc, %llu "
              "ResourceExhausted, %llu nothing (absorbed by brc); %.1f s\n",
              static_cast<unsigned long long>(t.bad_allocs),
              static_cast<unsigned long long>(t.statuses),
              static_cast<unsigned long long>(t.absorbed), secs);
  if (t.failed != 0) {
    std::printf("oom_sweep: %d failing run(s)%s:\n", t.failed,
                o.keep_going ? "" : " (stopped at the first; --keep-going lists them all)");
    for (int i = 0; i < t.failed && i < kMaxListed; ++i) std::printf("  %s\n", t.failures[i]);
    std::printf("oom_sweep: rerun one with: brc_oom_sweep --only N [the same --skip]\n");
    return 1;
  }
  return 0;
}

// The sweep: a first run with nothing failing (the scenario must be consistent as it is, and
// its count says how many runs the sweep takes), then every N.
int Sweep(const Options& o) {
  static Outcome out;
  static Tally tally;
  auto start = std::chrono::steady_clock::now();
  RunN(0, o, &out);
  uint64_t total = g_report->allocations.load();
  if (!out.ok) {
    std::printf("oom_sweep: FAILED without any allocation failing: %s\n", out.what);
    return 1;
  }
  std::printf("oom_sweep: the scenario makes %llu allocations; sweeping N = %llu, %llu, ...",
              static_cast<unsigned long long>(total), static_cast<unsigned long long>(o.from),
              static_cast<unsigned long long>(o.from + o.step));
  if (o.max_runs != 0) {
    std::printf(" (at most %llu runs)", static_cast<unsigned long long>(o.max_runs));
  }
  std::printf("\n");
  std::fflush(stdout);
  SweepRuns(o, &tally);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return PrintSummary(o, tally, total, secs);
}

}  // namespace
}  // namespace brc_oom

int main(int argc, char** argv) {
  using namespace brc_oom;
  ReexecWithoutAslr(argv);
  // One malloc arena for every thread: a new thread's objects then land at addresses that
  // depend only on the order of allocations, not on which arena glibc hands the thread (the
  // weak table's shard, and so whether an insertion allocates, depends on the address).
  mallopt(M_ARENA_MAX, 1);
  Options o = ParseArgs(argc, argv);
  if (!SetUp(o)) return 2;
  brc::ThreadScope attach;  // the main thread stays attached; forked runs inherit it
  PrintBanner(o);
  if (o.repro != nullptr) return RunRepros(o.repro);
  if (o.only != 0) return RunOnly(o);
  if (o.in_process) InstallCrashReporting(3600);
  return Sweep(o);
}
