/* Serving a static file (see static.h). A job lives from the request to the last of its
 * threadpool operations and the close of its poll handle: the connection may close at any
 * time (job_abort), and then the job forgets it and goes as soon as nothing of its own is
 * in flight.
 *
 * The body: once the head has left (nothing unsent: the order on the wire holds), sendfile(2)
 * on the threadpool moves the file to a duplicate of the socket's descriptor until the socket
 * is full (it is non-blocking); then a uv_poll on the duplicate waits on the loop for it to
 * take more. Only the disk is waited for on the threadpool, never a client. The duplicate,
 * closed with the job, keeps the socket's descriptor from being reused for another
 * connection while an operation may still write to it. A connection without a socket (the
 * in-process test client's) gets the body through its output instead: the threadpool
 * reads a piece of the file into a buffer, the loop hands it to ml_server_conn_send.
 *
 * The file descriptor is closed on the loop with close(2): for a file opened read-only
 * this only releases the descriptor, it never waits for the disk. */
#include "static.h"
#include "httpdate.h"
#include "log.h"
#include "mem.h"
#include "mime.h"
#include "response.h"
#include "static_cond.h"
#include "static_path.h"
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/sendfile.h>
#include <unistd.h>

#define SEND_MAX (8u << 20)   /* bytes one threadpool operation sends at most */
#define COPY_MAX (256u << 10) /* ... or reads, for a connection without a socket */

typedef struct {
  uv_work_t work;
  uv_poll_t poll;            /* the socket's writability, on sock */
  uv_loop_t *loop;
  ml_server_conn_t *c;       /* NULL once the connection closed, or the response is done */
  int ops;                   /* threadpool operations in flight (0 or 1) */
  int in_cb;                 /* the job's callbacks running (one may run inside another) */
  int poll_state;            /* 0 none, 1 open, 2 closing */
  /* what to open (copied from the mount and the request) */
  char *root, *index;
  long long max_age;
  const char *path;          /* the request's path (in c's parser, while c is in flight) */
  size_t path_len;
  ml_buf_t rel;              /* the decoded relative path */
  int dir;                   /* it ends with '/' */
  /* what the threadpool found */
  int code, errnum, fd, used_index;
  struct stat st;
  /* the body: sent with sendfile(2) on the threadpool, to sock (c's socket, duplicated) */
  int status, sock;
  uint64_t off, remaining;
  uint64_t sent;             /* by the last operation */
  int full;                  /* the last operation stopped at a full socket */
  char *copy;                /* no socket (sock < 0): the piece read, COPY_MAX bytes */
} job_t;

ml_static_t *ml_static_new(const char *root, size_t prefix_len, const char *index,
                           long long max_age) {
  ml_static_t *m = ml_xcalloc(1, sizeof *m);
  m->root = ml_xstrdup(root);
  m->prefix_len = prefix_len;
  m->index = index ? ml_xstrdup(index) : NULL;
  m->max_age = max_age;
  ml_mime_init();   /* reads /etc/mime.types once per process, at load */
  return m;
}

void ml_static_free(ml_static_t *m) {
  if (!m) return;
  free(m->root);
  free(m->index);
  free(m);
}

static void job_free(job_t *j) {
  if (j->fd >= 0) close(j->fd);
  if (j->sock >= 0) close(j->sock);
  ml_buf_free(&j->rel);
  free(j->copy);
  free(j->root);
  free(j->index);
  free(j);
}

static void poll_closed(uv_handle_t *h) {
  job_t *j = h->data;
  j->poll_state = 0;
  if (!j->c && !j->ops && !j->in_cb) job_free(j);
}

/* The end of a callback (or of the abort): the job goes when nothing needs it any more. */
static void settle(job_t *j) {
  if (j->c || j->ops || j->in_cb) return;
  if (j->poll_state == 1) {
    j->poll_state = 2;
    uv_close((uv_handle_t *)&j->poll, poll_closed);
  }
  if (!j->poll_state) job_free(j);
}

