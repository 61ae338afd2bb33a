/* JSON (see json.h): moonlet's encoder, and a strict check in front of lua-cjson's decoder. */
#include "json.h"
#include "core.h"
#include "err.h"
#include <lauxlib.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 128

/* The length of the well-formed UTF-8 sequence at s (1 to 4 bytes; RFC 3629: no overlong
 * forms, no surrogates, nothing above U+10FFFF), or 0 if the bytes there are not one. */
static size_t utf8_len(const unsigned char *s, size_t avail) {
  unsigned char c = s[0], lo = 0x80, hi = 0xBF;
  size_t n;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) n = 2;
  else if (c >= 0xE0 && c <= 0xEF) n = 3;
  else if (c >= 0xF0 && c <= 0xF4) n = 4;
  else return 0;
  if (c == 0xE0) lo = 0xA0;        /* overlong below U+0800 */
  else if (c == 0xED) hi = 0x9F;   /* U+D800-DFFF, the surrogates */
  else if (c == 0xF0) lo = 0x90;   /* overlong below U+10000 */
  else if (c == 0xF4) hi = 0x8F;   /* above U+10FFFF */
  if (avail < n || s[1] < lo || s[1] > hi) return 0;
  for (size_t i = 2; i < n; i++)
    if (s[i] < 0x80 || s[i] > 0xBF) return 0;
  return n;
}

/* 1 for the bytes add_string cannot copy as they are: controls, '"', '\\', non-ASCII. */
static const unsigned char needs_care[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
};

/* A JSON string. Bytes that are not UTF-8 become \ufffd, one per byte (as Go's
 * encoding/json does), so the text is always valid JSON. */
static void add_string(ml_buf_t *out, const char *s, size_t len) {
  static const char hex[] = "0123456789abcdef";
  size_t i = 0;
  while (i < len && !needs_care[(unsigned char)s[i]]) i++;
  ml_buf_reserve(out, len + 2);
  out->data[out->len++] = '"';
  if (i == len) {   /* the common case: nothing to escape, one copy */
    memcpy(out->data + out->len, s, len);
    out->len += len;
    out->data[out->len++] = '"';
    return;
  }
  size_t run = 0;   /* start of bytes that need no escaping */
  for (; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (!needs_care[c]) continue;
    size_t n = c < 0x80 ? 1 : utf8_len((const unsigned char *)s + i, len - i);
    if (n > 1) {   /* a whole multi-byte character goes as it is */
      i += n - 1;
      continue;
    }
    ml_buf_add(out, s + run, i - run);
    run = i + 1;
    if (n == 0) {
      ml_buf_add(out, "\\ufffd", 6);
      continue;
    }
    char esc[6] = {'\\', 0};
    switch (c) {
    case '"': esc[1] = '"'; break;
    case '\\': esc[1] = '\\'; break;
    case '\n': esc[1] = 'n'; break;
    case '\r': esc[1] = 'r'; break;
    case '\t': esc[1] = 't'; break;
    case '\b': esc[1] = 'b'; break;
    case '\f': esc[1] = 'f'; break;
    default:
      ml_buf_add(out, "\\u00", 4);
      ml_buf_addc(out, hex[c >> 4]);
      ml_buf_addc(out, hex[c & 15]);
      continue;
    }
    ml_buf_add(out, esc, 2);
  }
  ml_buf_add(out, s + run, len - run);
  ml_buf_addc(out, '"');
}

static int add_number(ml_buf_t *out, double d, char *err, size_t errlen) {
  if (isnan(d) || isinf(d)) {
    return ml_err(err, errlen, "cannot encode %s as JSON", isnan(d) ? "NaN" : "infinity");
  }
  if (fabs(d) < 9007199254740992.0 && d == (double)(long long)d) {   /* an integer */
    if (d < 0) ml_buf_addc(out, '-');
    ml_buf_addu(out, (unsigned long long)fabs(d));
    return 0;
  }
  char tmp[32];
  int n = 0;
  for (int prec = 14; prec <= 17; prec++) {   /* the shortest text that reads back as d */
    n = snprintf(tmp, sizeof tmp, "%.*g", prec, d);
    if (strtod(tmp, NULL) == d) break;
  }
  ml_buf_add(out, tmp, (size_t)n);
  return 0;
}

int ml_json_is_marked(lua_State *L, int idx) {
  int marked = 0;
  if (lua_getmetatable(L, idx)) {
    lua_getfield(L, LUA_REGISTRYINDEX, ML_ARRAY_MT);
    marked = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
  }
  return marked;
}

