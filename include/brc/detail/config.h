// Build-time switches and the always-on checks shared by every brc header.
//
// BRC_DEBUG  (CMake option of the same name; PUBLIC, so the library and its users agree)
//   Freed objects are poisoned and kept in a quarantine instead of being returned to the
//   allocator, and every count operation first checks for the poison, so a use after free is
//   reported with the object's type instead of corrupting memory.
// BRC_STATS  (CMake option, default ON)
//   Per-thread event counters (brc/stats.h). Off removes them from the fast paths entirely.
// BRC_TSAN   (set by the build when compiling with -fsanitize=thread)
//   Internal locks use std::mutex, which ThreadSanitizer understands, instead of absl::Mutex.
#ifndef BRC_DETAIL_CONFIG_H_
#define BRC_DETAIL_CONFIG_H_

#if defined(__GNUC__) || defined(__clang__)
#define BRC_LIKELY(x) __builtin_expect(!!(x), 1)
#define BRC_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define BRC_NOINLINE __attribute__((noinline))
#define BRC_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define BRC_LIKELY(x) (x)
#define BRC_UNLIKELY(x) (x)
#define BRC_NOINLINE
#define BRC_ALWAYS_INLINE inline
#endif

#if !defined(BRC_TSAN) && defined(__SANITIZE_THREAD__)
#define BRC_TSAN 1
#endif

namespace brc::detail {

// Prints "brc: fatal: <what>" and the location to stderr with write(2) and aborts. It never
// allocates or takes a lock, so it is safe while the world is stopped or inside the allocator.
[[noreturn]] void CheckFailed(const char* file, int line, const char* what) noexcept;

}  // namespace brc::detail

// Always on. For internal invariants: a failure means a bug in brc, not in the caller.
#define BRC_CHECK(cond, msg)                                        \
  do {                                                              \
    if (BRC_UNLIKELY(!(cond))) ::brc::detail::CheckFailed(__FILE__, __LINE__, msg); \
  } while (0)

#ifdef BRC_DEBUG
#define BRC_DCHECK(cond, msg) BRC_CHECK(cond, msg)
#else
#define BRC_DCHECK(cond, msg) \
  do {                        \
  } while (0)
#endif

#endif  // BRC_DETAIL_CONFIG_H_
