/* Log lines: "2026-11-22T01:02:03.456Z LEVEL message". Buffered (see log.h); a mutex
 * makes it safe from pool threads. Errors flush at once: they may precede a crash. With a
 * callback (ml_log_configure) each line goes to it at once, bare. */
#include "log.h"
#include "buf.h"
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

int ml_log_parse_level(const char *name) {
  for (int i = 0; i < 4; i++)
    if (strcmp(name, level_names[i]) == 0) return i;
  return -1;
}

static void flush_locked(void) {
  size_t off = 0;
  while (off < log_buf.len) {
    ssize_t n = write(STDERR_FILENO, log_buf.data + off, log_buf.len - off);
    if (n <= 0) break;
    off += (size_t)n;
  }
  log_buf.len = 0;
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
  struct timeval tv;
  gettimeofday(&tv, NULL);
  struct tm tm;
  gmtime_r(&tv.tv_sec, &tm);
  char head[64];
  int hn = snprintf(head, sizeof head, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %-5s ",
                    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                    tm.tm_sec, (int)(tv.tv_usec / 1000), level_names[level]);
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
  if (log_buf.len) flush_locked();
  pthread_mutex_unlock(&log_lock);
}