/* The key on top of the stack, for an error message. */
static void describe_key(lua_State *L, char *buf, size_t len) {
  if (lua_type(L, -1) == LUA_TSTRING) snprintf(buf, len, "\"%.40s\"", lua_tostring(L, -1));
  else if (lua_type(L, -1) == LUA_TNUMBER) snprintf(buf, len, "%.14g", lua_tonumber(L, -1));
  else snprintf(buf, len, "of type %s", luaL_typename(L, -1));
}

/* The length of the moonlet.array at idx: its `n` field when that is a number
 * (moonlet.array(t, n)), else its largest index (table.maxn). Indexes in between that
 * hold nil are nulls. Returns 0, or -1 with a message: a key that is not an index up to
 * that length, or a length guessed from a largest index with more holes than values. */
static int marked_length(lua_State *L, int idx, size_t *n, char *err, size_t errlen) {
  lua_pushliteral(L, "n");
  lua_rawget(L, idx);
  int given = lua_type(L, -1) == LUA_TNUMBER;
  double len = given ? lua_tonumber(L, -1) : 0;
  lua_pop(L, 1);
  if (given && !(len >= 0 && len <= INT_MAX && len == floor(len))) {
    return ml_err(err, errlen, "cannot encode JSON: moonlet.array length n = %.14g", len);
  }
  double max = 0;
  size_t count = 0;
  char key[64];
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (given && lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "n") == 0)
      continue;
    double k = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : 0;
    int index = k >= 1 && k <= INT_MAX && k == floor(k);
    if (!index || (given && k > len)) {
      describe_key(L, key, sizeof key);
      snprintf(err, errlen, "cannot encode JSON: moonlet.array has key %s%s", key,
               index ? " beyond its length n" : "");
      lua_pop(L, 1);
      return -1;
    }
    if (k > max) max = k;
    count++;
  }
  if (!given && max > 10 && max > 2.0 * (double)count) {   /* cjson's rule for sparse arrays */
    return ml_err(err, errlen, "cannot encode JSON: moonlet.array too sparse (index %.0f, %zu "
                  "values); give its length: moonlet.array(t, n)", max, count);
  }
  *n = (size_t)(given ? len : max);
  return 0;
}

/* 1 if the table at idx encodes as an array, with its length in *n; 0 for an object; -1
 * with a message. A moonlet.array is an array (see marked_length); another table is one
 * when its keys are exactly 1..n, n > 0. */
static int is_array(lua_State *L, int idx, size_t *n, char *err, size_t errlen) {
  if (ml_json_is_marked(L, idx)) return marked_length(L, idx, n, err, errlen) ? -1 : 1;
  lua_rawgeti(L, idx, 1);   /* no [1]: an object, decided without the length's search */
  int first = lua_isnil(L, -1);
  lua_pop(L, 1);
  if (first) return 0;
  size_t len = lua_objlen(L, idx);
  if (len == 0) return 0;
  size_t count = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TNUMBER) { lua_pop(L, 1); return 0; }
    count++;
  }
  *n = len;
  return count == len;
}

static int encode(lua_State *L, int idx, ml_buf_t *out, int depth, char *err, size_t errlen) {
  switch (lua_type(L, idx)) {
  case LUA_TNIL:
    ml_buf_add(out, "null", 4);
    return 0;
  case LUA_TBOOLEAN:
    if (lua_toboolean(L, idx)) ml_buf_add(out, "true", 4);
    else ml_buf_add(out, "false", 5);
    return 0;
  case LUA_TNUMBER:
    return add_number(out, lua_tonumber(L, idx), err, errlen);
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    add_string(out, s, len);
    return 0;
  }
  case LUA_TLIGHTUSERDATA:
    if (lua_touserdata(L, idx) == NULL) {
      ml_buf_add(out, "null", 4);
      return 0;
    }
    break;
  case LUA_TTABLE: {
    if (depth >= MAX_DEPTH) {
      return ml_err(err, errlen, "cannot encode JSON: nested too deep (a cycle?)");
    }
    if (!lua_checkstack(L, 4)) {
      return ml_err(err, errlen, "cannot encode JSON: stack overflow");
    }
    size_t n = 0;
    int array = is_array(L, idx, &n, err, errlen);
    if (array < 0) return -1;
    if (array) {
      ml_buf_addc(out, '[');
      for (size_t i = 1; i <= n; i++) {
        if (i > 1) ml_buf_addc(out, ',');
        lua_rawgeti(L, idx, (int)i);
        int rc = encode(L, lua_gettop(L), out, depth + 1, err, errlen);
        lua_pop(L, 1);
        if (rc) return rc;
      }
      ml_buf_addc(out, ']');
      return 0;
    }
    ml_buf_addc(out, '{');
    int first = 1;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
      int kt = lua_type(L, -2);
      if (kt != LUA_TSTRING && kt != LUA_TNUMBER) {
        lua_pop(L, 2);
        return ml_err(err, errlen, "cannot encode JSON: table key of type %s", lua_typename(L, kt));
      }
      if (!first) ml_buf_addc(out, ',');
      first = 0;
      size_t klen;
      if (kt == LUA_TSTRING) {   /* no conversion: the key lua_next walks stays as it is */
        const char *k = lua_tolstring(L, -2, &klen);
        add_string(out, k, klen);
      } else {
        lua_pushvalue(L, -2);   /* tostring on a copy: never on the key lua_next walks */
        const char *k = lua_tolstring(L, -1, &klen);
        add_string(out, k, klen);
        lua_pop(L, 1);
      }
      ml_buf_addc(out, ':');
      int rc = 0;
      if (lua_type(L, -1) == LUA_TSTRING) {   /* the most common value, without a call */
        size_t vlen;
        const char *v = lua_tolstring(L, -1, &vlen);
        add_string(out, v, vlen);
      } else {
        rc = encode(L, lua_gettop(L), out, depth + 1, err, errlen);
      }
      lua_pop(L, 1);
      if (rc) {
        lua_pop(L, 1);
        return rc;
      }
    }
    ml_buf_addc(out, '}');
    return 0;
  }
  default:
    break;
  }
  return ml_err(err, errlen, "cannot encode a %s as JSON", luaL_typename(L, idx));
}

