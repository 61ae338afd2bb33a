/* client — the misbehaving and the patient clients of stress/run.sh (make stress).
 *
 *   client slowloris HOST PORT N INTERVAL_MS SECONDS
 *       keeps N connections that send "GET /hello HTTP/1.1", "Host: x", then one header
 *       byte per connection every INTERVAL_MS, never the blank line that ends the headers;
 *       a connection the server cuts is replaced at once. After SECONDS, stdout:
 *       opened= cut= answered= cut_after_min= cut_after_p50= cut_after_max= open_at_end=
 *       (answered: cut connections that got a status line first, e.g. 408).
 *   client hold HOST PORT N PATH HOLD_S
 *       opens N connections (at most 500 connects pending at once), sends GET PATH on each
 *       and reads the response; prints "ready=R errors=E" once every connection is answered
 *       or failed, keeps them idle for HOLD_S seconds, then sends a second GET on each and
 *       prints "second=R errors=E closed_while_idle=C".
 *   client endless HOST PORT KIND
 *       sends a request that never ends, KIND: body (a chunked body of 16 KiB chunks),
 *       ext (one chunk line of endless chunk extensions), trailers (endless trailer
 *       fields); stops when the server closes, after 1 GiB, or after 30 s. stdout:
 *       status=S sent_bytes=B closed=yes|no elapsed=SECONDS (status 0: no response).
 *   client paced HOST PORT RATE SECONDS
 *       a good client: one keep-alive connection asking GET /hello RATE times a second (the
 *       next request at its slot, or at once when late), each timed. stdout:
 *       requests= errors= p50_ms= p99_ms= max_ms=  (a failed connection is reopened)
 *   client writes HOST PORT CONNS SECONDS FIRST_ID
 *       CONNS keep-alive connections, each sending POST /rows/ID (IDs FIRST_ID, FIRST_ID+1,
 *       ... over all connections) one after the other; prints each ID answered 2xx on stdout, one a
 *       line. Ends after SECONDS or once every connection has died (the server killed).
 *
 * Build: cc -O2 -o build/stress/client stress/client.c   (Linux: epoll, no libraries)
 * Loopback only: HOST must be a numeric IPv4 address. Exit status 0, 2 on bad usage.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in addr;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) {
  fprintf(stderr, "client: %s: %s\n", what, strerror(errno));
  exit(2);
}

/* A non-blocking socket with a connect to addr started; -1 when it failed at once. */
static int open_conn(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Closes with an RST: no TIME_WAIT left behind on a machine that opens thousands. */
static void close_rst(int fd) {
  struct linger lg = { 1, 0 };
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(fd);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* ------------------------------------------------------------------------ responses */

/* The response being read on a connection: a header block, then Content-Length bytes. */
typedef struct {
  char head[4096];
  size_t n;       /* bytes of head kept */
  long body_left; /* -1 while the header block is incomplete */
  int status;
} resp_t;

static void resp_reset(resp_t *r) {
  r->n = 0;
  r->body_left = -1;
  r->status = 0;
}

/* Feeds LEN received bytes; returns 1 when a whole response has arrived, 0 when more is
 * needed, -1 when it cannot be read (no Content-Length, header block too long). */
static int resp_feed(resp_t *r, const char *p, size_t len) {
  while (len > 0) {
    if (r->body_left < 0) {
      size_t take = len < sizeof r->head - 1 - r->n ? len : sizeof r->head - 1 - r->n;
      if (take == 0) return -1;
      memcpy(r->head + r->n, p, take);
      size_t old = r->n;
      r->n += take;
      r->head[r->n] = '\0';
      char *end = strstr(r->head, "\r\n\r\n");
      if (!end) { p += take; len -= take; continue; }
      size_t used = (size_t)(end + 4 - r->head) - old;
      p += used;
      len -= used;
      if (sscanf(r->head, "HTTP/1.%*d %d", &r->status) != 1) return -1;
      char *cl = strcasestr(r->head, "\r\ncontent-length:");
      if (!cl) return -1;
      r->body_left = strtol(cl + 17, NULL, 10);
    } else {
      size_t take = (long)len < r->body_left ? len : (size_t)r->body_left;
      r->body_left -= take;
      p += take;
      len -= take;
    }
    if (r->body_left == 0) return len == 0 ? 1 : -1;
  }
  return r->body_left == 0;
}

/* ------------------------------------------------------------------------ slowloris */

static int slowloris(int n, int interval_ms, double seconds) {
  int ep = epoll_create1(0);
  if (ep < 0) die("epoll_create1");
  int *fds = calloc(n, sizeof *fds);
  double *born = calloc(n, sizeof *born);
  int *got_status = calloc(n, sizeof *got_status);
  size_t cuts_cap = 1024, cuts_n = 0;
  double *cuts = malloc(cuts_cap * sizeof *cuts);
  if (!fds || !born || !got_status || !cuts) die("calloc");
  long opened = 0, answered = 0;
  const char *start = "GET /hello HTTP/1.1\r\nHost: x\r\n";
  const char *drip = "X-Slow: ";
  double t0 = now(), next_drip = t0 + interval_ms / 1000.0;
  long drips = 0;

  for (int i = 0; i < n; i++) fds[i] = -1;
  while (now() - t0 < seconds) {
    for (int i = 0; i < n; i++) {
      if (fds[i] >= 0) continue;
      int fd = open_conn();
      if (fd < 0) continue;
      struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.u32 = i };
      if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
      fds[i] = fd;
      born[i] = now();
      got_status[i] = 0;
      opened++;
    }
    struct epoll_event evs[256];
    int k = epoll_wait(ep, evs, 256, 50);
    for (int e = 0; e < k; e++) {
      int i = evs[e].data.u32, fd = fds[i];
      if (fd < 0) continue;
      if (evs[e].events & EPOLLOUT) {
        /* connected: the request line and Host, then only drips */
        send(fd, start, strlen(start), MSG_NOSIGNAL);
        struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.u32 = i };
        epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
      }
      if (evs[e].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        char buf[512];
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r > 0 && memcmp(buf, "HTTP/1.", 7) == 0) got_status[i] = 1;
        if (r > 0 && !(evs[e].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))) continue;
        if (cuts_n == cuts_cap) {
          cuts_cap *= 2;
          cuts = realloc(cuts, cuts_cap * sizeof *cuts);
          if (!cuts) die("realloc");
        }
        cuts[cuts_n++] = now() - born[i];
        answered += got_status[i];
        close_rst(fd);
        fds[i] = -1;
      }
    }
    if (now() >= next_drip) {
      char c = drip[drips++ % strlen(drip)];
      for (int i = 0; i < n; i++)
        if (fds[i] >= 0) send(fds[i], &c, 1, MSG_NOSIGNAL);
      next_drip += interval_ms / 1000.0;
    }
  }
  int open_at_end = 0;
  for (int i = 0; i < n; i++)
    if (fds[i] >= 0) { open_at_end++; close_rst(fds[i]); }
  qsort(cuts, cuts_n, sizeof *cuts, cmp_double);
  printf("opened=%ld cut=%zu answered=%ld cut_after_min=%.2f cut_after_p50=%.2f "
         "cut_after_max=%.2f open_at_end=%d\n", opened, cuts_n, answered,
         cuts_n ? cuts[0] : 0, cuts_n ? cuts[cuts_n / 2] : 0, cuts_n ? cuts[cuts_n - 1] : 0,
         open_at_end);
  return 0;
}

