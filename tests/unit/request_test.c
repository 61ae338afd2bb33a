/* Request copies (request.h): what a worker thread unpacks is the request the loop packed,
 * held in the copy's own memory, and a copy reused for a smaller request holds only that. */
#include "request.h"
#include "unit.h"
#include <stdlib.h>

static ml_router_t *router;

/* A record for `target` as the loop would have it, matched by the router into m. */
static void record(ml_request_t *r, char *target, ml_headers_t *hs, const char *body,
                   ml_match_t *m) {
  memset(r, 0, sizeof *r);
  r->method = "GET";
  r->target = target;
  r->target_len = strlen(target);
  r->path = target;
  char *q = strchr(target, '?');
  r->path_len = q ? (size_t)(q - target) : r->target_len;
  r->headers = hs;
  r->body = body;
  r->body_len = strlen(body);
  r->route = "GET /items/{id:int}/tags/{tag}";
  CHECK_EQ_INT(ml_router_match(router, ML_M_GET, r->path, r->path_len, m), ML_ROUTE_OK);
}

static void add_header(ml_headers_t *hs, const char *name, const char *value) {
  ml_headers_name(hs, name, strlen(name));
  ml_headers_value(hs, value, strlen(value));
  ml_headers_value_done(hs);
}

static int slice_is(const char *s, size_t len, const char *want) {
  return len == strlen(want) && memcmp(s, want, len) == 0;
}

TEST(unpacks_what_was_packed_from_its_own_memory) {
  char target[] = "/items/42/tags/a%20b?x=1";
  ml_headers_t hs = {0};
  add_header(&hs, "X-One", "1");
  add_header(&hs, "Cookie", "a=1");
  ml_request_t r;
  ml_match_t m;
  record(&r, target, &hs, "{\"k\":1}", &m);
  ml_request_copy_t cp = {0};
  ml_request_pack(&r, &m, &cp);
  memset(target, 'z', sizeof target - 1);   /* the loop reuses its buffers */
  ml_headers_free(&hs);

  ml_request_t u;
  ml_match_t um;
  ml_request_unpack(&u, &cp, &um);
  CHECK_EQ_STR(u.method, "GET");
  CHECK(slice_is(u.target, u.target_len, "/items/42/tags/a%20b?x=1"));
  CHECK(slice_is(u.path, u.path_len, "/items/42/tags/a%20b"));
  CHECK(slice_is(u.body, u.body_len, "{\"k\":1}"));
  CHECK_EQ_STR(u.route, "GET /items/{id:int}/tags/{tag}");
  CHECK(u.conn == NULL);
  CHECK_EQ_INT(um.nparams, 2);
  CHECK_EQ_STR(um.params[0].name, "id");
  CHECK_EQ_INT(um.params[0].is_int, 1);
  CHECK_EQ_INT(um.params[0].num, 42);
  CHECK_EQ_STR(um.params[1].name, "tag");
  CHECK(slice_is(um.params[1].val, um.params[1].len, "a%20b"));   /* decoded on push */
  size_t len;
  const char *v = ml_headers_get(u.headers, "cookie", &len);
  CHECK(v && slice_is(v, len, "a=1"));
  v = ml_headers_get(u.headers, "x-one", &len);
  CHECK(v && slice_is(v, len, "1"));
  CHECK_EQ_INT(u.headers->n, 2);
  ml_request_copy_free(&cp);
}

TEST(a_reused_copy_holds_only_the_new_request) {
  char big[] = "/items/1/tags/long-long-long-long?q=1";
  char small[] = "/items/2/tags/s";
  ml_headers_t hs = {0}, none = {0};
  add_header(&hs, "X-Big", "yes");
  ml_request_t r;
  ml_match_t m;
  ml_request_copy_t cp = {0};
  record(&r, big, &hs, "a body", &m);
  ml_request_pack(&r, &m, &cp);
  ml_request_copy_trim(&cp, 0);   /* as a spare; the next pack must not need the old bytes */
  record(&r, small, &none, "", &m);
  ml_request_pack(&r, &m, &cp);

  ml_request_t u;
  ml_match_t um;
  ml_request_unpack(&u, &cp, &um);
  CHECK(slice_is(u.target, u.target_len, "/items/2/tags/s"));
  CHECK(slice_is(u.path, u.path_len, "/items/2/tags/s"));
  CHECK_EQ_INT(u.body_len, 0);
  CHECK_EQ_INT(u.headers->n, 0);
  CHECK_EQ_INT(um.params[0].num, 2);
  CHECK(slice_is(um.params[1].val, um.params[1].len, "s"));
  ml_headers_free(&hs);
  ml_request_copy_free(&cp);
}

int main(void) {
  char err[200];
  router = ml_router_new();
  if (ml_router_add(router, 1u << ML_M_GET, "/items/{id:int}/tags/{tag}", 0, err, sizeof err))
    printf("setup: %s\n", err);
  RUN(unpacks_what_was_packed_from_its_own_memory);
  RUN(a_reused_copy_holds_only_the_new_request);
  ml_router_free(router);
  return UNIT_DONE();
}
