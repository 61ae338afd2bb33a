/* JSON encoding of Lua values, written by moonlet so that arrays are under its control:
 * a table whose keys are exactly 1..n is an array; an empty table is `{}` unless it carries
 * the array metatable (moonlet.array{}), then `[]`; a table with the array metatable is an
 * array up to its `n` field or else its largest index, nil holes being null; moonlet.null
 * (a NULL lightuserdata, the same value as cjson.null) is null. '/' is not escaped; bytes
 * that are not UTF-8 become \ufffd, so the text is always valid JSON. */
#ifndef ML_JSON_H
#define ML_JSON_H
#include "buf.h"
#include <lua.h>

#define ML_ARRAY_MT "moonlet.array"   /* registry key of the array metatable */

/* 1 if the table at idx carries the array metatable (moonlet.array). */
int ml_json_is_marked(lua_State *L, int idx);

/* Appends the JSON text of the value at idx. Returns 0, or -1 with a message in err
 * (functions, userdata, NaN, cycles/too deep, mixed or non-string keys). */
int ml_json_encode(lua_State *L, int idx, ml_buf_t *out, char *err, size_t errlen);

/* Checks that s is one JSON text as json_decode takes it (strict RFC 8259, nested at most
 * as deep as the encoder goes). No Lua state: any thread. Returns 0, or -1 with
 * "invalid json at byte N: why" in err. */
int ml_json_check(const char *s, size_t len, char *err, size_t errlen);

#endif
