/* The WebSocket opening handshake (RFC 6455 4): checking a request that asks for one and
 * writing the 101 answer. Pure functions over a parsed request; the connection is handed
 * over afterwards (ws_conn.h). */
#ifndef ML_WS_HANDSHAKE_H
#define ML_WS_HANDSHAKE_H
#include "buf.h"
#include "http.h"

/* Checks h's request as an opening handshake (RFC 6455 4.2.1). Returns 0, or the HTTP
 * status that refuses it with a static *detail: 426 when it is no WebSocket request
 * (no "Upgrade: websocket") or asks for a version other than 13 (answer with
 * "Upgrade: websocket" and "Sec-WebSocket-Version: 13"), 400 when it is malformed (HTTP/1.0,
 * no "Connection: upgrade", no valid Sec-WebSocket-Key). */
int ml_ws_handshake_check(const ml_http_t *h, const char **detail);

/* 1 if the request's Origin header is one of origins[0..n) (ASCII case ignored); a
 * request without one is not (browsers always send it). */
int ml_ws_handshake_origin_ok(const ml_http_t *h, const char *const *origins, int n);

/* The subprotocol to answer: the first in the client's Sec-WebSocket-Protocol list that is
 * one of accepted[0..n), or NULL (*len then 0). Points into h's headers. */
const char *ml_ws_handshake_protocol(const ml_http_t *h, const char *const *accepted, int n,
                                     size_t *len);

/* Appends the 101 response for h's (checked) request to out, with protocol (NULL: none). */
void ml_ws_handshake_response(const ml_http_t *h, const char *protocol, ml_buf_t *out);
#endif
