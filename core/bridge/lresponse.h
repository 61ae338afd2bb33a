/* Turning what a handler returned — (status, body, headers) on a Lua stack — into the
 * bytes of an HTTP response. Used on the loop and in pool threads alike. */
#ifndef ML_LRESPONSE_H
#define ML_LRESPONSE_H
#include "buf.h"
#include <lua.h>

/* Reads status at base, body at base+1, headers at base+2 and appends the response to
 * out (scratch holds a JSON body meanwhile). *keepalive says whether the connection stays
 * open; a handler's `Connection: close` sets it to 0 (the caller then closes after this
 * response). The handler's Date and Server replace moonlet's. Returns the status, or -1
 * with a message in err and out unchanged (status not an integer 200-599, header with
 * CR/LF, body JSON cannot hold). */
int ml_lresp_build(lua_State *L, int base, ml_buf_t *out, ml_buf_t *scratch, int *keepalive,
                   int head, char *err, size_t errlen);
/* The head of that response without its framing: the status line (status at base), the
 * headers at base+2 (nil or a table), Server and Date unless given, Content-Type ctype
 * unless given (none if ctype is NULL); no Content-Length and no blank line. For a body
 * written in pieces (stream.c). Returns the status, or -1 with a message and out
 * unchanged; *keepalive as above. */
int ml_lresp_head(lua_State *L, int base, ml_buf_t *out, const char *ctype, int *keepalive,
                  char *err, size_t errlen);
#endif