static void job_abort(void *task) {
  job_t *j = task;
  j->c = NULL;
  settle(j);
}

/* The response is complete in the connection's output (status for the access log). */
static void finish(job_t *j, int status) {
  ml_server_conn_t *c = j->c;
  j->c = NULL;
  ml_server_conn_done(c, status);
}

static void respond_error(job_t *j, ml_server_conn_t *c, int status) {
  ml_resp_error(&c->out, status, ml_status_reason(status), NULL, ml_server_conn_keepalive(c),
                c->head);
  finish(j, status);
}

/* 301 to the same path with a slash (a directory asked without one): relative links in
 * its index then resolve inside it. The query goes along. */
static void respond_redirect(ml_server_conn_t *c, const char *path, size_t len) {
  size_t ulen = c->http.url_len;
  const char *url = ml_http_url(&c->http), *q = memchr(url, '?', ulen);
  ml_buf_t loc = {0};
  ml_buf_add(&loc, path, len);
  ml_buf_addc(&loc, '/');
  if (q) ml_buf_add(&loc, q, (size_t)(url + ulen - q));
  ml_resp_begin(&c->out, 301);
  ml_resp_header(&c->out, "Location", 8, loc.data, loc.len);
  ml_resp_end(&c->out, 301, 0, ml_server_conn_keepalive(c));
  ml_buf_free(&loc);
  ml_server_conn_done(c, 301);
}

/* The body cut short: the client sees a response shorter than its Content-Length. */
static void cut_short(job_t *j, const char *why) {
  ml_log(ML_LOG_ERROR, "static file %s/%s: %s", j->root, j->rel.data, why);
  ml_server_conn_close_after(j->c);
  finish(j, j->status);
}

/* On the threadpool: as much of the body as the socket takes, up to SEND_MAX bytes. A
 * cold page cache makes sendfile wait for the disk here, never on the loop. */
static void send_work(uv_work_t *w) {
  job_t *j = w->data;
  j->sent = 0;
  j->full = 0;
  j->errnum = 0;
  if (j->copy) {   /* no socket: one piece into the buffer, for the loop to send */
    size_t want = j->remaining < COPY_MAX ? (size_t)j->remaining : COPY_MAX;
    ssize_t n;
    do n = pread(j->fd, j->copy, want, (off_t)j->off);
    while (n < 0 && errno == EINTR);
    if (n > 0) j->sent = (uint64_t)n;
    else j->errnum = n == 0 ? -1 : errno;
    return;
  }
  while (j->sent < j->remaining && j->sent < SEND_MAX) {
    off_t off = (off_t)(j->off + j->sent);
    uint64_t want = j->remaining - j->sent;
    if (want > SEND_MAX - j->sent) want = SEND_MAX - j->sent;
    ssize_t n = sendfile(j->sock, j->fd, &off, (size_t)want);
    if (n > 0) {
      j->sent += (uint64_t)n;
    } else if (n == 0) {   /* the file shrank */
      j->errnum = -1;
      break;
    } else if (errno != EINTR) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) j->full = 1;
      else j->errnum = errno;
      break;
    }
  }
}

static void send_done(uv_work_t *w, int status);

static void send_more(job_t *j) {
  uv_queue_work(j->loop, &j->work, send_work, send_done);   /* fails only without a cb */
  j->ops++;
}

static void writable_cb(uv_poll_t *p, int status, int events) {
  (void)events;
  job_t *j = p->data;
  uv_poll_stop(p);
  j->in_cb++;
  if (!j->c) {
    /* the connection closed meanwhile */
  } else if (status < 0) {   /* the socket failed: the client is gone */
    ml_server_conn_close_after(j->c);
    finish(j, j->status);
  } else {
    send_more(j);
  }
  j->in_cb--;
  settle(j);
}

