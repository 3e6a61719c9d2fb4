// Resident memory of a hand-off (issue 12, "Hand-off memory"): a producer thread makes N small
// objects (48-byte payload) and hands them all to a consumer thread, which drops them. For each
// contender (brc, std::shared_ptr, new/delete) and each case
//   idle:   the producer stays alive, idling (brc::Safepoint() and a 1 ms sleep, in a loop);
//   exited: the producer exits (is joined) before the consumer drops the objects;
// it reports the resident set before the hand-off, its peak, and 1 s after the last drop. No
// Collect() or ReleaseFreeMemory() is called. Each (contender, case) runs in a fresh child
// process (fork), so that one run's freed-but-resident memory cannot flatter or burden the next.
//
// What "the same live objects" means here: all N objects are alive at once (the producer hands
// the whole set over), and the handle array (N pointers or N shared_ptrs) is made and faulted
// in before the "before" figure, so the peaks compare the objects and whatever the allocator
// keeps for them. The consumer stays attached and idles like the producer after its drops.
//
//   brc_handoff_rss [--quick] [--objects N] [--json PATH]
// --quick: 200,000 objects instead of 2,000,000. Prints a table; --json writes the figures
// for bench/report.py ("Hand-off memory", with the two floors checked).
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "brc/brc.h"

namespace {

constexpr std::size_t kPayload = 48;

struct Payload {
  char bytes[kPayload];
};
struct BrcMsg : brc::Object {
  char bytes[kPayload];
};

// Resident set in KiB (/proc/self/statm: pages).
long RssKib() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return -1;
  long size = 0, resident = 0;
  int n = std::fscanf(f, "%ld %ld", &size, &resident);
  std::fclose(f);
  if (n != 2) return -1;
  return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

// Peak resident set in KiB (VmHWM in /proc/self/status).
long PeakKib() {
  FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return -1;
  char line[256];
  long kib = -1;
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::strncmp(line, "VmHWM:", 6) == 0) kib = std::atol(line + 6);
  }
  std::fclose(f);
  return kib;
}

struct Result {
  long before_kib = -1, peak_kib = -1, after_kib = -1;
};

