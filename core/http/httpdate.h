/* HTTP dates (RFC 9110 5.6.7): Last-Modified is written as an IMF-fixdate; If-Modified-Since
 * and If-Range are read in any of the three formats a recipient must accept. */
#ifndef ML_HTTPDATE_H
#define ML_HTTPDATE_H
#include <stddef.h>
#include <time.h>

#define ML_HTTPDATE_LEN 29   /* "Sun, 06 Nov 1994 08:49:37 GMT" */

/* Writes t as an IMF-fixdate and a NUL into out (ML_HTTPDATE_LEN + 1 bytes). */
void ml_httpdate_format(time_t t, char *out);
/* Parses an IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"), an RFC 850 date ("Sunday,
 * 06-Nov-94 08:49:37 GMT") or an asctime date ("Sun Nov  6 08:49:37 1994"). Returns 0 with
 * the time in *t, or -1 if s is none of them. */
int ml_httpdate_parse(const char *s, size_t len, time_t *t);
#endif
