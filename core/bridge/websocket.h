/* moonlet's WebSocket API in Lua (moonlet.core's ws_* functions, used by
 * lua/moonlet/websocket.lua): the handshake of an app:websocket route, then the `ws` its
 * handler gets, over a WebSocket engine (http/ws_conn.h). A `ws` is a Lua userdata linked
 * to its engine from the 101 until its handler ends or its connection goes; after that it
 * answers "closed". Tasks wait on it in ws:receive (one at a time) and in ws:send (any
 * number, while the connection's output is above its high-water mark). */
#ifndef ML_WEBSOCKET_H
#define ML_WEBSOCKET_H

typedef struct ml_ws_s ml_ws_t;

/* The handler of the request that accepted ws ended (dispatch.c): unless it returned
 * normally (and had not closed already), the close is 1011, else 1000; the engine finishes
 * the handshake alone, and tasks still waiting on ws get "closed". */
void ml_websocket_end(ml_ws_t *ws);
#endif