/* ------------------------------------------------------------------------ hold */

typedef struct {
  int fd;
  int state; /* 0 connecting, 1 waiting for a response, 2 answered (idle), 3 failed */
  resp_t r;
} hconn_t;

/* One round over C[0..N): sends REQ on every connection in state 0 (once connected) or 2,
 * reads the responses; returns when none is pending or after TIMEOUT_S. *ok: answered
 * 2xx; *failed: the others. Each connection's epoll data is its hconn_t. */
static void hold_round(int ep, hconn_t *c, int n, const char *req, int timeout_s, int *ok,
                       int *failed) {
  int pending = 0;
  *ok = *failed = 0;
  for (int i = 0; i < n; i++) {
    if (c[i].state == 2) {
      resp_reset(&c[i].r);
      if (send(c[i].fd, req, strlen(req), MSG_NOSIGNAL) < 0) { c[i].state = 3; continue; }
      c[i].state = 1;
    }
    if (c[i].state < 2) pending++;
  }
  double t0 = now();
  while (pending > 0 && now() - t0 < timeout_s) {
    struct epoll_event evs[256];
    int k = epoll_wait(ep, evs, 256, 100);
    for (int e = 0; e < k; e++) {
      hconn_t *h = evs[e].data.ptr;
      if (h->state >= 2) continue;
      if (h->state == 0) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(h->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err || send(h->fd, req, strlen(req), MSG_NOSIGNAL) < 0) {
          h->state = 3;
          pending--;
          continue;
        }
        resp_reset(&h->r);
        h->state = 1;
        struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data = evs[e].data };
        epoll_ctl(ep, EPOLL_CTL_MOD, h->fd, &ev);
        continue;
      }
      char buf[4096];
      ssize_t r = recv(h->fd, buf, sizeof buf, 0);
      if (r < 0 && errno == EAGAIN) continue;
      int done = r > 0 ? resp_feed(&h->r, buf, r) : -1;
      if (done == 0) continue;
      h->state = done == 1 && h->r.status / 100 == 2 ? 2 : 3;
      pending--;
    }
  }
  for (int i = 0; i < n; i++) {
    if (c[i].state == 2) (*ok)++;
    else c[i].state = 3, (*failed)++;
  }
}

