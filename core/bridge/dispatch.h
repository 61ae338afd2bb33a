/* A request on the loop: the server hands each complete request to ml_dispatch, which
 * matches its route in the app state (app.h), makes its record (request.h) and runs it in
 * a task whose owner is that record: a coroutine route calls runtime.dispatch(handler,
 * req) in the task's coroutine and turns what it returns (status, body, headers) into
 * bytes in the connection's output; a pooled route goes to the workers (pooled_route.h)
 * while the task waits. The record knows the connection until the client leaves
 * (ml_dispatch_abort). */
#ifndef ML_DISPATCH_H
#define ML_DISPATCH_H
#include "server.h"

/* The server's dispatch and abort functions (conn.h); ctx is the app state. */
void ml_dispatch(void *ctx, ml_server_conn_t *c);
void ml_dispatch_abort(void *ctx, void *task);
/* The server's body hook (server.h): the route's max_body, multipart bodies to uploads. */
int ml_dispatch_body(void *ctx, ml_server_conn_t *c, const char **detail);
#endif
