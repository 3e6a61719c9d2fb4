// Looking at and pinning the tracked heap from outside a collection: Freeze/Unfreeze,
// IsTracked, GetReferents, GetReferrers. (Overview of the collector's files:
// collector_internal.h.) Freeze and Unfreeze walk every heap with the world stopped, under the
// collection lock, without allocating; GetReferrers stops the world to trace every tracked
// object.
#include <algorithm>
#include <mutex>
#include <new>
#include <vector>

#include "brc/stop_the_world.h"
#include "collector_internal.h"
#include "thread_state.h"

namespace brc {
namespace {

// Stops the world under the collection lock and applies fn to every tracked object.
absl::StatusOr<uint64_t> ForAllTracked(const char* what, absl::FunctionRef<bool(Object*)> fn) {
  if (absl::Status s = detail::CheckCanCollect(what); !s.ok()) return s;
  detail::ThreadState* self = detail::t_state;
  detail::LockCollection(self);
  std::unique_lock<std::mutex> lock(detail::CollectLock(), std::adopt_lock);
  detail::ContextScope scope(detail::Context::kCollecting, nullptr);
  uint64_t n = 0;
  // Walks the heaps directly, without listing their pages: nothing here allocates, so Freeze
  // and Unfreeze cannot run out of memory.
  detail::WithWorldStopped(self, [&] {
    detail::ForEachThreadState([&](detail::ThreadState* ts) {
      detail::ForEachPage(ts->heap, [&](detail::GcPage* p) {
        for (uint32_t b = 0; b < p->bump; ++b) {
          Object* ob = p->object(b);
          if ((detail::GcBitsOf(ob) & detail::kGcTracked) && fn(ob)) ++n;
        }
      });
    });
  });
  return n;
}

}  // namespace

absl::StatusOr<uint64_t> Freeze() {
  auto n = ForAllTracked("brc::Freeze", [](Object* ob) {
    if (detail::GcBitsOf(ob) & detail::kGcFrozen) return false;
    // Frozen objects are in no collection's candidates; unfrozen, they are old (an epoch
    // that no collection uses: brc/detail/gc_word.h). World stopped: plain stores.
    if (detail::GcEpochOf(ob) == 0) detail::GcSetEpoch(ob, detail::kGcEpochOld);
    detail::GcSetBits(ob, detail::kGcFrozen, 0);
    return true;
  });
  if (n.ok()) {
    std::lock_guard<std::mutex> lock(detail::G().mu);
    detail::g_frozen.fetch_add(*n, std::memory_order_relaxed);
    detail::Shared& g = detail::G();
    // The schedule's old heap loses them (young ones among them are counted in neither).
    g.old_after_full -= std::min(g.old_after_full, *n);
  }
  return n;
}

absl::StatusOr<uint64_t> Unfreeze() {
  auto n = ForAllTracked("brc::Unfreeze", [](Object* ob) {
    if (!(detail::GcBitsOf(ob) & detail::kGcFrozen)) return false;
    detail::GcSetBits(ob, 0, detail::kGcFrozen);  // world stopped
    return true;
  });
  if (n.ok()) {
    std::lock_guard<std::mutex> lock(detail::G().mu);
    detail::g_frozen.store(0, std::memory_order_relaxed);
    detail::Shared& g = detail::G();
    g.old_after_full += *n;  // old objects again
  }
  return n;
}

bool IsTracked(const Object* ob) noexcept {
  const TypeInfo* type = ob->type_info();
  return type != nullptr && type->gc != nullptr && (detail::GcBitsOf(ob) & detail::kGcTracked);
}

namespace {

class CollectVisitor final : public Visitor {
 public:
  explicit CollectVisitor(std::vector<Object*>* out) noexcept : Visitor(&Fn), out_(out) {}
  bool out_of_memory = false;  // a push failed: the caller throws std::bad_alloc

 private:
  static void Fn(Visitor* self, Object* r) noexcept {
    auto* me = static_cast<CollectVisitor*>(self);
    try {
      me->out_->push_back(r);
    } catch (const std::bad_alloc&) {
      me->out_of_memory = true;
    }
  }
  std::vector<Object*>* out_;
};

class FindVisitor final : public Visitor {
 public:
  explicit FindVisitor(const Object* target) noexcept : Visitor(&Fn), target_(target) {}
  bool found = false;

 private:
  static void Fn(Visitor* self, Object* r) noexcept {
    auto* me = static_cast<FindVisitor*>(self);
    if (r == me->target_) me->found = true;
  }
  const Object* target_;
};

}  // namespace

std::vector<Ref<Object>> GetReferents(const Object* ob) {
  std::vector<Ref<Object>> out;
  const TypeInfo* type = ob->type_info();
  if (type == nullptr || type->gc == nullptr) return out;
  std::vector<Object*> raw;
  CollectVisitor v(&raw);
  type->gc->trace(ob, v);
  if (v.out_of_memory) throw std::bad_alloc();
  out.reserve(raw.size());
  for (Object* r : raw) out.push_back(Ref<Object>::NewRef(r));
  return out;
}

std::vector<Ref<Object>> GetReferrers(const Object* target) {
  if (detail::t_collector_stopped) {
    detail::ReportMisuse(target, "brc::GetReferrers called while this thread holds the world "
                                 "stopped for a collection (from an allocator the collector "
                                 "called for its own lists): the heaps are being walked");
  }
  if (detail::StopInProgressOnThisThread()) {
    detail::ReportMisuse(target, "brc::GetReferrers from a stop-the-world watchdog handler (the "
                                 "world is not stopped yet, so the heaps cannot be walked)");
  }
  std::vector<Ref<Object>> out;
  auto scan = [&] {
    detail::PageList pages = detail::CollectPages();
    for (detail::GcPage* p : pages) {
      for (uint32_t b = 0; b < p->bump; ++b) {
        Object* ob = p->object(b);
        uint8_t bits = detail::GcBitsOf(ob);
        // Members of a running collection's garbage set are about to be cleared: never hand
        // one out.
        if (!(bits & detail::kGcTracked) || (bits & detail::kGcGarbage)) continue;
        FindVisitor v(target);
        detail::TraceObject(ob, v);
        // A new reference while the world is stopped: the referrer cannot be freed meanwhile.
        if (v.found) out.push_back(Ref<Object>::NewRef(ob));
      }
    }
  };
  if (detail::ThisThreadStoppedTheWorld()) {
    scan();
  } else {
    StopTheWorld stop;
    scan();
  }
  return out;
}

}  // namespace brc
