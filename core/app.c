/* The Lua bridge: a request becomes a call of the route's handler inside a coroutine
 * (a task). C matches the route, builds the small req table (method, path, params, body;
 * query and headers are fetched lazily through moonlet.core), resumes the coroutine with
 * moonlet.runtime.dispatch, and turns what it returns (status, body, headers) into bytes
 * in the connection's output buffer. */
#include "app.h"
#include "json.h"
#include "log.h"
#include "lresponse.h"
#include "lstate.h"
#include "copy.h"
#include "pool.h"
#include "response.h"
#include <lauxlib.h>
#include <stdio.h>
#include <strings.h>

/* Takes the runtime's functions (moonlet.runtime) and collects the routes the app on top
 * of the stack declared into the router; pops the app. */
static int load_routes(ml_app_t *a, char *err, size_t errlen) {
  lua_State *L = a->L;
  int app_idx = lua_gettop(L);
  lua_getglobal(L, "require");
  lua_pushstring(L, "moonlet.runtime");
  if (lua_pcall(L, 1, 1, 0)) goto lua_err;
  int rt = lua_gettop(L);
  lua_getfield(L, rt, "dispatch");
  a->dispatch_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_getfield(L, rt, "req_mt");
  a->req_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_getfield(L, rt, "resolve");
  a->resolve_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_getfield(L, rt, "routes");
  lua_pushvalue(L, app_idx);
  if (lua_pcall(L, 1, 1, 0)) goto lua_err;
  int list = lua_gettop(L);
  a->nroutes = (int)lua_objlen(L, list);
  a->routes = calloc((size_t)a->nroutes + 1, sizeof *a->routes);
  if (!a->routes) abort();
  for (int i = 0; i < a->nroutes; i++) {
    lua_rawgeti(L, list, i + 1);
    lua_getfield(L, -1, "mask");
    unsigned mask = (unsigned)lua_tointeger(L, -1);
    lua_getfield(L, -2, "path");
    lua_getfield(L, -3, "methods");
    lua_getfield(L, -4, "pooled");
    a->routes[i].pooled = lua_toboolean(L, -1);
    lua_pop(L, 1);
    ml_route_t *r = &a->routes[i];
    r->pattern = strdup(lua_tostring(L, -2));
    r->methods = strdup(lua_tostring(L, -1));
    lua_pushfstring(L, "%s %s", r->methods, r->pattern);
    r->label = strdup(lua_tostring(L, -1));
    lua_getfield(L, -5, "handler");
    r->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 5);
    if (ml_router_add(a->router, mask, r->pattern, i, err, errlen)) return -1;
  }
  lua_settop(L, app_idx - 1);
  return 0;
lua_err:
  snprintf(err, errlen, "%s", lua_tostring(L, -1));
  return -1;
}

const ml_route_t *ml_app_route(const ml_app_t *a, const char *label, int hint) {
  if (hint >= 0 && hint < a->nroutes && strcmp(a->routes[hint].label, label) == 0)
    return &a->routes[hint];
  for (int i = 0; i < a->nroutes; i++)
    if (strcmp(a->routes[i].label, label) == 0) return &a->routes[i];
  return NULL;
}

static void app_closed_cb(ml_sched_t *s) {
  free(s->app);
}

ml_app_t *ml_app_new(uv_loop_t *loop, const char *appdir, int in_pool, char *err,
                     size_t errlen) {
  ml_app_t *a = calloc(1, sizeof *a);
  if (!a) abort();
  a->loop = loop;
  a->router = ml_router_new();
  a->L = ml_lua_new(appdir);
  if (!a->L) {
    snprintf(err, errlen, "cannot create a Lua state (out of memory)");
    ml_app_free(a);
    return NULL;
  }
  ml_sched_init(&a->sched, a->L, loop);
  a->sched.app = a;
  a->sched.in_pool = in_pool;
  if (ml_lua_load_app(a->L, appdir, err, errlen) || load_routes(a, err, errlen)) {
    ml_app_free(a);
    return NULL;
  }
  return a;
}