static void send_done(uv_work_t *w, int status) {
  (void)status;   /* never cancelled */
  job_t *j = w->data;
  j->ops--;
  j->in_cb++;
  if (j->c && j->copy && j->sent)   /* may close c: job_abort */
    ml_server_conn_send(j->c, j->copy, (size_t)j->sent);
  if (j->c) {
    j->off += j->sent;
    j->remaining -= j->sent;
    if (j->sent && !j->copy) j->c->sent += (uint64_t)j->sent;   /* for the access log */
    if (j->sent) ml_server_conn_progress(j->c);
    if (j->errnum == EPIPE || j->errnum == ECONNRESET) {   /* the client left */
      ml_server_conn_close_after(j->c);
      finish(j, j->status);
    } else if (j->errnum) {
      cut_short(j, j->errnum < 0 ? "ended before its size" : strerror(j->errnum));
    } else if (j->remaining == 0) {
      finish(j, j->status);
    } else if (!j->full) {
      send_more(j);
    } else {   /* wait until the socket takes more */
      int rc = 0;
      if (!j->poll_state) {
        rc = uv_poll_init(j->loop, &j->poll, j->sock);
        if (rc == 0) j->poll_state = 1;
        j->poll.data = j;
      }
      if (rc == 0) rc = uv_poll_start(&j->poll, UV_WRITABLE, writable_cb);
      if (rc < 0) cut_short(j, uv_strerror(rc));
    }
  }
  j->in_cb--;
  settle(j);
}

/* The head has left: the body goes straight from the file to the socket. */
static void head_sent(void *arg) {
  job_t *j = arg;
  j->in_cb++;
  j->sock = ml_server_conn_dup_fd(j->c);
  if (j->sock == UV_ENOTSOCK) {   /* through the connection's output */
    j->sock = -1;
    j->copy = ml_xmalloc(COPY_MAX);
    ml_server_conn_progress(j->c);
    send_more(j);
  } else if (j->sock < 0) {
    cut_short(j, uv_strerror(j->sock));
    j->sock = -1;
  } else {
    ml_server_conn_progress(j->c);
    send_more(j);
  }
  j->in_cb--;
  settle(j);
}

static void add_header(ml_buf_t *out, const char *name, const char *val) {
  ml_resp_header(out, name, strlen(name), val, strlen(val));
}

