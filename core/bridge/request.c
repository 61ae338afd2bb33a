/* The request as Lua sees it (see request.h). */
#include "request.h"
#include "copy.h"
#include "core.h"
#include "server.h"
#include <lauxlib.h>

/* --- records ------------------------------------------------------------------------- */

void ml_request_free_spares(ml_request_t **spares) {
  while (*spares) {
    ml_request_t *r = *spares;
    *spares = r->next_spare;
    free(r);
  }
}

const char *ml_request_target_path(const char *target, size_t len, size_t *path_len) {
  const char *q = memchr(target, '?', len);
  if (q) len = (size_t)(q - target);
  const char *path = target;
  if (len > 7 && (strncmp(target, "http://", 7) == 0 || strncmp(target, "https://", 8) == 0)) {
    const char *slash = memchr(target + 8, '/', len - 8);
    path = slash ? slash : target + len;
    len -= (size_t)(path - target);
  }
  *path_len = len;
  return path;
}

void ml_request_from_conn(ml_request_t *r, ml_server_conn_t *c) {
  ml_http_t *h = &c->http;
  r->method = h->method_name;
  r->target = ml_http_url(h);
  r->target_len = h->url_len;
  r->path = ml_request_target_path(r->target, r->target_len, &r->path_len);
  r->headers = &h->headers;
  r->body = h->body.data ? h->body.data : "";
  r->body_len = h->body.len;
  r->upload = ml_http_take_upload(h);
  r->form_count = -1;
  if (r->upload) r->form = ml_upload_fields(r->upload, &r->form_len, &r->form_count);
  r->conn = c;
  r->peer = NULL;
  r->tls = ml_server_conn_is_tls(c);
  r->ws = NULL;
}

void ml_request_shrink(ml_request_t *r) {
  ml_http_t *h = &r->conn->http;
  size_t path_off = (size_t)(r->path - r->target);
  ml_headers_shrink(&h->headers);
  r->target = ml_http_url(h);
  r->path = r->target + path_off;
}

/* --- percent-decoding ------------------------------------------------------------------ */

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* 1 if s has something push_decoded changes: a '%', or with `plus` a '+'. */
static int has_escapes(const char *s, size_t len, int plus) {
  for (size_t i = 0; i < len; i++)
    if (s[i] == '%' || (plus && s[i] == '+')) return 1;
  return 0;
}

/* Pushes s percent-decoded; with `plus`, a '+' is a space (query strings and forms). A
 * malformed escape is kept as it is. */
static void push_decoded(lua_State *L, const char *s, size_t len, int plus) {
  if (!has_escapes(s, len, plus)) {
    lua_pushlstring(L, s, len);
    return;
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (size_t i = 0; i < len; i++) {
    int hi, lo;
    if (s[i] == '%' && i + 2 < len && (hi = hexval(s[i + 1])) >= 0 &&
        (lo = hexval(s[i + 2])) >= 0) {
      luaL_addchar(&b, (char)(hi * 16 + lo));
      i += 2;
    } else {
      luaL_addchar(&b, plus && s[i] == '+' ? ' ' : s[i]);
    }
  }
  luaL_pushresult(&b);
}

/* Sets t[key] = value, a repeated key making a list ({ first, second, ... }). The stack
 * ends in t, key, value; key and value are popped. */
static void add_field(lua_State *L) {
  lua_pushvalue(L, -2);
  lua_rawget(L, -4);   /* t, key, value, old */
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_rawset(L, -3);
  } else if (lua_istable(L, -1)) {
    lua_insert(L, -2);   /* t, key, list, value */
    lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
    lua_pop(L, 2);
  } else {
    lua_createtable(L, 2, 0);
    lua_insert(L, -3);   /* t, key, list, value, old */
    lua_rawseti(L, -3, 1);
    lua_rawseti(L, -2, 2);
    lua_rawset(L, -3);
  }
}

/* Pushes the fields of an application/x-www-form-urlencoded string (a query string, a
 * form body): "a=1&b=2&a=3" -> { a = { "1", "3" }, b = "2" }. Keys and values are
 * percent-decoded; a field without "=" has the value "", an empty one is skipped. */
