// Stopping the world, requester side. Internal to lib/; the public face is
// brc/stop_the_world.h. Layer: stop-the-world, on top of the thread layer's handshake
// (WorldState in lib/thread_state.h) and the merge queue's status changes.
#ifndef BRC_LIB_STOP_THE_WORLD_H_
#define BRC_LIB_STOP_THE_WORLD_H_

#include "absl/time/time.h"
#include "thread_state.h"

namespace brc::detail {

// Stops every other attached thread and returns the time it took. `self` is the caller's
// state; it must be attached and must not hold the world stopped already (fatal otherwise).
// First pushes the caller's hand-off buffers (lib/handoff.cc), so that the stopped world finds
// every buffered drop in some owner's queue; `push_handoffs` false is for PushToOwner's own
// out-of-memory path, which is such a push.
absl::Duration StopWorld(ThreadState* self, bool push_handoffs = true);
// Restarts the world stopped by the calling thread.
void RestartWorld();
// True on the thread holding the world stopped.
bool ThisThreadStoppedTheWorld() noexcept;
// True on a thread that has begun stopping the world and is still waiting for others to park
// (its watchdog handler runs then).
bool StopInProgressOnThisThread() noexcept;

}  // namespace brc::detail

#endif  // BRC_LIB_STOP_THE_WORLD_H_