static int hold(int n, const char *path, int hold_s) {
  int ep = epoll_create1(0);
  if (ep < 0) die("epoll_create1");
  hconn_t *c = calloc(n, sizeof *c);
  if (!c) die("calloc");
  char req[1024];
  snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
  /* connects in waves of 500, so that the server's accept queue never overflows */
  int ok = 0, failed = 0;
  for (int base = 0; base < n; base += 500) {
    int m = n - base < 500 ? n - base : 500, w_ok, w_failed;
    for (int i = base; i < base + m; i++) {
      c[i].fd = open_conn();
      if (c[i].fd < 0) { c[i].state = 3; continue; }
      struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = &c[i] };
      if (epoll_ctl(ep, EPOLL_CTL_ADD, c[i].fd, &ev) < 0) die("epoll_ctl");
    }
    hold_round(ep, c + base, m, req, 30, &w_ok, &w_failed);
    ok += w_ok;
    failed += w_failed;
  }
  printf("ready=%d errors=%d\n", ok, failed);
  fflush(stdout);
  sleep(hold_s);
  /* an idle connection the server closed reads EOF now */
  int closed = 0;
  for (int i = 0; i < n; i++) {
    char b;
    if (c[i].state == 2 && recv(c[i].fd, &b, 1, MSG_DONTWAIT) == 0) closed++;
  }
  hold_round(ep, c, n, req, 30, &ok, &failed);
  printf("second=%d errors=%d closed_while_idle=%d\n", ok, failed, closed);
  for (int i = 0; i < n; i++)
    if (c[i].fd > 0) close_rst(c[i].fd);
  return 0;
}

/* ------------------------------------------------------------------------ endless */

static int endless(const char *kind) {
  const char *head, *piece;
  char chunk[16384 + 16];
  if (strcmp(kind, "body") == 0) {
    head = "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    memcpy(chunk, "4000\r\n", 6);
    memset(chunk + 6, 'b', 16384);
    memcpy(chunk + 6 + 16384, "\r\n", 3);
    piece = chunk;
  } else if (strcmp(kind, "ext") == 0) {
    head = "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1";
    /* quoted values: llhttp 8.1 rejects a ';' after an unquoted one (";a=b;c=d") */
    piece = ";name=\"value\"";
  } else if (strcmp(kind, "trailers") == 0) {
    head = "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           "5\r\nhello\r\n0\r\n";
    piece = "X-Trailer: value\r\n";
  } else {
    fprintf(stderr, "client: endless KIND: body, ext or trailers\n");
    return 2;
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
  fcntl(fd, F_SETFL, O_NONBLOCK);
  size_t plen = strlen(piece), off = 0;
  long long sent = 0;
  int status = 0, closed = 0, wrote_head = 0;
  double t0 = now();
  char in[4096];
  size_t in_n = 0;
  while (!closed && now() - t0 < 30 && sent < (1LL << 30)) {
    struct pollfd p = { fd, POLLIN | POLLOUT, 0 };
    if (poll(&p, 1, 100) <= 0) continue;
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t r = recv(fd, in + in_n, sizeof in - 1 - in_n, 0);
      if (r <= 0) { closed = 1; break; }
      in_n += r;
      in[in_n] = '\0';
      if (!status) sscanf(in, "HTTP/1.%*d %d", &status);
      if (in_n == sizeof in - 1) in_n = 0;
    }
    if (p.revents & POLLOUT) {
      const char *s = wrote_head ? piece + off : head + off;
      size_t len = (wrote_head ? plen : strlen(head)) - off;
      ssize_t w = send(fd, s, len, MSG_NOSIGNAL);
      if (w < 0) {
        if (errno == EAGAIN) continue;
        closed = 1; /* EPIPE, ECONNRESET: the server closed */
        break;
      }
      sent += w;
      off += w;
      if (off == (wrote_head ? plen : strlen(head))) { off = 0; wrote_head = 1; }
    }
  }
  /* a response may still be in flight behind a reset */
  if (!status) {
    ssize_t r = recv(fd, in, sizeof in - 1, MSG_DONTWAIT);
    if (r > 0) { in[r] = '\0'; sscanf(in, "HTTP/1.%*d %d", &status); }
  }
  printf("status=%d sent_bytes=%lld closed=%s elapsed=%.2f\n", status, sent,
         closed ? "yes" : "no", now() - t0);
  close_rst(fd);
  return 0;
}

/* ------------------------------------------------------------------------ paced */

