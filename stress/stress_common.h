// What the stress programs share: their command line, their clock, and the hand-off queue.
//
// Every program takes `--scenario NAME|all --threads N --seconds S --seed X`, prints them
// first, and runs each scenario for about S seconds.
#ifndef BRC_STRESS_STRESS_COMMON_H_
#define BRC_STRESS_STRESS_COMMON_H_

#include <tbb/concurrent_queue.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <string>

#include "brc/detail/config.h"

namespace brc_stress {

struct Options {
  std::string scenario = "all";
  int threads = 4;
  double seconds = 2.0;
  uint64_t seed = 1;
};

// False on an unknown flag, a thread count outside 1..1024 or a duration that is not positive.
inline bool ParseArgs(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; ++i) {
    auto value = [&](const char* name) -> const char* {
      if (std::strcmp(argv[i], name) != 0 || i + 1 >= argc) return nullptr;
      return argv[++i];
    };
    if (const char* v = value("--threads")) {
      o->threads = std::atoi(v);
    } else if (const char* v = value("--seconds")) {
      o->seconds = std::atof(v);
    } else if (const char* v = value("--seed")) {
      o->seed = std::strtoull(v, nullptr, 10);
    } else if (const char* v = value("--scenario")) {
      o->scenario = v;
    } else {
      return false;
    }
  }
  return o->threads > 0 && o->threads <= 1024 && o->seconds > 0;
}

// Parses the command line of `program` (whose scenarios are `scenarios`, e.g. "hot|churn").
// On success prints the parameter line every run starts with; otherwise prints the usage.
inline bool StartRun(const char* program, const char* scenarios, int argc, char** argv,
                     Options* o) {
  if (!ParseArgs(argc, argv, o)) {
    std::fprintf(stderr,
                 "usage: %s [--scenario %s|all] [--threads N] [--seconds S] [--seed X]\n",
                 program, scenarios);
    return false;
  }
  std::printf("%s: scenario=%s threads=%d seconds=%g seed=%llu\n", program,
              o->scenario.c_str(), o->threads, o->seconds,
              static_cast<unsigned long long>(o->seed));
  std::fflush(stdout);
  return true;
}

using Clock = std::chrono::steady_clock;

inline bool TimeUp(Clock::time_point end) { return Clock::now() >= end; }

inline Clock::time_point Deadline(double seconds) {
  return Clock::now() +
         std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

// tbb::concurrent_queue in normal builds. Under ThreadSanitizer a mutex queue instead: Debian's
// oneTBB is not TSan-instrumented and its queue's page recycling is reported as a race inside
// TBB's headers (protocol.md §8), which would drown the reports about brc itself. The mutex is
// held only around the deque operation (raw pointers, no count traffic, no safepoint), so a
// thread waiting for it never waits on anything that a stop of the world could hold up.
#ifdef BRC_TSAN
template <class T>
class HandoffQueue {
 public:
  void push(T v) {
    std::lock_guard<std::mutex> lock(mu_);
    q_.push_back(v);
  }
  bool try_pop(T& out) {
    std::lock_guard<std::mutex> lock(mu_);
    if (q_.empty()) return false;
    out = q_.front();
    q_.pop_front();
    return true;
  }

 private:
  std::mutex mu_;
  std::deque<T> q_;
};
#else
template <class T>
using HandoffQueue = tbb::concurrent_queue<T>;
#endif

}  // namespace brc_stress

#endif  // BRC_STRESS_STRESS_COMMON_H_