/* The head of a 200, 206, 304 or 416 for the open file; then its body, if it has one. */
static void respond_file(job_t *j) {
  ml_server_conn_t *c = j->c;
  ml_http_t *h = &c->http;
  uint64_t size = (uint64_t)j->st.st_size, first = 0, last = 0;
  time_t mtime = j->st.st_mtim.tv_sec;
  uint64_t mtime_ns = (uint64_t)mtime * 1000000000u + (uint64_t)j->st.st_mtim.tv_nsec;
  char etag[48], modified[ML_HTTPDATE_LEN + 1], ctype[128], range[80], cache[64];
  int elen = snprintf(etag, sizeof etag, "\"%" PRIx64 "-%" PRIx64 "\"", mtime_ns, size);
  ml_httpdate_format(mtime, modified);
  size_t inm_len = 0, ims_len = 0, range_len = 0, ir_len = 0;
  const char *inm = ml_http_header(h, "if-none-match", &inm_len);
  const char *ims = ml_http_header(h, "if-modified-since", &ims_len);
  const char *rng = ml_http_header(h, "range", &range_len);
  const char *ir = ml_http_header(h, "if-range", &ir_len);
  int status = 200;
  if (ml_static_not_modified(inm, inm_len, ims, ims_len, etag, (size_t)elen, mtime))
    status = 304;
  else
    status = ml_static_range(rng, range_len, ir, ir_len, etag, (size_t)elen, mtime, size,
                             &first, &last);
  if (status == 200) last = size - 1;   /* (wraps for an empty file: length 0 below) */
  uint64_t length = status == 206 || status == 200 ? last - first + 1 : 0;
  ml_buf_t head = {0};
  ml_resp_begin(&head, status);
  if (status != 304) {
    const char *name = j->used_index ? j->index : j->rel.data;
    ml_mime_content_type(name, strlen(name), ctype, sizeof ctype);
    add_header(&head, "Content-Type", status == 416 ? "application/json" : ctype);
    add_header(&head, "Accept-Ranges", "bytes");
  }
  add_header(&head, "ETag", etag);
  add_header(&head, "Last-Modified", modified);
  if (j->max_age >= 0 && status != 416) {
    snprintf(cache, sizeof cache, "public, max-age=%lld", j->max_age);
    add_header(&head, "Cache-Control", cache);
  }
  static const char range_body[] = "{\"detail\":\"Range Not Satisfiable\"}";
  if (status == 206 || status == 416) {
    if (status == 206)
      snprintf(range, sizeof range, "bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64, first, last, size);
    else
      snprintf(range, sizeof range, "bytes */%" PRIu64, size);
    add_header(&head, "Content-Range", range);
    if (status == 416) length = sizeof range_body - 1;
  }
  ml_resp_end(&head, status, (size_t)length, ml_server_conn_keepalive(c));
  if (status == 416 && !c->head) ml_buf_add(&head, range_body, length);
  ml_server_conn_send(c, head.data, head.len);   /* may close c: job_abort */
  ml_buf_free(&head);
  if (!j->c) return;
  j->status = status;
  j->off = first;
  j->remaining = (status == 200 || status == 206) && !c->head ? length : 0;
  if (j->remaining == 0) finish(j, status);
  else ml_server_conn_on_drain(c, head_sent, j, 0);   /* at once if the head left */
}

static void open_work(uv_work_t *w) {
  job_t *j = w->data;
  j->code = ml_static_path_open(j->root, j->rel.data, j->dir, j->index, &j->fd, &j->st,
                                &j->used_index, &j->errnum);
}

static void opened_cb(uv_work_t *w, int status) {
  (void)status;   /* never cancelled */
  job_t *j = w->data;
  j->ops--;
  j->in_cb++;
  ml_server_conn_t *c = j->c;
  if (!c) {
    /* the client left: nothing to answer */
  } else if (j->code == ML_SPATH_FILE) {
    respond_file(j);
  } else if (j->code == ML_SPATH_REDIRECT) {
    j->c = NULL;
    respond_redirect(c, j->path, j->path_len);
  } else {
    if (j->code == ML_SPATH_ERROR)
      ml_log(ML_LOG_ERROR, "static file %s/%s: %s", j->root, j->rel.data, strerror(j->errnum));
    respond_error(j, c, j->code == ML_SPATH_ERROR ? 500 : 404);
  }
  j->in_cb--;
  settle(j);
}

void ml_static_serve(const ml_static_t *m, uv_loop_t *loop, ml_server_conn_t *c,
                     const char *path, size_t path_len) {
  const char *rest = path + m->prefix_len;
  size_t rest_len = path_len - m->prefix_len;
  if (rest_len == 0) {   /* the mount's own path: "/static" is the directory "/static/" */
    if (m->index) respond_redirect(c, path, path_len);
    else {
      ml_resp_error(&c->out, 404, "Not Found", NULL, ml_server_conn_keepalive(c), c->head);
      ml_server_conn_done(c, 404);
    }
    return;
  }
  job_t *j = ml_xcalloc(1, sizeof *j);
  j->fd = j->sock = -1;
  if (ml_static_path_decode(rest + 1, rest_len - 1, &j->rel, &j->dir)) {
    j->c = c;
    respond_error(j, c, 404);
    job_free(j);
    return;
  }
  j->loop = loop;
  j->c = c;
  j->path = path;
  j->path_len = path_len;
  j->root = ml_xstrdup(m->root);
  j->index = m->index ? ml_xstrdup(m->index) : NULL;
  j->max_age = m->max_age;
  j->work.data = j;
  c->task = j;
  c->task_abort = job_abort;
  uv_queue_work(loop, &j->work, open_work, opened_cb);   /* fails only without a callback */
  j->ops++;
}
