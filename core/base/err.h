/* Errors in core/: one convention.
 *
 * - A function that can fail for a reason of its own (a bad pattern, a file that does not
 *   load, an address that does not parse, a TLS context that cannot be made) returns 0 (or
 *   a pointer) when it worked, and -1 (or NULL) when it did not, after writing one line
 *   saying what failed and why into the caller's buffer: `char *err, size_t errlen` (no
 *   newline; ml_err does both in one step). The caller passes the line on, adding where.
 * - A function that only wraps a libuv call returns libuv's negative error code; whoever
 *   turns it into a message uses uv_strerror.
 * - Running out of memory is not an error a caller handles: see mem.h.
 * - What reaches Lua as `nil, err` or as a raised error is that line. When Lua code must
 *   tell one failure from another, the C side gives it a code (a field or a value of its
 *   own), never a sentence to compare. */
#ifndef ML_ERR_H
#define ML_ERR_H
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

/* Writes the message into err and returns -1: `return ml_err(err, errlen, "...", ...);` */
__attribute__((format(printf, 3, 4))) static inline int ml_err(char *err, size_t errlen,
                                                               const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return -1;
}
#endif
