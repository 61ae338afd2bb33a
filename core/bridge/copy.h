/* Copying Lua values between states (the loop and pool threads share no Lua objects):
 * nil, booleans, numbers, strings, moonlet.null and nested tables are packed into bytes
 * and unpacked in the other state. Functions, userdata, threads and cycles are refused. */
#ifndef ML_COPY_H
#define ML_COPY_H
#include "buf.h"
#include <lua.h>
#include <stdint.h>

/* Appends the values at idx .. idx+n-1. Returns 0, or -1 with a message in err. */
int ml_copy_pack(lua_State *L, int idx, int n, ml_buf_t *out, char *err, size_t errlen);
/* Pushes every value packed in p[0..len); returns how many, or -1 on corrupt input. */
int ml_copy_unpack(lua_State *L, const char *p, size_t len);


/* Packing from C, without a Lua state: the same format. */
void ml_copy_put_nil(ml_buf_t *out);
void ml_copy_put_null(ml_buf_t *out);   /* moonlet.null */
void ml_copy_put_bool(ml_buf_t *out, int b);
void ml_copy_put_num(ml_buf_t *out, double d);
void ml_copy_put_str(ml_buf_t *out, const char *s, size_t len);
/* A table header; npairs key/value packs follow. */
void ml_copy_put_table(ml_buf_t *out, uint32_t npairs);

/* Reading one value at a time, for a format of one's own around packed values (SQLite's
 * rows): r.p moves past each value read. */
typedef struct {
  const char *p, *end;
} ml_copy_reader_t;
/* Pushes the next value. Returns 0, or -1 on corrupt input (nothing pushed). */
int ml_copy_next(lua_State *L, ml_copy_reader_t *r);
#endif
