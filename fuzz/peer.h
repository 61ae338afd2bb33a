/* The client side of a memory connection (ml_server_conn_mem) for the fuzz targets that
 * serve one: every byte the server writes, and whether it closed the connection. Embed a
 * fuzz_peer_t first in a state of one's own to keep more. */
#ifndef ML_FUZZ_PEER_H
#define ML_FUZZ_PEER_H
#include "fuzz.h"
#include "server.h"

typedef struct {
  ml_buf_t out;
  int closed;                /* the server closed the connection */
} fuzz_peer_t;

static inline void fuzz_peer_data(void *arg, const char *data, size_t len) {
  fuzz_peer_t *p = arg;
  FUZZ_CHECK(!p->closed, "output after the close");
  ml_buf_add(&p->out, data, len);
}

static inline void fuzz_peer_close(void *arg) {
  ((fuzz_peer_t *)arg)->closed = 1;
}

/* ml_server_conn_mem(s, &fuzz_peer, &state): state starts with a fuzz_peer_t */
static const ml_server_peer_t fuzz_peer = { fuzz_peer_data, fuzz_peer_close };
#endif
