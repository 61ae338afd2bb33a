/* A WebSocket connection (RFC 6455) over an upgraded server connection: frames in and
 * out, the close handshake, the idle and close timeouts. It knows nothing of Lua: its
 * owner (bridge/websocket.c) gets events and calls the functions below.
 *
 * Incoming frames are parsed by wslay (libwslay, Debian's libwslay-dev): masking, control
 * frames between fragments, reassembly, pings answered, UTF-8 of text messages, close
 * codes, the message limit. Outgoing frames are written here (a 2-10 byte header before
 * the payload, straight into the connection's output): a server's frames are unmasked and
 * moonlet never fragments them.
 *
 * Ownership: ml_ws_conn_new allocates; the engine frees itself once its connection has
 * closed (after its last event, ML_WS_GONE), and never calls its owner after
 * ml_ws_conn_detach. */
#ifndef ML_WS_CONN_H
#define ML_WS_CONN_H
#include "server.h"
#include <stdint.h>

typedef struct ml_ws_conn_s ml_ws_conn_t;

enum { ML_WS_TEXT = 1, ML_WS_BINARY = 2, ML_WS_CLOSE = 8, ML_WS_PING = 9, ML_WS_PONG = 10 };

/* What the owner is told. The first three come from inside the engine's work (the frame
 * parser, a write that failed, ...): store what they say, run no Lua. The others come from
 * loop callbacks, where waking tasks is safe. */
typedef enum {
  ML_WS_MESSAGE,   /* a data message: kind (ML_WS_TEXT/BINARY), data, len (copy them) */
  ML_WS_CLOSING,   /* the close handshake began (once): kind is the code, data the reason:
                    * the peer's when it closed first, ours otherwise; 1006 when the
                    * connection was lost without one */
  ML_WS_LOST,      /* the connection is closed: the request behind it is over */
  ML_WS_READY,     /* wake who waits: messages may be queued, the close may have begun */
  ML_WS_DRAINED,   /* the unsent output fell to the mark given to ml_ws_conn_wait_drain */
  ML_WS_GONE,      /* the last event: the engine goes */
} ml_ws_event_t;

typedef void (*ml_ws_event_fn)(void *arg, ml_ws_event_t ev, int kind, const char *data,
                               size_t len);

typedef struct {
  size_t max_message;        /* bytes; a larger message closes with 1009 */
  uint64_t idle_ms;          /* no frame for this long: closed (1001); a ping at half of
                              * it first. 0: never */
  uint64_t close_ms;         /* after our close frame, the peer's may take this long */
} ml_ws_config_t;

/* An engine for c, whose 101 response the caller has written; nothing happens until
 * ml_ws_conn_start. */
ml_ws_conn_t *ml_ws_conn_new(ml_server_conn_t *c, const ml_ws_config_t *cfg,
                             ml_ws_event_fn fn, void *arg);
/* Takes the connection over (ml_server_conn_upgrade): bytes already received are parsed
 * now (ML_WS_MESSAGE and ML_WS_CLOSING may come; the wake-ups follow from the loop). */
void ml_ws_conn_start(ml_ws_conn_t *ws);
/* Sends a message (ML_WS_TEXT, ML_WS_BINARY) or a ping (at most 125 bytes). Returns 0, or
 * -1 once the close handshake has begun or the connection is gone. */
int ml_ws_conn_send(ml_ws_conn_t *ws, int kind, const void *data, size_t len);
/* Bytes sent and not handed to the kernel yet (0 when the connection is gone). */
size_t ml_ws_conn_unsent(const ml_ws_conn_t *ws);
/* Asks for ML_WS_DRAINED once the unsent bytes fall to `low`: returns 1, or 0 if they are
 * there already (or the connection is gone: no event then but ML_WS_GONE). */
int ml_ws_conn_wait_drain(ml_ws_conn_t *ws, size_t low);
/* Begins the close handshake with code and reason (at most 123 bytes): ML_WS_CLOSING now,
 * ML_WS_READY from the loop. Returns 0, or -1 if it had begun already. */
int ml_ws_conn_close(ml_ws_conn_t *ws, int code, const char *reason, size_t len);
/* Input backpressure: while on, the connection is not read. */
void ml_ws_conn_pause(ml_ws_conn_t *ws, int on);
/* The owner goes: no event any more. The engine finishes the close handshake alone. */
void ml_ws_conn_detach(ml_ws_conn_t *ws);
#endif
