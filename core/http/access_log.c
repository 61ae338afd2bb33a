/* Access log lines. Text: `GET /p?q=1 200 0.52ms 1234B 127.0.0.1:5678 "curl/8.5" id=x`
 * (the method, path, status and time first, as moonlet always wrote them), then
 * ` (detail)` for a request refused before its handler; JSON: one object with time,
 * client, method, path, status, bytes, duration_ms, user_agent, id (and error). The agent
 * is a JSON string in both (a client chooses it; the parser lets no space or control
 * character into a path). */
#include "access_log.h"
#include "log.h"
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

int ml_access_parse(const char *name) {
  if (strcmp(name, "text") == 0) return ML_ACCESS_TEXT;
  if (strcmp(name, "json") == 0) return ML_ACCESS_JSON;
  if (strcmp(name, "off") == 0) return ML_ACCESS_OFF;
  return -1;
}

static void add_escaped(ml_buf_t *b, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  ml_buf_addc(b, '"');
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch == '"' || ch == '\\') {
      ml_buf_addc(b, '\\');
      ml_buf_addc(b, (char)ch);
    } else if (ch < 0x20 || ch == 0x7f) {
      char e[6] = {'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15]};
      ml_buf_add(b, e, 6);
    } else {
      ml_buf_addc(b, (char)ch);
    }
  }
  ml_buf_addc(b, '"');
}

static void add_field(ml_buf_t *b, const char *name, const char *s, size_t n) {
  ml_buf_addstr(b, name);
  if (s) add_escaped(b, s, n);
  else ml_buf_addstr(b, "null");
}

static void add_time(ml_buf_t *b) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  struct tm tm;
  gmtime_r(&tv.tv_sec, &tm);
  char t[40];
  int n = snprintf(t, sizeof t, "\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\"", tm.tm_year + 1900,
                   tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                   (int)(tv.tv_usec / 1000));
  ml_buf_add(b, t, (size_t)n);
}

static void add_text(ml_buf_t *b, const ml_access_t *r) {
  char num[64];
  ml_buf_addstr(b, r->method);
  ml_buf_addc(b, ' ');
  ml_buf_add(b, r->url, r->url_len);
  int n = snprintf(num, sizeof num, " %d %.2fms %lluB ", r->status, r->ms,
                   (unsigned long long)r->bytes);
  ml_buf_add(b, num, (size_t)n);
  ml_buf_addstr(b, r->client);
  ml_buf_addc(b, ' ');
  if (r->ua) add_escaped(b, r->ua, r->ua_len);
  else ml_buf_addc(b, '-');
  if (r->id) {
    ml_buf_addstr(b, " id=");
    ml_buf_add(b, r->id, r->id_len);
  }
  if (r->detail) {
    ml_buf_addstr(b, " (");
    ml_buf_add(b, r->detail, r->detail_len);
    ml_buf_addc(b, ')');
  }
}

/* ml_access_set_worker's slot, -1 outside a worker process */
static int access_worker = -1;

void ml_access_set_worker(int slot) {
  access_worker = slot;
}

static void add_json(ml_buf_t *b, const ml_access_t *r) {
  char num[96];
  ml_buf_addstr(b, "{\"time\":");
  add_time(b);
  add_field(b, ",\"client\":", r->client, strlen(r->client));
  add_field(b, ",\"method\":", r->method, strlen(r->method));
  add_field(b, ",\"path\":", r->url, r->url_len);
  int n = snprintf(num, sizeof num, ",\"status\":%d,\"bytes\":%llu,\"duration_ms\":%.3f",
                   r->status, (unsigned long long)r->bytes, r->ms);
  ml_buf_add(b, num, (size_t)n);
  add_field(b, ",\"user_agent\":", r->ua, r->ua_len);
  add_field(b, ",\"id\":", r->id, r->id_len);
  if (r->detail) add_field(b, ",\"error\":", r->detail, r->detail_len);
  if (access_worker >= 0) {
    n = snprintf(num, sizeof num, ",\"worker\":%d", access_worker);
    ml_buf_add(b, num, (size_t)n);
  }
  ml_buf_addc(b, '}');
}

void ml_access_write(int format, const ml_access_t *r) {
  ml_buf_t b = {0};
  ml_buf_reserve(&b, 256 + r->url_len + r->ua_len);
  if (format == ML_ACCESS_JSON) add_json(&b, r);
  else add_text(&b, r);
  ml_log_access(b.data, b.len, format == ML_ACCESS_JSON);
  ml_buf_free(&b);
}
