// Stopping the world, requester side (the parking side is ParkIfStopped in lib/thread_state.cc,
// reached from Safepoint()).
//
// Protocol (protocol.md §4), all under the one stop lock that makes stops exclusive:
//  1. Publish WorldState::stopper = this thread. From then on no thread can enter kAttached
//     (attach, leaving a BlockingScope): each checks stopper under its own ThreadState::mu.
//  2. Visit every thread state under its mu: an attached thread that is not already parked is
//     counted (stop_counted, remaining++) and its pending word gets kPendingStop, so its next
//     Safepoint() drains its queue and parks. Blocked, exited and parked threads are skipped.
//  3. Wait until remaining == 0. Parking, blocking and exiting threads decrement it under
//     WorldState::mu and the last one signals at once: there is no polling interval.
//     The watchdog reports the threads still counted after each timeout. When the requester
//     and the threads it counted each have a core (WorldState::spin), the requester first
//     spins up to kStopSpin on the count, and parked threads spin as long on the restart,
//     before they sleep: a young collection's whole stop is about as short as one wake-up.
// Restart: stopper = 0 and wake everyone waiting on `restarted`.
//
// Why nobody is missed: a thread's status change and the requester's visit both hold the
// thread's mu, so either the thread entered kAttached before the visit (and is counted) or it
// sees stopper set and waits. A thread that leaves kAttached after being counted releases the
// count in the same critical section.
#include "no_destroy.h"
#include "stop_the_world.h"

#include <chrono>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

#include "brc/stop_the_world.h"
#include "handoff.h"
#include "merge_queue.h"

