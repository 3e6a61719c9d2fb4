// Fatal reports: internal invariant failures (BRC_CHECK) and API misuse (ReportMisuse).
//
// Runs on any thread, possibly inside the allocator, a destructor or (later) with the world
// stopped, so it formats into a stack buffer and writes with write(2): no allocation, no lock,
// no stdio. Then abort().
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string_view>

#include "brc/detail/config.h"
#include "brc/detail/thread_local.h"
#include "brc/object.h"
#include "brc/refcount.h"
#include "brc/ref.h"

namespace brc::detail {
namespace {

// A fixed buffer that silently truncates.
class RawMessage {
 public:
  RawMessage& Add(std::string_view s) {
    size_t n = s.size() < sizeof(buf_) - len_ ? s.size() : sizeof(buf_) - len_;
    std::memcpy(buf_ + len_, s.data(), n);
    len_ += n;
    return *this;
  }
  RawMessage& AddUnsigned(unsigned long long v, int base) {
    char tmp[24];
    int i = 0;
    do {
      tmp[i++] = "0123456789abcdef"[v % base];
      v /= base;
    } while (v != 0);
    if (base == 16) Add("0x");
    while (i > 0) Add(std::string_view(&tmp[--i], 1));
    return *this;
  }
  [[noreturn]] void WriteAndAbort() {
    Add("\n");
    size_t off = 0;
    while (off < len_) {
      ssize_t w = ::write(STDERR_FILENO, buf_ + off, len_ - off);
      if (w <= 0) break;
      off += static_cast<size_t>(w);
    }
    std::abort();
  }

 private:
  char buf_[512];
  size_t len_ = 0;
};

void AddThread(RawMessage& m) {
  if (tls_tid == kNotAttached) {
    m.Add(", on a thread that is not attached");
  } else {
    m.Add(", on thread ").AddUnsigned(tls_tid, 10);
  }
}

}  // namespace

void CheckFailed(const char* file, int line, const char* what) noexcept {
  RawMessage m;
  m.Add("brc: fatal: internal check failed: ").Add(what).Add(" (").Add(file).Add(":");
  m.AddUnsigned(static_cast<unsigned>(line), 10).Add(")");
  m.WriteAndAbort();
}

void ReportMisuse(const Object* ob, const char* rule) noexcept {
  RawMessage m;
  m.Add("brc: fatal: ").Add(rule).Add(" [object of type ").Add(ob->type_name());
  m.Add(" at ").AddUnsigned(reinterpret_cast<uintptr_t>(ob), 16);
  AddThread(m);
  m.Add("]");
  m.WriteAndAbort();
}

void ReportMakeUnattached(std::string_view type_name) noexcept {
  RawMessage m;
  m.Add("brc: fatal: brc::Make<").Add(type_name);
  m.Add("> called on a thread that is not attached (create a brc::ThreadScope first, and do not"
        " create objects inside a brc::BlockingScope)");
  m.WriteAndAbort();
}

void ReportMisuseOfType(const Object* ob, std::string_view type_name, const char* rule) noexcept {
  RawMessage m;
  m.Add("brc: fatal: ").Add(rule).Add(" [object of type ").Add(type_name);
  m.Add(" at ").AddUnsigned(reinterpret_cast<uintptr_t>(ob), 16);
  AddThread(m);
  m.Add("]");
  m.WriteAndAbort();
}

}  // namespace brc::detail