static void push_urlencoded(lua_State *L, const char *s, size_t len) {
  enum { KNOWN_MAX = 16 };
  struct { const char *p; size_t len; } known[KNOWN_MAX];   /* the keys so far, as sent */
  int nknown = 0, plain = 1;   /* plain: no key so far had escapes, all are in known */
  const char *end = s + len;
  int fields = len > 0;   /* sized once: growing a table rehashes it at 1, 2, 4, ... */
  for (const char *p = s; (p = memchr(p, '&', (size_t)(end - p))); p++) fields++;
  lua_createtable(L, 0, fields);
  while (s < end) {
    const char *amp = memchr(s, '&', (size_t)(end - s));
    const char *field_end = amp ? amp : end;
    if (field_end > s) {
      const char *eq = memchr(s, '=', (size_t)(field_end - s));
      size_t klen = (size_t)((eq ? eq : field_end) - s);
      int fresh = 0;   /* a key not seen before: set without looking (add_field looks) */
      if (plain && (nknown == KNOWN_MAX || has_escapes(s, klen, 1))) plain = 0;
      if (plain) {
        fresh = 1;
        for (int i = 0; i < nknown && fresh; i++)
          fresh = !(known[i].len == klen && memcmp(known[i].p, s, klen) == 0);
        if (fresh) known[nknown].p = s, known[nknown++].len = klen;
      }
      push_decoded(L, s, klen, 1);
      if (eq) push_decoded(L, eq + 1, (size_t)(field_end - eq - 1), 1);
      else lua_pushliteral(L, "");
      if (fresh) lua_rawset(L, -3);
      else add_field(L);
    }
    s = field_end + 1;
  }
}

/* --- req ----------------------------------------------------------------------------- */

/* Pushes req.params: the route's path parameters, {name:int} ones as numbers. */
static void push_params(lua_State *L, const ml_match_t *m) {
  lua_createtable(L, 0, m->nparams);
  for (int i = 0; i < m->nparams; i++) {
    if (m->params[i].is_int) lua_pushnumber(L, m->params[i].num);
    else push_decoded(L, m->params[i].val, m->params[i].len, 0);
    lua_setfield(L, -2, m->params[i].name);
  }
}

/* The slots of the table ml_request_refs makes: req's metatable, then the names of the
 * fields ml_request_push sets, interned once (lua_setfield would hash each one per
 * request), then the common methods' names. */
enum { REF_MT = 1, KEY_METHOD, KEY_PATH, KEY_PARAMS, KEY_BODY, KEY_R, KEY_G, NAME_GET, NAME_POST };
static const char *const ref_names[] = {NULL, NULL, "method", "path", "params", "body", "_r",
                                        "_g", "GET", "POST"};
#define NREFS ((int)(sizeof ref_names / sizeof ref_names[0]) - 1)

static const char refs_key = 0;   /* the registry keeps the state's refs_ref under &refs_key */

int ml_request_refs(lua_State *L) {
  lua_createtable(L, NREFS, 0);
  lua_insert(L, -2);
  lua_rawseti(L, -2, REF_MT);
  for (int i = REF_MT + 1; i <= NREFS; i++) {
    lua_pushstring(L, ref_names[i]);
    lua_rawseti(L, -2, i);
  }
  int ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushlightuserdata(L, (void *)&refs_key);   /* for req_make */
  lua_pushinteger(L, ref);
  lua_rawset(L, LUA_REGISTRYINDEX);
  return ref;
}

void ml_request_push(lua_State *L, ml_request_t *r, const ml_match_t *m, int refs_ref) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, refs_ref);
  int refs = lua_gettop(L);
  lua_createtable(L, 0, 8);
  int req = refs + 1;
  lua_rawgeti(L, refs, KEY_METHOD);
  if (strcmp(r->method, "GET") == 0) lua_rawgeti(L, refs, NAME_GET);
  else if (strcmp(r->method, "POST") == 0) lua_rawgeti(L, refs, NAME_POST);
  else lua_pushstring(L, r->method);
  lua_rawset(L, req);
  lua_rawgeti(L, refs, KEY_PATH);
  push_decoded(L, r->path, r->path_len, 0);
  lua_rawset(L, req);
  if (m->nparams) {   /* without any, req.params is made on first use */
    lua_rawgeti(L, refs, KEY_PARAMS);
    push_params(L, m);
    lua_rawset(L, req);
  }
  lua_rawgeti(L, refs, KEY_BODY);
  lua_pushlstring(L, r->body, r->body_len);
  lua_rawset(L, req);
  lua_rawgeti(L, refs, KEY_R);
  lua_pushlightuserdata(L, r);
  lua_rawset(L, req);
  lua_rawgeti(L, refs, KEY_G);
  lua_pushnumber(L, r->gen);
  lua_rawset(L, req);
  lua_rawgeti(L, refs, REF_MT);
  lua_setmetatable(L, req);
  lua_remove(L, refs);
}