namespace brc::detail {
namespace {

std::mutex& StopLock() {
  static NoDestroy<std::mutex> mu;  // never destroyed: threads may outlive main
  return mu.get();
}

constinit thread_local bool t_holds_stop = false;
// Set once every counted thread has parked, until the restart. This thread only.
constinit thread_local bool t_world_stopped = false;

struct WatchdogConfig {
  std::mutex mu;
  absl::Duration timeout = absl::Seconds(1);
  WatchdogHandler handler;  // empty: DefaultReport
};

WatchdogConfig& Watchdog() {
  static NoDestroy<WatchdogConfig> config;
  return config.get();
}

std::string OsThreadName(int64_t os_tid) {
  std::ifstream comm("/proc/self/task/" + std::to_string(os_tid) + "/comm");
  std::string name;
  std::getline(comm, name);
  return name;
}

void DefaultReport(const LaggingThread& t) {
  std::fprintf(stderr,
               "brc: stop-the-world watchdog: thread %u (os tid %lld, name \"%s\") has not "
               "reached a safepoint after %lld ms\n",
               t.id, static_cast<long long>(t.os_tid), t.name.c_str(),
               static_cast<long long>(absl::ToInt64Milliseconds(t.waited)));
}

// The watchdog fired: reports every thread the running stop still waits for. Allocates (the
// list, names, the handler's copy), so all of it is under a try: out of memory, the report is
// skipped and the stop simply keeps waiting. Called without WorldState::mu held.
void ReportLaggingThreads(absl::Duration waited) noexcept {
  try {
    WatchdogHandler handler;
    {
      WatchdogConfig& wd = Watchdog();
      std::lock_guard<std::mutex> lock(wd.mu);
      handler = wd.handler;
    }
    std::vector<LaggingThread> lagging;
    WorldState& w = World();
    ForEachThreadState([&](ThreadState* ts) {
      std::lock_guard<std::mutex> lock(w.mu);
      if (!ts->stop_counted) return;
      lagging.push_back({ts->tid, ts->os_tid.load(std::memory_order_relaxed), "", waited});
    });
    for (LaggingThread& t : lagging) {
      t.name = OsThreadName(t.os_tid);
      if (!handler) {
        DefaultReport(t);
        continue;
      }
      try {
        handler(t);
      } catch (...) {
        // The world is half stopped: nothing may unwind out of here.
        std::fprintf(stderr, "brc: the stop-the-world watchdog handler threw; ignored\n");
      }
    }
  } catch (...) {
    std::fputs("brc: stop-the-world watchdog: out of memory while reporting lagging threads\n",
               stderr);
  }
}

}  // namespace

absl::Duration StopWorld(ThreadState* self, bool push_handoffs) {
  BRC_CHECK(self != nullptr,
            "brc::StopTheWorld (or a collection) on a thread that is not attached");
  BRC_CHECK(!t_holds_stop, "brc::StopTheWorld while this thread already holds the world "
                           "stopped (stops do not nest)");
  BRC_CHECK(self->blocking_depth == 0, "brc::StopTheWorld inside a BlockingScope");
  // This thread's own drops for other owners go to their queues before the stop (the others
  // push theirs before they park): counts read with the world stopped (GetRefCount, a merge
  // pass, a collection's mark) then see them where a drop without buffering would be. The
  // push runs no user code under a lock, but may run destructors (an owner that blocked).
  if (push_handoffs && self->handoff_held != 0) FlushHandoffs(self);
  std::mutex& stop = StopLock();
  if (!stop.try_lock()) {
    // Another stop is running and may be waiting for this thread: wait as a blocked thread,
    // which it does not wait for, then come back (no stop can be active once we hold the lock).
    DrainAndLeaveAttached(self, ThreadStatus::kBlocked);
    stop.lock();
    ReenterAttached(self);
  }
  t_holds_stop = true;
  // From here on nothing may allocate or throw: the world is being stopped, and a failure
  // would leave it half stopped (found by the allocation-failure sweep). The watchdog handler
  // is copied, and lagging threads listed, only when the watchdog fires, under a try.
  absl::Duration timeout;
  {
    WatchdogConfig& wd = Watchdog();
    std::lock_guard<std::mutex> lock(wd.mu);
    timeout = wd.timeout;
  }
  auto start = std::chrono::steady_clock::now();
  WorldState& w = World();
  {
    std::lock_guard<std::mutex> lock(w.mu);
    w.remaining.store(0, std::memory_order_relaxed);  // relaxed: under w.mu
    w.spin = MachineCores() > 1;
    // Release pairs with the acquire in WorldStoppedByOther.
    w.stopper.store(self->tid, std::memory_order_release);
  }
  ForEachThreadState([&](ThreadState* ts) {
    if (ts == self) return;
    MutexLock ts_lock(&ts->mu);
    if (ts->status != ThreadStatus::kAttached) return;
    std::lock_guard<std::mutex> lock(w.mu);
    if (ts->parked) return;
    ts->stop_counted = true;
    // Relaxed: under w.mu. Waiters spin while this thread and those counted so far each have
    // a core (a thread that parked before a later one was counted may spin needlessly, for
    // at most kStopSpin).
    int counted = w.remaining.fetch_add(1, std::memory_order_relaxed) + 1;
    w.spin = static_cast<unsigned>(counted) + 1 <= MachineCores();
    // Relaxed: the bit only sends the thread to ParkIfStopped, which reads WorldState under mu.
    ts->pending.fetch_or(kPendingStop, std::memory_order_relaxed);
  });
  auto step = std::chrono::nanoseconds(absl::ToInt64Nanoseconds(timeout));
  auto deadline = start + step;
  std::unique_lock<std::mutex> lock(w.mu);
  // Relaxed loads of remaining here and below: under w.mu, or (the spin) only a hint that
  // the loop re-reads under w.mu.
  // Spin-then-sleep (SpinBriefly) when this thread and every thread it waits for have a core.
  if (w.spin && w.remaining.load(std::memory_order_relaxed) > 0) {
    lock.unlock();
    SpinBriefly([&] { return w.remaining.load(std::memory_order_relaxed) == 0; });
    lock.lock();
  }
  while (w.remaining.load(std::memory_order_relaxed) > 0) {
    if (w.all_parked.wait_until(lock, deadline) != std::cv_status::timeout) continue;
    lock.unlock();
    ReportLaggingThreads(absl::FromChrono(std::chrono::steady_clock::now() - start));
    deadline += step;
    lock.lock();
  }
  t_world_stopped = true;
  return absl::FromChrono(std::chrono::steady_clock::now() - start);
}

void RestartWorld() {
  BRC_CHECK(t_holds_stop, "restarting a world this thread did not stop");
  WorldState& w = World();
  {
    std::lock_guard<std::mutex> lock(w.mu);
    // Release: everything the stopper wrote happens-before the parked threads run again (they
    // also re-read it under w.mu).
    w.stopper.store(0, std::memory_order_release);
  }
  w.restarted.notify_all();
  t_holds_stop = false;
  t_world_stopped = false;
  StopLock().unlock();
}

bool ThisThreadStoppedTheWorld() noexcept { return t_holds_stop; }

bool StopInProgressOnThisThread() noexcept { return t_holds_stop && !t_world_stopped; }

}  // namespace brc::detail

namespace brc {

StopTheWorld::StopTheWorld() : time_to_stop_(detail::StopWorld(detail::t_state)) {}

StopTheWorld::~StopTheWorld() { detail::RestartWorld(); }

bool IsWorldStoppedByThisThread() noexcept {
  // Not while the stop is still waiting for threads to park (the watchdog handler runs then).
  return detail::ThisThreadStoppedTheWorld() && !detail::StopInProgressOnThisThread();
}

absl::Status SetStopWatchdog(absl::Duration timeout, WatchdogHandler handler) {
  if (timeout <= absl::ZeroDuration() || timeout == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError("SetStopWatchdog: the timeout must be positive and finite");
  }
  detail::WatchdogConfig& wd = detail::Watchdog();
  {
    std::lock_guard<std::mutex> lock(wd.mu);
    wd.timeout = timeout;
    std::swap(wd.handler, handler);
  }
  return absl::OkStatus();  // the previous handler is destroyed here, outside the lock
}

}  // namespace brc
