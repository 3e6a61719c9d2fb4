// repro.cc: targeted reproductions of the defects the sweep found (--repro NAME, or --repro
// all). Each arms one failing allocation on one thread at the exact point (FailOnThisThread),
// in a fresh process, and says whether brc misbehaved; a crash, terminate or abort also counts
// as reproduced. They stay as regression checks: with the defects fixed, each says "not
// reproduced".
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <new>

#include "oom_sweep.h"

#ifdef OOM_LSAN
#include <sanitizer/lsan_interface.h>
#endif

namespace brc_oom {
namespace {

// Each returns true when the defect showed (and it was reported with Violation).
bool ReproWeakTableRehash() {
  // The first WeakRef to an object whose weak-table shard is empty allocates twice: its slot,
  // then the shard map's first table. Fail the second; then make another WeakRef to it.
  Ref<Leaf> warm = Make<Leaf>(0);
  WeakRef<Leaf> first(warm);  // creates the table of shards
  for (int i = 1; i <= 16; ++i) {
    Ref<Leaf> x = Make<Leaf>(i);
    bool threw = false;
    FailOnThisThread(Site::kOperatorNew, 2);
    try {
      WeakRef<Leaf> w(x);
    } catch (const std::bad_alloc&) {
      threw = true;
    }
    StopFailing();
    if (!threw) continue;  // its shard's map had room: try another object
    std::printf("the shard map's first table could not be allocated; making another WeakRef\n");
    std::fflush(stdout);
    // Crashes here under ASan (frees absl's static empty group); in other builds the heap is
    // silently corrupted and a later allocation aborts.
    WeakRef<Leaf> again(x);
    if (again.Lock().get() != x.get()) {
      Violation("a WeakRef made after a failed one does not lock its live target");
      return true;
    }
    return false;
  }
  std::printf("not reproduced: no shard map needed to grow\n");
  return false;
}

bool ReproQuarantineFirstFree() {
  // BRC_DEBUG: the first object freed in a process creates the quarantine ring with new, inside
  // the decrement (noexcept).
  Ref<Leaf> x = Make<Leaf>(1);
  FailOnThisThread(Site::kOperatorNew, 1);
  x = nullptr;  // std::terminate here in a BRC_DEBUG build
  StopFailing();
  return false;
}

bool ReproDemangleLeak() {
  // A weak callback throws; building the report fails right after the exception's type name was
  // demangled (malloc): the demangled name is never freed.
  struct Throws {
    void* padding[4] = {};
    void operator()() const {
      std::runtime_error e("weak callback throws on purpose");
      FailOnThisThread(Site::kOperatorNew, 1);  // the std::string of the type name
      throw e;
    }
  };
  {
    Ref<Leaf> x = Make<Leaf>(1);
    WeakRef<Leaf> w(x, Throws{});
    x = nullptr;
  }
  StopFailing();
#ifdef OOM_LSAN
  if (__lsan_do_recoverable_leak_check() != 0) {
    Violation("memory leaked while reporting a weak callback's exception (report above)");
    return true;
  }
  return false;
#else
  std::printf("needs an AddressSanitizer build to see the leak\n");
  return false;
#endif
}

bool ReproStopWorldHandlerCopy() {
  // StopWorld copies the watchdog handler after it has taken the stop lock and marked this
  // thread as the stopper; the copy's allocation fails.
  (void)brc::SetStopWatchdog(absl::Seconds(60), BigWatchdogHandler{});
  FailOnThisThread(Site::kOperatorNew, 1);
  try {
    brc::StopTheWorld stop;
  } catch (const std::bad_alloc&) {
  }
  StopFailing();
  if (brc::IsWorldStoppedByThisThread()) {
    Violation("StopTheWorld threw std::bad_alloc and left this thread holding the world "
              "stopped (the next stop aborts: stops do not nest)");
    return true;
  }
  return false;
}

bool ReproStopWorldCounted() {
  // StopWorld records each thread it waits for in a vector; with one more attached thread than
  // ever before, the vector grows while the world is half stopped.
  std::atomic<bool> attached{false}, quit{false};
  std::thread spinner([&] {
    brc::ThreadScope attach;
    attached = true;
    while (!quit) {
      brc::Safepoint();
      Pause();
    }
  });
  while (!attached) Pause();
  FailOnThisThread(Site::kOperatorNew, 1);
  bool threw = false;
  try {
    brc::StopTheWorld stop;
  } catch (const std::bad_alloc&) {
    threw = true;
  }
  StopFailing();
  if (threw && brc::IsWorldStoppedByThisThread()) {
    Violation("StopTheWorld threw std::bad_alloc with the world half stopped (another thread was "
              "asked to park and is never restarted)");
    std::fflush(nullptr);
    _exit(1);  // the spinner is parked for good: cannot join it
  }
  quit = true;
  JoinBlocking(spinner);
  return false;
}

bool ReproCollectCallbackCopy() {
  uint64_t id = brc::AddCollectCallback(BigCollectCallback{});
  FailOnThisThread(Site::kOperatorNew, 1);
  bool threw = false;
  try {
    (void)brc::Collect();
  } catch (const std::bad_alloc&) {
    threw = true;
  }
  StopFailing();
  brc::RemoveCollectCallback(id);
  if (threw) {
    Violation("brc::Collect threw std::bad_alloc (documented: ResourceExhausted)");
    return true;
  }
  return false;
}

bool ReproGetReferents() {
  Ref<Node> n = Make<Node>();
  n->a = Make<Leaf>(1);
  FailOnThisThread(Site::kOperatorNew, 1);
  try {
    (void)brc::GetReferents(n.get());  // std::terminate: the visitor is noexcept
  } catch (const std::bad_alloc&) {
  }
  StopFailing();
  return false;
}

bool ReproFreezeCollectPages() {
  Ref<Node> n = Make<Node>();
  FailOnThisThread(Site::kBrcAllocator, 1);  // the page list, with the world stopped
  absl::StatusOr<uint64_t> r = brc::Freeze();  // aborts: "a half-done mark cannot be undone"
  StopFailing();
  if (!r.ok() && r.status().code() != absl::StatusCode::kResourceExhausted) {
    Violation("Freeze returned %s", std::string(r.status().message()).c_str());
    return true;
  }
  if (r.ok()) (void)brc::Unfreeze();
  return false;
}

bool ReproDetachFreeIds() {
  // The registry's list of free thread ids grows when a thread detaches, inside ~ThreadScope.
  std::atomic<int> stage{0};
  auto body = [&](int me) {
    brc::ThreadScope attach;
    stage.fetch_add(1);
    while (stage.load() < 2 + me) Pause();  // thread 0 exits first, then thread 1
    if (me == 1) FailOnThisThread(Site::kOperatorNew, 1);
  };
  std::thread a(body, 0), b(body, 1);
  while (stage.load() < 2) brc::Safepoint();
  {
    brc::BlockingScope blocking;
    stage.store(2);
    a.join();
    stage.store(3);
    b.join();  // std::terminate on thread b if its detach cannot grow the list
  }
  return false;
}

bool ReproQueuePushFallback() {
  // Memory stays exhausted on a thread that drops the last reference to another thread's
  // object: the queue cannot grow, and the fallback (merge with the world stopped) allocates.
  (void)brc::SetStopWatchdog(absl::Seconds(60), BigWatchdogHandler{});
  Ref<Leaf> x = Make<Leaf>(1);
  std::atomic<bool> done{false};
  std::thread t([&] {
    brc::ThreadScope attach;
    Ref<Leaf> mine = std::move(x);
    FailOnThisThread(Site::kAny, 1, /*all=*/true);
    mine = nullptr;  // queued to the main thread... or std::terminate
    StopFailing();
    done = true;
  });
  while (!done) {
    brc::Safepoint();
    Pause();
  }
  JoinBlocking(t);
  return false;
}

const ReproDef kRepros[] = {
    {"weak-table-rehash", ReproWeakTableRehash,
     "a failed WeakRef leaves the weak table's shard map corrupted"},
    {"quarantine-first-free", ReproQuarantineFirstFree,
     "BRC_DEBUG: the first free allocates the quarantine inside a noexcept decrement"},
    {"demangle-leak", ReproDemangleLeak,
     "the demangled exception type leaks when the report cannot be built"},
    {"stop-world-handler-copy", ReproStopWorldHandlerCopy,
     "StopTheWorld throws and leaves the world stopped (watchdog handler copy)"},
    {"stop-world-counted", ReproStopWorldCounted,
     "StopTheWorld throws with the world half stopped (list of counted threads)"},
    {"collect-callback-copy", ReproCollectCallbackCopy,
     "Collect throws std::bad_alloc instead of returning ResourceExhausted"},
    {"get-referents", ReproGetReferents,
     "GetReferents terminates (noexcept visitor grows a vector)"},
    {"freeze-collect-pages", ReproFreezeCollectPages,
     "Freeze aborts instead of returning ResourceExhausted"},
    {"detach-free-ids", ReproDetachFreeIds,
     "a detaching thread terminates (registry's free-id list grows in ~ThreadScope)"},
    {"queue-push-fallback", ReproQueuePushFallback,
     "under sustained OOM a decrement terminates (queue push fallback stops the world, which "
     "allocates)"},
};

// Runs one repro here; the exit status says whether it showed (1) or not (0).
int RunRepro(const ReproDef& r) {
  g_print_injection = true;
  std::printf("oom_sweep: repro %s: %s\n", r.name, r.what);
  std::fflush(stdout);
  InstallCrashReporting(30);
  bool showed = r.fn();
  alarm(0);
  std::printf("oom_sweep: repro %s: %s\n", r.name,
              showed ? "REPRODUCED" : "not reproduced (brc behaved)");
  return showed ? 1 : 0;
}

}  // namespace

std::span<const ReproDef> Repros() { return kRepros; }

int RunRepros(const char* which) {
  int reproduced = 0;
  bool found = false;
  for (const ReproDef& r : kRepros) {
    if (std::strcmp(which, "all") != 0 && std::strcmp(which, r.name) != 0) continue;
    found = true;
    if (std::strcmp(which, "all") != 0) return RunRepro(r);
    std::fflush(nullptr);
    pid_t pid = fork();
    if (pid == 0) {
      std::memset(static_cast<void*>(g_report), 0, sizeof(RunReport));
      _exit(RunRepro(r));
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    bool showed = !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    reproduced += showed;
    std::printf("oom_sweep: repro %-24s %s\n", r.name,
                !showed                ? "not reproduced"
                : WIFSIGNALED(status) ? (WTERMSIG(status) == SIGABRT ? "REPRODUCED (abort)"
                                                                     : "REPRODUCED (signal)")
                                      : "REPRODUCED");
    std::fflush(stdout);
  }
  if (!found) Usage("unknown --repro name (names: see --repro list)");
  std::printf("oom_sweep: %d reproduced\n", reproduced);
  return reproduced != 0 ? 1 : 0;
}

}  // namespace brc_oom