void ml_app_stop(ml_app_t *a) {
  if (a && a->L) ml_sched_close(&a->sched);
}

void ml_app_free(ml_app_t *a) {
  if (!a) return;
  int on_loop = a->L != NULL;
  if (on_loop) {
    ml_sched_close(&a->sched);
    lua_close(a->L);
  }
  for (int i = 0; i < a->nroutes; i++) {
    free(a->routes[i].pattern);
    free(a->routes[i].methods);
    free(a->routes[i].label);
  }
  free(a->routes);
  ml_router_free(a->router);
  ml_buf_free(&a->scratch);
  ml_buf_free(&a->decoded);
  /* the scheduler's handles may still be closing: then its close callback frees a */
  if (!on_loop || a->sched.handles_closed) free(a);
  else a->sched.closed_cb = app_closed_cb;
}

/* Hands back a request's task (see ml_app_t.requests). */
static void request_release(ml_task_t *t, int reusable) {
  ((ml_app_t *)t->sched->app)->requests--;
  ml_task_release(t, reusable);
}

static void respond_500(ml_task_t *t, int reusable) {
  ml_conn_t *c = t->owner;
  request_release(t, reusable);
  ml_resp_error(&c->out, 500, "Internal Server Error", NULL, ml_conn_keepalive(c), c->head);
  ml_conn_done(c, 500);
}

/* The coroutine returned (status, body, headers): serialize them into the connection. */
static void finish(ml_task_t *t) {
  ml_app_t *a = t->sched->app;
  ml_conn_t *c = t->owner;
  char err[200];
  int keepalive = ml_conn_keepalive(c);
  int status = ml_lresp_build(t->co, 1, &c->out, &a->scratch, &keepalive, c->head, err,
                              sizeof err);
  if (status < 0) {
    ml_log(ML_LOG_ERROR, "%s: %s", a->routes[t->route].label, err);
    respond_500(t, 1);
    return;
  }
  if (!keepalive) ml_conn_close_after(c);
  request_release(t, 1);
  ml_conn_done(c, status);
}

