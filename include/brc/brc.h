// brc: objects shared between threads, counted the way their owner would count them alone.
//
// What is biased reference counting? Most objects are only ever touched by the thread that
// created them. brc gives each object two counts: a local half that only the creating (owner)
// thread writes, with plain loads and stores, and a shared half that all other threads update
// atomically. The owner pays what a single-threaded counter costs; others pay one atomic
// instruction. When the shared half would drop below zero, the object is queued to its owner,
// which adds the halves together ("merges") at its next safepoint; when the owner's half
// reaches zero it merges and gives the object up, and from then on everyone counts atomically.
//
// Cycles: reference counting cannot free objects that keep each other alive. Types that can
// form cycles declare Trace and Clear (brc/visitor.h) and are *tracked*; a stop-the-world
// cycle collector (brc/collector.h) finds tracked objects that nothing outside their cycle
// references, runs their finalizers once, and breaks the cycles so that counting frees them.
//
// When to use it: a language runtime or object-heavy C++ system where objects are created and
// mostly used by one thread but may be shared with others at any time, and where std::shared_ptr's
// atomic count on every copy costs too much. When not: objects that every thread hammers
// equally (each of them pays the atomic cost, like shared_ptr), or code that cannot reach
// safepoints (objects queued to a thread that never drains stay alive until it does).
//
// Headers:
//   brc/object.h    brc::Object, the 24-byte header every object starts with
//   brc/ref.h       Ref<T>, Borrowed<T>, Make<T>
//   brc/refcount.h  IncRef/DecRef, MakeImmortal, GetRefCount
//   brc/thread.h    ThreadScope, BlockingScope, Safepoint
//   brc/visitor.h   Visitor: what a tracked type's Trace reports its references to
//   brc/collector.h Collect, the collector's configuration, Freeze, statistics
//   brc/stop_the_world.h  StopTheWorld: park every other attached thread
//   brc/weak_ref.h  WeakRef<T>
//   brc/allocator.h pluggable object allocator
//   brc/stats.h     event counters
//   brc/testing.h   test-only access to the counts
#ifndef BRC_BRC_H_
#define BRC_BRC_H_

#include "brc/allocator.h"
#include "brc/collector.h"
#include "brc/hot.h"
#include "brc/object.h"
#include "brc/ref.h"
#include "brc/refcount.h"
#include "brc/stats.h"
#include "brc/stop_the_world.h"
#include "brc/thread.h"
#include "brc/visitor.h"
#include "brc/weak_ref.h"

#endif  // BRC_BRC_H_
