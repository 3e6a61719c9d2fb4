// The collector's schedule: when an automatic collection runs and which kind, and what it
// leaves behind in statistics. Also the configuration, the collection callbacks, the error
// reports and the rules for where a collection may run. (Overview: collector_internal.h.)
//
// The schedule (brc/collector.h): every tracked allocation is counted (per thread, reported in
// batches of kGcAllocBatch, so allocation touches no shared counter), and when the count since
// the last collection reaches the trigger, the allocating thread collects, unless it may not
// (CannotCollectReason) or another thread is collecting. Generational (the default): the
// trigger is young_threshold and the collection is young, unless the objects promoted since the
// last full collection reach full_ratio x backoff x its survivors. Work stays linear in
// allocations: a young collection examines about young_threshold objects; a full one examines
// the old heap H, and comes after at least full_ratio x H promotions, so each object is
// examined O(1 / full_ratio) times by full collections. Not generational: every collection is
// full and the trigger is max(young_threshold, full_ratio x survivors).
//
// Backoff: a heap that grows without garbage (a program building its data) would pay a full
// collection each time the old heap grew by full_ratio, finding nothing: with 0.25 that is
// four to five examinations of every object while it grows, several times the cost of making
// it. So each full collection that frees less than 1% of what it examined doubles the backoff
// (up to kMaxFullBackoff), and one that frees more resets it to 1: a program that leaves
// garbage cycles among old objects gets CPython's schedule, one that only grows gets fewer full
// collections. The price: garbage cycles that form among old objects after a run of fruitless
// full collections wait until the old heap has grown by up to full_ratio x kMaxFullBackoff
// (4x with the defaults) before the next full collection finds them.
#include "collector_internal.h"

#include <cxxabi.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <typeinfo>

#include "no_destroy.h"
#include "thread_state.h"