int ml_json_encode(lua_State *L, int idx, ml_buf_t *out, char *err, size_t errlen) {
  if (idx < 0) idx = lua_gettop(L) + idx + 1;
  size_t mark = out->len;
  int rc = encode(L, idx, out, 0, err, errlen);
  if (rc) out->len = mark;
  return rc;
}

/* --- strict decoding ------------------------------------------------------------------ */

/* A reader that only checks a text against RFC 8259 before lua-cjson builds the value:
 * cjson alone also takes hex, nan, inf, leading zeros or '+', raw control characters and
 * bytes that are not UTF-8 in strings, and numbers that overflow to infinity. Nesting
 * stops at the encoder's depth, so whatever is decoded can be encoded again. */
typedef struct {
  const char *p, *end;
  const char *why;   /* what is wrong at p, once a check failed */
} reader_t;

static int fail(reader_t *r, const char *why) {
  r->why = why;
  return -1;
}

static void skip_space(reader_t *r) {
  while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
    r->p++;
}

static int skip_digits(reader_t *r) {
  const char *start = r->p;
  while (r->p < r->end && *r->p >= '0' && *r->p <= '9') r->p++;
  return r->p > start;
}

static int check_literal(reader_t *r, const char *word) {
  size_t n = strlen(word);
  if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0)
    return fail(r, "unexpected character");
  r->p += n;
  return 0;
}

/* -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?, finite. The text ends in a NUL (a Lua
 * string), so strtod stops there at the latest. */
static int check_number(reader_t *r) {
  const char *start = r->p;
  if (*r->p == '-') r->p++;
  if (r->p < r->end && *r->p == '0') r->p++;
  else if (!skip_digits(r)) return fail(r, "invalid number");
  if (r->p < r->end && *r->p == '.') {
    r->p++;
    if (!skip_digits(r)) return fail(r, "invalid number");
  }
  if (r->p < r->end && (*r->p == 'e' || *r->p == 'E')) {
    r->p++;
    if (r->p < r->end && (*r->p == '+' || *r->p == '-')) r->p++;
    if (!skip_digits(r)) return fail(r, "invalid number");
  }
  if (isinf(strtod(start, NULL))) {
    r->p = start;
    return fail(r, "number out of range");
  }
  return 0;
}

static int is_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int check_string(reader_t *r) {
  r->p++;   /* the opening quote */
  while (r->p < r->end) {
    unsigned char c = (unsigned char)*r->p;
    if (c == '"') {
      r->p++;
      return 0;
    }
    if (c < 0x20) return fail(r, "control character in a string");
    if (c == '\\') {
      char e = r->end - r->p > 1 ? r->p[1] : 0;
      if (e == 'u') {
        if (r->end - r->p < 6 || !is_hex(r->p[2]) || !is_hex(r->p[3]) || !is_hex(r->p[4]) ||
            !is_hex(r->p[5]))
          return fail(r, "invalid \\u escape");
        r->p += 6;
      } else if (e && strchr("\"\\/bfnrt", e)) {
        r->p += 2;
      } else {
        return fail(r, "invalid escape");
      }
      continue;
    }
    size_t n = utf8_len((const unsigned char *)r->p, (size_t)(r->end - r->p));
    if (!n) return fail(r, "invalid UTF-8 in a string");
    r->p += n;
  }
  return fail(r, "unterminated string");
}

