/* Route table: a trie keyed by path segments. Static segments are kept sorted in each node
 * and found by binary search; `{name}` and `{name:int}` segments are parameter children, and
 * a last segment `{name:path}` takes the rest of the path (slashes included, maybe empty),
 * tried after everything else (static files mount on it).
 * Lookup cost grows with the path's depth, not with the number of routes. */
#ifndef ML_ROUTER_H
#define ML_ROUTER_H
#include <stddef.h>

enum { ML_M_GET, ML_M_HEAD, ML_M_POST, ML_M_PUT, ML_M_PATCH, ML_M_DELETE, ML_M_OPTIONS,
       ML_M_COUNT };
enum { ML_ROUTE_OK, ML_ROUTE_NOT_FOUND, ML_ROUTE_BAD_METHOD };
#define ML_MAX_PARAMS 16

typedef struct ml_router_s ml_router_t;

typedef struct {
  int route;                 /* id given to ml_router_add */
  int nparams;
  struct {
    const char *name;        /* owned by the router */
    const char *val;         /* slice of the matched path, still percent-encoded */
    size_t len;
    int is_int;
    double num;              /* is_int: the value, exact (|num| <= 2^53) */
  } params[ML_MAX_PARAMS];
  unsigned allow;            /* with ML_ROUTE_BAD_METHOD: mask of the methods the path has */
} ml_match_t;

int ml_method_index(const char *name, size_t len);   /* "GET" -> ML_M_GET, -1 if unknown */
const char *ml_method_name(int index);

ml_router_t *ml_router_new(void);
void ml_router_free(ml_router_t *r);

/* Adds `pattern` for every method in the `methods` bit mask (1u << ML_M_*), answering with
 * `id`. Returns 0, or -1 with a message in err (bad pattern, route already defined). */
int ml_router_add(ml_router_t *r, unsigned methods, const char *pattern, int id, char *err,
                  size_t errlen);

/* Looks up `path` (no query string) for `method`. HEAD falls back to GET. Returns
 * ML_ROUTE_OK with m->route and m->params set, ML_ROUTE_BAD_METHOD with m->allow set, or
 * ML_ROUTE_NOT_FOUND. Slices in m point into path. A method of -1 (one no route can have,
 * such as TRACE) gives ML_ROUTE_BAD_METHOD wherever the path exists. */
int ml_router_match(const ml_router_t *r, int method, const char *path, size_t len,
                    ml_match_t *m);

/* Writes "GET, HEAD, POST" for an allow mask into out; returns its length. */
size_t ml_router_allow_header(unsigned allow, char *out, size_t cap);
#endif
