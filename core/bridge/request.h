/* The request as Lua sees it: the `req` a handler gets, made by the same code for both
 * kinds of route. A request record (ml_request_t) points at the parts of a request:
 * ml_request_from_conn fills it from a connection (on the loop); ml_request_pack copies it,
 * with its route match, for a worker thread, where ml_request_unpack fills a record from
 * the copy. ml_request_push then makes `req` from a record and a match, on the loop (a
 * coroutine route) or on the thread (a pooled route) alike: method, path, params and body
 * at once; url, query and headers on first use (moonlet.core's req_* functions, called by
 * lua/moonlet/request.lua, which adds the methods). Percent-decoding lives here, once.
 * A record outlives its request: records are recycled, never freed while the Lua state that
 * holds their `req` lives, so a `req` kept past its request finds out (ml_request_end
 * changes the generation it carries) instead of reading freed memory. */
#ifndef ML_REQUEST_H
#define ML_REQUEST_H
#include "buf.h"
#include "headers.h"
#include "router.h"
#include "sched.h"
#include "stream.h"
#include "upload.h"
#include <lua.h>

typedef struct ml_server_conn_s ml_server_conn_t;
typedef struct ml_request_s ml_request_t;

struct ml_request_s {
  /* read-only: slices of the connection's parser or of a copy, valid while it is open */
  const char *method;        /* "GET" (a static string) */
  const char *target;        /* as received: "/items/a%20b?q=1" */
  size_t target_len;
  const char *path;          /* in target, without query or scheme://authority; encoded */
  size_t path_len;
  const ml_headers_t *headers;
  const char *body;          /* "" for a multipart/form-data body: its parts are in form */
  size_t body_len;
  const char *form;          /* the parts of a multipart body (upload.h's packed fields) */
  size_t form_len;
  int form_count;            /* how many; -1 when the body was not taken as multipart */
  /* public (beside form_count: no padding) */
  int after_ref;             /* registry ref of its after-work (req:defer, req:background)
                              * in the state its req lives in; 0 if none */
  /* public */
  const char *route;         /* the route's label ("GET /items/{id}"), for logs */
  ml_server_conn_t *conn;           /* on the loop: its connection; NULL once the client left */
  const char *peer;          /* a copy's peer address (ml_server_conn_client); NULL on the
                              * loop, where req_peer asks the connection */
  int tls;                   /* 1: it came over TLS (req.scheme "https") */
  ml_match_t *match;         /* a pooled route behind middleware: its match, for the hop
                              * (owned; NULL for the others: 656 bytes most never need) */
  struct ml_ws_s *ws;        /* an app:websocket route's, once it answered 101 (websocket.h):
                              * the connection is then the WebSocket's, not the request's */
  /* private */
  ml_upload_t *upload;       /* owned: its files go when the record is released */
  ml_stream_t *stream;       /* owned: a response in pieces (stream.h), NULL if none */
  unsigned gen;              /* carried by its req; changes when the request ends */
  ml_request_t *next_spare;
};

/* A request copied for another thread. It owns its bytes; reuse it for the next request
 * (ml_request_pack empties it first) and free it with ml_request_copy_free. */
typedef struct {
  ml_headers_t headers;
  ml_buf_t bytes;            /* the target, the route label, the params' names, the body,
                                the multipart parts (the files stay where they are) */
  const char *method;
  size_t target_len, path_off, path_len, route_off, body_off, body_len, form_off, form_len;
  size_t peer_off;
  int tls;
  int form_count;
  int nparams;
  struct {
    size_t name_off, val_off, val_len;   /* the value is a slice of the target */
    int is_int;
    double num;
  } params[ML_MAX_PARAMS];
} ml_request_copy_t;

/* The request is over: its req (which a handler may have kept) can no longer read the
 * lazy fields. Calling it again does no harm. */
static inline void ml_request_end(ml_request_t *r) {
  r->gen++;
  r->conn = NULL;
}

/* A record from the spares (or a new one); ml_request_release gives it back, ended. */
static inline ml_request_t *ml_request_new(ml_request_t **spares) {
  ml_request_t *r = *spares;
  if (r) {
    *spares = r->next_spare;
    return r;
  }
  r = calloc(1, sizeof *r);
  if (!r) abort();
  return r;
}

static inline void ml_request_release(ml_request_t *r, ml_request_t **spares) {
  ml_request_end(r);
  free(r->match);
  r->match = NULL;
  ml_upload_free(r->upload);
  r->upload = NULL;
  ml_stream_free(r->stream);
  r->stream = NULL;
  r->next_spare = *spares;
  *spares = r;
}

/* A request's after-work, if its handler registered any (req:defer, req:background):
 * runs runtime.after(work, err) as a detached task of s (its first argument pushed from
 * the registry of L's state by work_ref, which goes; fn_ref is runtime.after); err says why the request ended
 * early (NULL when it ran to its end). Call it once the response has gone out, or when
 * the request is dropped. Does nothing for a request without after-work. */
void ml_request_after(lua_State *L, ml_sched_t *s, int work_ref, int fn_ref,
                      const char *err);
/* The open request behind (_r, _g) at stack slots 1 and 2 (moonlet.core's req_* functions
 * take them), or raises. */
ml_request_t *ml_request_check(lua_State *L);
/* Takes r's after-work reference (0 if none) out of r, for ml_request_after. */
static inline int ml_request_take_after(ml_request_t *r) {
  int ref = r->after_ref;
  r->after_ref = 0;
  return ref;
}

/* Frees the spares, when the Lua state their reqs were pushed into is gone. */
void ml_request_free_spares(ml_request_t **spares);

/* The path of a request target: without its query, and without scheme://authority for an
 * absolute-form target (GET http://host/path); still percent-encoded. */
const char *ml_request_target_path(const char *target, size_t len, size_t *path_len);
/* Points r at the request c has just read, taking over its upload if it has one (r->route
 * is left to the caller). */
void ml_request_from_conn(ml_request_t *r, ml_server_conn_t *c);
/* r's connection parses no more (it was upgraded): its url and headers give back their
 * spare room, and r's slices follow them. */
void ml_request_shrink(ml_request_t *r);
/* Pops req's metatable (moonlet.runtime.req_mt) and returns a registry reference to what
 * ml_request_push needs in this state: the metatable and req's field names. */
int ml_request_refs(lua_State *L);
/* Pushes req for r with the path parameters of m (decoded here); refs_ref is what
 * ml_request_refs returned in L's state. */
void ml_request_push(lua_State *L, ml_request_t *r, const ml_match_t *m, int refs_ref);
/* Copies r and m into cp. */
void ml_request_pack(const ml_request_t *r, const ml_match_t *m, ml_request_copy_t *cp);
/* Points r at the request in cp and fills m with its params; both read from cp's memory. */
void ml_request_unpack(ml_request_t *r, const ml_request_copy_t *cp, ml_match_t *m);
/* A copy kept for reuse gives back the memory beyond `keep` bytes per buffer that a large
 * request made it take. */
void ml_request_copy_trim(ml_request_copy_t *cp, size_t keep);
void ml_request_copy_free(ml_request_copy_t *cp);

#endif