static int paced(int rate, double seconds) {
  const char *req = "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n";
  size_t cap = (size_t)(rate * seconds) + 16, n = 0;
  double *lat = malloc(cap * sizeof *lat);
  if (!lat) die("malloc");
  long errors = 0;
  int fd = -1;
  double t0 = now(), slot = t0;
  while (now() - t0 < seconds && n < cap) {
    double wait = slot - now();
    if (wait > 0) usleep((useconds_t)(wait * 1e6));
    slot += 1.0 / rate;
    if (fd < 0) {
      fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        errors++;
        if (fd >= 0) close(fd);
        fd = -1;
        continue;
      }
    }
    double s = now();
    resp_t r;
    resp_reset(&r);
    int done = send(fd, req, strlen(req), MSG_NOSIGNAL) < 0 ? -1 : 0;
    while (done == 0) {
      char buf[4096];
      struct pollfd p = { fd, POLLIN, 0 };
      ssize_t got = poll(&p, 1, 5000) == 1 ? recv(fd, buf, sizeof buf, 0) : -1;
      done = got > 0 ? resp_feed(&r, buf, got) : -1;
    }
    if (done == 1 && r.status == 200) {
      lat[n++] = (now() - s) * 1000;
    } else {
      errors++;
      close(fd);
      fd = -1;
    }
  }
  if (fd >= 0) close(fd);
  qsort(lat, n, sizeof *lat, cmp_double);
  printf("requests=%zu errors=%ld p50_ms=%.3f p99_ms=%.3f max_ms=%.3f\n", n, errors,
         n ? lat[n / 2] : 0, n ? lat[n * 99 / 100] : 0, n ? lat[n - 1] : 0);
  return 0;
}

/* ------------------------------------------------------------------------ writes */

static int writes(int conns, double seconds, long first_id) {
  hconn_t *c = calloc(conns, sizeof *c);
  long *ids = calloc(conns, sizeof *ids);
  if (!c || !ids) die("calloc");
  long next_id = first_id;
  int alive = conns;
  for (int i = 0; i < conns; i++) {
    c[i].fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c[i].fd < 0 || connect(c[i].fd, (struct sockaddr *)&addr, sizeof addr) < 0)
      die("connect");
    c[i].state = 2;
  }
  struct pollfd *p = calloc(conns, sizeof *p);
  if (!p) die("calloc");
  double t0 = now();
  while (alive > 0 && now() - t0 < seconds) {
    for (int i = 0; i < conns; i++) {
      if (c[i].state != 2) continue;
      char req[256];
      ids[i] = next_id++;
      int len = snprintf(req, sizeof req, "POST /rows/%ld HTTP/1.1\r\nHost: x\r\n"
                         "Content-Length: 16\r\n\r\nrow-%012ld", ids[i], ids[i]);
      resp_reset(&c[i].r);
      if (send(c[i].fd, req, len, MSG_NOSIGNAL) != len) { c[i].state = 3; alive--; continue; }
      c[i].state = 1;
    }
    for (int i = 0; i < conns; i++) p[i] = (struct pollfd){ c[i].fd, POLLIN, 0 };
    if (poll(p, conns, 100) <= 0) continue;
    for (int i = 0; i < conns; i++) {
      if (c[i].state != 1 || !p[i].revents) continue;
      char buf[4096];
      ssize_t r = recv(c[i].fd, buf, sizeof buf, 0);
      int done = r > 0 ? resp_feed(&c[i].r, buf, r) : -1;
      if (done == 0) continue;
      if (done == 1 && c[i].r.status / 100 == 2) {
        printf("%ld\n", ids[i]);
        c[i].state = 2;
      } else {
        c[i].state = 3;
        alive--;
      }
    }
  }
  fflush(stdout);
  return 0;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  if (argc < 4) goto usage;
  addr.sin_family = AF_INET;
  addr.sin_port = htons(atoi(argv[3]));
  if (inet_pton(AF_INET, argv[2], &addr.sin_addr) != 1) goto usage;
  if (strcmp(argv[1], "slowloris") == 0 && argc == 7)
    return slowloris(atoi(argv[4]), atoi(argv[5]), atof(argv[6]));
  if (strcmp(argv[1], "hold") == 0 && argc == 7)
    return hold(atoi(argv[4]), argv[5], atoi(argv[6]));
  if (strcmp(argv[1], "endless") == 0 && argc == 5) return endless(argv[4]);
  if (strcmp(argv[1], "paced") == 0 && argc == 6) return paced(atoi(argv[4]), atof(argv[5]));
  if (strcmp(argv[1], "writes") == 0 && argc == 7)
    return writes(atoi(argv[4]), atof(argv[5]), atol(argv[6]));
usage:
  fprintf(stderr, "usage: client slowloris|hold|endless|paced|writes HOST PORT ... (see client.c)\n");
  return 2;
}