/* --- copies for another thread --------------------------------------------------------- */

void ml_request_pack(const ml_request_t *r, const ml_match_t *m, ml_request_copy_t *cp) {
  ml_buf_t *b = &cp->bytes;
  b->len = 0;
  ml_buf_add(b, r->target, r->target_len);
  cp->method = r->method;
  cp->target_len = r->target_len;
  cp->path_off = (size_t)(r->path - r->target);
  cp->path_len = r->path_len;
  cp->route_off = b->len;
  ml_buf_add(b, r->route, strlen(r->route) + 1);
  const char *peer = r->peer ? r->peer : r->conn ? ml_server_conn_client(r->conn) : "-";
  cp->peer_off = b->len;
  cp->tls = r->tls;
  ml_buf_add(b, peer, strlen(peer) + 1);
  cp->nparams = m->nparams;
  for (int i = 0; i < m->nparams; i++) {
    cp->params[i].name_off = b->len;
    ml_buf_add(b, m->params[i].name, strlen(m->params[i].name) + 1);
    cp->params[i].val_off = (size_t)(m->params[i].val - r->target);
    cp->params[i].val_len = m->params[i].len;
    cp->params[i].is_int = m->params[i].is_int;
    cp->params[i].num = m->params[i].num;
  }
  cp->body_off = b->len;
  cp->body_len = r->body_len;
  ml_buf_add(b, r->body, r->body_len);
  cp->form_off = b->len;
  cp->form_len = r->form_count >= 0 ? r->form_len : 0;
  cp->form_count = r->form_count;
  ml_buf_add(b, r->form, cp->form_len);
  ml_headers_copy(&cp->headers, r->headers);
}

void ml_request_unpack(ml_request_t *r, const ml_request_copy_t *cp, ml_match_t *m) {
  const char *base = cp->bytes.data;
  r->method = cp->method;
  r->target = base;
  r->target_len = cp->target_len;
  r->path = base + cp->path_off;
  r->path_len = cp->path_len;
  r->headers = &cp->headers;
  r->body = base + cp->body_off;
  r->body_len = cp->body_len;
  r->form = base + cp->form_off;
  r->form_len = cp->form_len;
  r->form_count = cp->form_count;
  r->upload = NULL;   /* the files belong to the job on the loop */
  r->route = base + cp->route_off;
  r->peer = base + cp->peer_off;
  r->tls = cp->tls;
  r->conn = NULL;
  m->nparams = cp->nparams;
  for (int i = 0; i < cp->nparams; i++) {
    m->params[i].name = base + cp->params[i].name_off;
    m->params[i].val = base + cp->params[i].val_off;
    m->params[i].len = cp->params[i].val_len;
    m->params[i].is_int = cp->params[i].is_int;
    m->params[i].num = cp->params[i].num;
  }
}

void ml_request_copy_trim(ml_request_copy_t *cp, size_t keep) {
  ml_buf_reset(&cp->bytes, keep);
  if (cp->headers.store.cap > keep) ml_headers_free(&cp->headers);
}

void ml_request_copy_free(ml_request_copy_t *cp) {
  ml_buf_free(&cp->bytes);
  ml_headers_free(&cp->headers);
}

/* --- the lazy fields (moonlet.core, for lua/moonlet/request.lua) -----------------------
 * Each takes req._r and req._g and reads the request while it is open. */

ml_request_t *ml_request_check(lua_State *L) {
  ml_request_t *r = lua_type(L, 1) == LUA_TLIGHTUSERDATA ? lua_touserdata(L, 1) : NULL;
  unsigned gen = (unsigned)luaL_checknumber(L, 2);
  if (!r || r->gen != gen)
    luaL_error(L, "this request is finished: read req.headers/req.query while handling it");
  return r;
}

/* req_make(r, g) -> req, for a route whose handler took none (moonlet.runtime.dispatch:
 * its error page or its stream needs one). Its path parameters are not there: the handler
 * that could have read them did not ask. */
