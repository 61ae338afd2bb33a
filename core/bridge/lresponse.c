/* Handler results -> HTTP response bytes (see lresponse.h). Header names and values are
 * checked here: nothing a handler returns can split the response. */
#include "lresponse.h"
#include "err.h"
#include "json.h"
#include "response.h"
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <strings.h>

static int is_header(const char *name, size_t len, const char *lower) {
  return strlen(lower) == len && strncasecmp(name, lower, len) == 0;
}

/* What the handler's headers said that changes moonlet's own (bits of *seen). */
enum { SAW_CTYPE = 1, SAW_DATE = 2, SAW_SERVER = 4, SAW_CLOSE = 8 };

/* 1 if a Connection value lists the token "close" (any case, comma-separated). */
static int lists_close(const char *val, size_t len) {
  size_t i = 0;
  while (i < len) {
    while (i < len && (val[i] == ' ' || val[i] == '\t' || val[i] == ',')) i++;
    size_t start = i;
    while (i < len && val[i] != ',' && val[i] != ' ' && val[i] != '\t') i++;
    if (is_header(val + start, i - start, "close")) return 1;
  }
  return 0;
}

/* Adds one handler-given header and notes in *seen what it overrides. Returns 0, or -1
 * with a message when the name or value would break the response (CR/LF injection). */
static int add_header(ml_buf_t *out, const char *name, size_t nlen, const char *val,
                      size_t vlen, unsigned *seen, char *err, size_t errlen) {
  if (!ml_header_name_ok(name, nlen)) {
    return ml_err(err, errlen, "invalid response header name '%.*s'", (int)(nlen > 60 ? 60 : nlen),
                  name);
  }
  if (!ml_header_value_ok(val, vlen)) {
    return ml_err(err, errlen, "response header '%.*s' has a value with a control character "
                  "(CR, LF, NUL, ...)", (int)nlen, name);
  }
  /* moonlet frames the message itself; Connection: close is honoured, not copied */
  if (is_header(name, nlen, "connection")) {
    if (lists_close(val, vlen)) *seen |= SAW_CLOSE;
    return 0;
  }
  if (is_header(name, nlen, "content-length") || is_header(name, nlen, "transfer-encoding"))
    return 0;
  if (is_header(name, nlen, "content-type")) *seen |= SAW_CTYPE;
  else if (is_header(name, nlen, "date")) *seen |= SAW_DATE;
  else if (is_header(name, nlen, "server")) *seen |= SAW_SERVER;
  ml_resp_header(out, name, nlen, val, vlen);
  return 0;
}

/* Writes the headers table at idx; sets bits of *seen (see add_header). */
static int add_headers(lua_State *co, int idx, ml_buf_t *out, unsigned *seen, char *err,
                       size_t errlen) {
  lua_pushnil(co);
  while (lua_next(co, idx)) {
    if (lua_type(co, -2) != LUA_TSTRING) {
      lua_pop(co, 2);
      return ml_err(err, errlen, "response header names must be strings");
    }
    size_t nlen, vlen;
    const char *name = lua_tolstring(co, -2, &nlen);
    int vt = lua_type(co, -1);
    if (vt == LUA_TTABLE) {   /* several values: { ["set-cookie"] = { "a=1", "b=2" } } */
      int n = (int)lua_objlen(co, -1);
      for (int i = 1; i <= n; i++) {
        lua_rawgeti(co, -1, i);
        const char *val = lua_type(co, -1) == LUA_TSTRING || lua_type(co, -1) == LUA_TNUMBER
                              ? lua_tolstring(co, -1, &vlen) : NULL;
        int rc = val ? add_header(out, name, nlen, val, vlen, seen, err, errlen) : -1;
        if (!val) snprintf(err, errlen, "response header '%s' has a non-string value", name);
        lua_pop(co, 1);
        if (rc) { lua_pop(co, 2); return -1; }
      }
    } else if (vt == LUA_TSTRING || vt == LUA_TNUMBER) {
      lua_pushvalue(co, -1);   /* tolstring on a copy: the value slot stays a number */
      const char *val = lua_tolstring(co, -1, &vlen);
      int rc = add_header(out, name, nlen, val, vlen, seen, err, errlen);
      lua_pop(co, 1);
      if (rc) { lua_pop(co, 2); return -1; }
    } else if (vt != LUA_TBOOLEAN || lua_toboolean(co, -1)) {
      lua_pop(co, 2);
      return ml_err(err, errlen, "response header '%s' has a %s value", name, lua_typename(co, vt));
    }
    lua_pop(co, 1);
  }
  return 0;
}

