/* Uploads (see upload.h). File content goes through a queue of chunks: the parser's
 * part_data copies into the queue's tail (the read buffer it comes from is reused at once),
 * and one uv_fs_write at a time writes the head chunk to its file, on libuv's threadpool:
 * the loop never waits for the disk. That is why the queue exists and why reading is held
 * above ML_UPLOAD_HIGH_WATER queued bytes (and let go below LOW_WATER). Creating, closing
 * and removing a file are done on the loop with plain system calls: they touch only
 * metadata of a local temporary directory (microseconds, as nginx does for its client body
 * files); the bytes, which are what take time, go through the threadpool. */
#include "upload.h"
#include "copy.h"
#include "log.h"
#include "mem.h"
#include "multipart.h"
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#define CHUNK (64u << 10)
#define LOW_WATER (64u << 10)

typedef struct chunk_s {
  struct chunk_s *next;
  int file;                  /* index in files */
  size_t len;
  char data[CHUNK];
} chunk_t;

typedef struct {
  char *path;
  int fd;                    /* -1 once closed */
  int queued;                /* its chunks in the queue */
  int ended;                 /* its part is complete */
} file_t;

struct ml_upload_s {
  uv_loop_t *loop;
  ml_multipart_t mp;
  ml_upload_hold_fn hold;
  void *hold_arg;
  int held;
  ml_upload_flushed_fn flushed;
  void *flushed_arg;
  ml_buf_t fields;           /* the result, packed (see upload.h) */
  int nfields;
  ml_buf_t part;             /* the part being read: name, filename, type, each + NUL */
  size_t filename_off, type_off;
  ml_buf_t text;             /* the text field being read */
  size_t text_total;
  uint64_t size;             /* the file part being read: its bytes so far */
  int cur;                   /* that file's index, -1 while a text field is read */
  file_t *files;
  int nfiles, files_cap;
  chunk_t *head, *tail, *spare;   /* the queue; written chunks kept for reuse */
  size_t queued;             /* bytes in the queue */
  size_t written;            /* of the head chunk */
  uv_fs_t wreq;
  int writing;               /* wreq is out */
  int failed;                /* a write failed */
  int freed;                 /* ml_upload_free ran while writing */
  int status;                /* why a callback stopped the parser ... */
  const char *detail;        /* ... with this detail */
};

static void close_file(file_t *f) {
  if (f->fd >= 0) close(f->fd);
  f->fd = -1;
}

/* A written chunk goes to the spares: the queue's memory is taken once per upload (a few
 * chunks: reading holds at the high-water mark), not once per 64 KiB of the body. */
static void chunk_drop(ml_upload_t *up, chunk_t *c) {
  up->files[c->file].queued--;
  up->queued -= c->len;
  c->next = up->spare;
  up->spare = c;
}

/* Empties the queue (the writes cannot go on); closes the files of ended parts. */
static void queue_clear(ml_upload_t *up) {
  while (up->head) {
    chunk_t *c = up->head;
    up->head = c->next;
    chunk_drop(up, c);
  }
  up->tail = NULL;
  up->written = 0;
  for (int i = 0; i < up->nfiles; i++)
    if (up->files[i].ended) close_file(&up->files[i]);
}

static void destroy(ml_upload_t *up) {
  queue_clear(up);
  for (int i = 0; i < up->nfiles; i++) {
    close_file(&up->files[i]);
    free(up->files[i].path);
  }
  free(up->files);
  while (up->spare) {
    chunk_t *c = up->spare;
    up->spare = c->next;
    free(c);
  }
  ml_multipart_free(&up->mp);
  ml_buf_free(&up->fields);
  ml_buf_free(&up->part);
  ml_buf_free(&up->text);
  free(up);
}

/* --- writing --------------------------------------------------------------------------- */

static void write_cb(uv_fs_t *req);

/* Starts writing the head chunk, unless a write is out or the queue is empty. */
static void kick(ml_upload_t *up) {
  if (up->writing || !up->head || up->failed) return;
  chunk_t *c = up->head;
  uv_buf_t b = uv_buf_init(c->data + up->written, (unsigned)(c->len - up->written));
  up->wreq.data = up;
  int rc = uv_fs_write(up->loop, &up->wreq, up->files[c->file].fd, &b, 1, -1, write_cb);
  if (rc < 0) {
    ml_log(ML_LOG_ERROR, "upload: cannot write %s: %s", up->files[c->file].path,
           uv_strerror(rc));
    up->failed = 1;
    queue_clear(up);
    return;
  }
  up->writing = 1;
}

