/* ws_idle — open N WebSocket connections, hold them idle, then time one broadcast.
 *
 *   ws_idle HOST PORT N PATH HOLD_S
 *
 * Build: cc -O2 -o build/bench/ws_idle bench/ws_idle.c   (Linux: epoll; no extra libraries)
 *
 * Every socket is non-blocking and registered with epoll. Connects go out in waves of 500;
 * each socket sends the opening handshake as soon as it is connected and waits for the
 * 101. When all N are open it prints "open=N after=SECONDS" on stdout, sleeps HOLD_S
 * seconds (meanwhile the caller measures the server), then sends one text frame "go" on
 * the first connection (a broadcast app sends it on to every connection) and times until
 * every connection has received a frame. Then it prints
 *   broadcast_ms=MS received=R
 * and closes everything with RSTs. Exit status 0 when all N opened and received, 1 if not,
 * 2 on bad usage. Anything not done within 60 s counts as failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { ST_CONNECTING, ST_HANDSHAKE, ST_OPEN, ST_GOT, ST_FAILED };

typedef struct {
  int fd, state;
  int head_len;               /* bytes of the 101 response read so far (ends at \r\n\r\n) */
  char tail[4];
} conn_t;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char *request_fmt =
    "GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: ws_idle HOST PORT N PATH HOLD_S\n");
    return 2;
  }
  int n = atoi(argv[3]), hold = atoi(argv[5]);
  char req[512];
  int req_len = snprintf(req, sizeof req, request_fmt, argv[4]);
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
  inet_pton(AF_INET, argv[1], &addr.sin_addr);
  conn_t *cs = calloc((size_t)n, sizeof *cs);
  int ep = epoll_create1(0), started = 0, pending = 0, open = 0, got = 0, failed = 0;
  struct epoll_event evs[256];
  double t0 = now_s(), tb = 0;
  int phase = 0;   /* 0: opening, 1: broadcast sent */
  while (now_s() - t0 < 60) {
    while (phase == 0 && started < n && pending < 500) {
      conn_t *c = &cs[started];
      c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
      if (c->fd < 0) { perror("socket"); return 1; }
      int one = 1;
      setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      connect(c->fd, (struct sockaddr *)&addr, sizeof addr);
      struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = (uint32_t)started};
      epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
      started++;
      pending++;
    }
    if (phase == 0 && open + failed == n) {
      printf("open=%d after=%.2f\n", open, now_s() - t0);
      fflush(stdout);
      if (open < n) break;
      sleep((unsigned)hold);
      /* "go", masked with a zero key */
      static const unsigned char go[] = {0x81, 0x82, 0, 0, 0, 0, 'g', 'o'};
      tb = now_s();
      phase = 1;
      if (write(cs[0].fd, go, sizeof go) != sizeof go) { perror("write"); return 1; }
    }
    if (phase == 1 && got + failed == n) break;
    int k = epoll_wait(ep, evs, 256, 100);
    for (int i = 0; i < k; i++) {
      conn_t *c = &cs[evs[i].data.u32];
      if (evs[i].events & (EPOLLERR | EPOLLHUP)) {
        if (c->state != ST_FAILED && c->state != ST_GOT) {
          if (c->state < ST_OPEN) pending--;
          c->state = ST_FAILED;
          failed++;
        }
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        continue;
      }
      if (c->state == ST_CONNECTING && (evs[i].events & EPOLLOUT)) {
        if (write(c->fd, req, (size_t)req_len) != req_len) continue;
        c->state = ST_HANDSHAKE;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = evs[i].data.u32};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
      }
      if (!(evs[i].events & EPOLLIN)) continue;
      char buf[4096];
      ssize_t r = read(c->fd, buf, sizeof buf);
      if (r <= 0) continue;
      if (c->state == ST_HANDSHAKE) {   /* find the end of the 101 head */
        for (ssize_t j = 0; j < r; j++) {
          memmove(c->tail, c->tail + 1, 3);
          c->tail[3] = buf[j];
          if (memcmp(c->tail, "\r\n\r\n", 4) == 0) {
            c->state = ST_OPEN;
            open++;
            pending--;
            break;
          }
        }
      } else if (c->state == ST_OPEN && phase == 1) {
        c->state = ST_GOT;
        got++;
      }
    }
  }
  double ms = tb ? (now_s() - tb) * 1000 : 0;
  printf("broadcast_ms=%.1f received=%d\n", ms, got);
  struct linger l = {1, 0};
  for (int i = 0; i < started; i++) {
    setsockopt(cs[i].fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    close(cs[i].fd);
  }
  return open == n && got == n ? 0 : 1;
}
