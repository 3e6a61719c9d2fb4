// Shared by the hand-off tests (handoff_test.cc, handoff_probe_test.cc).
#ifndef BRC_TESTS_HANDOFF_UTIL_H_
#define BRC_TESTS_HANDOFF_UTIL_H_

#include <atomic>
#include <thread>
#include <vector>

#include "test_util.h"

namespace brc_test {

// An attached thread that owns objects and reaches no safepoint until told: what it owns and
// others drop stays in their buffers or its queue, where a test can see it.
class Owner {
 public:
  // `copies` references to each object, all counted in this thread's local half.
  Owner(std::atomic<int>* destroyed, int objects, bool release_queue = false, int copies = 1) {
    thread_ = std::thread([this, destroyed, objects, release_queue, copies] {
      brc::ThreadScope attach;
      tid_.store(brc::CurrentThreadId());
      if (release_queue) brc::testing::ReleaseQueueMemoryForTesting();
      for (int i = 0; i < objects; ++i) {
        brc::Ref<Counted> r = brc::Make<Counted>(destroyed, i);
        for (int c = 1; c < copies; ++c) made_.push_back(r);
        made_.push_back(std::move(r));
      }
      ready_.store(true);
      for (;;) {
        int cmd = cmd_.load();
        if (cmd == kSafepoints) brc::Safepoint();
        if (cmd == kBlock) {
          brc::BlockingScope blocking;
          blocked_.store(true);
          while (cmd_.load() == kBlock) std::this_thread::yield();
        }
        if (cmd == kExit) break;
        std::this_thread::yield();
      }
    });
    while (!ready_.load()) std::this_thread::yield();
  }
  ~Owner() { Exit(); }
  uint32_t tid() const { return tid_.load(); }
  std::vector<brc::Ref<Counted>>& made() { return made_; }
  void Safepoints() { cmd_.store(kSafepoints); }
  void Block() {
    cmd_.store(kBlock);
    while (!blocked_.load()) std::this_thread::yield();
  }
  void Exit() {
    if (!thread_.joinable()) return;
    cmd_.store(kExit);
    brc_test::JoinBlocking(thread_);
  }
  // Joins without a BlockingScope, so that this thread's buffers are not pushed meanwhile (the
  // owner's exit needs nothing from this thread).
  void ExitKeepingBuffers() {
    cmd_.store(kExit);
    thread_.join();
  }

 private:
  static constexpr int kSpin = 0, kSafepoints = 1, kBlock = 2, kExit = 3;
  std::thread thread_;
  std::atomic<uint32_t> tid_{0};
  std::atomic<bool> ready_{false};
  std::atomic<bool> blocked_{false};
  std::atomic<int> cmd_{kSpin};
  std::vector<brc::Ref<Counted>> made_;
};

}  // namespace brc_test

#endif  // BRC_TESTS_HANDOFF_UTIL_H_
