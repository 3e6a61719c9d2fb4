// See parallel.h.
#include "parallel.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <thread>
#include <vector>

#include "brc/detail/config.h"

#ifndef BRC_TSAN
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>
#endif

namespace brc::detail {

#ifndef BRC_TSAN

void ParallelFor(int workers, std::size_t n, std::size_t grain,
                 absl::FunctionRef<void(std::size_t, std::size_t, int)> fn) {
  if (workers <= 1 || n <= grain) {
    if (n > 0) fn(0, n, 0);
    return;
  }
  // Kept between collections; replaced when the worker count changes. Only the collecting
  // thread uses it (under the collector's lock). Never destroyed at exit (a raw pointer), like
  // brc's other globals: a thread may still collect while static destructors run.
  static tbb::task_arena* arena = nullptr;
  if (arena == nullptr || arena->max_concurrency() != workers) {
    delete arena;
    arena = new tbb::task_arena(workers);
  }
  arena->execute([&] {
    tbb::parallel_for(
        tbb::blocked_range<std::size_t>(0, n, std::max<std::size_t>(grain, 1)),
        [&](const tbb::blocked_range<std::size_t>& r) {
          int slot = tbb::this_task_arena::current_thread_index();
          BRC_CHECK(slot >= 0 && slot < workers, "oneTBB arena slot out of range");
          fn(r.begin(), r.end(), slot);
        });
  });
}

#else  // BRC_TSAN

void ParallelFor(int workers, std::size_t n, std::size_t grain,
                 absl::FunctionRef<void(std::size_t, std::size_t, int)> fn) {
  if (workers <= 1 || n <= grain) {
    if (n > 0) fn(0, n, 0);
    return;
  }
  grain = std::max<std::size_t>(grain, 1);
  // Relaxed: each chunk index is claimed once; join() orders the results.
  std::atomic<std::size_t> next{0};
  // Like oneTBB, the first exception a chunk throws stops the loop and reaches the caller.
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(workers));
  auto run = [&](int worker) {
    try {
      for (;;) {
        std::size_t begin = next.fetch_add(grain, std::memory_order_relaxed);
        if (begin >= n) return;
        fn(begin, std::min(n, begin + grain), worker);
      }
    } catch (...) {
      errors[static_cast<std::size_t>(worker)] = std::current_exception();
      next.store(n, std::memory_order_relaxed);
    }
  };
  std::vector<std::thread> threads;
  for (int w = 1; w < workers; ++w) threads.emplace_back(run, w);
  run(0);
  for (std::thread& t : threads) t.join();
  for (std::exception_ptr& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

#endif  // BRC_TSAN

}  // namespace brc::detail
