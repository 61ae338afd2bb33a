/* gzip(s[, level]) for moonlet.middleware.gzip: s compressed into one gzip member (RFC
 * 1952) with zlib, in one call (the body is whole already). */
#include "core.h"
#include "buf.h"
#include <lauxlib.h>
#include <zlib.h>

/* gzip(s, level) -> the gzip bytes; raises if zlib fails (out of memory) */
static int l_gzip(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  int level = (int)luaL_optinteger(L, 2, 6);
  luaL_argcheck(L, level >= 1 && level <= 9, 2, "expected a level from 1 to 9");
  z_stream z = {0};
  /* 15 window bits + 16: a gzip header and trailer instead of zlib's */
  if (deflateInit2(&z, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    return luaL_error(L, "gzip: deflateInit2 failed");
  uLong cap = deflateBound(&z, (uLong)len);   /* enough for one deflate(Z_FINISH) */
  ml_buf_t out = {0};
  ml_buf_reserve(&out, cap);
  z.next_in = (Bytef *)s;
  z.avail_in = (uInt)len;
  z.next_out = (Bytef *)out.data;
  z.avail_out = (uInt)cap;
  int rc = deflate(&z, Z_FINISH);
  out.len = cap - z.avail_out;
  deflateEnd(&z);
  if (rc == Z_STREAM_END) lua_pushlstring(L, out.data, out.len);
  ml_buf_free(&out);
  if (rc != Z_STREAM_END) return luaL_error(L, "gzip: deflate failed (%d)", rc);
  return 1;
}

void ml_gzip_open(lua_State *L) {
  lua_pushcfunction(L, l_gzip);
  lua_setfield(L, -2, "gzip");
}
