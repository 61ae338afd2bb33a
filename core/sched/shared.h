/* moonlet.shared: dictionaries shared by the loop and every pool thread. C-level hash
 * tables, each behind its own mutex; values are strings, numbers and booleans with an
 * optional time to live. All dictionaries together hold at most the configured bytes
 * (--shared-mem); a write beyond that returns nil, "no memory ...". Dictionaries live as
 * long as the process. */
#ifndef ML_SHARED_H
#define ML_SHARED_H
#include <lua.h>
#include <stddef.h>

void ml_shared_configure(size_t capacity_bytes);
#endif