namespace brc::detail {

Shared& G() {
  static NoDestroy<Shared> g;  // never destroyed: threads may outlive main
  return g.get();
}

std::atomic<bool> g_enabled{true};
std::atomic<uint64_t> g_allocs_since{0};
std::atomic<uint64_t> g_trigger{2000};
std::atomic<int> g_workers{1};
// Freeze adds, Unfreeze resets, and each frozen object that counting frees subtracts one
// (OnFrozenObjectFreed). Relaxed: a statistic.
std::atomic<uint64_t> g_frozen{0};
// Old (marked, unfrozen) tracked objects freed, summed from the threads' counts in batches
// (NoteOldFreed). Relaxed: a schedule estimate.
std::atomic<uint64_t> g_old_freed{0};

std::mutex& CollectLock() {
  static NoDestroy<std::mutex> mu;
  return mu.get();
}

constinit thread_local Context t_context = Context::kNone;
constinit thread_local const TypeInfo* t_context_type = nullptr;
constinit thread_local bool t_collector_stopped = false;
constinit thread_local uint32_t t_old_freed = 0;

// ---- error reports ----

void ReportErrorRaw(const char* what) noexcept {
  const char* parts[] = {"brc: exception in ", what,
                         " (the full report could not be built or delivered)\n"};
  for (const char* p : parts) {
    ssize_t ignored = write(STDERR_FILENO, p, std::strlen(p));
    (void)ignored;
  }
}

void ReportError(const std::string& message) {
  CollectorErrorHandler handler;
  {
    std::lock_guard<std::mutex> lock(G().mu);
    handler = G().error_handler;
  }
  if (handler) {
    handler(message);
  } else {
    std::fprintf(stderr, "%s\n", message.c_str());
  }
}

namespace {

// The dynamic type of the exception being handled, demangled ("std::runtime_error").
std::string CurrentExceptionType() {
  std::type_info* t = abi::__cxa_current_exception_type();
  if (t == nullptr) return "unknown";
  int status = 0;
  // Freed however this ends: building the string below may throw std::bad_alloc.
  std::unique_ptr<char, void (*)(void*)> name(
      abi::__cxa_demangle(t->name(), nullptr, nullptr, &status), &std::free);
  return status == 0 && name != nullptr ? std::string(name.get()) : std::string(t->name());
}

}  // namespace

void ReportCurrentException(const char* what, const TypeInfo* type) noexcept {
  try {
    std::string detail;
    try {
      throw;  // the exception being handled, to read its type and message
    } catch (const std::exception& e) {
      detail = CurrentExceptionType() + ": " + e.what();
    } catch (...) {
      detail = CurrentExceptionType() + " (not a std::exception)";
    }
    std::string msg = std::string("brc: exception in ") + what;
    if (type != nullptr) msg += " of type " + std::string(type->name);
    ReportError(msg + ": " + detail);
  } catch (...) {
    ReportErrorRaw(what);
  }
}

absl::Status OutOfMemoryStatus(const char* message) noexcept {
  try {
    return absl::ResourceExhaustedError(message);
  } catch (const std::bad_alloc&) {
    return absl::Status(absl::StatusCode::kResourceExhausted, "");
  }
}

// ---- where a collection may run ----

const char* CannotCollectReason() noexcept {
  ThreadState* self = t_state;
  if (self == nullptr) return "on a thread that is not attached";
  if (self->blocking_depth > 0) return "inside a brc::BlockingScope";
  if (ThisThreadStoppedTheWorld()) {
    return "while this thread holds the world stopped (brc::StopTheWorld)";
  }
  switch (t_context) {
    case Context::kNone: return nullptr;
    case Context::kCollecting: return "called during a collection on the same thread";
    case Context::kCallback: return "called from a collection callback";
    case Context::kWeakCallback: return "called from a weak-reference callback";
    case Context::kFinalizer: return "called from Finalize()";
    case Context::kClear: return "called from Clear()";
  }
  return nullptr;
}

absl::Status CheckCanCollect(const char* what) noexcept {
  const char* reason = CannotCollectReason();
  if (reason == nullptr) return absl::OkStatus();
  try {
    std::string msg = std::string(what) + " " + reason;
    if (t_context != Context::kNone) {
      if (t_context_type != nullptr) msg += " of type " + std::string(t_context_type->name);
      msg += ": collections do not nest";
    }
    return absl::FailedPreconditionError(msg);
  } catch (const std::bad_alloc&) {
    return absl::Status(absl::StatusCode::kFailedPrecondition, "");  // no memory for a message
  }
}

// ---- callbacks ----

bool RunCollectCallbacks(CollectPhase phase, const CollectResult& result, CollectResult* out) {
  std::vector<std::pair<uint64_t, CollectCallback>> callbacks;
  try {
    std::lock_guard<std::mutex> lock(G().mu);
    callbacks = G().callbacks;
  } catch (const std::bad_alloc&) {
    return false;
  }
  ContextScope scope(Context::kCallback, nullptr);
  for (auto& entry : callbacks) {
    CollectCallback& cb = entry.second;  // (clang 14 cannot capture a structured binding)
    if (!Guarded("a collection callback", nullptr, [&] { cb(phase, result); })) ++out->errors;
  }
  return true;
}

// ---- the schedule ----

namespace {

constexpr uint32_t kMaxFullBackoff = 16;

// Whether the objects promoted since the last full collection call for a full one now.
// Caller holds G().mu.
bool FullDue(const Shared& g) {
  if (!g.config.generational) return true;
  // The old heap's growth: what young collections promoted, less the old objects freed since
  // (by counting; a collection's own garbage is not counted twice, see kGcEpochCollected). A
  // heap that builds and drops structures does not grow.
  uint64_t freed = g_old_freed.load(std::memory_order_relaxed) - g.old_freed_at_full;
  if (g.promoted_since_full <= freed) return false;
  auto growth = static_cast<double>(g.promoted_since_full - freed);
  return growth >= g.config.full_ratio * g.full_backoff * static_cast<double>(g.old_after_full);
}

// The trigger for the next automatic collection. Caller holds G().mu.
void UpdateTrigger(const Shared& g) {
  uint64_t trigger = g.config.young_threshold;
  if (!g.config.generational) {
    // Rounded down, and bounded: full_ratio <= 1e6 and survivors < 2^48 keep it finite.
    auto by_ratio = static_cast<uint64_t>(g.config.full_ratio *
                                          static_cast<double>(g.old_after_full));
    trigger = std::max(trigger, by_ratio);
  }
  g_trigger.store(trigger, std::memory_order_relaxed);
}

void RecordPause(CollectorStats& s, CollectKind kind, absl::Duration d) {
  s.total_stopped += d;
  s.max_pause = std::max(s.max_pause, d);
  if (kind == CollectKind::kYoung) {
    s.young_stopped += d;
    s.young_max_pause = std::max(s.young_max_pause, d);
  } else {
    s.full_stopped += d;
    s.full_max_pause = std::max(s.full_max_pause, d);
  }
  int64_t us = absl::ToInt64Microseconds(d);
  int bucket = 0;
  while (bucket + 1 < kPauseBuckets && (int64_t{2} << bucket) <= us) ++bucket;
  ++s.pause_histogram[bucket];
}

}  // namespace

CollectKind AutomaticKind() {
  std::lock_guard<std::mutex> lock(G().mu);
  return FullDue(G()) ? CollectKind::kFull : CollectKind::kYoung;
}

void RecordCollection(const CollectResult& result, absl::Duration pause1, absl::Duration pause2,
                      uint64_t heap_pages) {
  std::lock_guard<std::mutex> lock(G().mu);
  Shared& g = G();
  CollectorStats& s = g.stats;
  ++s.collections;
  if (result.kind == CollectKind::kYoung) {
    ++s.young_collections;
  } else {
    ++s.full_collections;
  }
  if (result.automatic) ++s.automatic_collections;
  if (result.acyclic) ++s.acyclic_collections;
  s.collected += result.collected;
  s.uncollectable += result.uncollectable;
  s.resurrected += result.resurrected;
  s.finalized += result.finalized;
  s.errors += result.errors;
  s.promoted += result.promoted;
  s.heap_pages = heap_pages;
  RecordPause(s, result.kind, pause1);
  if (pause2 != absl::ZeroDuration()) RecordPause(s, result.kind, pause2);
  if (result.kind == CollectKind::kFull) {
    g.old_after_full = result.scanned - result.collected;
    g.promoted_since_full = 0;
    g.old_freed_at_full = g_old_freed.load(std::memory_order_relaxed);
    bool fruitless = result.collected * 100 < result.scanned;
    g.full_backoff = fruitless ? std::min(g.full_backoff * 2, kMaxFullBackoff) : 1;
  } else {
    g.promoted_since_full += result.promoted;
  }
  UpdateTrigger(g);
}

void OnFrozenObjectFreed() noexcept { g_frozen.fetch_sub(1, std::memory_order_relaxed); }

void FlushOldFreed() noexcept {
  g_old_freed.fetch_add(std::exchange(t_old_freed, 0), std::memory_order_relaxed);
}

void CountTrackedAllocations(uint32_t n) noexcept {
  g_allocs_since.fetch_add(n, std::memory_order_relaxed);
}

void OnTrackedAllocations(uint32_t n) {
  if (!g_enabled.load(std::memory_order_relaxed)) return;
  uint64_t total = g_allocs_since.fetch_add(n, std::memory_order_relaxed) + n;
  if (total < g_trigger.load(std::memory_order_relaxed)) return;
  if (CannotCollectReason() != nullptr) return;
  // Someone else is collecting (or waiting to): this allocation need not wait for it.
  std::unique_lock<std::mutex> lock(CollectLock(), std::try_to_lock);
  if (!lock.owns_lock()) return;
  // A failure (out of memory) only skips this one.
  (void)RunCollection(t_state, AutomaticKind(), /*automatic=*/true);
}

}  // namespace brc::detail

