/* A WebSocket connection (see ws_conn.h).
 *
 * A wslay context is large (two 4 KiB buffers, zeroed when it is made: about 8.5 KiB) and
 * an idle WebSocket must cost little, so a context lives only while frames are coming in:
 * it is made when bytes arrive and freed as soon as they all belong to whole frames and no
 * fragmented message is in progress. That is counted here: `fed`, the bytes given to
 * wslay; `framed`, the wire bytes of the frames it finished (header + payload: a client's
 * frames are masked, and wslay refuses a length not written in its shortest form, so the
 * header's size follows from the payload's). When they are equal, wslay holds nothing a
 * fresh context would not.
 *
 * Close handshake (RFC 6455 7): whoever closes first sends a close frame and the other
 * answers with one; then the server ends the TCP connection (ml_server_conn_done: FIN,
 * linger). wslay answers the peer's close; ours are written here, and wslay's answer is
 * then dropped (drop_output). A frame wslay refuses fails the connection: a close frame
 * (1002, or wslay's own 1007 / 1009) and the end at once. Timeouts are deadlines checked
 * when the connection's timer wakes the engine (ml_server_conn_wake: an idle WebSocket
 * keeps no timer of its own), re-armed only then (a read just moves last_read). */
#include "ws_conn.h"
#include "mem.h"
#include <wslay/wslay.h>

struct ml_ws_conn_s {
  ml_server_conn_t *c;        /* NULL once the connection is closed */
  wslay_event_context_ptr wslay;   /* only while frames come in (see the top comment) */
  ml_ws_event_fn fn;          /* the owner; NULL once detached */
  void *arg;
  ml_ws_config_t cfg;
  const char *in;             /* received bytes being given to wslay */
  size_t in_len;
  uint64_t fed, framed;       /* bytes given to the current context / in its whole frames */
  uint64_t frame_len;         /* wire length of the frame being received */
  uint64_t last_read;         /* loop time (ms) bytes last arrived */
  uint64_t close_at;          /* loop time our close frame went */
  unsigned fragmented : 1;    /* a data message's fragments are coming in */
  unsigned close_sent : 1, close_received : 1;
  unsigned told : 1;          /* ML_WS_CLOSING said */
  unsigned finished : 1;      /* the TCP connection is being ended */
  unsigned pinged : 1;        /* the keepalive ping went since the last read */
  unsigned notify : 1;        /* ML_WS_READY is due from the timer */
  unsigned starting : 1;      /* inside ml_ws_conn_start: no wake-up from here */
  unsigned drop_output : 1;   /* wslay's output is not sent (our close went first) */
};

static void emit(ml_ws_conn_t *ws, ml_ws_event_t ev, int kind, const char *data, size_t len) {
  if (ws->fn) ws->fn(ws->arg, ev, kind, data, len);
}

static void tell_closing(ml_ws_conn_t *ws, int code, const char *reason, size_t len) {
  if (ws->told) return;
  ws->told = 1;
  emit(ws, ML_WS_CLOSING, code, reason, len);
}

static uint64_t now_ms(const ml_ws_conn_t *ws) {
  return uv_now(ws->c->srv->loop);
}

/* Asks the connection's timer to wake us (on_timer) for the next thing due, or for none
 * (ML_WS_READY when notify is set, the deadlines otherwise). Not once the connection is
 * gone. */
static void arm(ml_ws_conn_t *ws) {
  if (!ws->c) return;
  uint64_t now = now_ms(ws), due;
  if (ws->notify) due = now;
  else if (ws->finished) due = 0;
  else if (ws->close_sent) due = ws->close_at + ws->cfg.close_ms;
  else if (ws->cfg.idle_ms) due = ws->last_read + (ws->pinged ? ws->cfg.idle_ms : ws->cfg.idle_ms / 2);
  else due = 0;
  ml_server_conn_wake(ws->c, !due ? -1 : due > now ? (int64_t)(due - now) : 0);
}

/* A frame of ours: header into the output, then the payload, handed to the kernel. The
 * connection may close inside (a failed write): callers check ws->c afterwards. */
