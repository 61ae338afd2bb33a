/* burst — open N connections at once, send one GET on each, wait for every response.
 *
 *   burst HOST PORT N PATH TIMEOUT_S [WAVE]
 *
 * Build: cc -O2 -o build/bench/burst bench/burst.c   (Linux: epoll; no extra libraries)
 *
 * Every socket is non-blocking and registered once with epoll (edge-triggered). The request
 * "GET PATH HTTP/1.1\r\nHost: x\r\n\r\n" is written as soon as that socket's connect
 * completes, so all requests are in flight at the same time when the server holds them
 * (e.g. /sleep?s=1). A response is complete when its header block plus Content-Length body
 * bytes have arrived (without Content-Length: when the server closes; chunked: at
 * "0\r\n\r\n"). A complete 2xx response counts as completed; anything else (connect
 * failure, reset, early close, non-2xx status, parse error, not done within TIMEOUT_S) is
 * an error. Sockets are closed with an RST once done, so no TIME_WAIT is left behind.
 * A "{i}" in PATH (the first one) is replaced by the request's number, 1..N, so that each
 * request can ask for something else (e.g. /item/{i}); without it every request is the same.
 *
 * Listen backlog: when the server's accept queue is full the kernel drops the SYN and the
 * client would only retransmit it after 1 s. burst instead restarts a connect that has not
 * completed within 100 ms (env BURST_CONNECT_RETRY_MS, 0 = leave it to the kernel) with a
 * fresh socket, and counts it (connect_retries). WAVE (or env BURST_WAVE; default 0 =
 * unlimited) caps the number of connects pending at once: sockets are opened in waves as
 * earlier connects complete, each request still sent the moment its socket connects.
 *
 * stdout, one line:
 *   completed=C errors=E elapsed=SECONDS first_send_to_last_response=SECONDS
 * elapsed: from the first connect to the end; first_send_to_last_response: from the first
 * request written to the last response received.
 * stderr, one line of key=value details:
 *   burst: n= wave= connect_retries= all_connected_after=S last_send_after_first=S
 *          latency_min=S p50=S p99=S max=S [KIND=COUNT(ERRNO) ...]
 * (latency: per request, request written -> response complete.)
 * Exit status: 0 when errors=0, 1 when some requests failed, 2 on bad usage or setup failure.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { ST_IDLE, ST_CONNECTING, ST_SENDING, ST_READING, ST_DONE };
enum { E_CONNECT, E_RESET, E_EOF, E_STATUS, E_TIMEOUT, E_PARSE, E_NKIND };
static const char *ekind[E_NKIND] = {"connect", "reset", "early_close", "status",
                                     "timeout", "parse"};

typedef struct {
  int fd;
  unsigned char state;
  unsigned char retries;  /* connect restarts */
  unsigned short sent;    /* bytes of the request written */
  int status;             /* HTTP status, 0 until the status line is parsed */
  int chunked;
  long hdr_len;           /* header block length incl. CRLFCRLF, -1 until known */
  long body_len;          /* Content-Length, -1 when absent */
  double t_connect;       /* current connect attempt started */
  double t_sent, t_done;  /* request fully written, response complete */
  char *buf;
  size_t len, cap;
} conn_t;

static conn_t *conns;
static int epfd, nconn;
static int active;      /* sockets opened and not done */
static int connecting;  /* connects pending */
static long completed, errors, errs[E_NKIND], connect_retries;
static int first_errno[E_NKIND]; /* first errno per error kind, for the report */
static double t_first_send, t_last_send, t_last_resp, t_all_connected;
static char req[2048];   /* the request; with "{i}": the part before it */
static size_t req_len;
static const char *req_tail; /* with "{i}": the rest of the request after it, else NULL */
static struct sockaddr_storage addr;
static socklen_t addrlen;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Close abortively (RST): 10,000 TIME_WAIT sockets per run would crowd the ephemeral port
 * range (28k ports) and make the next run's connects slow, then fail (EADDRNOTAVAIL). */
static void close_rst(int fd) {
  struct linger lg = {.l_onoff = 1, .l_linger = 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(fd); /* also removes it from the epoll set */
}

/* err_kind < 0: completed; otherwise an error of that kind (err: errno or 0) */
static void finish(conn_t *c, int err_kind, int err) {
  if (c->state == ST_CONNECTING) connecting--;
  if (c->fd >= 0) close_rst(c->fd);
  c->fd = -1;
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
    if (err && !first_errno[err_kind]) first_errno[err_kind] = err;
  }
}

/* Start (or restart) the connect of c on a new socket. -1: no socket could be created. */
static int start_connect(conn_t *c) {
  int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  c->fd = fd;
  c->t_connect = now();
  if (connect(fd, (const struct sockaddr *)&addr, addrlen) < 0 && errno != EINPROGRESS) {
    finish(c, E_CONNECT, errno);
    return 0;
  }
  /* one registration for the socket's whole life */
  struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN | EPOLLRDHUP | EPOLLET,
                           .data.u32 = (uint32_t)(c - conns)};
  epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
  return 0;
}

