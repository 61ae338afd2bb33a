/* Router unit tests: static and parameter segments, typed params, 404/405, HEAD. */
#include "router.h"
#include "unit.h"
#include <stdlib.h>

#define BIT(m) (1u << (m))

static ml_router_t *r;

static int match(int method, const char *path, ml_match_t *m) {
  return ml_router_match(r, method, path, strlen(path), m);
}

static void setup(void) {
  char err[200];
  r = ml_router_new();
  const struct { unsigned methods; const char *pattern; } routes[] = {
      {BIT(ML_M_GET), "/"},
      {BIT(ML_M_GET), "/hello"},
      {BIT(ML_M_GET) | BIT(ML_M_POST), "/items"},
      {BIT(ML_M_GET), "/items/{id:int}"},
      {BIT(ML_M_GET), "/items/special"},
      {BIT(ML_M_DELETE), "/items/{id:int}/tags/{tag}"},
      {BIT(ML_M_GET), "/users/{name}"},
      {BIT(ML_M_GET), "/users/{name}/"},
  };
  for (int i = 0; i < (int)(sizeof routes / sizeof routes[0]); i++)
    if (ml_router_add(r, routes[i].methods, routes[i].pattern, i, err, sizeof err))
      printf("setup: %s\n", err);
}

TEST(static_routes) {
  ml_match_t m;
  CHECK_EQ_INT(match(ML_M_GET, "/", &m), ML_ROUTE_OK);
  CHECK_EQ_INT(m.route, 0);
  CHECK_EQ_INT(match(ML_M_GET, "/hello", &m), ML_ROUTE_OK);
  CHECK_EQ_INT(m.route, 1);
  CHECK_EQ_INT(m.nparams, 0);
  CHECK_EQ_INT(match(ML_M_GET, "/hello/", &m), ML_ROUTE_NOT_FOUND);
  CHECK_EQ_INT(match(ML_M_GET, "/hell", &m), ML_ROUTE_NOT_FOUND);
  CHECK_EQ_INT(match(ML_M_GET, "/helloo", &m), ML_ROUTE_NOT_FOUND);
  CHECK_EQ_INT(match(ML_M_POST, "/items", &m), ML_ROUTE_OK);
  CHECK_EQ_INT(m.route, 2);
}

TEST(int_params) {
  ml_match_t m;
  CHECK_EQ_INT(match(ML_M_GET, "/items/42", &m), ML_ROUTE_OK);
  CHECK_EQ_INT(m.route, 3);
  CHECK_EQ_INT(m.nparams, 1);
  CHECK_EQ_STR(m.params[0].name, "id");
  CHECK_EQ_INT(m.params[0].len, 2);
  CHECK(memcmp(m.params[0].val, "42", 2) == 0);
  CHECK(m.params[0].is_int);
  CHECK_EQ_INT(match(ML_M_GET, "/items/-7", &m), ML_ROUTE_OK);
  CHECK_EQ_INT(match(ML_M_GET, "/items/abc", &m), ML_ROUTE_NOT_FOUND);
  CHECK_EQ_INT(match(ML_M_GET, "/items/4x", &m), ML_ROUTE_NOT_FOUND);
  CHECK_EQ_INT(match(ML_M_GET, "/items/", &m), ML_ROUTE_NOT_FOUND);
  CHECK_EQ_INT(match(ML_M_GET, "/items/1234567890123456789", &m), ML_ROUTE_NOT_FOUND);
}

/* {x:int} takes the integers a Lua number holds exactly, |n| <= 2^53, and gives the value */
TEST(int_params_fit_a_double) {
  ml_match_t m;
  CHECK_EQ_INT(match(ML_M_GET, "/items/42", &m), ML_ROUTE_OK);
  CHECK(m.params[0].num == 42);
  CHECK_EQ_INT(match(ML_M_GET, "/items/9007199254740992", &m), ML_ROUTE_OK);
  CHECK(m.params[0].num == 9007199254740992.0);
  CHECK_EQ_INT(match(ML_M_GET, "/items/-9007199254740992", &m), ML_ROUTE_OK);
  CHECK(m.params[0].num == -9007199254740992.0);
  CHECK_EQ_INT(match(ML_M_GET, "/items/0009007199254740992", &m), ML_ROUTE_OK);
  CHECK(m.params[0].num == 9007199254740992.0);
  CHECK_EQ_INT(match(ML_M_GET, "/items/9007199254740993", &m), ML_ROUTE_NOT_FOUND);
  CHECK_EQ_INT(match(ML_M_GET, "/items/-9007199254740993", &m), ML_ROUTE_NOT_FOUND);
  CHECK_EQ_INT(match(ML_M_GET, "/items/1000000000000000000", &m), ML_ROUTE_NOT_FOUND);
  CHECK_EQ_INT(match(ML_M_GET, "/items/99999999999999999", &m), ML_ROUTE_NOT_FOUND);
  CHECK_EQ_INT(match(ML_M_GET, "/items/-", &m), ML_ROUTE_NOT_FOUND);
  CHECK_EQ_INT(match(ML_M_GET, "/items/+5", &m), ML_ROUTE_NOT_FOUND);
}

