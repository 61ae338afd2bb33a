/* The packed form (see copy.h): one tag byte per value, then its payload:
 *   'n' nil, 'f' false, 't' true, 'z' moonlet.null, 'd' double (8 bytes),
 *   's' u32 length + bytes, 'h' u32 pair count + pairs (array-marked tables: 'a'). */
#include "copy.h"
#include "err.h"
#include "json.h"
#include <lauxlib.h>
#include <stdint.h>
#include <stdio.h>

#define MAX_DEPTH 100

static void put_u32(ml_buf_t *b, uint32_t v) { ml_buf_add(b, &v, 4); }

static int pack(lua_State *L, int idx, ml_buf_t *out, int depth, char *err, size_t errlen) {
  switch (lua_type(L, idx)) {
  case LUA_TNIL: ml_copy_put_nil(out); return 0;
  case LUA_TBOOLEAN: ml_copy_put_bool(out, lua_toboolean(L, idx)); return 0;
  case LUA_TNUMBER: ml_copy_put_num(out, lua_tonumber(L, idx)); return 0;
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    if (len > UINT32_MAX) break;
    ml_copy_put_str(out, s, len);
    return 0;
  }
  case LUA_TLIGHTUSERDATA:
    if (lua_touserdata(L, idx) == NULL) {
      ml_copy_put_null(out);
      return 0;
    }
    break;
  case LUA_TTABLE: {
    /* depth bounds both deep nesting and cycles (a cycle is infinitely deep) */
    if (depth >= MAX_DEPTH || !lua_checkstack(L, 4)) {
      return ml_err(err, errlen, "cannot copy a table nested deeper than %d levels (a cycle?)",
                    MAX_DEPTH);
    }
    ml_buf_addc(out, ml_json_is_marked(L, idx) ? 'a' : 'h');
    size_t at = out->len;
    put_u32(out, 0);
    uint32_t count = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
      int top = lua_gettop(L);
      if (pack(L, top - 1, out, depth + 1, err, errlen) ||
          pack(L, top, out, depth + 1, err, errlen)) {
        lua_pop(L, 2);
        return -1;
      }
      lua_pop(L, 1);
      count++;
    }
    memcpy(out->data + at, &count, 4);
    return 0;
  }
  default:
    break;
  }
  return ml_err(err, errlen, "cannot copy a %s value between Lua states (only nil, booleans, "
                "numbers, strings and tables of them)", luaL_typename(L, idx));
}

int ml_copy_pack(lua_State *L, int idx, int n, ml_buf_t *out, char *err, size_t errlen) {
  if (idx < 0) idx = lua_gettop(L) + idx + 1;
  size_t mark = out->len;
  for (int i = 0; i < n; i++) {
    if (pack(L, idx + i, out, 0, err, errlen)) {
      out->len = mark;
      return -1;
    }
  }
  return 0;
}

static int get_u32(ml_copy_reader_t *r, uint32_t *v) {
  if (r->end - r->p < 4) return -1;
  memcpy(v, r->p, 4);
  r->p += 4;
  return 0;
}

static int unpack(lua_State *L, ml_copy_reader_t *r, int depth) {
  if (r->p >= r->end || !lua_checkstack(L, 3)) return -1;
  char tag = *r->p++;
  switch (tag) {
  case 'n': lua_pushnil(L); return 0;
  case 't': lua_pushboolean(L, 1); return 0;
  case 'f': lua_pushboolean(L, 0); return 0;
  case 'z': lua_pushlightuserdata(L, NULL); return 0;
  case 'd': {
    double d;
    if (r->end - r->p < 8) return -1;
    memcpy(&d, r->p, 8);
    r->p += 8;
    lua_pushnumber(L, d);
    return 0;
  }
  case 's': {
    uint32_t len;
    if (get_u32(r, &len) || (size_t)(r->end - r->p) < len) return -1;
    lua_pushlstring(L, r->p, len);
    r->p += len;
    return 0;
  }
  case 'h':
  case 'a': {
    uint32_t count;
    /* as deep as pack goes, no deeper: what unpacks packs again */
    if (depth >= MAX_DEPTH || get_u32(r, &count)) return -1;
    lua_createtable(L, 0, count > 64 ? 64 : (int)count);
    for (uint32_t i = 0; i < count; i++) {
      if (unpack(L, r, depth + 1) || unpack(L, r, depth + 1)) return -1;
      /* keys Lua refuses (lua_rawset would raise): pack never makes them */
      if (lua_isnil(L, -2) || (lua_type(L, -2) == LUA_TNUMBER && lua_tonumber(L, -2) !=
                                lua_tonumber(L, -2)))
        return -1;
      lua_rawset(L, -3);
    }
    if (tag == 'a') {
      lua_getfield(L, LUA_REGISTRYINDEX, ML_ARRAY_MT);
      lua_setmetatable(L, -2);
    }
    return 0;
  }
  default:
    return -1;
  }
}

int ml_copy_next(lua_State *L, ml_copy_reader_t *r) {
  int top = lua_gettop(L);
  if (unpack(L, r, 0) == 0) return 0;
  lua_settop(L, top);
  return -1;
}

int ml_copy_unpack(lua_State *L, const char *p, size_t len) {
  ml_copy_reader_t r = {p, p + len};
  int top = lua_gettop(L), n = 0;
  while (r.p < r.end) {
    if (ml_copy_next(L, &r)) {
      lua_settop(L, top);
      return -1;
    }
    n++;
  }
  return n;
}

void ml_copy_put_nil(ml_buf_t *out) { ml_buf_addc(out, 'n'); }
void ml_copy_put_null(ml_buf_t *out) { ml_buf_addc(out, 'z'); }
void ml_copy_put_bool(ml_buf_t *out, int b) { ml_buf_addc(out, b ? 't' : 'f'); }

void ml_copy_put_num(ml_buf_t *out, double d) {
  ml_buf_addc(out, 'd');
  ml_buf_add(out, &d, 8);
}

void ml_copy_put_str(ml_buf_t *out, const char *s, size_t len) {
  ml_buf_addc(out, 's');
  put_u32(out, (uint32_t)len);
  ml_buf_add(out, s, len);
}

void ml_copy_put_table(ml_buf_t *out, uint32_t npairs) {
  ml_buf_addc(out, 'h');
  put_u32(out, npairs);
}
