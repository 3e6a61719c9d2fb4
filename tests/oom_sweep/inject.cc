// inject.cc: failure injection. One counter, shared by every thread and armed only while the
// scenario runs, numbers the allocations of a run; ShouldFail says whether this one is the one
// to fail (or, with --persistent, one after it). Two doors count: the brc::Allocator this
// program installs (FailingAllocator: brc's objects, pages and lists) and the replaced global
// operator new in every form (brc's weak table, registry, std::function and std::thread). Also
// here: --repro's failures armed on one thread, --trace's record of every counted allocation,
// the failed allocation's stack, and Violation, which every check reports through. The
// harness's own allocations are exempt (Exempt), so the harness itself is never failed.
#include <execinfo.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

#include "oom_sweep.h"

#ifdef OOM_SANITIZED
#include <sanitizer/common_interface_defs.h>
#endif

namespace brc_oom {

const char* SiteName(Site s) {
  switch (s) {
    case Site::kNone: return "none";
    case Site::kBrcAllocator: return "brc::Allocator::Allocate";
    case Site::kOperatorNew: return "operator new";
    case Site::kAny: return "any";
  }
  return "?";
}

// ---------------------------------------------------------------------------------------------
// The state shared with the other files (oom_sweep.h says who writes each)

RunReport* g_report = nullptr;

std::atomic<bool> g_armed{false};
std::atomic<uint64_t> g_count{0};
uint64_t g_fail_at = 0;  // written only while disarmed; 0 never fails
bool g_print_injection = false;  // --only: print the failed allocation's stack at once
bool g_verbose = false;
bool g_persistent = false;  // --persistent: every allocation from the N-th on fails
constinit thread_local int t_exempt = 0;

std::atomic<const char*> g_step{"setup"};
TraceEntry* g_trace = nullptr;
bool g_trace_stacks = false;
std::thread::id g_main_thread;

// ---------------------------------------------------------------------------------------------
// Stacks: the failed allocation's (recorded when it is failed) and the current one (a crash)

void PrintStack(void* const* pcs, int depth) {
#ifdef OOM_SANITIZED
  int k = 0;
  for (int i = 0; i < depth; ++i) {
    char buf[4096] = {};
    // A return address: symbolize the call instruction before it. The result holds one string
    // per frame inlined at that address (innermost first), each ended by a NUL, then a NUL.
    __sanitizer_symbolize_pc(static_cast<char*>(pcs[i]) - 1, "%F %L", buf, sizeof(buf) - 1);
    for (const char* f = buf; *f != '\0' && f < buf + sizeof(buf); f += std::strlen(f) + 1) {
      std::fprintf(stderr, "    #%d %s\n", k++, f);
    }
  }
#else
  backtrace_symbols_fd(pcs, depth, STDERR_FILENO);
#endif
}

void PrintCurrentStack() {
#ifdef OOM_SANITIZED
  __sanitizer_print_stack_trace();
#else
  void* pcs[64];
  int n = backtrace(pcs, 64);
  backtrace_symbols_fd(pcs, n, STDERR_FILENO);
#endif
}

void PrintInjectionSite() {
  if (g_report == nullptr || g_report->injected_at.load() == 0) {
    std::fprintf(stderr, "  (no allocation was failed in this run)\n");
    return;
  }
  std::fprintf(stderr, "  allocation #%llu was failed (%s, step '%s'), here:\n",
               static_cast<unsigned long long>(g_report->injected_at.load()),
               SiteName(static_cast<Site>(g_report->site.load())), g_report->step);
  PrintStack(g_report->pcs, g_report->depth);
}

// The same from a forked child: symbolizing may allocate, and the sweep's parent must stay as
// it was for the next runs.
void PrintInjectionSiteAside() {
  std::fflush(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    PrintInjectionSite();
    std::fflush(nullptr);
    _exit(0);
  }
  if (pid > 0) {
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
  }
}

bool Injected() { return g_report->injected_at.load(std::memory_order_relaxed) != 0; }

// ---------------------------------------------------------------------------------------------
// Counting and failing

namespace {

constinit thread_local TraceEntry* t_traced = nullptr;  // this thread's last traced entry

// Records what the traced allocation returned.
void* Traced(void* p) {
  if (t_traced != nullptr) t_traced->address = p;
  t_traced = nullptr;
  return p;
}

// --repro: failures armed on one thread only, counted from the moment they are armed.
constinit thread_local Site t_fail_site = Site::kNone;
constinit thread_local int t_fail_countdown = 0;  // the countdown-th next allocation fails
constinit thread_local bool t_fail_all = false;   // ... and every one after it

void RecordInjection(uint64_t n, Site site) {
  Exempt exempt;
  g_report->depth = backtrace(g_report->pcs, 64);
  g_report->site.store(static_cast<int>(site));
  std::snprintf(g_report->step, sizeof(g_report->step), "%s", g_step.load());
  g_report->injected_at.store(n);
  if (g_print_injection) {
    std::fprintf(stderr, "oom_sweep: failing allocation #%llu (%s) in step '%s':\n",
                 static_cast<unsigned long long>(n), SiteName(site), g_step.load());
    PrintStack(g_report->pcs, g_report->depth);
  }
}

// Counts one allocation; true if it is the one to fail.
bool ShouldFail(Site site, std::size_t size) {
  if ((t_fail_site == site || t_fail_site == Site::kAny) && t_exempt == 0) {
    if (t_fail_countdown > 1) {
      --t_fail_countdown;
    } else {
      if (t_fail_countdown == 1) RecordInjection(1, site);
      t_fail_countdown = 0;
      if (!t_fail_all) t_fail_site = Site::kNone;
      return true;
    }
  }
  if (!g_armed.load(std::memory_order_relaxed) || t_exempt > 0) return false;
  uint64_t n = g_count.fetch_add(1, std::memory_order_relaxed) + 1;
  if (g_trace != nullptr && n < kTraceMax) {
    TraceEntry& e = g_trace[n];
    e = {g_step.load(), site, size, std::this_thread::get_id() == g_main_thread, {}, nullptr};
    t_traced = &e;
    if (g_trace_stacks) {
      Exempt exempt;
      backtrace(e.pcs, 10);
    }
  }
  if (n != g_fail_at) return g_persistent && g_fail_at != 0 && n > g_fail_at;
  RecordInjection(n, site);
  return true;
}

}  // namespace

void FailOnThisThread(Site site, int nth, bool all) {
  t_fail_site = site;
  t_fail_countdown = nth;
  t_fail_all = all;
}
void StopFailing() { t_fail_site = Site::kNone; }

void PrintTrace() {
  if (g_trace == nullptr) return;
  for (uint64_t i = 1; i <= g_count.load() && i < kTraceMax; ++i) {
    std::fprintf(stderr, "alloc %llu: %s %s %zu bytes%s at %p\n",
                 static_cast<unsigned long long>(i), g_trace[i].step,
                 SiteName(g_trace[i].site), g_trace[i].size,
                 g_trace[i].main_thread ? "" : " (other thread)", g_trace[i].address);
    if (g_trace_stacks) PrintStack(g_trace[i].pcs + 3, 7);
  }
}

void Violation(const char* fmt, ...) {
  Exempt exempt;
  char msg[768];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(msg, sizeof(msg), fmt, args);
  va_end(args);
  std::fprintf(stderr, "oom_sweep: CHECK FAILED (N=%llu, step '%s'): %s\n",
               static_cast<unsigned long long>(g_fail_at), g_step.load(), msg);
  bool expected = false;
  if (g_report->failed.compare_exchange_strong(expected, true)) {
    std::snprintf(g_report->failure, sizeof(g_report->failure), "%s", msg);
  }
}


// ---------------------------------------------------------------------------------------------
// The two doors: brc's allocator and the global operator new

void* FailingAllocator::Allocate(std::size_t size, std::size_t align) noexcept {
  if (ShouldFail(Site::kBrcAllocator, size)) return nullptr;
  return Traced(brc::DefaultAllocator().Allocate(size, align));
}
void FailingAllocator::Deallocate(void* p, std::size_t size, std::size_t align) noexcept {
  brc::DefaultAllocator().Deallocate(p, size, align);
}
FailingAllocator g_allocator;

namespace {

void* NewOrNull(std::size_t size, std::size_t align) noexcept {
  if (ShouldFail(Site::kOperatorNew, size)) return nullptr;
  if (size == 0) size = 1;
  if (align <= alignof(std::max_align_t)) return Traced(std::malloc(size));
  void* p = nullptr;
  return Traced(posix_memalign(&p, align, size) == 0 ? p : nullptr);
}

void* NewOrThrow(std::size_t size, std::size_t align) {
  void* p = NewOrNull(size, align);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

}  // namespace
}  // namespace brc_oom

using brc_oom::NewOrNull;
using brc_oom::NewOrThrow;

// The replaced global allocation functions (every form a program may replace, C++17).
void* operator new(std::size_t n) { return NewOrThrow(n, 0); }
void* operator new[](std::size_t n) { return NewOrThrow(n, 0); }
void* operator new(std::size_t n, std::align_val_t a) {
  return NewOrThrow(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a) {
  return NewOrThrow(n, static_cast<std::size_t>(a));
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return NewOrNull(n, 0); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return NewOrNull(n, 0); }
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return NewOrNull(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return NewOrNull(n, static_cast<std::size_t>(a));
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  std::free(p);
}
