// Shared helpers for brc's tests.
#ifndef BRC_TESTS_TEST_UTIL_H_
#define BRC_TESTS_TEST_UTIL_H_

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <utility>

#include "brc/brc.h"
#include "brc/testing.h"
#include "catch2/catch.hpp"

namespace brc_test {

// A leaf object that counts its destructions, so tests can prove "freed exactly once".
struct Counted : brc::Object {
  explicit Counted(std::atomic<int>* destroyed, int value = 0)
      : destroyed(destroyed), value(value) {}
  ~Counted() { destroyed->fetch_add(1, std::memory_order_relaxed); }
  std::atomic<int>* destroyed;
  int value;
};

// An object of N bytes whose payload is a pattern derived from its address, checked before it
// dies: two live objects sharing a block, or a block reused while live, breaks the pattern.
template <std::size_t N>
struct Sized : brc::Object {
  explicit Sized(std::atomic<int>* destroyed) : destroyed(destroyed) {
    std::memset(bytes, Fill(), sizeof(bytes));
  }
  ~Sized() {
    for (unsigned char b : bytes) {
      if (b != Fill()) corrupted.fetch_add(1, std::memory_order_relaxed);
    }
    destroyed->fetch_add(1, std::memory_order_relaxed);
  }
  unsigned char Fill() const {
    return static_cast<unsigned char>(reinterpret_cast<uintptr_t>(this) >> 4);
  }
  static inline std::atomic<int> corrupted{0};
  std::atomic<int>* destroyed;
  unsigned char bytes[N - sizeof(brc::Object) - sizeof(void*)];
};

// A tracked node with two references that counts its destructions and notes its Clear(): the
// collector's tests build graphs, rings and chains of them.
struct PairNode : brc::Object {
  static constexpr std::string_view kTypeName = "brc_test::PairNode";
  explicit PairNode(std::atomic<int>* destroyed = nullptr) : destroyed(destroyed) {}
  ~PairNode() {
    if (destroyed != nullptr) destroyed->fetch_add(1, std::memory_order_relaxed);
  }
  void Trace(brc::Visitor& v) const {
    v.Visit(a);
    v.Visit(b);
  }
  void Clear() {
    cleared = true;
    a = nullptr;
    b = nullptr;
  }
  std::atomic<int>* destroyed;
  brc::Ref<PairNode> a;
  brc::Ref<PairNode> b;
  bool cleared = false;
};

// Sets the collector's marking workers for a scope and puts the configuration back.
class MarkingWorkers {
 public:
  explicit MarkingWorkers(int n) : saved_(brc::GetCollectorConfig()) {
    brc::CollectorConfig c = saved_;
    c.workers = n;
    REQUIRE(brc::SetCollectorConfig(c).ok());
  }
  ~MarkingWorkers() { (void)brc::SetCollectorConfig(saved_); }
  MarkingWorkers(const MarkingWorkers&) = delete;
  MarkingWorkers& operator=(const MarkingWorkers&) = delete;

 private:
  brc::CollectorConfig saved_;
};

// A container: holds references to other objects.
struct Node : brc::Object {
  static constexpr std::string_view kTypeName = "brc_test::Node";
  explicit Node(std::atomic<int>* destroyed = nullptr) : destroyed(destroyed) {}
  ~Node() {
    if (destroyed != nullptr) destroyed->fetch_add(1, std::memory_order_relaxed);
  }
  std::atomic<int>* destroyed;
  brc::Ref<Node> next;
};

// Automatic collections off for a collector test (explicit ones still run); on again, with the
// default configuration, after it.
struct Manual {
  Manual() { brc::DisableCollector(); }
  ~Manual() {
    brc::EnableCollector();
    (void)brc::SetCollectorConfig({});
  }
};

// The result of a collection that must succeed.
inline brc::CollectResult Must(absl::StatusOr<brc::CollectResult> r) {
  INFO(r.status().ToString());
  REQUIRE(r.ok());
  return *r;
}

// Catch2 v2 assertions are not thread-safe: worker threads that run concurrently record
// failures here, and the test's own thread checks the count after joining them.
struct WorkerFailures {
  void Expect(bool ok) {
    if (!ok) count.fetch_add(1, std::memory_order_relaxed);
  }
  std::atomic<int> count{0};
};

// Runs `fn` on a new thread that is attached for the duration, and joins it.
inline void RunAttached(const std::function<void()>& fn) {
  std::thread t([&] {
    brc::ThreadScope attach;
    fn();
  });
  t.join();
}

// Joins `t` from an attached thread without holding up a stop of the world meanwhile (joining
// is blocking: it belongs in a BlockingScope, like any other wait).
inline void JoinBlocking(std::thread& t) {
  brc::BlockingScope blocking;
  t.join();
}

// Waits until `done()` holds, polling this thread's safepoint. Bounded: returns false after
// `limit_s` seconds, a hang guard only (the condition is expected to become true quickly).
template <class Fn>
bool EventuallyTrue(Fn&& done, int limit_s = 60) {
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(limit_s);
  while (!done()) {
    if (std::chrono::steady_clock::now() > end) return false;
    brc::Safepoint();
    std::this_thread::yield();
  }
  return true;
}

// Runs `fn` in a forked child with stderr captured; requires that it aborts (SIGABRT) and that
// what it printed contains `expected`. Catch2 v2 has no death tests, so this is ours.
inline void ExpectAbort(const std::function<void()>& fn, const std::string& expected) {
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  std::fflush(nullptr);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    dup2(fds[1], STDERR_FILENO);
    std::signal(SIGABRT, SIG_DFL);  // not Catch2's handler: it allocates inside the signal
    fn();
    _exit(0);  // the misuse went unreported
  }
  close(fds[1]);
  std::string output;
  char buf[512];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof(buf))) > 0) output.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  INFO("child output: " << output);
  REQUIRE(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGABRT);
  CHECK(output.find(expected) != std::string::npos);
}

// Assertions on the per-operation counters, which exist only with BRC_OP_STATS (every CI
// preset turns it on; a build without it has no such counters to check).
#define BRC_OP_CHECK(expr)                        \
  do {                                            \
    if constexpr (brc::kOpStatsEnabled) CHECK(expr); \
  } while (0)

// The Catch2 seed (--rng-seed), shown with every failure of the calling test.
#define BRC_TEST_SEED(var)            \
  const uint32_t var = Catch::rngSeed(); \
  INFO("seed " << var << " (rerun with --rng-seed " << var << ")")

}  // namespace brc_test

#endif  // BRC_TESTS_TEST_UTIL_H_