namespace brc {

using detail::G;

absl::Status SetCollectorConfig(const CollectorConfig& config) {
  if (config.young_threshold == 0 || config.young_threshold > (uint64_t{1} << 40)) {
    return absl::InvalidArgumentError(
        "SetCollectorConfig: young_threshold must be in [1, 2^40], not " +
        std::to_string(config.young_threshold));
  }
  if (!std::isfinite(config.full_ratio) || config.full_ratio < 0 || config.full_ratio > 1e6) {
    return absl::InvalidArgumentError(
        "SetCollectorConfig: full_ratio must be a finite number in [0, 1e6], not " +
        std::to_string(config.full_ratio));
  }
  if (config.workers < 1 || config.workers > 256) {
    return absl::InvalidArgumentError("SetCollectorConfig: workers must be in [1, 256], not " +
                                      std::to_string(config.workers));
  }
  std::lock_guard<std::mutex> lock(G().mu);
  G().config = config;
  detail::g_workers.store(config.workers, std::memory_order_relaxed);
  detail::UpdateTrigger(G());
  return absl::OkStatus();
}

CollectorConfig GetCollectorConfig() {
  std::lock_guard<std::mutex> lock(G().mu);
  return G().config;
}

void EnableCollector() noexcept { detail::g_enabled.store(true, std::memory_order_relaxed); }
void DisableCollector() noexcept { detail::g_enabled.store(false, std::memory_order_relaxed); }
bool IsCollectorEnabled() noexcept { return detail::g_enabled.load(std::memory_order_relaxed); }

uint64_t AddCollectCallback(CollectCallback callback) {
  std::lock_guard<std::mutex> lock(G().mu);
  uint64_t id = G().next_callback_id++;
  G().callbacks.emplace_back(id, std::move(callback));
  return id;
}

bool RemoveCollectCallback(uint64_t id) {
  CollectCallback doomed;  // destroyed after the lock is released
  std::lock_guard<std::mutex> lock(G().mu);
  auto& cbs = G().callbacks;
  for (auto it = cbs.begin(); it != cbs.end(); ++it) {
    if (it->first == id) {
      doomed = std::move(it->second);
      cbs.erase(it);
      return true;
    }
  }
  return false;
}

void SetCollectorErrorHandler(CollectorErrorHandler handler) {
  {
    std::lock_guard<std::mutex> lock(G().mu);
    std::swap(G().error_handler, handler);
  }
  // The previous handler is destroyed here, outside the lock (it may own objects).
}

CollectorStats GetCollectorStats() {
  std::lock_guard<std::mutex> lock(G().mu);
  CollectorStats s = G().stats;
  s.tracked = G().old_after_full + G().promoted_since_full;  // derived, never stored
  s.frozen = detail::g_frozen.load(std::memory_order_relaxed);
  return s;
}

}  // namespace brc
