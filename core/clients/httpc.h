/* The HTTP/1.1 client behind moonlet.http: libuv TCP, llhttp in response mode, OpenSSL
 * (tls.h) for https, a keep-alive connection pool per Lua state, waiting through the task
 * model (task.h) so one call yields in a coroutine and blocks elsewhere.
 * lua/moonlet/http.lua parses URLs, builds the request bytes and wraps the response. */
#ifndef ML_HTTPC_H
#define ML_HTTPC_H
#include <lua.h>

/* Installs http_request into the table on top of the stack ("moonlet.core"):
 *
 *   http_request{ host =, port =, tls =, verify =, ca_file =, wire =, label =,
 *                 connect_timeout =, read_timeout =, timeout =, max_size =,
 *                 head =, idempotent =, keepalive = }
 *     -> status, headers, body | nil, message
 *
 * `wire` is the whole request (head and body); `label` ("GET http://...") names it in
 * messages. Timeouts are in seconds, max_size in bytes. */
#endif
