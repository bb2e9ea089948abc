// Status propagation macros shared by every layer (abseil has no public ones).
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define MOE_STATUS_CONCAT_INNER_(a, b) a##b
#define MOE_STATUS_CONCAT_(a, b) MOE_STATUS_CONCAT_INNER_(a, b)

// Returns from the enclosing function when `expr` is not OK.
#define MOE_RETURN_IF_ERROR(expr)              \
  do {                                         \
    absl::Status moe_status_ = (expr);         \
    if (!moe_status_.ok()) return moe_status_; \
  } while (0)

// `MOE_ASSIGN_OR_RETURN(auto x, FooOr());` unwraps a StatusOr or returns its
// error from the enclosing function.
#define MOE_ASSIGN_OR_RETURN(lhs, expr) \
  MOE_ASSIGN_OR_RETURN_IMPL_(MOE_STATUS_CONCAT_(moe_statusor_, __LINE__), lhs, expr)

#define MOE_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return std::move(tmp).status();   \
  lhs = std::move(tmp).value()
