// Stopping the world: parking every other attached thread at its next safepoint.
//
//   {
//     brc::StopTheWorld stop;   // returns once every other attached thread is parked
//     ... inspect or rewire objects: nobody else touches one ...
//   }                           // everyone resumes
//
// Who stops whom:
//  * Any attached thread may stop the world; the cycle collector (brc/collector.h) does.
//  * Attached threads park at their next brc::Safepoint() (also reached on entering a
//    BlockingScope and at detach). Before parking they drain their merge queue.
//  * Threads inside a BlockingScope, and threads that are not attached, do not delay a stop;
//    they cannot leave the BlockingScope or attach until the world restarts.
//  * A thread that parks, blocks or exits while a stop is pending wakes the requester at once.
//  * One stop at a time: a second requester waits (as if blocked, so it delays nobody) and
//    stops the world after the first restarts it.
//  * A watchdog reports every thread that has not parked after a configurable time, by brc
//    thread id, OS thread id and name (pthread_setname_np), and the requester keeps waiting.
//
// While the world is stopped the requester must not block on anything another attached thread
// could hold (it is parked), and must not stop the world again (a fatal error).
#ifndef BRC_STOP_THE_WORLD_H_
#define BRC_STOP_THE_WORLD_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace brc {

class StopTheWorld {
 public:
  // Requires an attached thread that has not already stopped the world.
  StopTheWorld();
  ~StopTheWorld();
  StopTheWorld(const StopTheWorld&) = delete;
  StopTheWorld& operator=(const StopTheWorld&) = delete;

  // How long the stop took to take effect: from the request to the last thread parking.
  absl::Duration time_to_stop() const { return time_to_stop_; }

 private:
  absl::Duration time_to_stop_;
};

// True on the thread that currently holds the world stopped (every other attached thread
// parked); false in its watchdog handler, which runs while it still waits for some.
bool IsWorldStoppedByThisThread() noexcept;

// A thread the watchdog found not parked.
struct LaggingThread {
  uint32_t id;        // brc thread id (brc::CurrentThreadId() on that thread)
  int64_t os_tid;     // kernel thread id (gettid)
  std::string name;   // pthread name, "" if unnamed
  absl::Duration waited;
};
using WatchdogHandler = std::function<void(const LaggingThread&)>;

// After `timeout`, and again after each further `timeout`, the requester reports each thread
// that has not parked yet. The handler runs on the requesting thread while other threads are
// parked, so it must not touch objects or block; nullptr restores the default, a one-line
// report on stderr. Errors: a timeout that is not positive. Default: 1 second.
absl::Status SetStopWatchdog(absl::Duration timeout, WatchdogHandler handler = nullptr);

}  // namespace brc

#endif  // BRC_STOP_THE_WORLD_H_