void Idle(std::atomic<bool>& stop, bool brc_thread) {
  while (!stop.load(std::memory_order_acquire)) {
    if (brc_thread) brc::Safepoint();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

// One run. Handle: brc::Ref<BrcMsg>, std::shared_ptr<Payload> or Payload*.
template <class Handle, class MakeFn, class DropFn>
Result Run(std::size_t n, bool exited, bool brc_threads, MakeFn make, DropFn drop) {
  std::vector<Handle> handles(n);  // faulted in now: part of "before"
  std::memset(static_cast<void*>(handles.data()), 0, n * sizeof(Handle));
  // Rises: 1 go, 2 made and handed over, 3 producer joined (exited case), 4 dropped.
  std::atomic<int> phase{0};
  auto wait_for = [&](int at_least) {
    while (phase.load(std::memory_order_acquire) < at_least) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  };
  std::atomic<bool> stop_producer{false}, stop_consumer{false};
  Result r;
  std::thread producer([&] {
    std::unique_ptr<brc::ThreadScope> scope;
    if (brc_threads) scope = std::make_unique<brc::ThreadScope>();
    wait_for(1);
    for (std::size_t i = 0; i < n; ++i) handles[i] = make();
    phase.store(2, std::memory_order_release);
    if (!exited) Idle(stop_producer, brc_threads);
  });
  std::thread consumer([&] {
    std::unique_ptr<brc::ThreadScope> scope;
    if (brc_threads) scope = std::make_unique<brc::ThreadScope>();
    wait_for(exited ? 3 : 2);
    for (std::size_t i = 0; i < n; ++i) drop(handles[i]);
    phase.store(4, std::memory_order_release);
    Idle(stop_consumer, brc_threads);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // both threads started
  r.before_kib = RssKib();
  phase.store(1, std::memory_order_release);  // go
  wait_for(2);
  if (exited) {
    producer.join();
    phase.store(3, std::memory_order_release);
  }
  wait_for(4);
  std::this_thread::sleep_for(std::chrono::seconds(1));
  r.after_kib = RssKib();
  r.peak_kib = PeakKib();
  stop_producer.store(true, std::memory_order_release);
  stop_consumer.store(true, std::memory_order_release);
  if (!exited) producer.join();
  consumer.join();
  return r;
}

Result RunContender(const std::string& contender, std::size_t n, bool exited) {
  if (contender == "brc") {
    return Run<brc::Ref<BrcMsg>>(
        n, exited, true, [] { return brc::Make<BrcMsg>(); }, [](brc::Ref<BrcMsg>& h) { h = nullptr; });
  }
  if (contender == "shared_ptr") {
    return Run<std::shared_ptr<Payload>>(
        n, exited, false, [] { return std::make_shared<Payload>(); },
        [](std::shared_ptr<Payload>& h) { h.reset(); });
  }
  return Run<Payload*>(
      n, exited, false, [] { return new Payload(); },
      [](Payload*& h) {
        delete h;
        h = nullptr;
      });
}

// Runs one (contender, case) in a forked child; the child writes its Result through a pipe.
bool RunInChild(const std::string& contender, std::size_t n, bool exited, Result* out) {
  int fds[2];
  if (pipe(fds) != 0) return false;
  std::fflush(nullptr);
  pid_t pid = fork();
  if (pid < 0) return false;
  if (pid == 0) {
    close(fds[0]);
    Result r = RunContender(contender, n, exited);
    ssize_t w = write(fds[1], &r, sizeof(r));
    _exit(w == static_cast<ssize_t>(sizeof(r)) ? 0 : 1);
  }
  close(fds[1]);
  Result r;
  ssize_t got = read(fds[0], &r, sizeof(r));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (got != static_cast<ssize_t>(sizeof(r)) || !WIFEXITED(status) ||
      WEXITSTATUS(status) != 0) {
    return false;
  }
  *out = r;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t n = 2000000;
  std::string json;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick") {
      n = 200000;
    } else if (a == "--objects" && i + 1 < argc) {
      n = std::strtoull(argv[++i], nullptr, 10);
    } else if (a == "--json" && i + 1 < argc) {
      json = argv[++i];
    } else {
      std::fprintf(stderr, "usage: %s [--quick] [--objects N] [--json PATH]\n", argv[0]);
      return 2;
    }
  }
  const char* contenders[] = {"brc", "shared_ptr", "new_delete"};
  const char* cases[] = {"idle", "exited"};
  std::printf("Hand-off memory: %zu objects of %zu payload bytes; RSS in MiB\n", n, kPayload);
  std::printf("%-11s %-7s %9s %9s %9s %12s %12s\n", "contender", "case", "before", "peak",
              "after 1s", "peak-before", "after-before");
  std::string rows;
  bool all_ok = true;
  for (const char* c : contenders) {
    for (const char* k : cases) {
      Result r;
      bool ok = RunInChild(c, n, std::strcmp(k, "exited") == 0, &r);
      all_ok &= ok;
      if (!ok) {
        std::printf("%-11s %-7s   (the child failed)\n", c, k);
        continue;
      }
      auto mib = [](long kib) { return kib / 1024.0; };
      std::printf("%-11s %-7s %9.1f %9.1f %9.1f %12.1f %12.1f\n", c, k, mib(r.before_kib),
                  mib(r.peak_kib), mib(r.after_kib), mib(r.peak_kib - r.before_kib),
                  mib(r.after_kib - r.before_kib));
      char row[256];
      std::snprintf(row, sizeof(row),
                    "%s{\"contender\": \"%s\", \"case\": \"%s\", \"before_kib\": %ld, "
                    "\"peak_kib\": %ld, \"after_kib\": %ld}",
                    rows.empty() ? "" : ",\n    ", c, k, r.before_kib, r.peak_kib, r.after_kib);
      rows += row;
    }
  }
  if (!json.empty()) {
    FILE* f = std::fopen(json.c_str(), "w");
    if (f == nullptr) {
      std::perror(json.c_str());
      return 1;
    }
    std::fprintf(f,
                 "{\"objects\": %zu, \"payload_bytes\": %zu, \"settle_seconds\": 1,\n"
                 "  \"rows\": [\n    %s\n  ]}\n",
                 n, kPayload, rows.c_str());
    std::fclose(f);
  }
  return all_ok ? 0 : 1;
}
