// brc_bench, many threads: producer/consumer hand-off. See threads_benchmark.cc for the names
// and conventions.
#include "threads_common.h"

namespace brc_threads_bench {
namespace {

// ---------------------------------------------------------------------------------------------
// Scenario 3: hand-off. Threads [0, T/2) produce, thread T/2 + i consumes what producer i makes,
// through a queue of its own.

constexpr int kHandoffBatch = 512;

// A bounded queue of whole batches between one producer and one consumer, under a mutex. Both
// sides poll (and yield) rather than sleep, so a brc producer keeps reaching safepoints while it
// waits. Emptied vectors travel back to the producer, so that no side allocates vector storage.
template <class T>
class BatchQueue {
 public:
  static constexpr std::size_t kMaxBatches = 8;

  // On success `batch` is replaced by an empty vector with room for a batch.
  bool TryPush(std::vector<T>& batch) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (full_.size() >= kMaxBatches) return false;
      full_.push_back(std::move(batch));
      batch.clear();  // moved-from: valid, now certainly empty
      if (!spares_.empty()) {
        batch = std::move(spares_.back());
        spares_.pop_back();
      }
    }
    batch.reserve(kHandoffBatch);
    return true;
  }
  // `out` must be empty; on success it holds the next batch and its old storage became a spare.
  bool TryPop(std::vector<T>& out) {
    std::lock_guard<std::mutex> lock(mu_);
    if (full_.empty()) return false;
    spares_.push_back(std::move(out));
    out = std::move(full_.front());
    full_.pop_front();
    return true;
  }

 private:
  std::mutex mu_;
  std::deque<std::vector<T>> full_;
  std::vector<std::vector<T>> spares_;
};

struct NoScope {};

struct BrcHandoff {
  using Item = brc::Ref<Payload>;
  using Attach = brc::ThreadScope;
  static Item Make(int64_t i) { return brc::Make<Payload>(i); }
  static void Poll() noexcept { brc::Safepoint(); }
};

struct SharedPtrHandoff {
  using Item = std::shared_ptr<PlainPayload>;
  using Attach = NoScope;
  static Item Make(int64_t i) {
    Item item = std::make_shared<PlainPayload>();
    item->a = i;
    return item;
  }
  static void Poll() noexcept {}
};

// Raw new/delete of the same 48 bytes: the allocator's floor for any hand-off.
struct NewDeleteHandoff {
  using Item = std::unique_ptr<PlainObject>;
  using Attach = NoScope;
  static Item Make(int64_t i) {
    Item item(new PlainObject());
    item->a = i;
    return item;
  }
  static void Poll() noexcept {}
};

template <class C>
struct HandoffRun {
  explicit HandoffRun(int threads) {
    for (int i = 0; i < threads / 2; ++i) {
      queues.push_back(std::make_unique<BatchQueue<typename C::Item>>());
    }
  }
  std::vector<std::unique_ptr<BatchQueue<typename C::Item>>> queues;
};

// One iteration: a producer makes a batch and pushes it; a consumer pops a batch and drops it.
// Google Benchmark gives every thread the same iteration count, so each consumer pops exactly
// what its producer pushes. For brc a consumer's drop is a non-owner decrement to zero: the
// object is queued back to its producer and freed at the producer's next Safepoint() (after
// the loop: when its ThreadScope ends, or by the consumer on its behalf once it has detached).
template <class C>
void BM_Handoff(benchmark::State& state) {
  using Item = typename C::Item;
  auto& run = PerRun<HandoffRun<C>>::Get();
  [[maybe_unused]] typename C::Attach attach;
  const int pairs = state.threads() / 2;
  const int index = state.thread_index();
  if (state.threads() % 2 != 0) {
    state.SkipWithError("the hand-off needs an even thread count");
    for (auto _ : state) {
    }
    return;
  }
  std::vector<Item> batch;
  batch.reserve(kHandoffBatch);
  if (index < pairs) {
    BatchQueue<Item>& queue = *run.queues[index];
    int64_t made = 0;
    for (auto _ : state) {
      for (int i = 0; i < kHandoffBatch; ++i) batch.push_back(C::Make(made++));
      while (!queue.TryPush(batch)) {
        C::Poll();
        std::this_thread::yield();
      }
      C::Poll();
    }
  } else {
    BatchQueue<Item>& queue = *run.queues[index - pairs];
    for (auto _ : state) {
      while (!queue.TryPop(batch)) {
        C::Poll();
        std::this_thread::yield();
      }
      batch.clear();  // the drops
      C::Poll();
    }
    // Only consumers count, so each object is counted once.
    state.SetItemsProcessed(state.iterations() * kHandoffBatch);
  }
}

}  // namespace

void RegisterHandoff() {
  const std::vector<int> handoff = HandoffThreads();
  WithRun<HandoffRun<BrcHandoff>>(Threaded("BM_Handoff/brc", &BM_Handoff<BrcHandoff>, handoff));
  WithRun<HandoffRun<SharedPtrHandoff>>(
      Threaded("BM_Handoff/shared_ptr", &BM_Handoff<SharedPtrHandoff>, handoff));
  WithRun<HandoffRun<NewDeleteHandoff>>(
      Threaded("BM_Handoff/new_delete", &BM_Handoff<NewDeleteHandoff>, handoff));
}

}  // namespace brc_threads_bench
