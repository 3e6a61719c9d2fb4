// Statistics snapshots and their printer, generated from BRC_STAT_FIELDS.
#include "brc/stats.h"

#include <cstdio>

#include "thread_state.h"

namespace brc {

Stats GetStats() { return detail::SumStats(); }

Stats GetThreadStats() {
  Stats s;
  // Relaxed: this thread is the only writer of its own block.
#define BRC_READ_(name, help) s.name = detail::tls_stats.name.load(std::memory_order_relaxed);
  BRC_STAT_FIELDS(BRC_READ_)
#undef BRC_READ_
  return s;
}

std::string FormatStats(const Stats& stats) {
  std::string out;
  char line[160];
#define BRC_FORMAT_(name, help)                                                      \
  std::snprintf(line, sizeof(line), "%-18s %14llu  # %s\n", #name,                   \
                static_cast<unsigned long long>(stats.name), help);                  \
  out += line;
  BRC_STAT_FIELDS(BRC_FORMAT_)
#undef BRC_FORMAT_
  return out;
}

}  // namespace brc