static void write_frame(ml_ws_conn_t *ws, int op, const void *data, size_t len) {
  unsigned char h[10];
  size_t n = 2;
  h[0] = (unsigned char)(0x80 | op);
  if (len < 126) {
    h[1] = (unsigned char)len;
  } else if (len < 65536) {
    h[1] = 126;
    h[2] = (unsigned char)(len >> 8);
    h[3] = (unsigned char)len;
    n = 4;
  } else {
    h[1] = 127;
    for (int i = 0; i < 8; i++) h[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
    n = 10;
  }
  ml_buf_add(&ws->c->out, h, n);
  ml_server_conn_send(ws->c, data, len);
}

static void send_close(ml_ws_conn_t *ws, int code, const char *reason, size_t len) {
  unsigned char p[125];
  p[0] = (unsigned char)(code >> 8);
  p[1] = (unsigned char)code;
  if (len) memcpy(p + 2, reason, len);
  ws->close_sent = 1;
  ws->close_at = now_ms(ws);
  write_frame(ws, ML_WS_CLOSE, p, len + 2);
}

static void drop_wslay(ml_ws_conn_t *ws) {
  if (ws->wslay) wslay_event_context_free(ws->wslay);
  ws->wslay = NULL;
}

/* Ends the TCP connection (the access log says 101). */
static void finish(ml_ws_conn_t *ws) {
  if (ws->finished || !ws->c) return;
  ws->finished = 1;
  drop_wslay(ws);
  ml_server_conn_close_after(ws->c);
  ml_server_conn_done(ws->c, 101);
}

/* Fails the connection (RFC 6455 7.1.7): our close frame, then the end. */
static void fail(ml_ws_conn_t *ws, int code) {
  if (!ws->close_sent && ws->c) send_close(ws, code, "", 0);
  tell_closing(ws, code, "", 0);
  finish(ws);
}

/* --- wslay's callbacks ------------------------------------------------------------------
 * They run inside wslay_event_recv and wslay_event_send: nothing here may close the
 * connection (output is only appended) or call the owner beyond a store-only event. */

static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                       void *arg) {
  (void)flags;
  ml_ws_conn_t *ws = arg;
  if (ws->in_len == 0) {
    wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    return -1;
  }
  if (len > ws->in_len) len = ws->in_len;
  memcpy(buf, ws->in, len);
  ws->in += len;
  ws->in_len -= len;
  return (ssize_t)len;
}

static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *arg) {
  (void)ctx, (void)flags;
  ml_ws_conn_t *ws = arg;
  if (ws->c && !ws->drop_output) ml_buf_add(&ws->c->out, data, len);
  return (ssize_t)len;
}

static void frame_start_cb(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_frame_recv_start_arg *a, void *arg) {
  (void)ctx;
  ml_ws_conn_t *ws = arg;
  uint64_t n = a->payload_length;
  ws->frame_len = 2 + (n < 126 ? 0 : n < 65536 ? 2 : 8) + 4 + n;
  if (!wslay_is_ctrl_frame(a->opcode)) ws->fragmented = !a->fin;
}

static void frame_end_cb(wslay_event_context_ptr ctx, void *arg) {
  (void)ctx;
  ml_ws_conn_t *ws = arg;
  ws->framed += ws->frame_len;
}

static void msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *a,
                   void *arg) {
  (void)ctx;
  ml_ws_conn_t *ws = arg;
  if (a->opcode == WSLAY_TEXT_FRAME || a->opcode == WSLAY_BINARY_FRAME) {
    if (!ws->close_sent) emit(ws, ML_WS_MESSAGE, a->opcode, (const char *)a->msg, a->msg_length);
  } else if (a->opcode == WSLAY_CONNECTION_CLOSE) {
    ws->close_received = 1;
    size_t rlen = a->msg_length > 2 ? a->msg_length - 2 : 0;
    tell_closing(ws, a->status_code ? a->status_code : 1005,
                 rlen ? (const char *)a->msg + 2 : "", rlen);
  }
}

static int wslay_new(ml_ws_conn_t *ws) {
  static const struct wslay_event_callbacks cbs = {
      recv_cb, send_cb, NULL, frame_start_cb, NULL, frame_end_cb, msg_cb};
  if (wslay_event_context_server_init(&ws->wslay, &cbs, ws) != 0) {
    ws->wslay = NULL;
    return -1;
  }
  wslay_event_config_set_max_recv_msg_length(ws->wslay, ws->cfg.max_message);
  ws->fed = ws->framed = 0;
  return 0;
}

/* After wslay parsed what came: its output (pongs, its close frame) goes out, and a close
 * it sent ends the connection: the peer's close answered, or a frame it refused. */
static void after_recv(ml_ws_conn_t *ws) {
  wslay_event_context_ptr w = ws->wslay;
  int ours = ws->close_sent;
  if (wslay_event_want_write(w)) {
    ws->drop_output = ours;
    wslay_event_send(w);   /* cannot fail: send_cb takes everything */
    ws->drop_output = 0;
    ml_server_conn_send(ws->c, "", 0);   /* hand it to the kernel */
    if (!ws->c) return;
  }
  if (!ours && wslay_event_get_close_sent(w)) {
    ws->close_sent = 1;
    tell_closing(ws, wslay_event_get_status_code_sent(w), "", 0);
    finish(ws);
  } else if (ours && ws->close_received) {
    finish(ws);   /* the peer answered our close */
  }
}

/* --- the server's side (ml_server_upgrade_t) ------------------------------------------ */

