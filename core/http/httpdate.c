/* HTTP dates (see httpdate.h). Formatting and parsing use no locale and no global state. */
#include "httpdate.h"
#include <stdio.h>
#include <string.h>

static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

void ml_httpdate_format(time_t t, char *out) {
  struct tm tm;
  gmtime_r(&t, &tm);
  char tmp[64];   /* the compiler cannot know that the year has four digits */
  snprintf(tmp, sizeof tmp, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday],
           tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
  memcpy(out, tmp, ML_HTTPDATE_LEN);
  out[ML_HTTPDATE_LEN] = '\0';
}

typedef struct {
  const char *p, *end;
} cursor_t;

/* Reads 1 to `max` digits; -1 if there is none. */
static int digits(cursor_t *c, int min, int max) {
  int v = 0, n = 0;
  while (c->p < c->end && n < max && *c->p >= '0' && *c->p <= '9') {
    v = v * 10 + (*c->p++ - '0');
    n++;
  }
  return n >= min ? v : -1;
}

static int expect(cursor_t *c, char ch) {
  if (c->p < c->end && *c->p == ch) {
    c->p++;
    return 1;
  }
  return 0;
}

static int month(cursor_t *c) {
  if (c->end - c->p < 3) return -1;
  for (int i = 0; i < 12; i++)
    if (memcmp(c->p, months[i], 3) == 0) {
      c->p += 3;
      return i;
    }
  return -1;
}

/* "08:49:37" into tm */
static int clock_time(cursor_t *c, struct tm *tm) {
  tm->tm_hour = digits(c, 2, 2);
  if (!expect(c, ':')) return -1;
  tm->tm_min = digits(c, 2, 2);
  if (!expect(c, ':')) return -1;
  tm->tm_sec = digits(c, 2, 2);
  if (tm->tm_hour < 0 || tm->tm_hour > 23 || tm->tm_min < 0 || tm->tm_min > 59 ||
      tm->tm_sec < 0 || tm->tm_sec > 60)
    return -1;
  return 0;
}

int ml_httpdate_parse(const char *s, size_t len, time_t *t) {
  cursor_t c = {s, s + len};
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  while (c.p < c.end && ((*c.p >= 'A' && *c.p <= 'Z') || (*c.p >= 'a' && *c.p <= 'z'))) c.p++;
  if (expect(&c, ',')) {   /* IMF-fixdate or RFC 850 */
    if (!expect(&c, ' ')) return -1;
    tm.tm_mday = digits(&c, 2, 2);
    int rfc850 = expect(&c, '-');
    if (!rfc850 && !expect(&c, ' ')) return -1;
    tm.tm_mon = month(&c);
    if (!expect(&c, rfc850 ? '-' : ' ')) return -1;
    int year = digits(&c, rfc850 ? 2 : 4, rfc850 ? 2 : 4);
    if (year < 0) return -1;
    /* RFC 850's two-digit year: the nearest century that is not more than 50 years ahead */
    tm.tm_year = rfc850 ? (year < 70 ? year + 100 : year) : year - 1900;
    if (!expect(&c, ' ') || clock_time(&c, &tm)) return -1;
    if (c.end - c.p != 4 || memcmp(c.p, " GMT", 4) != 0) return -1;
  } else {                 /* asctime: "Sun Nov  6 08:49:37 1994" */
    if (!expect(&c, ' ')) return -1;
    tm.tm_mon = month(&c);
    if (!expect(&c, ' ')) return -1;
    expect(&c, ' ');
    tm.tm_mday = digits(&c, 1, 2);
    if (!expect(&c, ' ') || clock_time(&c, &tm) || !expect(&c, ' ')) return -1;
    int year = digits(&c, 4, 4);
    if (year < 0 || c.p != c.end) return -1;
    tm.tm_year = year - 1900;
  }
  if (tm.tm_mon < 0 || tm.tm_mday < 1 || tm.tm_mday > 31) return -1;
  *t = timegm(&tm);
  return 0;
}