static int l_req_make(lua_State *L) {
  ml_request_t *r = ml_request_check(L);
  lua_pushlightuserdata(L, (void *)&refs_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  int refs_ref = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  ml_match_t none;
  none.nparams = 0;
  ml_request_push(L, r, &none, refs_ref);
  return 1;
}

/* req_url(r, g) -> the request target as received ("/path?query") */
static int l_req_url(lua_State *L) {
  ml_request_t *r = ml_request_check(L);
  lua_pushlstring(L, r->target, r->target_len);
  return 1;
}

/* req_peer(r, g) -> the peer's "1.2.3.4:5678" / "[::1]:5678", "-" if unknown */
static int l_req_peer(lua_State *L) {
  ml_request_t *r = ml_request_check(L);
  lua_pushstring(L, r->peer ? r->peer : r->conn ? ml_server_conn_client(r->conn) : "-");
  return 1;
}

/* req_scheme(r, g) -> "https" for a request that came over TLS, else "http" (a proxy's
 * word is proxy.lua's) */
static int l_req_scheme(lua_State *L) {
  ml_request_t *r = ml_request_check(L);
  lua_pushstring(L, r->tls ? "https" : "http");
  return 1;
}

/* req_query(r, g) -> the query string's fields, percent-decoded (see push_urlencoded) */
static int l_req_query(lua_State *L) {
  ml_request_t *r = ml_request_check(L);
  const char *q = memchr(r->target, '?', r->target_len);
  size_t qlen = q ? r->target_len - (size_t)(q - r->target) - 1 : 0;
  push_urlencoded(L, q ? q + 1 : "", qlen);
  return 1;
}

/* req_headers(r, g) -> { name = value } with lower-case names; repeated headers are
 * joined with ", " (cookies with "; "). */
static int l_req_headers(lua_State *L) {
  ml_request_t *r = ml_request_check(L);
  ml_headers_push(L, r->headers);
  return 1;
}

/* req_header(r, g, name) -> the value of one header (name in lower case), repeated ones
 * joined as req.headers joins them, or nil: one header without building req.headers. */
static int l_req_header(lua_State *L) {
  ml_request_t *r = ml_request_check(L);
  size_t nlen, len;
  const char *name = luaL_checklstring(L, 3, &nlen);
  int at = 0;
  const char *v = ml_headers_next(r->headers, name, &at, &len);
  if (!v) return 0;
  size_t len2;
  const char *v2 = ml_headers_next(r->headers, name, &at, &len2);
  if (!v2) {
    lua_pushlstring(L, v, len);
    return 1;
  }
  const char *sep = nlen == 6 && memcmp(name, "cookie", 6) == 0 ? "; " : ", ";
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addlstring(&b, v, len);
  for (; v2; v2 = ml_headers_next(r->headers, name, &at, &len2)) {
    luaL_addstring(&b, sep);
    luaL_addlstring(&b, v2, len2);
  }
  luaL_pushresult(&b);
  return 1;
}

static int is_ows(char c) { return c == ' ' || c == '\t'; }

/* Adds the pairs of one Cookie header value ("a=1; b=2") to the table on top. A pair
 * without a name or "=" is skipped; a value in double quotes loses them; the first of a
 * repeated name wins (browsers send the most specific cookie first, RFC 6265 5.4). */
static void add_cookie_pairs(lua_State *L, const char *s, size_t len) {
  size_t i = 0;
  while (i < len) {
    size_t start = i;
    while (i < len && s[i] != ';') i++;
    size_t end = i++;
    while (start < end && is_ows(s[start])) start++;
    const char *eq = memchr(s + start, '=', end - start);
    if (!eq) continue;
    size_t nend = (size_t)(eq - s), vstart = nend + 1;
    while (nend > start && is_ows(s[nend - 1])) nend--;
    while (vstart < end && is_ows(s[vstart])) vstart++;
    while (end > vstart && is_ows(s[end - 1])) end--;
    if (nend == start) continue;
    if (end - vstart >= 2 && s[vstart] == '"' && s[end - 1] == '"') vstart++, end--;
    lua_pushlstring(L, s + start, nend - start);
    lua_pushvalue(L, -1);
    lua_rawget(L, -3);
    int seen = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (seen) {
      lua_pop(L, 1);
      continue;
    }
    lua_pushlstring(L, s + vstart, end - vstart);
    lua_rawset(L, -3);
  }
}

/* req_cookies(r, g) -> { name = value } from every Cookie header */
static int l_req_cookies(lua_State *L) {
  ml_request_t *r = ml_request_check(L);
  lua_newtable(L);
  int at = 0;
  size_t len;
  const char *v;
  while ((v = ml_headers_next(r->headers, "cookie", &at, &len))) add_cookie_pairs(L, v, len);
  return 1;
}

/* req_after(r, g, work): keeps work (the table req:defer and req:background fill) for
 * when the request ends; see ml_request_after. */
static int l_req_after(lua_State *L) {
  ml_request_t *r = ml_request_check(L);
  luaL_checktype(L, 3, LUA_TTABLE);
  if (r->after_ref) luaL_unref(L, LUA_REGISTRYINDEX, r->after_ref);
  lua_settop(L, 3);
  r->after_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

void ml_request_after(lua_State *L, ml_sched_t *s, int work_ref, int fn_ref,
                      const char *err) {
  if (!work_ref) return;
  lua_rawgeti(L, LUA_REGISTRYINDEX, fn_ref);
  lua_rawgeti(L, LUA_REGISTRYINDEX, work_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, work_ref);
  if (err) lua_pushstring(L, err);
  else lua_pushnil(L);
  ml_spawn(L, s, 2, 1);   /* a request's work: a graceful stop waits for it */
}

/* req_log_id(r, g, id): the request's access log line ends with " id=<id>" (a request
 * id middleware). Does nothing once the client has left. */
static int l_req_log_id(lua_State *L) {
  ml_request_t *r = ml_request_check(L);
  size_t len;
  const char *id = luaL_checklstring(L, 3, &len);
  if (r->conn) ml_server_conn_log_id(r->conn, id, len);
  return 0;
}

/* random_id() -> 32 hex digits from the system's CSPRNG (uv_random: getrandom(2)) */
static int l_random_id(lua_State *L) {
  unsigned char b[16];
  char hex[33];
  if (uv_random(NULL, NULL, b, sizeof b, 0, NULL) != 0) return luaL_error(L, "random_id: no entropy");
  for (int i = 0; i < 16; i++) {
    hex[2 * i] = "0123456789abcdef"[b[i] >> 4];
    hex[2 * i + 1] = "0123456789abcdef"[b[i] & 15];
  }
  lua_pushlstring(L, hex, 32);
  return 1;
}

/* req_route(r) -> "GET /items/{id}", the label of req's route, for error messages. The
 * label stays until the record is reused, after the handler's results are in. */
static int l_req_route(lua_State *L) {
  ml_request_t *r = lua_type(L, 1) == LUA_TLIGHTUSERDATA ? lua_touserdata(L, 1) : NULL;
  if (!r || !r->route) return 0;
  lua_pushstring(L, r->route);
  return 1;
}

/* req_parts(r, g) -> the parts of a multipart/form-data body, name -> value (a string for
 * a text field, { filename, content_type, size, path } for a file; a repeated name gives a
 * list), or nil when the body was not taken as multipart. */
static int l_req_parts(lua_State *L) {
  ml_request_t *r = ml_request_check(L);
  if (r->form_count < 0) return 0;
  lua_createtable(L, 0, r->form_count);
  lua_newtable(L);   /* name -> how many parts have it so far */
  ml_copy_reader_t rd = {r->form, r->form + r->form_len};
  for (int i = 0; i < r->form_count; i++) {
    if (ml_copy_next(L, &rd) || ml_copy_next(L, &rd)) return luaL_error(L, "corrupt parts");
    /* form, counts, name, value */
    lua_pushvalue(L, -2);
    lua_rawget(L, -4);
    int n = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    lua_pushvalue(L, -2);
    lua_pushinteger(L, n + 1);
    lua_rawset(L, -5);
    if (n == 0) {
      lua_rawset(L, -4);
      continue;
    }
    lua_pushvalue(L, -2);
    lua_rawget(L, -5);   /* form, counts, name, value, old */
    if (n == 1) {
      lua_createtable(L, 2, 0);
      lua_insert(L, -2);
      lua_rawseti(L, -2, 1);   /* form, counts, name, value, list */
      lua_insert(L, -2);
      lua_rawseti(L, -2, 2);
      lua_rawset(L, -4);
    } else {
      lua_insert(L, -2);
      lua_rawseti(L, -2, n + 1);
      lua_pop(L, 2);
    }
  }
  lua_pop(L, 1);
  return 1;
}

/* req_form(s) -> the fields of a form body (see push_urlencoded) */
static int l_req_form(lua_State *L) {
  size_t len;
  const char *s = luaL_optlstring(L, 1, "", &len);
  push_urlencoded(L, s, len);
  return 1;
}

void ml_request_open(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"req_url", l_req_url},   {"req_query", l_req_query},
      {"req_headers", l_req_headers}, {"req_route", l_req_route},
      {"req_form", l_req_form}, {"req_cookies", l_req_cookies},
      {"req_after", l_req_after}, {"req_log_id", l_req_log_id},
      {"random_id", l_random_id}, {"req_parts", l_req_parts},
      {"req_header", l_req_header}, {"req_peer", l_req_peer},
      {"req_scheme", l_req_scheme}, {"req_make", l_req_make},
      {NULL, NULL}};
  luaL_register(L, NULL, fns);
}