static int check_value(reader_t *r, int depth);

/* [ value, ... ] or { "key": value, ... } at depth (the containers around it). */
static int check_container(reader_t *r, int depth) {
  char close = *r->p == '[' ? ']' : '}';
  if (depth >= MAX_DEPTH) return fail(r, "nested too deep");
  r->p++;
  skip_space(r);
  if (r->p < r->end && *r->p == close) {
    r->p++;
    return 0;
  }
  for (;;) {
    if (close == '}') {
      if (r->p >= r->end || *r->p != '"') return fail(r, "expected a string key");
      if (check_string(r)) return -1;
      skip_space(r);
      if (r->p >= r->end || *r->p != ':') return fail(r, "expected ':'");
      r->p++;
    }
    if (check_value(r, depth + 1)) return -1;
    if (r->p < r->end && *r->p == close) {
      r->p++;
      return 0;
    }
    if (r->p >= r->end || *r->p != ',') return fail(r, "expected ',' or a closing bracket");
    r->p++;
    skip_space(r);
  }
}

/* One value and the white space around it. */
static int check_value(reader_t *r, int depth) {
  skip_space(r);
  if (r->p >= r->end) return fail(r, "unexpected end");
  int rc;
  char c = *r->p;
  if (c == '[' || c == '{') rc = check_container(r, depth);
  else if (c == '"') rc = check_string(r);
  else if (c == 't') rc = check_literal(r, "true");
  else if (c == 'f') rc = check_literal(r, "false");
  else if (c == 'n') rc = check_literal(r, "null");
  else if (c == '-' || (c >= '0' && c <= '9')) rc = check_number(r);
  else rc = fail(r, "unexpected character");
  if (rc == 0) skip_space(r);
  return rc;
}

int ml_json_check(const char *s, size_t len, char *err, size_t errlen) {
  reader_t r = {s, s + len, NULL};
  if (check_value(&r, 0) == 0 && r.p < r.end) fail(&r, "unexpected character after the value");
  if (!r.why) return 0;
  return ml_err(err, errlen, "invalid json at byte %d: %s", (int)(r.p - s) + 1, r.why);
}

/* json_decode(s) -> the value, or nil and "invalid json at byte N: why". The text is
 * checked here (see reader_t), then decoded by cjson.decode, the closure's upvalue. */
static int l_decode(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  char why[128];
  if (ml_json_check(s, len, why, sizeof why)) {
    lua_pushnil(L);
    lua_pushstring(L, why);
    return 2;
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushvalue(L, 1);
  if (lua_pcall(L, 1, 1, 0)) {   /* cjson refuses more: a lone surrogate escape (\ud800) */
    lua_pushnil(L);
    lua_pushfstring(L, "invalid json: %s", lua_tostring(L, -2));
    return 2;
  }
  return 1;
}

/* json.encode(value) -> string; raises on values JSON cannot hold. */
static int l_encode(lua_State *L) {
  luaL_checkany(L, 1);
  ml_buf_t b = {0};
  char err[160];
  lua_settop(L, 1);
  if (ml_json_encode(L, 1, &b, err, sizeof err)) {
    ml_buf_free(&b);
    return luaL_error(L, "%s", err);
  }
  lua_pushlstring(L, b.data ? b.data : "", b.len);
  ml_buf_free(&b);
  return 1;
}

/* Installs json_encode(v) -> text (raises on values JSON cannot hold), json_decode(text)
 * -> value, or nil and "invalid json at byte N: why" (strict RFC 8259: no hex, NaN,
 * infinity or numbers that overflow to it, no raw control characters or bytes that are not
 * UTF-8 in strings, nested at most as deep as the encoder goes, so a decoded value can
 * always be encoded again), and array_mt (moonlet.array's metatable). */
void ml_json_open(lua_State *L) {
  lua_pushcfunction(L, l_encode);
  lua_setfield(L, -2, "json_encode");
  lua_getglobal(L, "require");
  lua_pushliteral(L, "cjson");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "decode");
  lua_pushcclosure(L, l_decode, 1);
  lua_setfield(L, -3, "json_decode");
  lua_pop(L, 1);   /* cjson */
  lua_getfield(L, LUA_REGISTRYINDEX, ML_ARRAY_MT);
  lua_setfield(L, -2, "array_mt");
}