TEST(static_beats_param) {
  ml_match_t m;
  CHECK_EQ_INT(match(ML_M_GET, "/items/special", &m), ML_ROUTE_OK);
  CHECK_EQ_INT(m.route, 4);
  CHECK_EQ_INT(m.nparams, 0);
}

TEST(nested_params) {
  ml_match_t m;
  CHECK_EQ_INT(match(ML_M_DELETE, "/items/5/tags/red", &m), ML_ROUTE_OK);
  CHECK_EQ_INT(m.route, 5);
  CHECK_EQ_INT(m.nparams, 2);
  CHECK_EQ_STR(m.params[1].name, "tag");
  CHECK(m.params[1].len == 3 && memcmp(m.params[1].val, "red", 3) == 0);
  CHECK_EQ_INT(match(ML_M_GET, "/users/ann", &m), ML_ROUTE_OK);
  CHECK_EQ_INT(m.route, 6);
  CHECK_EQ_INT(match(ML_M_GET, "/users/ann/", &m), ML_ROUTE_OK);
  CHECK_EQ_INT(m.route, 7);
  CHECK_EQ_INT(match(ML_M_GET, "/users//", &m), ML_ROUTE_NOT_FOUND);
}

TEST(method_not_allowed) {
  ml_match_t m;
  CHECK_EQ_INT(match(ML_M_PUT, "/items", &m), ML_ROUTE_BAD_METHOD);
  char allow[64];
  ml_router_allow_header(m.allow, allow, sizeof allow);
  CHECK_EQ_STR(allow, "GET, HEAD, POST");
  CHECK_EQ_INT(match(ML_M_GET, "/items/5/tags/red", &m), ML_ROUTE_BAD_METHOD);
  ml_router_allow_header(m.allow, allow, sizeof allow);
  CHECK_EQ_STR(allow, "DELETE");
  /* -1: a method no route can have (TRACE): 405 where the path exists, 404 elsewhere */
  CHECK_EQ_INT(match(-1, "/items/5", &m), ML_ROUTE_BAD_METHOD);
  ml_router_allow_header(m.allow, allow, sizeof allow);
  CHECK_EQ_STR(allow, "GET, HEAD");
  CHECK_EQ_INT(match(-1, "/users/ann/", &m), ML_ROUTE_BAD_METHOD);
  CHECK_EQ_INT(match(-1, "/", &m), ML_ROUTE_BAD_METHOD);
  CHECK_EQ_INT(match(-1, "/nope", &m), ML_ROUTE_NOT_FOUND);
  CHECK_EQ_INT(match(-1, "/items/x/tags/red", &m), ML_ROUTE_NOT_FOUND);
}

TEST(head_uses_get) {
  ml_match_t m;
  CHECK_EQ_INT(match(ML_M_HEAD, "/hello", &m), ML_ROUTE_OK);
  CHECK_EQ_INT(m.route, 1);
}

TEST(bad_patterns) {
  char err[200];
  ml_router_t *x = ml_router_new();
  CHECK(ml_router_add(x, 1, "nope", 0, err, sizeof err) == -1);
  CHECK(ml_router_add(x, 1, "/a/{id:float}", 0, err, sizeof err) == -1);
  CHECK(strstr(err, "unknown parameter type") != NULL);
  CHECK(ml_router_add(x, 1, "/a/x{id}", 0, err, sizeof err) == -1);
  CHECK(ml_router_add(x, 1, "/a/{id}/{id}", 0, err, sizeof err) == -1);
  CHECK(ml_router_add(x, 1, "/a/{id}", 0, err, sizeof err) == 0);
  CHECK(ml_router_add(x, 1, "/a/{id}", 1, err, sizeof err) == -1);
  CHECK(strstr(err, "defined twice") != NULL);
  CHECK(ml_router_add(x, 1, "/a/{other}/b", 2, err, sizeof err) == -1);
  CHECK(strstr(err, "conflicts") != NULL);
  ml_router_free(x);
}

