/* The route trie (see router.h). Nodes own their children; ml_router_free releases all. */
#include "router.h"
#include "err.h"
#include "mem.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct node_s node_t;
struct node_s {
  char *seg;                 /* static text of this segment (static children only) */
  size_t seglen;
  node_t **kids;             /* static children, sorted by seg */
  int nkids, capkids;
  node_t *param_int;         /* {name:int} child */
  node_t *param_any;         /* {name} child */
  node_t *param_path;        /* {name:path} child: takes the rest of the path (a leaf) */
  char *pname;               /* parameter name (parameter children only) */
  int handlers[ML_M_COUNT];  /* route id per method, -1 for none */
};

struct ml_router_s {
  node_t *root;
};

static const char *const method_names[ML_M_COUNT] = {"GET", "HEAD", "POST", "PUT", "PATCH",
                                                      "DELETE", "OPTIONS"};

int ml_method_index(const char *name, size_t len) {
  for (int i = 0; i < ML_M_COUNT; i++)
    if (strlen(method_names[i]) == len && memcmp(method_names[i], name, len) == 0) return i;
  return -1;
}

const char *ml_method_name(int index) {
  return index >= 0 && index < ML_M_COUNT ? method_names[index] : "?";
}

static node_t *node_new(void) {
  node_t *n = ml_xcalloc(1, sizeof *n);
  for (int i = 0; i < ML_M_COUNT; i++) n->handlers[i] = -1;
  return n;
}

static void node_free(node_t *n) {
  if (!n) return;
  for (int i = 0; i < n->nkids; i++) node_free(n->kids[i]);
  node_free(n->param_int);
  node_free(n->param_any);
  node_free(n->param_path);
  free(n->kids);
  free(n->seg);
  free(n->pname);
  free(n);
}

ml_router_t *ml_router_new(void) {
  ml_router_t *r = ml_xcalloc(1, sizeof *r);
  r->root = node_new();
  return r;
}

void ml_router_free(ml_router_t *r) {
  if (!r) return;
  node_free(r->root);
  free(r);
}

static int segcmp(const char *a, size_t alen, const char *b, size_t blen) {
  int c = memcmp(a, b, alen < blen ? alen : blen);
  if (c) return c;
  return alen < blen ? -1 : alen > blen;
}

/* Binary search; returns the index of the child or, negated minus one, where it belongs. */
static int find_kid(const node_t *n, const char *seg, size_t len) {
  int lo = 0, hi = n->nkids - 1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2;
    int c = segcmp(n->kids[mid]->seg, n->kids[mid]->seglen, seg, len);
    if (c == 0) return mid;
    if (c < 0) lo = mid + 1; else hi = mid - 1;
  }
  return -lo - 1;
}

static node_t *static_child(node_t *n, const char *seg, size_t len) {
  int at = find_kid(n, seg, len);
  if (at >= 0) return n->kids[at];
  at = -at - 1;
  if (n->nkids == n->capkids) {
    n->capkids = n->capkids ? n->capkids * 2 : 4;
    n->kids = ml_xrealloc(n->kids, sizeof *n->kids * (size_t)n->capkids);
  }
  memmove(n->kids + at + 1, n->kids + at, sizeof *n->kids * (size_t)(n->nkids - at));
  node_t *k = node_new();
  k->seg = strndup(seg, len);
  k->seglen = len;
  n->kids[at] = k;
  n->nkids++;
  return k;
}

static int valid_name(const char *s, size_t len) {
  if (len == 0) return 0;
  for (size_t i = 0; i < len; i++) {
    char c = s[i];
    if (!(c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (i > 0 && c >= '0' && c <= '9')))
      return 0;
  }
  return 1;
}

