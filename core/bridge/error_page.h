/* The 500 for a response C could not serialize (a body JSON cannot hold, a bad status or
 * header), in development mode: like a Lua error's, it carries the error (an HTML page
 * for a browser, else JSON; lua/moonlet/error_page.lua builds it). Used by dispatch.c on
 * the loop and pooled_route.c on a worker thread. */
#ifndef ML_ERROR_PAGE_H
#define ML_ERROR_PAGE_H
#include "buf.h"
#include "request.h"
#include <lua.h>

/* In development mode (ml_core_dev_mode), appends to out the 500 that error_page.response
 * gives for request r and message msg, built in L (a state that has loaded the runtime,
 * running no Lua on this thread but the caller's C; its stack is left as it was);
 * *keepalive and head as for ml_lresp_build. Returns 500, or -1 with out unchanged
 * outside development mode or if the page failed: the caller answers the plain 500. */
int ml_error_page_build(lua_State *L, const ml_request_t *r, const char *msg, ml_buf_t *out,
                        ml_buf_t *scratch, int *keepalive, int head);
#endif
