// The re-entrancy matrix, parent side: runs each cell in a forked child and checks its outcome
// against the table; the test cases (tag [reentrancy]). The matrix is described in
// reentrancy.h; the table is in reentrancy_cells.cc, the paths in reentrancy_paths.cc.
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "test_util.h"
#include "reentrancy.h"

using namespace brc_reentrancy;  // NOLINT: the matrix's own test files

namespace {

// ---- the parent side ----

struct ChildOutcome {
  int status = 0;
  std::string output;
  bool Exited(int code) const { return WIFEXITED(status) && WEXITSTATUS(status) == code; }
  bool Signaled(int sig) const { return WIFSIGNALED(status) && WTERMSIG(status) == sig; }
  std::string Describe() const {
    if (WIFEXITED(status)) return "exited " + std::to_string(WEXITSTATUS(status));
    if (Signaled(SIGALRM)) return "hung (killed by the alarm)";
    if (WIFSIGNALED(status)) return std::string("killed by signal ") + strsignal(WTERMSIG(status));
    return "status " + std::to_string(status);
  }
};

// Runs `body` in a forked child with stdout and stderr captured and an alarm as the hang
// guard; the child's exit code is what `body` returns.
ChildOutcome RunInChild(const std::function<int()>& body, int alarm_s) {
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  std::fflush(nullptr);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    dup2(fds[1], STDERR_FILENO);
    dup2(fds[1], STDOUT_FILENO);
    std::signal(SIGABRT, SIG_DFL);  // not Catch2's handler: it allocates inside the signal
    std::signal(SIGALRM, SIG_DFL);
    alarm(static_cast<unsigned>(alarm_s));
    int rc = body();
    std::fflush(nullptr);
    _exit(rc);
  }
  close(fds[1]);
  ChildOutcome out;
  char buf[512];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof(buf))) > 0) out.output.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  REQUIRE(waitpid(pid, &out.status, 0) == pid);
  return out;
}

ChildOutcome RunCell(const Row& row, Call call, int alarm_s) {
  return RunInChild([&] { return RunCellInChild(row, call); }, alarm_s);
}

// Whether the outcome is what the cell expects.
bool Matches(const Expect& e, const ChildOutcome& o) {
  switch (e.kind) {
    case Expect::kWorks:
    case Expect::kStatus:
      return o.Exited(0);
    case Expect::kFatal:
      return o.Signaled(SIGABRT) && o.output.find(e.text) != std::string::npos;
    case Expect::kNa:
      return true;
  }
  return false;
}

std::string ExpectText(const Expect& e) {
  switch (e.kind) {
    case Expect::kNa: return "n/a";
    case Expect::kWorks: return "works";
    case Expect::kStatus: return absl::StatusCodeToString(e.code) + " (\"" + e.text + "\")";
    case Expect::kFatal: return std::string("fatal (\"") + e.text + "\")";
  }
  return "?";
}

std::string CellName(const Row& row, int c) {
  return std::string(row.place) + " [" + row.how + "] x " + kCallNames[c];
}

std::string CellStart(int c) { return "=== cell " + std::to_string(c) + "\n"; }
std::string CellEnd(int c, int rc) {
  return "=== cell " + std::to_string(c) + " done: " + std::to_string(rc) + "\n";
}