int ml_router_add(ml_router_t *r, unsigned methods, const char *pattern, int id, char *err,
                  size_t errlen) {
  if (pattern[0] != '/') {
    return ml_err(err, errlen, "route path must start with '/': %s", pattern);
  }
  node_t *n = r->root;
  const char *p = pattern + 1;
  const char *names[ML_MAX_PARAMS];
  size_t name_lens[ML_MAX_PARAMS];
  int nparams = 0;
  if (strcmp(pattern, "/") != 0) {
    for (;;) {
      const char *end = strchr(p, '/');
      size_t len = end ? (size_t)(end - p) : strlen(p);
      if (len > 0 && p[0] == '{') {
        if (p[len - 1] != '}') {
          return ml_err(err, errlen, "bad parameter segment '%.*s' in %s", (int)len, p, pattern);
        }
        const char *name = p + 1;
        size_t nlen = len - 2;
        const char *colon = memchr(name, ':', nlen);
        int is_int = 0, is_path = 0;
        if (colon) {
          size_t tlen = nlen - (size_t)(colon - name) - 1;
          if (tlen == 3 && memcmp(colon + 1, "int", 3) == 0) is_int = 1;
          else if (tlen == 4 && memcmp(colon + 1, "path", 4) == 0) is_path = 1;
          else if (!(tlen == 3 && memcmp(colon + 1, "str", 3) == 0)) {
            return ml_err(err, errlen,
                          "unknown parameter type '%.*s' in %s (use int, str or path)",
                          (int)tlen, colon + 1, pattern);
          }
          nlen = (size_t)(colon - name);
        }
        if (is_path && end) {
          return ml_err(err, errlen, "a {name:path} parameter must be the last segment: %s",
                        pattern);
        }
        if (!valid_name(name, nlen)) {
          return ml_err(err, errlen, "bad parameter name '%.*s' in %s", (int)nlen, name, pattern);
        }
        for (int i = 0; i < nparams; i++)
          if (name_lens[i] == nlen && memcmp(names[i], name, nlen) == 0) {
            return ml_err(err, errlen, "duplicate parameter '%.*s' in %s", (int)nlen, name,
                          pattern);
          }
        if (nparams == ML_MAX_PARAMS) {
          return ml_err(err, errlen, "too many parameters in %s", pattern);
        }
        names[nparams] = name;
        name_lens[nparams++] = nlen;
        node_t **slot = is_path ? &n->param_path : is_int ? &n->param_int : &n->param_any;
        if (!*slot) {
          *slot = node_new();
          (*slot)->pname = strndup(name, nlen);
        } else if (strlen((*slot)->pname) != nlen || memcmp((*slot)->pname, name, nlen) != 0) {
          return ml_err(err, errlen,
                        "parameter '{%.*s}' in %s conflicts with '{%s}' of another route",
                        (int)nlen, name, pattern, (*slot)->pname);
        }
        n = *slot;
      } else {
        if (memchr(p, '{', len) || memchr(p, '}', len)) {
          return ml_err(err, errlen, "a parameter must be a whole segment: %s", pattern);
        }
        n = static_child(n, p, len);
      }
      if (!end) break;
      p = end + 1;
    }
  }
  for (int m = 0; m < ML_M_COUNT; m++) {
    if (!(methods & (1u << m))) continue;
    if (n->handlers[m] >= 0) {
      return ml_err(err, errlen, "route %s %s is defined twice", method_names[m], pattern);
    }
  }
  for (int m = 0; m < ML_M_COUNT; m++)
    if (methods & (1u << m)) n->handlers[m] = id;
  return 0;
}

#define MAX_EXACT_INT (1ull << 53)   /* every integer up to 2^53 is exactly a double */

/* An {x:int} segment: an optional '-' and digits whose value a Lua number holds exactly
 * (|n| <= 2^53; leading zeros allowed). Returns 1 with the value in *num, or 0. */
static int int_segment(const char *s, size_t len, double *num) {
  size_t i = (len > 0 && s[0] == '-') ? 1 : 0;
  if (i == len) return 0;
  uint64_t v = 0;
  for (size_t k = i; k < len; k++) {
    if (s[k] < '0' || s[k] > '9') return 0;
    v = v * 10 + (uint64_t)(s[k] - '0');
    if (v > MAX_EXACT_INT) return 0;
  }
  *num = (double)(i ? -(int64_t)v : (int64_t)v);   /* "-0" is 0 */
  return 1;
}

static unsigned node_mask(const node_t *n) {
  unsigned mask = 0;
  for (int m = 0; m < ML_M_COUNT; m++)
    if (n->handlers[m] >= 0) mask |= 1u << m;
  return mask;
}

/* Depth-first: static child first, then {x:int}, then {x}, then {x:path} (which takes the
 * rest of the path, slashes included, even when it is empty). Returns 1 when a handler for
 * `method` was found; otherwise ORs the methods of any node matching the full path into
 * m->allow so the caller can answer 405. A method of -1 is never found: it only collects. */
