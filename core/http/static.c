/* Serving a static file (see static.h). A job lives from the request to the last of its
 * threadpool operations: the connection may close at any time (job_abort), and then the job
 * forgets it and goes as soon as no operation of its own is in flight.
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
#include <unistd.h>

#define CHUNK (256u << 10)         /* bytes per read */
#define HIGH_WATER (1u << 20)      /* stop reading while this much is unsent ... */
#define LOW_WATER (256u << 10)     /* ... until it is down to this */

typedef struct {
  uv_work_t work;
  uv_fs_t fs;
  uv_loop_t *loop;
  ml_server_conn_t *c;       /* NULL once the connection closed, or the response is done */
  int ops;                   /* threadpool operations in flight (0 or 1) */
  int in_cb;                 /* one of the job's callbacks is running */
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
  /* the body */
  int status;
  uint64_t off, remaining;
  char *buf;
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
  ml_buf_free(&j->rel);
  free(j->root);
  free(j->index);
  free(j->buf);
  free(j);
}

/* The end of a callback (or of the abort): the job goes when nothing needs it any more. */
static void settle(job_t *j) {
  if (!j->c && !j->ops && !j->in_cb) job_free(j);
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

static void pump(job_t *j);

static void drained(void *arg) {
  job_t *j = arg;
  j->in_cb = 1;
  pump(j);
  j->in_cb = 0;
  settle(j);
}

static void read_cb(uv_fs_t *req) {
  job_t *j = req->data;
  ssize_t n = req->result;
  uv_fs_req_cleanup(req);
  j->ops--;
  j->in_cb = 1;
  if (j->c && n <= 0) {   /* the file shrank, or the disk failed: cut the response short */
    ml_log(ML_LOG_ERROR, "static file %s/%s: %s", j->root, j->rel.data,
           n < 0 ? uv_strerror((int)n) : "ended before its size");
    ml_server_conn_close_after(j->c);
    finish(j, j->status);
  } else if (j->c) {
    ml_server_conn_send(j->c, j->buf, (size_t)n);   /* may close c: job_abort */
    j->off += (uint64_t)n;
    j->remaining -= (uint64_t)n;
    if (j->c) pump(j);
  }
  j->in_cb = 0;
  settle(j);
}

/* Reads the next chunk unless the client is behind: then waits for the output to drain. */
static void pump(job_t *j) {
  ml_server_conn_t *c = j->c;
  if (j->remaining == 0) {
    finish(j, j->status);
    return;
  }
  if (ml_server_conn_unsent(c) > HIGH_WATER) {
    ml_server_conn_on_drain(c, drained, j, LOW_WATER);
    return;
  }
  if (!j->buf) j->buf = ml_xmalloc(CHUNK);
  uv_buf_t b = uv_buf_init(j->buf, j->remaining < CHUNK ? (unsigned)j->remaining : CHUNK);
  j->fs.data = j;
  int rc = uv_fs_read(j->loop, &j->fs, j->fd, &b, 1, (int64_t)j->off, read_cb);
  if (rc < 0) {
    ml_log(ML_LOG_ERROR, "static file %s/%s: %s", j->root, j->rel.data, uv_strerror(rc));
    ml_server_conn_close_after(c);
    finish(j, j->status);
    return;
  }
  j->ops++;
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
  pump(j);
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
  j->in_cb = 1;
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
  j->in_cb = 0;
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
  j->fd = -1;
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