static void write_cb(uv_fs_t *req) {
  ml_upload_t *up = req->data;
  ssize_t n = req->result;
  uv_fs_req_cleanup(req);
  up->writing = 0;
  if (up->freed) {
    destroy(up);
    return;
  }
  chunk_t *c = up->head;
  if (n < 0) {
    ml_log(ML_LOG_ERROR, "upload: cannot write %s: %s", up->files[c->file].path,
           uv_strerror((int)n));
    up->failed = 1;
    queue_clear(up);
  } else if ((up->written += (size_t)n) == c->len) {   /* a short write goes on below */
    file_t *f = &up->files[c->file];
    up->head = c->next;
    if (!up->head) up->tail = NULL;
    up->written = 0;
    chunk_drop(up, c);
    if (f->ended && f->queued == 0) close_file(f);
  }
  if (up->held && up->queued <= LOW_WATER) {
    up->held = 0;
    if (up->hold) up->hold(up->hold_arg, 0);
  }
  kick(up);
  if (!up->writing && up->flushed) {   /* last: the callback may free up */
    ml_upload_flushed_fn cb = up->flushed;
    up->flushed = NULL;
    cb(up->flushed_arg);
  }
}

/* Queues n bytes for the current file. */
static void enqueue(ml_upload_t *up, const char *p, size_t n) {
  while (n > 0) {
    chunk_t *t = up->tail;
    int busy = t && t == up->head && up->writing;   /* its bytes are being written */
    if (!t || t->file != up->cur || busy || t->len == CHUNK) {
      t = up->spare ? up->spare : ml_xmalloc(sizeof *t);
      if (up->spare) up->spare = t->next;
      t->next = NULL;
      t->file = up->cur;
      t->len = 0;
      if (up->tail) up->tail->next = t;
      else up->head = t;
      up->tail = t;
      up->files[up->cur].queued++;
    }
    size_t k = CHUNK - t->len < n ? CHUNK - t->len : n;
    memcpy(t->data + t->len, p, k);
    t->len += k;
    up->queued += k;
    p += k;
    n -= k;
  }
  kick(up);
  if (!up->held && up->queued > ML_UPLOAD_HIGH_WATER && up->hold) {
    up->held = 1;
    up->hold(up->hold_arg, 1);
  }
}

/* --- the parser's callbacks -------------------------------------------------------------- */

static int stop(ml_upload_t *up, int status, const char *detail) {
  up->status = status;
  up->detail = detail;
  return -1;
}

/* A new temporary file for the part; its index is up->cur. */
static int file_open(ml_upload_t *up) {
  const char *dir = getenv("TMPDIR");
  if (!dir || !*dir) dir = "/tmp";
  ml_buf_t path = {0};
  ml_buf_addstr(&path, dir);
  ml_buf_addstr(&path, "/moonlet-upload-XXXXXX");
  ml_buf_addc(&path, '\0');
  int fd = mkstemp(path.data);
  if (fd < 0) {
    ml_log(ML_LOG_ERROR, "upload: cannot create a file in %s: %s", dir, strerror(errno));
    ml_buf_free(&path);
    return stop(up, 500, "Internal Server Error");
  }
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  if (up->nfiles == up->files_cap) {
    up->files_cap = up->files_cap ? up->files_cap * 2 : 4;
    up->files = ml_xrealloc(up->files, (size_t)up->files_cap * sizeof *up->files);
  }
  up->cur = up->nfiles++;
  up->files[up->cur] = (file_t){.path = path.data, .fd = fd};
  return 0;
}

static int part_begin(void *ud, const ml_multipart_part_t *p) {
  ml_upload_t *up = ud;
  if (up->nfields == ML_UPLOAD_MAX_PARTS)
    return stop(up, 400, "Too many parts in the multipart body (1000 at most)");
  ml_buf_t *b = &up->part;
  b->len = 0;
  ml_buf_add(b, p->name, strlen(p->name) + 1);
  up->filename_off = b->len;
  if (p->filename) ml_buf_add(b, p->filename, strlen(p->filename) + 1);
  up->type_off = b->len;
  ml_buf_add(b, p->content_type, strlen(p->content_type) + 1);
  up->text.len = 0;
  up->size = 0;
  up->cur = -1;
  return p->filename ? file_open(up) : 0;
}

