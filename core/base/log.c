/* Log lines: "2026-11-22T01:02:03.456Z LEVEL message". Buffered (see log.h); a mutex
 * makes it safe from pool threads. Errors flush at once: they may precede a crash. With a
 * callback (ml_log_configure) each line goes to it at once, bare. */
#include "log.h"
#include "buf.h"
#include "err.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

int ml_log_level = ML_LOG_INFO;

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static ml_buf_t log_buf;
static ml_log_fn log_cb;     /* written under log_lock, atomically */
static void *log_user;
static const char *const level_names[] = {"debug", "info", "warn", "error"};
/* the access log's file (ml_log_access_open): its lines are buffered apart, -1 for none */
static int access_fd = -1;
static char *access_path;
static ml_buf_t access_buf;
/* ml_log_set_tag's "[worker 2] ", "" for none: set before any other thread logs */
static char log_tag[40];

int ml_log_parse_level(const char *name) {
  for (int i = 0; i < 4; i++)
    if (strcmp(name, level_names[i]) == 0) return i;
  return -1;
}

static void write_all(int fd, ml_buf_t *b) {
  size_t off = 0;
  while (off < b->len) {
    ssize_t n = write(fd, b->data + off, b->len - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    off += (size_t)n;
  }
  b->len = 0;
}

static void flush_locked(void) {
  write_all(STDERR_FILENO, &log_buf);
  if (access_buf.len && access_fd >= 0) write_all(access_fd, &access_buf);
}

#define HEAD_MAX 96
/* "2026-11-22T01:02:03.456Z info  " and the tag into head (HEAD_MAX bytes); returns its
 * length. */
static int format_head(char *head, int level) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  struct tm tm;
  gmtime_r(&tv.tv_sec, &tm);
  return snprintf(head, HEAD_MAX, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %-5s %s",
                  tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                  tm.tm_sec, (int)(tv.tv_usec / 1000), level_names[level], log_tag);
}

void ml_log_set_tag(const char *tag) {
  snprintf(log_tag, sizeof log_tag, "%s%s%s", tag && *tag ? "[" : "", tag ? tag : "",
           tag && *tag ? "] " : "");
}

void ml_log_configure(int level, ml_log_fn cb, void *user) {
  pthread_mutex_lock(&log_lock);
  if (log_buf.len && cb) flush_locked();   /* lines before the switch stay on stderr */
  log_user = user;
  __atomic_store_n(&log_cb, cb, __ATOMIC_RELEASE);
  __atomic_store_n(&ml_log_level, level, __ATOMIC_RELAXED);
  pthread_mutex_unlock(&log_lock);
}

/* A line for the callback: the message alone, kept whole however long. */
static void log_to_cb(int level, const char *fmt, va_list ap) {
  char msg[2048];
  va_list cp;
  va_copy(cp, ap);
  int mn = vsnprintf(msg, sizeof msg, fmt, cp);
  va_end(cp);
  char *line = msg;
  if (mn >= (int)sizeof msg) {
    line = ml_xmalloc((size_t)mn + 1);
    vsnprintf(line, (size_t)mn + 1, fmt, ap);
  }
  pthread_mutex_lock(&log_lock);
  if (log_cb) log_cb(level, mn < 0 ? "" : line, log_user);
  pthread_mutex_unlock(&log_lock);
  if (line != msg) free(line);
}

void ml_logv(int level, const char *fmt, va_list ap) {
  if (!ml_log_enabled(level)) return;
  if (__atomic_load_n(&log_cb, __ATOMIC_ACQUIRE)) {
    log_to_cb(level, fmt, ap);
    return;
  }
  char head[HEAD_MAX];
  int hn = format_head(head, level);
  char msg[2048];
  va_list cp;
  va_copy(cp, ap);
  int mn = vsnprintf(msg, sizeof msg, fmt, cp);
  va_end(cp);
  pthread_mutex_lock(&log_lock);
  ml_buf_add(&log_buf, head, (size_t)hn);
  if (mn >= (int)sizeof msg) {   /* long messages (tracebacks) are kept whole */
    char *big = ml_xmalloc((size_t)mn + 1);
    vsnprintf(big, (size_t)mn + 1, fmt, ap);
    ml_buf_add(&log_buf, big, (size_t)mn);
    free(big);
  } else if (mn > 0) {
    ml_buf_add(&log_buf, msg, (size_t)mn);
  }
  ml_buf_addc(&log_buf, '\n');
  if (level >= ML_LOG_WARN || log_buf.len > 16384) flush_locked();
  pthread_mutex_unlock(&log_lock);
}

void ml_log(int level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  ml_logv(level, fmt, ap);
  va_end(ap);
}

void ml_log_flush(void) {
  pthread_mutex_lock(&log_lock);
  if (log_buf.len || access_buf.len) flush_locked();
  pthread_mutex_unlock(&log_lock);
}

void ml_log_access(const char *line, size_t len, int bare) {
  if (__atomic_load_n(&log_cb, __ATOMIC_ACQUIRE)) {
    ml_log(ML_LOG_INFO, "%.*s", (int)len, line);
    return;
  }
  char head[HEAD_MAX];
  int hn = bare ? 0 : format_head(head, ML_LOG_INFO);
  pthread_mutex_lock(&log_lock);
  ml_buf_t *b = access_fd >= 0 ? &access_buf : &log_buf;
  ml_buf_add(b, head, (size_t)hn);
  ml_buf_add(b, line, len);
  ml_buf_addc(b, '\n');
  if (b->len > 16384) flush_locked();
  pthread_mutex_unlock(&log_lock);
}

static int open_access(const char *path) {
  return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

int ml_log_access_open(const char *path, char *err, size_t errlen) {
  int fd = open_access(path);
  if (fd < 0) return ml_err(err, errlen, "cannot open the access log %s: %s", path, strerror(errno));
  pthread_mutex_lock(&log_lock);
  flush_locked();
  if (access_fd >= 0) close(access_fd);
  access_fd = fd;
  free(access_path);
  access_path = ml_xstrdup(path);
  pthread_mutex_unlock(&log_lock);
  return 0;
}

void ml_log_access_reopen(void) {
  pthread_mutex_lock(&log_lock);
  if (access_fd < 0) {
    pthread_mutex_unlock(&log_lock);
    return;
  }
  flush_locked();   /* what was logged before the rotation goes to the old file */
  int fd = open_access(access_path);
  int errnum = errno;
  if (fd >= 0) {
    close(access_fd);
    access_fd = fd;
  }
  char *path = fd < 0 ? ml_xstrdup(access_path) : NULL;
  pthread_mutex_unlock(&log_lock);
  if (path) {   /* the old file stays in use */
    ml_log(ML_LOG_ERROR, "cannot reopen the access log %s: %s", path, strerror(errnum));
    free(path);
  }
}