static void on_read(void *arg, const char *data, size_t len) {
  ml_ws_conn_t *ws = arg;
  if (ws->finished || ws->close_received || !ws->c) return;   /* nothing more counts */
  ws->last_read = now_ms(ws);
  ws->pinged = 0;
  if (!ws->wslay && wslay_new(ws)) {
    fail(ws, 1011);
  } else {
    ws->in = data;
    ws->in_len = len;
    ws->fed += len;
    int rv = wslay_event_recv(ws->wslay);
    ws->in = NULL;
    ws->in_len = 0;
    /* an error: a frame its frame parser refused (a control frame over 125 bytes or in
     * fragments, a length not in its shortest form), or no memory */
    if (rv != 0) fail(ws, 1002);
    else after_recv(ws);
    if (ws->close_received || (!ws->fragmented && ws->fed == ws->framed)) drop_wslay(ws);
  }
  if (ws->starting) return;   /* ml_ws_conn_start wakes from the loop */
  emit(ws, ML_WS_READY, 0, NULL, 0);
}

static void on_close(void *arg) {
  ml_ws_conn_t *ws = arg;
  ws->c = NULL;
  drop_wslay(ws);
  tell_closing(ws, 1006, "", 0);
  emit(ws, ML_WS_LOST, 0, NULL, 0);
}

static void on_gone(void *arg) {
  ml_ws_conn_t *ws = arg;
  emit(ws, ML_WS_GONE, 0, NULL, 0);
  free(ws);
}

static void on_drain(void *arg) {
  ml_ws_conn_close(arg, 1001, "server shutting down", 20);
}

static void on_timer(void *arg) {
  ml_ws_conn_t *ws = arg;
  if (ws->notify) {
    ws->notify = 0;
    emit(ws, ML_WS_READY, 0, NULL, 0);
    if (!ws->c) return;
  }
  /* an idle WebSocket keeps no output buffer (the 101's, at first) */
  if (!ws->c->out.len && !ws->c->writing) ml_buf_free(&ws->c->out);
  uint64_t now = now_ms(ws);
  if (ws->finished) return;
  if (ws->close_sent) {
    if (now >= ws->close_at + ws->cfg.close_ms) {
      finish(ws);   /* the peer did not answer our close in time */
      return;
    }
  } else if (ws->cfg.idle_ms) {
    if (now >= ws->last_read + ws->cfg.idle_ms) {
      ml_ws_conn_close(ws, 1001, "idle timeout", 12);
      return;
    }
    if (!ws->pinged && now >= ws->last_read + ws->cfg.idle_ms / 2) {
      ws->pinged = 1;   /* a live peer answers: that is a read */
      write_frame(ws, ML_WS_PING, NULL, 0);
    }
  }
  arm(ws);
}

static void drained(void *arg) {
  emit(arg, ML_WS_DRAINED, 0, NULL, 0);
}

/* --- the owner's side ------------------------------------------------------------------ */

ml_ws_conn_t *ml_ws_conn_new(ml_server_conn_t *c, const ml_ws_config_t *cfg,
                             ml_ws_event_fn fn, void *arg) {
  ml_ws_conn_t *ws = ml_xcalloc(1, sizeof *ws);
  ws->c = c;
  ws->cfg = *cfg;
  ws->fn = fn;
  ws->arg = arg;
  ws->last_read = uv_now(c->srv->loop);
  return ws;
}

void ml_ws_conn_start(ml_ws_conn_t *ws) {
  static const ml_server_upgrade_t upgrade = {on_read, on_close, on_drain, on_timer, on_gone};
  ws->starting = 1;
  ml_server_conn_upgrade(ws->c, &upgrade, ws);
  ws->starting = 0;
  ws->notify = 1;
  arm(ws);
}

int ml_ws_conn_send(ml_ws_conn_t *ws, int kind, const void *data, size_t len) {
  if (!ws->c || ws->close_sent || ws->finished) return -1;
  write_frame(ws, kind, data, len);
  return ws->c ? 0 : -1;
}

size_t ml_ws_conn_unsent(const ml_ws_conn_t *ws) {
  return ws->c ? ml_server_conn_unsent(ws->c) : 0;
}

int ml_ws_conn_wait_drain(ml_ws_conn_t *ws, size_t low) {
  if (!ws->c || ml_server_conn_unsent(ws->c) <= low) return 0;
  ml_server_conn_on_drain(ws->c, drained, ws, low);
  return 1;
}

int ml_ws_conn_close(ml_ws_conn_t *ws, int code, const char *reason, size_t len) {
  if (!ws->c || ws->close_sent || ws->finished) return -1;
  send_close(ws, code, reason, len);
  tell_closing(ws, code, reason, len);
  ws->notify = 1;
  arm(ws);
  return 0;
}

void ml_ws_conn_pause(ml_ws_conn_t *ws, int on) {
  if (ws->c) ml_server_conn_hold(ws->c, on);
}

void ml_ws_conn_detach(ml_ws_conn_t *ws) {
  ws->fn = NULL;
}
