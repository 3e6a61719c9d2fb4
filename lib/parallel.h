// The collector's parallel loop. Internal to lib/.
//
// Normal builds run on a oneTBB task_arena with the configured number of threads (the calling
// thread included). ThreadSanitizer builds run the same loop on plain std::threads instead:
// Debian's oneTBB is not built with TSan, and its internals would be reported as races
// (protocol.md §8), while the marking code itself stays parallel and checked.
#ifndef BRC_LIB_PARALLEL_H_
#define BRC_LIB_PARALLEL_H_

#include <cstddef>

#include "absl/functional/function_ref.h"

namespace brc::detail {

// Calls fn(begin, end, worker) over [0, n) in chunks of about `grain`, on up to `workers`
// threads; `worker` is in [0, workers) and no two concurrent calls share one. Returns when
// every chunk is done (all writes made by fn happen-before the return). Serial when workers
// is 1. One caller at a time (the collector holds its lock).
void ParallelFor(int workers, std::size_t n, std::size_t grain,
                 absl::FunctionRef<void(std::size_t, std::size_t, int)> fn);

}  // namespace brc::detail

#endif  // BRC_LIB_PARALLEL_H_