// Runs the given cells of `row` one after another in one child (a fork costs ~40 ms under
// ASan), and checks each. A cell that kills the child is reported, and the cells after it run
// in a fresh child.
void RunCellsBatched(const Row& row, std::vector<int> calls) {
  while (!calls.empty()) {
    ChildOutcome o = RunInChild(
        [&] {
          int failed = 0;
          for (int c : calls) {
            std::fprintf(stderr, "%s", CellStart(c).c_str());
            int rc = RunCellInChild(row, static_cast<Call>(c));
            std::fprintf(stderr, "%s", CellEnd(c, rc).c_str());
            std::fflush(nullptr);
            failed |= rc;
          }
          return failed;
        },
        20);
    std::size_t consumed = 0;
    for (int c : calls) {
      std::size_t begin = o.output.find(CellStart(c));
      if (begin == std::string::npos) break;
      begin += CellStart(c).size();
      std::size_t end0 = o.output.find(CellEnd(c, 0), begin);
      std::size_t end = end0 != std::string::npos ? end0 : o.output.find(CellEnd(c, 1), begin);
      ++consumed;
      INFO("cell: " << CellName(row, c));
      INFO("expected: " << ExpectText(row.cells[c]));
      if (end == std::string::npos) {
        INFO("got: the child died in this cell: " << o.Describe() << "\n"
                                                   << o.output.substr(begin));
        bool child_survived = false;
        CHECK(child_survived);
        break;
      }
      INFO("got:\n" << o.output.substr(begin, end - begin));
      bool cell_checks_held = end == end0;
      CHECK(cell_checks_held);
    }
    if (consumed == 0) {
      INFO("the child died before its first cell: " << o.Describe() << "\n" << o.output);
      bool child_survived = false;
      CHECK(child_survived);
      return;
    }
    calls.erase(calls.begin(), calls.begin() + static_cast<std::ptrdiff_t>(consumed));
  }
}

bool CanInstallAllocator() { return brc::GetStats().live_objects() == 0; }

// Runs the cells of `hook` (all rows of it) whose known-defect mark is `with_defects`.
void RunMatrix(std::optional<Hook> hook, bool with_defects) {
  for (const Row& row : Rows()) {
    if (hook && row.hook != *hook) continue;
    if (IsAllocatorRow(row) && !CanInstallAllocator()) {
      // Under ctest every test case has its own process; run by hand, run the allocator rows
      // on their own ("re-entrancy: custom allocator").
      FAIL("cannot run " << row.place << " [" << row.how
                         << "]: objects from earlier tests are alive, so no allocator can be "
                            "installed");
    }
    // Cells that must return (works, or a status) share one child; the others, which must
    // abort (or may today, for a known defect), get one each.
    std::vector<int> batch;
    for (int c = 0; c < kCalls; ++c) {
      const Expect& e = row.cells[c];
      if (e.kind == Expect::kNa || (e.defect != nullptr) != with_defects) continue;
      if (e.defect == nullptr && (e.kind == Expect::kWorks || e.kind == Expect::kStatus)) {
        batch.push_back(c);
        continue;
      }
      // A known hang is given less time.
      int alarm_s = e.defect != nullptr ? 2 : 20;
      ChildOutcome o = RunCell(row, static_cast<Call>(c), alarm_s);
      INFO("cell: " << CellName(row, c));
      INFO("expected: " << ExpectText(e) << (e.defect ? std::string(" — known defect ") + e.defect : ""));
      INFO("got: " << o.Describe() << "\n" << o.output);
      CHECK(Matches(e, o));
    }
    RunCellsBatched(row, batch);
  }
}

}  // namespace

TEST_CASE("re-entrancy: constructor inside Make", "[reentrancy]") {
  RunMatrix(Hook::kConstructor, false);
}
TEST_CASE("re-entrancy: destructor (owner, queue drains, collector)", "[reentrancy]") {
  RunMatrix(Hook::kDestructor, false);
}
TEST_CASE("re-entrancy: Finalize()", "[reentrancy]") { RunMatrix(Hook::kFinalize, false); }
TEST_CASE("re-entrancy: Clear()", "[reentrancy]") { RunMatrix(Hook::kClear, false); }
TEST_CASE("re-entrancy: weak-reference callback", "[reentrancy]") {
  RunMatrix(Hook::kWeakCallback, false);
}
TEST_CASE("re-entrancy: collection callback", "[reentrancy]") {
  RunMatrix(Hook::kCollectCallback, false);
}
TEST_CASE("re-entrancy: stop-the-world watchdog handler", "[reentrancy]") {
  RunMatrix(Hook::kWatchdog, false);
}
TEST_CASE("re-entrancy: custom allocator", "[reentrancy]") {
  RunMatrix(Hook::kAllocate, false);
  RunMatrix(Hook::kDeallocate, false);
}

// A cell that fails for a known defect would carry its name in `defect` and be left out of the
// test cases above until the fix lands; none is marked (every defect this matrix found is fixed).

