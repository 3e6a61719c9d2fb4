// Hand-off buffers: batching the drops that send objects back to their owners. Internal to lib/.
#ifndef BRC_LIB_HANDOFF_H_
#define BRC_LIB_HANDOFF_H_

#include <cstdint>

#include "brc/object.h"
#include "thread_state.h"

namespace brc::detail {

// `self` (the caller's state, attached, not blocked, not holding the world stopped) dropped
// the last shared reference to `ob`, owned by `owner` (another id), and put it in the queued
// state: keeps the entry in the buffer for `owner`, pushing a buffer that fills (or that must
// make room) to its owner's queue.
void BufferHandoff(ThreadState* self, uint32_t owner, Object* ob) noexcept;

// Pushes every buffer of `self` (the caller's state) to its owner, until none holds an entry
// (a push may merge on a blocked or exited owner's behalf and run destructors, which may drop
// more). kPendingHandoff is set exactly while an entry is buffered.
void FlushHandoffs(ThreadState* self) noexcept;

}  // namespace brc::detail

#endif  // BRC_LIB_HANDOFF_H_
