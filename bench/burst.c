/* burst — open N connections at once, send one GET on each, wait for every response.
 *
 *   burst HOST PORT N PATH TIMEOUT_S [WAVE]
 *
 * Each socket is non-blocking and watched with epoll. The request
 * "GET PATH HTTP/1.1\r\nHost: x\r\n\r\n" goes out as soon as that socket's connect
 * completes, so every request is in flight concurrently (the server is expected to hold
 * them, e.g. /sleep?s=1). A response is complete when its headers plus Content-Length
 * body bytes have arrived (or, without Content-Length, when the server closes; a chunked
 * body ends at "0\r\n\r\n"). A complete 2xx response counts as completed; anything else
 * (connect failure, reset, early close, non-2xx status, not done by TIMEOUT_S) is an error.
 *
 * WAVE (default 0 = unlimited; env BURST_WAVE also sets it) caps how many connects may be
 * in progress at once, so a small listen backlog does not make SYNs wait for the kernel's
 * 1 s retransmit: new sockets are opened as earlier connects complete.
 *
 * stdout, one line:
 *   completed=C errors=E elapsed=SECONDS first_send_to_last_response=SECONDS
 * elapsed runs from the first connect to the end; first_send_to_last_response from the
 * first request written to the last response received. stderr gets one detail line
 * (connect spread, error breakdown). Exit status 0 when errors=0, 1 otherwise, 2 on bad use.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

enum { ST_IDLE, ST_CONNECTING, ST_SENDING, ST_READING, ST_DONE };
enum { E_CONNECT, E_RESET, E_EOF, E_STATUS, E_TIMEOUT, E_PARSE, E_NKIND };
static const char *ekind[E_NKIND] = {"connect", "reset", "early_close", "status",
                                     "timeout", "parse"};

typedef struct {
  int fd;
  unsigned char state;
  unsigned short sent;   /* bytes of the request written */
  int status;            /* HTTP status, 0 until the status line is parsed */
  long hdr_len;          /* header block length incl. CRLFCRLF, -1 until known */
  long body_len;         /* Content-Length, -1 when absent */
  int chunked;
  double t_sent, t_done;  /* request fully written, response complete */
  char *buf;
  size_t len, cap;
} conn_t;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static conn_t *conns;
static int epfd, nconn;
static int active;       /* connections not yet done */
static int connecting;   /* connects in progress */
static long completed, errors, errs[E_NKIND];
static double t_first_send, t_last_send, t_last_resp, t_all_connected;
static char req[2048];
static int first_errno[E_NKIND]; /* the first errno seen per error kind, for the report */
static size_t req_len;

static void finish(conn_t *c, int err_kind) {
  if (c->state == ST_CONNECTING) connecting--;
  if (c->fd >= 0) {
    /* Abortive close (RST): leaves no TIME_WAIT socket behind. 10,000 of those per run
     * would crowd the ephemeral port range (28k ports) and make the next run's connects
     * slow, then fail with EADDRNOTAVAIL. */
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(c->fd); /* also removes it from the epoll set */
    c->fd = -1;
  }
  free(c->buf);
  c->buf = NULL;
  c->state = ST_DONE;
  active--;
  if (err_kind < 0) {
    completed++;
    t_last_resp = c->t_done = now();
  } else {
    errors++;
    errs[err_kind]++;
  }
}

static void fail(conn_t *c, int err_kind, int err) {
  if (err && !first_errno[err_kind]) first_errno[err_kind] = err;
  finish(c, err_kind);
}

/* Parse what has arrived; returns 1 when the response is complete. */
static int parse(conn_t *c) {
  if (c->hdr_len < 0) {
    char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (!end) return 0;
    c->hdr_len = end - c->buf + 4;
    if (c->len < 12 || memcmp(c->buf, "HTTP/1.", 7) != 0) return -1;
    c->status = atoi(c->buf + 9);
    c->body_len = -1;
    /* header lines: look for Content-Length / Transfer-Encoding: chunked */
    char *p = memchr(c->buf, '\n', c->hdr_len);
    while (p && p + 1 < c->buf + c->hdr_len) {
      char *line = p + 1;
      char *eol = memchr(line, '\n', c->buf + c->hdr_len - line);
      if (!eol) break;
      if (eol - line > 15 && strncasecmp(line, "content-length:", 15) == 0)
        c->body_len = strtol(line + 15, NULL, 10);
      else if (eol - line > 18 && strncasecmp(line, "transfer-encoding:", 18) == 0 &&
               memmem(line, eol - line, "chunked", 7))
        c->chunked = 1;
      p = eol;
    }
    if (c->status == 204 || c->status == 304 || (c->status >= 100 && c->status < 200))
      c->body_len = 0;
  }
  if (c->chunked)
    return c->len >= (size_t)c->hdr_len + 5 && memcmp(c->buf + c->len - 5, "0\r\n\r\n", 5) == 0;
  if (c->body_len >= 0) return (long)c->len >= c->hdr_len + c->body_len;
  return 0; /* delimited by close */
}