// Found by this matrix: an allocator that reads brc's statistics (say, to log them) while a
// collection asks it for memory for its page list. The collector used to build that list
// while holding the thread registry's lock, which GetStats() takes again: a self-deadlock
// (absl aborted with "Potential Mutex deadlock"; std::mutex under TSan hung).
TEST_CASE("re-entrancy: an allocator that calls GetStats() during a collection",
          "[reentrancy]") {
  // Each test case runs in its own process under ctest, so no object is alive yet.
  REQUIRE(CanInstallAllocator());
  struct StatsAllocator final : brc::Allocator {
    void* Allocate(std::size_t size, std::size_t align) noexcept override {
      // Only while the collector holds the world stopped: its own lists.
      if (armed.load() && brc::IsWorldStoppedByThisThread() && armed.exchange(false)) {
        (void)brc::GetStats();
        called.store(true);
      }
      return brc::MallocAllocator().Allocate(size, align);
    }
    void Deallocate(void* p, std::size_t size, std::size_t align) noexcept override {
      brc::MallocAllocator().Deallocate(p, size, align);
    }
    std::string_view Name() const noexcept override { return "stats-reading"; }
    std::atomic<bool> armed{false};
    std::atomic<bool> called{false};
  };
  ChildOutcome o = RunInChild(
      [] {
        g = new CellState();
        static StatsAllocator allocator;
        brc::ThreadScope attach;
        if (!brc::SetAllocator(&allocator).ok()) return 2;
        brc::Ref<Node> node = brc::Make<Node>();  // one collector page to list
        allocator.armed.store(true);
        bool ok = brc::Collect().ok();
        if (!allocator.called.load()) return 3;  // the collector never asked: nothing tested
        return ok ? 0 : 1;
      },
      5);
  INFO(o.Describe() << "\n" << o.output);
  CHECK(o.Exited(0));
}

// Prints the matrix as Markdown: `brc_tests "[.reentrancy-table]"`.
TEST_CASE("re-entrancy: print the table", "[.reentrancy-table]") {
  std::string md = "| where user code runs | path |";
  for (const char* name : kCallNames) md += std::string(" ") + name + " |";
  md += "\n|---|---|";
  for (int c = 0; c < kCalls; ++c) md += "---|";
  md += "\n";
  for (const Row& row : Rows()) {
    md += std::string("| ") + row.place + " | " + row.how + " |";
    for (const Expect& e : row.cells) {
      std::string t = e.kind == Expect::kStatus ? std::string("FP (") + e.text + ")"
                      : e.kind == Expect::kFatal ? std::string("fatal (") + e.text + ")"
                                                 : ExpectText(e);
      if (e.defect != nullptr) t += ", **today: " + std::string(e.defect) + "**";
      md += " " + t + " |";
    }
    md += "\n";
  }
  std::printf("FP = FailedPrecondition whose message contains the text.\n\n%s", md.c_str());
}

// Runs every cell and prints what happened, whatever the table says: for exploring.
TEST_CASE("re-entrancy: explore every cell", "[.reentrancy-explore]") {
  for (const Row& row : Rows()) {
    for (int c = 0; c < kCalls; ++c) {
      if (row.cells[c].kind == Expect::kNa) continue;
      const char* only = std::getenv("REENTRANCY_ONLY");
      if (only != nullptr && CellName(row, c).find(only) == std::string::npos) continue;
      auto start = std::chrono::steady_clock::now();
      ChildOutcome o = RunCell(row, static_cast<Call>(c), 5);
      double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
      std::string first;
      for (const char* key : {"brc: fatal", "cell check failed", "brc:", "ERROR", "runtime error"}) {
        auto pos = o.output.find(key);
        if (pos != std::string::npos) {
          first = o.output.substr(pos, o.output.find('\n', pos) - pos);
          break;
        }
      }
      bool ok = Matches(row.cells[c], o);
      std::printf("%-5s %6.0fms | %s | %s | %s\n", ok ? "ok" : "DIFF", ms,
                  CellName(row, c).c_str(), o.Describe().c_str(), first.c_str());
      if ((!ok || only != nullptr) && std::getenv("REENTRANCY_VERBOSE") != nullptr) std::printf("%s\n", o.output.c_str());
    }
  }
}