static int match_params(const node_t *n, int method, const char *p, size_t len,
                        const char *next, const char *end, ml_match_t *m);
static int match_rest(const node_t *n, int method, const char *p, const char *end,
                      ml_match_t *m);

static int match_node(const node_t *n, int method, const char *p, const char *end,
                      ml_match_t *m) {
  if (p > end) {   /* consumed the whole path */
    int h = method >= 0 ? n->handlers[method] : -1;
    if (h < 0 && method == ML_M_HEAD) h = n->handlers[ML_M_GET];
    if (h >= 0) { m->route = h; return 1; }
    m->allow |= node_mask(n);
    return 0;
  }
  const char *slash = memchr(p, '/', (size_t)(end - p));
  const char *segend = slash ? slash : end;
  size_t len = (size_t)(segend - p);
  const char *next = segend + 1;   /* > end when this was the last segment */
  int at = find_kid(n, p, len);
  if (at >= 0 && match_node(n->kids[at], method, next, end, m)) return 1;
  if (m->nparams == ML_MAX_PARAMS) return 0;
  if (len > 0 && match_params(n, method, p, len, next, end, m)) return 1;
  return match_rest(n, method, p, end, m);
}

/* n's {x:path} child takes p..end (maybe empty). */
static int match_rest(const node_t *n, int method, const char *p, const char *end,
                      ml_match_t *m) {
  const node_t *rest = n->param_path;
  if (!rest || m->nparams == ML_MAX_PARAMS) return 0;
  int h = method >= 0 ? rest->handlers[method] : -1;
  if (h < 0 && method == ML_M_HEAD) h = rest->handlers[ML_M_GET];
  if (h < 0) {
    m->allow |= node_mask(rest);
    return 0;
  }
  int k = m->nparams++;
  m->params[k].name = rest->pname;
  m->params[k].val = p;
  m->params[k].len = (size_t)(end - p);
  m->params[k].is_int = 0;
  m->params[k].num = 0;
  m->route = h;
  return 1;
}

/* The {x:int} and {x} children of n for the segment p..p+len. */
static int match_params(const node_t *n, int method, const char *p, size_t len,
                        const char *next, const char *end, ml_match_t *m) {
  double num = 0;
  const node_t *kids[2] = {n->param_int && int_segment(p, len, &num) ? n->param_int : NULL,
                           n->param_any};
  for (int i = 0; i < 2; i++) {
    if (!kids[i]) continue;
    int k = m->nparams++;
    m->params[k].name = kids[i]->pname;
    m->params[k].val = p;
    m->params[k].len = len;
    m->params[k].is_int = i == 0;
    m->params[k].num = num;
    if (match_node(kids[i], method, next, end, m)) return 1;
    m->nparams--;
  }
  return 0;
}

int ml_router_match(const ml_router_t *r, int method, const char *path, size_t len,
                    ml_match_t *m) {
  m->route = -1;
  m->nparams = 0;
  m->allow = 0;
  if (len == 0 || path[0] != '/') return ML_ROUTE_NOT_FOUND;
  const char *end = path + len;
  int found = (len == 1) ? match_node(r->root, method, end + 1, end, m)
                         : match_node(r->root, method, path + 1, end, m);
  /* "/" with no route of its own: a "/{x:path}" takes it, with x empty */
  if (!found && len == 1) found = match_rest(r->root, method, end, end, m);
  if (found) return ML_ROUTE_OK;
  if (m->allow) {
    if (m->allow & (1u << ML_M_GET)) m->allow |= 1u << ML_M_HEAD;
    return ML_ROUTE_BAD_METHOD;
  }
  return ML_ROUTE_NOT_FOUND;
}

size_t ml_router_allow_header(unsigned allow, char *out, size_t cap) {
  size_t n = 0;
  out[0] = '\0';
  for (int m = 0; m < ML_M_COUNT; m++) {
    if (!(allow & (1u << m))) continue;
    int w = snprintf(out + n, cap - n, "%s%s", n ? ", " : "", method_names[m]);
    if (w < 0 || (size_t)w >= cap - n) break;
    n += (size_t)w;
  }
  return n;
}
