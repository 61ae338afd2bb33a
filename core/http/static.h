/* Static files (app:static): a mount serves the files under one directory, in C, without
 * Lua. The file is found and opened on libuv's threadpool (static_path.h), its head written
 * from its stat and the request's validators and Range (static_cond.h), and its bytes sent
 * with sendfile(2) on the threadpool, as fast as the socket takes them (see static.c): the
 * loop never waits for the disk, no byte goes through user space, and memory stays bounded
 * whatever the file's size. */
#ifndef ML_STATIC_H
#define ML_STATIC_H
#include "server.h"
#include <stddef.h>
#include <uv.h>

typedef struct {
  char *root;          /* the directory's real path */
  size_t prefix_len;   /* bytes of the URL path before the file's ("/static": 7, "/": 0) */
  char *index;         /* served for a directory asked with a trailing slash; NULL: 404 */
  long long max_age;   /* Cache-Control: public, max-age=N; < 0: no Cache-Control */
} ml_static_t;

/* A mount (copies its arguments; index NULL for none). Free with ml_static_free. */
ml_static_t *ml_static_new(const char *root, size_t prefix_len, const char *index,
                           long long max_age);
void ml_static_free(ml_static_t *m);

/* Answers the request on c (a GET or HEAD whose route is the mount m; path: its
 * percent-encoded path, without the query) now or later, ending with ml_server_conn_done.
 * Meanwhile c->task is the work (the connection's close aborts it through c->task_abort).
 * The work copies what it needs from m: the mount may go (a reload) while it runs. */
void ml_static_serve(const ml_static_t *m, uv_loop_t *loop, ml_server_conn_t *c,
                     const char *path, size_t path_len);
#endif
