// The two thread-locals the inline fast paths read. Both are constant-initialised PODs, so an
// access is a single %fs-relative load: no TLS wrapper call, no guard variable.
#ifndef BRC_DETAIL_THREAD_LOCAL_H_
#define BRC_DETAIL_THREAD_LOCAL_H_

#include <atomic>
#include <cstdint>

namespace brc::detail {

// owner_ value of an object nobody owns (merged, or immortal).
inline constexpr uint32_t kNoOwner = 0;
// tls_tid of a thread that is not attached, or is inside a BlockingScope. It never equals an
// object's owner_, so such a thread always takes the slow path, which reports the misuse.
inline constexpr uint32_t kNotAttached = UINT32_MAX;

// This thread's id while attached (1, 2, ...), else kNotAttached. Written only by this thread.
inline constinit thread_local uint32_t tls_tid = kNotAttached;
// This thread's "work pending at the next safepoint" word while attached, else nullptr. The
// word itself is written by other threads (see lib/thread_state.h).
inline constinit thread_local std::atomic<uint32_t>* tls_pending = nullptr;

}  // namespace brc::detail

#endif  // BRC_DETAIL_THREAD_LOCAL_H_