static int open_conn(conn_t *c) {
  c->state = ST_CONNECTING;
  c->hdr_len = -1;
  c->fd = -1;
  connecting++;
  active++;
  if (start_connect(c) == 0) return 0;
  int err = errno;
  fprintf(stderr, "burst: socket: %s\n", strerror(err));
  finish(c, E_CONNECT, err);
  return -1;
}

/* Parse what has arrived: 1 complete, 0 more to come, -1 malformed. */
static int parse(conn_t *c) {
  if (c->hdr_len < 0) {
    char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (!end) return 0;
    c->hdr_len = end - c->buf + 4;
    if (c->hdr_len < 16 || memcmp(c->buf, "HTTP/1.", 7) != 0) return -1;
    c->status = atoi(c->buf + 9);
    c->body_len = -1;
    char *hend = c->buf + c->hdr_len;
    for (char *p = memchr(c->buf, '\n', c->hdr_len); p && p + 1 < hend;) {
      char *line = p + 1, *eol = memchr(line, '\n', hend - line);
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

static int ok_status(conn_t *c) { return c->status >= 200 && c->status < 300 ? -1 : E_STATUS; }

static void on_readable(conn_t *c) {
  for (;;) {
    if (c->cap - c->len < 512) {
      size_t ncap = c->cap ? c->cap * 2 : 1024;
      char *nb = realloc(c->buf, ncap);
      if (!nb) { finish(c, E_PARSE, ENOMEM); return; }
      c->buf = nb;
      c->cap = ncap;
    }
    ssize_t n = read(c->fd, c->buf + c->len, c->cap - c->len);
    if (n > 0) {
      c->len += n;
      int r = parse(c);
      if (r < 0) { finish(c, E_PARSE, 0); return; }
      if (r > 0) { finish(c, ok_status(c), 0); return; }
      continue;
    }
    if (n == 0) { /* the server closed */
      if (c->hdr_len >= 0 && c->body_len < 0 && !c->chunked)
        finish(c, ok_status(c), 0);
      else
        finish(c, E_EOF, 0);
      return;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) return;
    if (errno != EINTR) { finish(c, E_RESET, errno); return; }
  }
}

/* The request of c: req, or with "{i}" req + c's number + req_tail (built again on each
 * call, the same bytes each time, so that a partial write can go on from c->sent). */
static const char *request_of(conn_t *c, char *buf, size_t cap, size_t *len) {
  if (!req_tail) { *len = req_len; return req; }
  *len = (size_t)snprintf(buf, cap, "%.*s%ld%s", (int)req_len, req, (long)(c - conns) + 1,
                          req_tail);
  return buf;
}

static void on_writable(conn_t *c) {
  char rbuf[sizeof req];
  size_t rlen;
  const char *r = request_of(c, rbuf, sizeof rbuf, &rlen);
  if (c->state == ST_CONNECTING) {
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
    if (soerr) { finish(c, E_CONNECT, soerr); return; }
    connecting--;
    c->state = ST_SENDING;
  }
  while (c->sent < rlen) {
    ssize_t n = write(c->fd, r + c->sent, rlen - c->sent);
    if (n > 0) {
      double t = now();
      if (t_first_send == 0) t_first_send = t;
      c->sent += n;
      if (c->sent == rlen) t_last_send = c->t_sent = t;
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return; /* wait for EPOLLOUT */
    if (n < 0 && errno == EINTR) continue;
    finish(c, E_RESET, n < 0 ? errno : 0);
    return;
  }
  c->state = ST_READING;
  on_readable(c); /* edge-triggered: the response may already be waiting */
}

/* Restart connects pending for longer than retry_s (their SYN was most likely dropped). */
static void retry_stalled(int opened, double retry_s) {
  double t = now();
  for (int i = 0; i < opened; i++) {
    conn_t *c = &conns[i];
    if (c->state != ST_CONNECTING || t - c->t_connect < retry_s || c->retries >= 50) continue;
    close_rst(c->fd);
    c->fd = -1;
    c->retries++;
    connect_retries++;
    if (start_connect(c) < 0) finish(c, E_CONNECT, errno);
  }
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
  const char *retry_s = getenv("BURST_CONNECT_RETRY_MS");
  double retry = (retry_s ? atof(retry_s) : 100) / 1000;
  if (nconn <= 0 || timeout <= 0 || wave < 0) {
    fprintf(stderr, "burst: N and TIMEOUT_S must be positive, WAVE >= 0\n");
    return 2;
  }
  const char *id = strstr(path, "{i}");
  if (id) {
    /* "GET <path before {i}>" here, "<path after {i}> HTTP/1.1..." in req_tail */
    static char tail[sizeof req];
    req_len = snprintf(req, sizeof req, "GET %.*s", (int)(id - path), path);
    size_t tail_len = snprintf(tail, sizeof tail, "%s HTTP/1.1\r\nHost: x\r\n\r\n", id + 3);
    if (req_len + tail_len + 24 >= sizeof req) req_len = sizeof req; /* whole request too long */
    req_tail = tail;
  } else {
    req_len = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
  }
  if (req_len >= sizeof req) {
    fprintf(stderr, "burst: PATH too long\n");
    return 2;
  }

  /* one descriptor per connection, plus a few */
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rlim_t want = (rlim_t)nconn + 64;
  if (rl.rlim_cur < want) {
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want) rl.rlim_max = want;
    rl.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
      int err = errno;
      getrlimit(RLIMIT_NOFILE, &rl);
      fprintf(stderr, "burst: cannot raise RLIMIT_NOFILE to %lu (hard limit %lu): %s\n",
              (unsigned long)want, (unsigned long)rl.rlim_max, strerror(err));
      return 2;
    }
  }

  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
  int gai = getaddrinfo(host, port, &hints, &ai);
  if (gai) {
    fprintf(stderr, "burst: %s:%s: %s\n", host, port, gai_strerror(gai));
    return 2;
  }
  addrlen = ai->ai_addrlen;
  memcpy(&addr, ai->ai_addr, addrlen);
  freeaddrinfo(ai);

  conns = calloc(nconn, sizeof *conns);
  epfd = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event *evs = calloc(1024, sizeof *evs);
  if (!conns || !evs || epfd < 0) {
    fprintf(stderr, "burst: setup: %s\n", strerror(errno));
    return 2;
  }

  double t0 = now(), deadline = t0 + timeout, last_retry_scan = t0;
  int opened = 0;
  for (;;) {
    /* open at most 256 per turn, so the first sockets get their request out at once */
    for (int batch = 0; opened < nconn && (wave == 0 || connecting < wave) && batch < 256;
         batch++) {
      if (open_conn(&conns[opened++]) < 0) {
        /* out of descriptors or ports: the rest cannot even start */
        for (; opened < nconn; opened++) { errors++; errs[E_CONNECT]++; }
      }
    }
    if (opened == nconn && connecting == 0 && t_all_connected == 0) t_all_connected = now();
    if (opened == nconn && active == 0) break;
    double t = now(), left = deadline - t;
    if (left <= 0) break;
    if (retry > 0 && connecting > 0 && t - last_retry_scan >= 0.02) {
      retry_stalled(opened, retry);
      last_retry_scan = t;
    }
    int more = opened < nconn && (wave == 0 || connecting < wave);
    int ms = more ? 0 : connecting > 0 && retry > 0 ? 20 : 100;
    if (left * 1000 < ms) ms = (int)(left * 1000) + 1;
    int n = epoll_wait(epfd, evs, 1024, ms);
    if (n < 0 && errno != EINTR) {
      fprintf(stderr, "burst: epoll_wait: %s\n", strerror(errno));
      return 2;
    }
    for (int i = 0; i < n; i++) {
      conn_t *c = &conns[evs[i].data.u32];
      if (c->state == ST_CONNECTING && (evs[i].events & (EPOLLERR | EPOLLHUP))) {
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
        finish(c, E_CONNECT, soerr);
      } else if (c->state == ST_CONNECTING || c->state == ST_SENDING) {
        if (evs[i].events & EPOLLOUT) on_writable(c);
      } else if (c->state == ST_READING) {
        on_readable(c);
      }
    }
  }
  double t_end = now();
  for (int i = 0; i < opened; i++)
    if (conns[i].state != ST_DONE) finish(&conns[i], E_TIMEOUT, 0);

  printf("completed=%ld errors=%ld elapsed=%.3f first_send_to_last_response=%.3f\n", completed,
         errors, t_end - t0,
         t_first_send > 0 && t_last_resp > t_first_send ? t_last_resp - t_first_send : 0.0);
  fflush(stdout);

  fprintf(stderr,
          "burst: n=%d wave=%d connect_retries=%ld all_connected_after=%.3fs "
          "last_send_after_first=%.3fs",
          nconn, wave, connect_retries, t_all_connected > 0 ? t_all_connected - t0 : -1.0,
          t_last_send > 0 ? t_last_send - t_first_send : -1.0);
  double *lat = malloc(sizeof(double) * (completed ? completed : 1));
  long nl = 0;
  for (int i = 0; i < opened && lat; i++)
    if (conns[i].t_done > 0 && conns[i].t_sent > 0) lat[nl++] = conns[i].t_done - conns[i].t_sent;
  if (nl) {
    qsort(lat, nl, sizeof *lat, cmp_double);
    long i99 = (long)(nl * 0.99);
    fprintf(stderr, " latency_min=%.3fs p50=%.3fs p99=%.3fs max=%.3fs", lat[0], lat[nl / 2],
            lat[i99 < nl ? i99 : nl - 1], lat[nl - 1]);
  }
  for (int k = 0; k < E_NKIND; k++) {
    if (!errs[k]) continue;
    fprintf(stderr, " %s=%ld", ekind[k], errs[k]);
    if (first_errno[k]) fprintf(stderr, "(%s)", strerrorname_np(first_errno[k]));
  }
  fputc('\n', stderr);
  return errors ? 1 : 0;
}
