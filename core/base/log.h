/* Logging to stderr. Lines are buffered and flushed once per loop turn (ml_log_flush from
 * the host's prepare handle) so an access-log line costs no syscall of its own. */
#ifndef ML_LOG_H
#define ML_LOG_H
#include <stdarg.h>

enum { ML_LOG_DEBUG, ML_LOG_INFO, ML_LOG_WARN, ML_LOG_ERROR };

extern int ml_log_level;

int ml_log_parse_level(const char *name);   /* "info" -> ML_LOG_INFO, -1 if unknown */
void ml_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ml_logv(int level, const char *fmt, va_list ap);
void ml_log_flush(void);
#endif
