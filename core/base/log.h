/* Logging to stderr, or to an embedder's callback (ml_log_configure). Lines for stderr are
 * buffered and flushed once per loop turn (ml_log_flush from the host's prepare handle) so
 * an access-log line costs no syscall of its own. The log is one per process: the level
 * and the callback are the last ml_log_configure's (moonlet.h: the host created last). */
#ifndef ML_LOG_H
#define ML_LOG_H
#include <stdarg.h>
#include <stddef.h>

enum { ML_LOG_DEBUG, ML_LOG_INFO, ML_LOG_WARN, ML_LOG_ERROR };

extern int ml_log_level;   /* read and written with __atomic_*: see ml_log_enabled */

/* Where lines go instead of stderr: cb(level, line, user), the line without a newline,
 * timestamp or level, on whichever thread logs it, one call at a time (under the log's
 * lock: cb must not log through moonlet). */
typedef void (*ml_log_fn)(int level, const char *line, void *user);
void ml_log_configure(int level, ml_log_fn cb, void *user);
static inline int ml_log_enabled(int level) {
  return level >= __atomic_load_n(&ml_log_level, __ATOMIC_RELAXED);
}

int ml_log_parse_level(const char *name);   /* "info" -> ML_LOG_INFO, -1 if unknown */
void ml_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ml_logv(int level, const char *fmt, va_list ap);
void ml_log_flush(void);
/* Every stderr line of this process says who wrote it after its level: tag "worker 2"
 * gives "... info  [worker 2] message" (a worker process of --workers); NULL or "" none.
 * Access log lines in JSON and the callback's lines carry no tag. Call it before other
 * threads log. */
void ml_log_set_tag(const char *tag);
/* An access log line (no newline): to the callback as an info line, else to the access
 * log's file if one is open, else to stderr; with the timestamp and level first unless
 * bare (JSON lines stand alone). Buffered like the rest, flushed by ml_log_flush. */
void ml_log_access(const char *line, size_t len, int bare);
/* Access log lines go to path from now on (opened to append, created 0644). Returns 0,
 * or -1 with a message in err. */
int ml_log_access_open(const char *path, char *err, size_t errlen);
/* Opens the access log's path again (logrotate moved the file): from the loop, never from
 * a signal handler. The old file stays in use if the open fails (logged). */
void ml_log_access_reopen(void);
#endif
