// Compile-time type names for misuse reports. A report must not allocate (it may fire inside a
// destructor or with the allocator's lock held), so the name is cut out of
// __PRETTY_FUNCTION__ at compile time and stored as a string_view into static storage.
#ifndef BRC_DETAIL_TYPE_NAME_H_
#define BRC_DETAIL_TYPE_NAME_H_

#include <string_view>

namespace brc::detail {

template <class T>
constexpr std::string_view RawTypeName() {
  // GCC:   "... RawTypeName() [with T = ns::Node; std::string_view = ...]"
  // Clang: "... RawTypeName() [T = ns::Node]"
  std::string_view p = __PRETTY_FUNCTION__;
  std::string_view::size_type begin = p.find("T = ");
  if (begin == std::string_view::npos) return "<unknown type>";
  begin += 4;
  std::string_view::size_type end = p.find_first_of(";]", begin);
  return p.substr(begin, end - begin);
}

// A type may set `static constexpr std::string_view kTypeName = "...";` to choose its own name.
template <class T>
constexpr std::string_view TypeNameOf() {
  if constexpr (requires { T::kTypeName; }) {
    return std::string_view(T::kTypeName);
  } else {
    return RawTypeName<T>();
  }
}

}  // namespace brc::detail

#endif  // BRC_DETAIL_TYPE_NAME_H_