static int part_data(void *ud, const char *p, size_t n) {
  ml_upload_t *up = ud;
  if (up->failed) return stop(up, 500, "Internal Server Error");
  if (up->cur < 0) {
    if (up->text_total + n > ML_UPLOAD_MAX_TEXT)
      return stop(up, 413, "Multipart text fields too large (1 MiB in all)");
    up->text_total += n;
    ml_buf_add(&up->text, p, n);
    return 0;
  }
  up->size += n;
  enqueue(up, p, n);
  return 0;
}

static void put_cstr(ml_buf_t *b, const char *s) { ml_copy_put_str(b, s, strlen(s)); }

static int part_end(void *ud) {
  ml_upload_t *up = ud;
  ml_buf_t *f = &up->fields;
  const char *meta = up->part.data;
  put_cstr(f, meta);
  if (up->cur < 0) {
    ml_copy_put_str(f, up->text.data ? up->text.data : "", up->text.len);
  } else {
    file_t *file = &up->files[up->cur];
    ml_copy_put_table(f, 4);
    put_cstr(f, "filename");
    put_cstr(f, meta + up->filename_off);
    put_cstr(f, "content_type");
    put_cstr(f, meta + up->type_off);
    put_cstr(f, "size");
    ml_copy_put_num(f, (double)up->size);
    put_cstr(f, "path");
    put_cstr(f, file->path);
    file->ended = 1;
    if (file->queued == 0) close_file(file);
  }
  up->nfields++;
  return 0;
}

/* --- the API ------------------------------------------------------------------------------ */

ml_upload_t *ml_upload_new(uv_loop_t *loop, const char *boundary, size_t blen,
                           ml_upload_hold_fn hold, void *arg) {
  static const ml_multipart_cbs_t cbs = {part_begin, part_data, part_end};
  ml_upload_t *up = ml_xcalloc(1, sizeof *up);
  up->loop = loop;
  up->hold = hold;
  up->hold_arg = arg;
  up->cur = -1;
  ml_multipart_init(&up->mp, boundary, blen, &cbs, up);
  return up;
}

/* The status and detail of a parser that returned -1. */
static int why(ml_upload_t *up, const char **detail) {
  if (up->mp.error) {
    *detail = up->mp.error;
    return 400;
  }
  *detail = up->detail;
  return up->status;
}

int ml_upload_feed(ml_upload_t *up, const char *p, size_t n, const char **detail) {
  if (ml_multipart_feed(&up->mp, p, n)) return why(up, detail);
  if (up->failed) {
    *detail = "Internal Server Error";
    return 500;
  }
  return 0;
}

int ml_upload_finish(ml_upload_t *up, const char **detail) {
  return ml_multipart_finish(&up->mp) ? why(up, detail) : 0;
}

void ml_upload_detach(ml_upload_t *up) {
  ml_upload_hold_fn hold = up->hold;
  up->hold = NULL;
  if (up->held && hold) hold(up->hold_arg, 0);
  up->held = 0;
}

int ml_upload_wait(ml_upload_t *up, ml_upload_flushed_fn cb, void *arg) {
  if (!up->writing) return 0;
  up->flushed = cb;
  up->flushed_arg = arg;
  return 1;
}

void ml_upload_wait_cancel(ml_upload_t *up) {
  up->flushed = NULL;
}

int ml_upload_failed(const ml_upload_t *up) {
  return up->failed;
}

const char *ml_upload_fields(const ml_upload_t *up, size_t *len, int *count) {
  *len = up->fields.len;
  *count = up->nfields;
  return up->fields.data ? up->fields.data : "";
}

void ml_upload_free(ml_upload_t *up) {
  if (!up) return;
  for (int i = 0; i < up->nfiles; i++) unlink(up->files[i].path);   /* ENOENT: moved away */
  up->hold = NULL;
  up->flushed = NULL;
  if (up->writing) up->freed = 1;   /* write_cb finishes the job */
  else destroy(up);
}