/* {x:path} takes the rest of the path, slashes included, even empty; other routes win */
TEST(path_params) {
  char err[200];
  ml_router_t *x = ml_router_new();
  CHECK(ml_router_add(x, BIT(ML_M_GET) | BIT(ML_M_HEAD), "/static", 0, err, sizeof err) == 0);
  CHECK(ml_router_add(x, BIT(ML_M_GET) | BIT(ML_M_HEAD), "/static/{p:path}", 1, err,
                      sizeof err) == 0);
  CHECK(ml_router_add(x, BIT(ML_M_POST), "/static/upload", 2, err, sizeof err) == 0);
  CHECK(ml_router_add(x, BIT(ML_M_GET), "/f/{p:path}/x", 3, err, sizeof err) == -1);
  CHECK(strstr(err, "last segment") != NULL);
  ml_match_t m;
  CHECK_EQ_INT(ml_router_match(x, ML_M_GET, "/static", 7, &m), ML_ROUTE_OK);
  CHECK_EQ_INT(m.route, 0);
  CHECK_EQ_INT(ml_router_match(x, ML_M_GET, "/static/", 8, &m), ML_ROUTE_OK);
  CHECK_EQ_INT(m.route, 1);
  CHECK_EQ_INT(m.nparams, 1);
  CHECK_EQ_INT(m.params[0].len, 0);
  const char *deep = "/static/a/b/../c.css";
  CHECK_EQ_INT(ml_router_match(x, ML_M_HEAD, deep, strlen(deep), &m), ML_ROUTE_OK);
  CHECK_EQ_INT(m.route, 1);
  CHECK_EQ_STR(m.params[0].name, "p");
  CHECK_EQ_INT(m.params[0].len, strlen("a/b/../c.css"));
  CHECK(memcmp(m.params[0].val, "a/b/../c.css", m.params[0].len) == 0);
  CHECK_EQ_INT(ml_router_match(x, ML_M_POST, "/static/upload", 14, &m), ML_ROUTE_OK);
  CHECK_EQ_INT(m.route, 2);
  CHECK_EQ_INT(ml_router_match(x, ML_M_GET, "/static/upload", 14, &m), ML_ROUTE_OK);
  CHECK_EQ_INT(m.route, 1);
  CHECK_EQ_INT(ml_router_match(x, ML_M_POST, "/static/a.css", 13, &m), ML_ROUTE_BAD_METHOD);
  CHECK_EQ_INT(m.allow, BIT(ML_M_GET) | BIT(ML_M_HEAD));
  CHECK_EQ_INT(ml_router_match(x, ML_M_GET, "/other", 6, &m), ML_ROUTE_NOT_FOUND);
  CHECK_EQ_INT(ml_router_match(x, ML_M_GET, "/", 1, &m), ML_ROUTE_NOT_FOUND);
  ml_router_free(x);
  /* at the root: "/" too, unless a route has it */
  x = ml_router_new();
  CHECK(ml_router_add(x, BIT(ML_M_GET), "/{p:path}", 0, err, sizeof err) == 0);
  CHECK(ml_router_add(x, BIT(ML_M_POST), "/", 1, err, sizeof err) == 0);
  CHECK(ml_router_add(x, BIT(ML_M_GET), "/api", 2, err, sizeof err) == 0);
  CHECK_EQ_INT(ml_router_match(x, ML_M_GET, "/", 1, &m), ML_ROUTE_OK);
  CHECK_EQ_INT(m.route, 0);
  CHECK_EQ_INT(m.params[0].len, 0);
  CHECK_EQ_INT(ml_router_match(x, ML_M_POST, "/", 1, &m), ML_ROUTE_OK);
  CHECK_EQ_INT(m.route, 1);
  CHECK_EQ_INT(ml_router_match(x, ML_M_GET, "/api", 4, &m), ML_ROUTE_OK);
  CHECK_EQ_INT(m.route, 2);
  CHECK_EQ_INT(ml_router_match(x, ML_M_GET, "/api/x", 6, &m), ML_ROUTE_OK);
  CHECK_EQ_INT(m.route, 0);
  ml_router_free(x);
}

TEST(many_routes) {
  char err[200], path[64];
  ml_router_t *x = ml_router_new();
  for (int i = 0; i < 1000; i++) {
    snprintf(path, sizeof path, "/r%d/{id:int}", i);
    CHECK(ml_router_add(x, 1, path, i, err, sizeof err) == 0);
  }
  ml_match_t m;
  CHECK_EQ_INT(ml_router_match(x, ML_M_GET, "/r777/5", 7, &m), ML_ROUTE_OK);
  CHECK_EQ_INT(m.route, 777);
  CHECK_EQ_INT(ml_router_match(x, ML_M_GET, "/r1000/5", 8, &m), ML_ROUTE_NOT_FOUND);
  ml_router_free(x);
}

int main(void) {
  setup();
  RUN(static_routes);
  RUN(int_params);
  RUN(int_params_fit_a_double);
  RUN(static_beats_param);
  RUN(nested_params);
  RUN(method_not_allowed);
  RUN(head_uses_get);
  RUN(bad_patterns);
  RUN(path_params);
  RUN(many_routes);
  ml_router_free(r);
  return UNIT_DONE();
}