/* The status at idx: an integer from 200 to 599 (a 1xx cannot end an exchange). Returns
 * it, or -1 with a message. */
static int check_status(lua_State *co, int idx, char *err, size_t errlen) {
  if (lua_type(co, idx) != LUA_TNUMBER) {
    return ml_err(err, errlen, "invalid response status %s (expected an integer from 200 to 599)",
                  luaL_typename(co, idx));
  }
  double d = lua_tonumber(co, idx);
  if (d >= 200 && d <= 599 && d == floor(d)) return (int)d;
  return ml_err(err, errlen, "invalid response status %.17g (expected an integer from 200 to 599)",
                d);
}

/* ml_lresp_head for a status checked already. */
static int write_head(lua_State *co, int base, int status, ml_buf_t *out, const char *ctype,
                      int *keepalive, char *err, size_t errlen) {
  size_t mark = out->len;
  int htype = lua_type(co, base + 2);
  if (htype != LUA_TNONE && htype != LUA_TNIL && htype != LUA_TTABLE) {
    return ml_err(err, errlen, "response headers must be a table, not a %s",
                  lua_typename(co, htype));
  }
  ml_resp_status(out, status);
  unsigned seen = 0;
  if (htype == LUA_TTABLE && add_headers(co, base + 2, out, &seen, err, errlen)) {
    out->len = mark;
    return -1;
  }
  ml_resp_defaults(out, (seen & SAW_SERVER ? ML_RESP_SERVER : 0) |
                        (seen & SAW_DATE ? ML_RESP_DATE : 0));
  if (!(seen & SAW_CTYPE) && ctype) ml_resp_header(out, "Content-Type", 12, ctype, strlen(ctype));
  if (seen & SAW_CLOSE) *keepalive = 0;
  return status;
}

int ml_lresp_head(lua_State *co, int base, ml_buf_t *out, const char *ctype, int *keepalive,
                  char *err, size_t errlen) {
  int status = check_status(co, base, err, errlen);
  if (status < 0) return -1;
  return write_head(co, base, status, out, ctype, keepalive, err, errlen);
}

int ml_lresp_build(lua_State *co, int base, ml_buf_t *out, ml_buf_t *scratch, int *keepalive,
                   int head, char *err, size_t errlen) {
  const char *body = NULL, *ctype = NULL;
  size_t blen = 0;
  int status = check_status(co, base, err, errlen);
  if (status < 0) return -1;
  switch (lua_type(co, base + 1)) {
  case LUA_TNIL:
  case LUA_TNONE:
    break;
  case LUA_TSTRING:
    body = lua_tolstring(co, base + 1, &blen);
    ctype = "text/plain; charset=utf-8";
    break;
  default:
    scratch->len = 0;
    if (ml_json_encode(co, base + 1, scratch, err, errlen)) return -1;
    body = scratch->data;
    blen = scratch->len;
    ctype = "application/json";
  }
  if (write_head(co, base, status, out, ctype, keepalive, err, errlen) < 0) return -1;
  int bodyless = status == 204 || status == 304;
  ml_resp_end(out, status, bodyless ? 0 : blen, *keepalive);
  if (!head && !bodyless) ml_buf_add(out, body, blen);
  if (scratch->cap > 1u << 20) ml_buf_reset(scratch, 0);
  return status;
}
