// Per-thread counts for hot shared objects.
//
// A biased count makes an object cheap for the thread that created it; every other thread pays
// an atomic read-modify-write on the object's shared word, and when several threads take and
// drop references to one object (a module, a class, a global) they all write one cache line.
// An object counted per thread has no such line: each attached thread counts its references in
// a slot of its own (a thread-local array indexed by the object's per-thread id), with a plain
// load and store, like an owner. Nobody's count operation sees the object's true count then
// (local + shared + the sum of every thread's slot), so such an object is never freed by a
// decrement: it is freed by a merge pass, a brief stop of the world that adds every slot into
// the shared word and frees the objects whose sum is zero.
//
// How an object becomes counted per thread:
//  * explicitly, CountPerThread(ob), for objects a runtime knows are hot;
//  * automatically, when PerThreadConfig::detect_contention is on (off by default: a switched
//    object's destructor runs at a merge pass, not at its last DecRef, and the switch stops
//    the world from a Safepoint(), which needs every other attached thread to reach a
//    safepoint or be in a BlockingScope, as collections do): a non-owner's decrement
//    is one compare-and-swap on the shared word; when it fails because another thread changed
//    the word in between, the thread notes the object in a small table of its own, and an
//    object whose decrements lose `contention_threshold` such races on one thread is switched
//    at that thread's next brc::Safepoint(). The owner's path and an uncontended non-owner
//    decrement do no extra work at all.
// Switching stops the world once (the object's owner half is rewritten, which only its owner
// or a stopped world may do), unless the calling thread holds the world stopped already, so a
// runtime that switches many objects at start-up can do it under one brc::StopTheWorld.
// An object never switches back; its id is recycled when it is freed.
//
// When a merge pass runs: a thread whose slot for an object would go below zero (it drops
// more references than it took since the last pass: only then can a true count reach zero)
// marks a pass due; the pass then runs at that thread's next Safepoint() once
// `merge_interval` has passed since the previous one (a thread that detaches or blocks first
// hands it to the other threads, blocked ones included, which run it at their next
// safepoint), and every collection runs one in its stops. MergePerThreadCounts() runs one now.
// A pass costs one stop of the world plus one read of every slot that exists (threads × ids);
// bench/ reports it.
//
// Semantics that differ from an ordinary object, all documented in the README:
//  * the destructor of a per-thread-counted object runs at the merge pass after its last
//    reference is dropped, on the thread running the pass, not inside the last DecRef;
//  * a WeakRef::Lock() may still succeed between the last DecRef and that pass;
//  * GetRefCount() stops the world to add the slots (exact), unless that is impossible (the
//    caller is not attached): then it reports the shared word alone.
#ifndef BRC_HOT_H_
#define BRC_HOT_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "brc/object.h"

namespace brc {

// Switches `ob` to per-thread counting. The caller is attached and holds a reference.
// Immortal objects and objects already counted per thread: OK, nothing changes.
// FailedPrecondition: not attached, inside a BlockingScope, from a stop-the-world watchdog
// handler, or re-entered from an Allocator while a switch or merge pass allocates.
// ResourceExhausted: PerThreadConfig::max_objects objects are counted per thread already, or
// out of memory for the id tables (then nothing changed).
absl::Status CountPerThread(Object* ob);

// True while `ob` is counted per thread. Any thread.
bool IsCountedPerThread(const Object* ob) noexcept;

// Runs a merge pass now: folds every thread's slots into the shared words and frees the
// per-thread-counted objects whose count is zero (their destructors run on this thread before
// it returns). FailedPrecondition in the states CountPerThread refuses.
absl::Status MergePerThreadCounts();

struct PerThreadConfig {
  // Switch objects whose shared word is contended (see above). Off by default.
  bool detect_contention = false;
  // Lost decrement races on one thread, for one object, before it is switched. 1 .. 2^20.
  int contention_threshold = 64;
  // The least time between two merge passes that threads ask for at their safepoints
  // (collections, detaching threads and MergePerThreadCounts() do not wait). 0 .. 10 s.
  absl::Duration merge_interval = absl::Milliseconds(1);
  // The most objects counted per thread at once (each costs 4 bytes in every thread that
  // touches it, and a merge pass reads every slot). 1 .. 2^30.
  int64_t max_objects = int64_t{1} << 20;
};

// InvalidArgument for values outside the ranges above (infinite durations included).
absl::Status SetPerThreadConfig(const PerThreadConfig& config);
PerThreadConfig GetPerThreadConfig();

}  // namespace brc

#endif  // BRC_HOT_H_