/* on_done of a request's task (see sched.h) */
static void request_done(ml_task_t *t, int st) {
  ml_app_t *a = t->sched->app;
  if (!t->owner) {   /* the client left while the handler ran: nothing to answer */
    request_release(t, st == 0);
    return;
  }
  if (st == 0) {
    finish(t);
    return;
  }
  ml_log(ML_LOG_ERROR, "%s: %s", a->routes[t->route].label,
         lua_tostring(t->co, -1) ? lua_tostring(t->co, -1) : "error");
  respond_500(t, 0);
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Appends s percent-decoded to out (malformed escapes are kept as they are). */
static void pct_decode(const char *s, size_t len, ml_buf_t *out) {
  for (size_t i = 0; i < len; i++) {
    int hi, lo;
    if (s[i] == '%' && i + 2 < len && (hi = hexval(s[i + 1])) >= 0 &&
        (lo = hexval(s[i + 2])) >= 0) {
      ml_buf_addc(out, (char)(hi * 16 + lo));
      i += 2;
    } else {
      ml_buf_addc(out, s[i]);
    }
  }
}

static void push_decoded(lua_State *L, const char *s, size_t len, ml_buf_t *tmp) {
  if (!memchr(s, '%', len)) {
    lua_pushlstring(L, s, len);
    return;
  }
  tmp->len = 0;
  pct_decode(s, len, tmp);
  lua_pushlstring(L, tmp->data, tmp->len);
}

static void pool_request_done(ml_job_t *j) {
  ml_task_t *t = j->data;
  ml_conn_t *c = t->owner;
  int status = j->status;
  ml_buf_add(&c->out, j->out.data, j->out.len);
  if (!j->keepalive) ml_conn_close_after(c);
  ml_job_free(j);
  request_release(t, 1);
  ml_conn_done(c, status);
}

static void pool_request_cancel(ml_task_t *t) {
  ml_pool_cancel(t->sched->pool, t->wait);
}

/* A pooled route: the request is copied into a job for a pool thread; the task only
 * waits (so a disconnect cancels the job like any other wait). */
static void dispatch_pooled(ml_app_t *a, ml_conn_t *c, ml_match_t *m, const char *path,
                            size_t plen) {
  ml_http_t *h = &c->http;
  ml_job_t *j = ml_job_new(ML_JOB_REQUEST);
  j->keepalive = ml_conn_keepalive(c);
  j->head = c->head;
  ml_buf_t *in = &j->in;
  ml_copy_put_str(in, h->method_name, strlen(h->method_name));
  a->decoded.len = 0;
  pct_decode(path, plen, &a->decoded);
  ml_copy_put_str(in, a->decoded.data ? a->decoded.data : "", a->decoded.len);
  ml_copy_put_str(in, ml_http_url(h), h->url_len);
  if (m->nparams) {
    ml_copy_put_table(in, (uint32_t)m->nparams);
    for (int i = 0; i < m->nparams; i++) {
      ml_copy_put_str(in, m->params[i].name, strlen(m->params[i].name));
      if (m->params[i].is_int) {
        ml_copy_put_num(in, m->params[i].num);
      } else {
        a->decoded.len = 0;
        pct_decode(m->params[i].val, m->params[i].len, &a->decoded);
        ml_copy_put_str(in, a->decoded.data ? a->decoded.data : "", a->decoded.len);
      }
    }
  } else {
    ml_copy_put_nil(in);
  }
  const ml_headers_t *hs = &h->headers;
  ml_copy_put_table(in, (uint32_t)hs->n * 2);   /* { name1, value1, name2, ... } */
  for (int i = 0; i < hs->n; i++) {
    const ml_header_t *hd = &hs->list[i];
    ml_copy_put_num(in, 2 * i + 1);
    ml_copy_put_str(in, hs->store.data + hd->name_off, hd->name_len);
    ml_copy_put_num(in, 2 * i + 2);
    ml_copy_put_str(in, hs->store.data + hd->val_off, hd->val_len);
  }
  ml_copy_put_str(in, h->body.data ? h->body.data : "", h->body.len);
  ml_route_t *r = &a->routes[m->route];
  ml_copy_put_num(in, m->route);
  ml_copy_put_str(in, r->label, strlen(r->label));
  if (!a->pool || ml_pool_submit(a->pool, j)) {
    ml_job_free(j);
    ml_resp_begin(&c->out, 503);
    ml_resp_header(&c->out, "Content-Type", 12, "application/json", 16);
    ml_resp_header(&c->out, "Retry-After", 11, "1", 1);
    static const char body[] = "{\"detail\":\"Service Unavailable\"}";
    ml_resp_end(&c->out, 503, sizeof body - 1, ml_conn_keepalive(c));
    if (!c->head) ml_buf_add(&c->out, body, sizeof body - 1);
    ml_log(ML_LOG_WARN, "%s: pool queue full, answered 503", r->label);
    ml_conn_done(c, 503);
    return;
  }
  ml_task_t *t = ml_task_new(&a->sched, request_done, c);
  a->requests++;
  t->route = m->route;
  t->cancel = pool_request_cancel;
  t->wait = j;
  j->data = t;
  j->done = pool_request_done;
  c->task = t;
}

void ml_app_dispatch(void *ctx, ml_conn_t *c) {
  ml_app_t *a = ctx;
  ml_http_t *h = &c->http;
  const char *url = ml_http_url(h);
  size_t plen = h->url_len;
  const char *q = memchr(url, '?', plen);
  if (q) plen = (size_t)(q - url);
  const char *path = url;
  /* absolute-form targets (GET http://host/path) are routed by their path */
  if (plen > 7 && (strncmp(url, "http://", 7) == 0 || strncmp(url, "https://", 8) == 0)) {
    const char *slash = memchr(url + 8, '/', plen - 8);
    path = slash ? slash : url + plen;
    plen -= (size_t)(path - url);
  }
  ml_match_t m;
  int rc = ml_router_match(a->router, h->method, path, plen, &m);
  if (rc != ML_ROUTE_OK) {
    char allow[96];
    int status = rc == ML_ROUTE_BAD_METHOD ? 405 : 404;
    if (status == 405) ml_router_allow_header(m.allow, allow, sizeof allow);
    ml_resp_error(&c->out, status, status == 405 ? "Method Not Allowed" : "Not Found",
                  status == 405 ? allow : NULL, ml_conn_keepalive(c), c->head);
    ml_conn_done(c, status);
    return;
  }
  if (a->routes[m.route].pooled) {
    dispatch_pooled(a, c, &m, path, plen);
    return;
  }
  ml_task_t *t = ml_task_new(&a->sched, request_done, c);
  a->requests++;
  t->route = m.route;
  c->task = t;
  lua_State *co = t->co;
  lua_rawgeti(co, LUA_REGISTRYINDEX, a->dispatch_ref);
  lua_rawgeti(co, LUA_REGISTRYINDEX, a->routes[m.route].handler_ref);
  lua_createtable(co, 0, 8);
  lua_pushstring(co, h->method_name);
  lua_setfield(co, -2, "method");
  push_decoded(co, path, plen, &a->scratch);
  lua_setfield(co, -2, "path");
  if (m.nparams) {
    lua_createtable(co, 0, m.nparams);
    for (int i = 0; i < m.nparams; i++) {
      if (m.params[i].is_int)
        lua_pushnumber(co, m.params[i].num);
      else
        push_decoded(co, m.params[i].val, m.params[i].len, &a->scratch);
      lua_setfield(co, -2, m.params[i].name);
    }
    lua_setfield(co, -2, "params");
  }
  lua_pushlstring(co, h->body.data ? h->body.data : "", h->body.len);
  lua_setfield(co, -2, "body");
  lua_pushlightuserdata(co, t);
  lua_setfield(co, -2, "_t");
  lua_pushnumber(co, t->gen);
  lua_setfield(co, -2, "_g");
  lua_rawgeti(co, LUA_REGISTRYINDEX, a->req_mt_ref);
  lua_setmetatable(co, -2);
  ml_task_resume(t, 2);
}

void ml_app_abort(void *ctx, void *task) {
  (void)ctx;
  ml_task_t *t = task;
  t->owner = NULL;
  if (t->sched->current == t) return;   /* running now: request_done drops it */
  ml_task_cancel(t);
  request_release(t, 0);
}

/* --- lazy request fields (moonlet.core) ------------------------------------------------ */

/* The connection behind req._t/req._g, or raises if that request is over. */
static ml_conn_t *req_conn(lua_State *L) {
  ml_task_t *t = lua_touserdata(L, 1);
  unsigned gen = (unsigned)luaL_checknumber(L, 2);
  if (!t || t->gen != gen || !t->owner || t->on_done != request_done)
    luaL_error(L, "this request is finished: read req.headers/req.query while handling it");
  return t->owner;
}

/* req_url(t, g) -> the request target as received ("/path?query") */
static int l_req_url(lua_State *L) {
  ml_conn_t *c = req_conn(L);
  lua_pushlstring(L, ml_http_url(&c->http), c->http.url_len);
  return 1;
}

/* req_headers(t, g) -> { name = value } with lower-case names; repeated headers are
 * joined with ", " (cookies with "; "). */
static int l_req_headers(lua_State *L) {
  ml_conn_t *c = req_conn(L);
  ml_headers_push(L, &c->http.headers);
  return 1;
}

/* route_of(t) -> "GET /items/{id}" of the task's route, for error messages */
static int l_route_of(lua_State *L) {
  ml_task_t *t = lua_touserdata(L, 1);
  ml_app_t *a = t ? t->sched->app : NULL;
  if (!a || t->route < 0 || t->route >= a->nroutes) return 0;
  lua_pushstring(L, a->routes[t->route].label);
  return 1;
}

void ml_app_open(lua_State *L) {
  static const luaL_Reg fns[] = {{"req_url", l_req_url}, {"req_headers", l_req_headers},
                                 {"route_of", l_route_of}, {NULL, NULL}};
  luaL_register(L, NULL, fns);
}