static void on_readable(conn_t *c) {
  for (;;) {
    if (c->cap - c->len < 512) {
      size_t ncap = c->cap ? c->cap * 2 : 1024;
      char *nb = realloc(c->buf, ncap);
      if (!nb) { finish(c, E_PARSE); return; }
      c->buf = nb;
      c->cap = ncap;
    }
    ssize_t n = read(c->fd, c->buf + c->len, c->cap - c->len);
    if (n > 0) {
      c->len += n;
      int r = parse(c);
      if (r < 0) { finish(c, E_PARSE); return; }
      if (r > 0) { finish(c, c->status >= 200 && c->status < 300 ? -1 : E_STATUS); return; }
      continue;
    }
    if (n == 0) { /* server closed */
      if (c->hdr_len >= 0 && c->body_len < 0 && !c->chunked)
        finish(c, c->status >= 200 && c->status < 300 ? -1 : E_STATUS);
      else
        finish(c, E_EOF);
      return;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) return;
    if (errno == EINTR) continue;
    fail(c, E_RESET, errno);
    return;
  }
}

static void on_writable(conn_t *c) {
  if (c->state == ST_CONNECTING) {
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
    if (soerr) { fail(c, E_CONNECT, soerr); return; }
    connecting--;
    c->state = ST_SENDING;
  }
  while (c->sent < req_len) {
    ssize_t n = write(c->fd, req + c->sent, req_len - c->sent);
    if (n > 0) {
      double t = now();
      if (c->sent == 0 && t_first_send == 0) t_first_send = t;
      c->sent += n;
      if (c->sent == req_len) t_last_send = c->t_sent = t;
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return; /* stay on EPOLLOUT */
    if (n < 0 && errno == EINTR) continue;
    fail(c, E_RESET, errno);
    return;
  }
  c->state = ST_READING;
  on_readable(c); /* edge-triggered: data may already be waiting */
}

static int open_one(conn_t *c, const struct sockaddr_storage *sa, socklen_t salen) {
  int fd = socket(sa->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    fprintf(stderr, "burst: socket: %s\n", strerror(errno));
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  c->fd = fd;
  c->state = ST_CONNECTING;
  c->hdr_len = -1;
  connecting++;
  active++;
  int rc = connect(fd, (const struct sockaddr *)sa, salen);
  if (rc < 0 && errno != EINPROGRESS) {
    fail(c, E_CONNECT, errno);
    return 0;
  }
  /* one registration for the socket's whole life, edge-triggered */
  struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN | EPOLLRDHUP | EPOLLET,
                           .data.u32 = (uint32_t)(c - conns)};
  epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 6 || argc > 7) {
    fprintf(stderr, "usage: burst HOST PORT N PATH TIMEOUT_S [WAVE]\n");
    return 2;
  }
  const char *host = argv[1], *port = argv[2], *path = argv[4];
  nconn = atoi(argv[3]);
  double timeout = atof(argv[5]);
  const char *wave_s = argc > 6 ? argv[6] : getenv("BURST_WAVE");
  int wave = wave_s ? atoi(wave_s) : 0;
  if (nconn <= 0 || timeout <= 0 || wave < 0) {
    fprintf(stderr, "burst: N and TIMEOUT_S must be positive, WAVE >= 0\n");
    return 2;
  }
  req_len = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
  if (req_len >= sizeof req) {
    fprintf(stderr, "burst: PATH too long\n");
    return 2;
  }

  /* one fd per connection plus a few */
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rlim_t want = (rlim_t)nconn + 64;
  if (rl.rlim_cur < want) {
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want) rl.rlim_max = want;
    rl.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
      getrlimit(RLIMIT_NOFILE, &rl);
      fprintf(stderr, "burst: cannot raise RLIMIT_NOFILE to %lu (hard limit %lu): %s\n",
              (unsigned long)want, (unsigned long)rl.rlim_max, strerror(errno));
      return 2;
    }
  }

  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
  int gai = getaddrinfo(host, port, &hints, &ai);
  if (gai) {
    fprintf(stderr, "burst: %s:%s: %s\n", host, port, gai_strerror(gai));
    return 2;
  }
  struct sockaddr_storage sa;
  socklen_t salen = ai->ai_addrlen;
  memcpy(&sa, ai->ai_addr, salen);
  freeaddrinfo(ai);

  conns = calloc(nconn, sizeof *conns);
  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (!conns || epfd < 0) {
    fprintf(stderr, "burst: out of memory / epoll: %s\n", strerror(errno));
    return 2;
  }
  struct epoll_event *evs = calloc(1024, sizeof *evs);

  double t0 = now(), deadline = t0 + timeout;
  int opened = 0;
  for (;;) {
    /* open at most 256 per turn so early sockets get their request out right away */
    int batch = 0;
    while (opened < nconn && (wave == 0 || connecting < wave) && batch++ < 256) {
      if (open_one(&conns[opened], &sa, salen) < 0) {
        /* out of sockets/ports: count the rest as connect errors */
        for (; opened < nconn; opened++) { errors++; errs[E_CONNECT]++; }
        break;
      }
      opened++;
    }
    if (opened == nconn && connecting == 0 && t_all_connected == 0) t_all_connected = now();
    if (opened == nconn && active == 0) break;
    double left = deadline - now();
    if (left <= 0) break;
    int more = opened < nconn && (wave == 0 || connecting < wave);
    int n = epoll_wait(epfd, evs, 1024, more ? 0 : left > 0.1 ? 100 : (int)(left * 1000) + 1);
    if (n < 0 && errno != EINTR) {
      fprintf(stderr, "burst: epoll_wait: %s\n", strerror(errno));
      return 2;
    }
    for (int i = 0; i < n; i++) {
      conn_t *c = &conns[evs[i].data.u32];
      if (c->state == ST_DONE) continue;
      if (c->state == ST_CONNECTING && (evs[i].events & (EPOLLERR | EPOLLHUP))) {
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
        fail(c, E_CONNECT, soerr);
        continue;
      }
      if (c->state == ST_CONNECTING || c->state == ST_SENDING) {
        if (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_writable(c);
      } else if (c->state == ST_READING) {
        on_readable(c);
      }
    }
  }
  double t_end = now();
  for (int i = 0; i < opened; i++)
    if (conns[i].state != ST_DONE) finish(&conns[i], E_TIMEOUT);

  printf("completed=%ld errors=%ld elapsed=%.3f first_send_to_last_response=%.3f\n", completed,
         errors, t_end - t0, t_first_send > 0 && t_last_resp > 0 ? t_last_resp - t_first_send : 0.0);
  fflush(stdout);
  fprintf(stderr, "burst: n=%d wave=%d all_connected_after=%.3fs last_send_after_first=%.3fs",
          nconn, wave, t_all_connected > 0 ? t_all_connected - t0 : -1.0,
          t_last_send > 0 ? t_last_send - t_first_send : -1.0);
  /* per-request latency (request written -> response complete) of the completed ones */
  double *lat = malloc(sizeof(double) * (completed ? completed : 1));
  long nl = 0;
  for (int i = 0; i < opened; i++)
    if (conns[i].t_done > 0 && conns[i].t_sent > 0) lat[nl++] = conns[i].t_done - conns[i].t_sent;
  if (nl) {
    qsort(lat, nl, sizeof *lat, cmp_double);
    fprintf(stderr, " latency_min=%.3fs p50=%.3fs p99=%.3fs max=%.3fs", lat[0], lat[nl / 2],
            lat[(long)(nl * 0.99) < nl ? (long)(nl * 0.99) : nl - 1], lat[nl - 1]);
  }
  for (int k = 0; k < E_NKIND; k++)
    if (errs[k]) {
      fprintf(stderr, " %s=%ld", ekind[k], errs[k]);
      if (first_errno[k]) fprintf(stderr, "(%s)", strerrorname_np(first_errno[k]));
    }
  fputc('\n', stderr);
  return errors ? 1 : 0;
}
