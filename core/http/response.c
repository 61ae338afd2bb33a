/* Response heads. The Date value is formatted once per second and reused. */
#include "response.h"
#include <stdio.h>
#include <string.h>
#include <time.h>

const char *ml_status_reason(int s) {
  switch (s) {
  case 100: return "Continue";
  case 101: return "Switching Protocols";
  case 200: return "OK";
  case 201: return "Created";
  case 202: return "Accepted";
  case 204: return "No Content";
  case 206: return "Partial Content";
  case 301: return "Moved Permanently";
  case 302: return "Found";
  case 303: return "See Other";
  case 304: return "Not Modified";
  case 307: return "Temporary Redirect";
  case 308: return "Permanent Redirect";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 406: return "Not Acceptable";
  case 408: return "Request Timeout";
  case 409: return "Conflict";
  case 410: return "Gone";
  case 411: return "Length Required";
  case 413: return "Content Too Large";
  case 414: return "URI Too Long";
  case 415: return "Unsupported Media Type";
  case 416: return "Range Not Satisfiable";
  case 417: return "Expectation Failed";
  case 422: return "Unprocessable Content";
  case 429: return "Too Many Requests";
  case 431: return "Request Header Fields Too Large";
  case 500: return "Internal Server Error";
  case 501: return "Not Implemented";
  case 502: return "Bad Gateway";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  case 505: return "HTTP Version Not Supported";
  default: return s < 200 ? "Informational" : s < 300 ? "Success" : s < 400 ? "Redirection"
                : s < 500 ? "Client Error" : "Server Error";
  }
}

static __thread time_t date_sec = -1;
static __thread char date_line[64];
static __thread size_t date_len;

static void date_refresh(void) {
  time_t now = time(NULL);
  if (now == date_sec) return;
  date_sec = now;
  struct tm tm;
  gmtime_r(&now, &tm);
  date_len = strftime(date_line, sizeof date_line, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
}

void ml_resp_status(ml_buf_t *out, int status) {
  const char *reason = ml_status_reason(status);
  size_t rlen = strlen(reason);
  ml_buf_reserve(out, 22 + rlen);   /* "HTTP/1.1 ", up to 10 digits, ' ', reason, CRLF */
  if (status >= 100 && status <= 999) {   /* every status moonlet sends: 3 digits, no loop */
    char line[12] = "HTTP/1.1 ";
    line[9] = (char)('0' + status / 100);
    line[10] = (char)('0' + status / 10 % 10);
    line[11] = (char)('0' + status % 10);
    ml_buf_put(out, line, 12);
  } else {
    ml_buf_put(out, "HTTP/1.1 ", 9);
    ml_buf_putu(out, (unsigned)status);
  }
  out->data[out->len++] = ' ';
  ml_buf_put(out, reason, rlen);
  ml_buf_put(out, "\r\n", 2);
}

/* Server and Date, in room reserved here. */
void ml_resp_defaults(ml_buf_t *out, unsigned given) {
  ml_buf_reserve(out, 17 + sizeof date_line);
  if (!(given & ML_RESP_SERVER)) ml_buf_put(out, "Server: moonlet\r\n", 17);
  if (!(given & ML_RESP_DATE)) {
    date_refresh();
    ml_buf_put(out, date_line, date_len);
  }
}

void ml_resp_begin(ml_buf_t *out, int status) {
  ml_resp_status(out, status);
  ml_resp_defaults(out, 0);
}

void ml_resp_header(ml_buf_t *out, const char *name, size_t nlen, const char *val, size_t vlen) {
  ml_buf_reserve(out, nlen + vlen + 4);
  ml_buf_put(out, name, nlen);
  ml_buf_put(out, ": ", 2);
  ml_buf_put(out, val, vlen);
  ml_buf_put(out, "\r\n", 2);
}

void ml_resp_end(ml_buf_t *out, int status, size_t content_length, int keepalive) {
  ml_buf_reserve(out, 16 + 20 + 2 + 19 + 2);
  if (status >= 200 && status != 204 && status != 304) {
    ml_buf_put(out, "Content-Length: ", 16);
    ml_buf_putu(out, content_length);
    ml_buf_put(out, "\r\n", 2);
  }
  if (!keepalive) ml_buf_put(out, "Connection: close\r\n", 19);
  ml_buf_put(out, "\r\n", 2);
}

void ml_resp_error(ml_buf_t *out, int status, const char *detail, const char *allow,
                   int keepalive, int head) {
  char body[256];
  int n = snprintf(body, sizeof body, "{\"detail\":\"%s\"}", detail);
  ml_resp_begin(out, status);
  ml_resp_header(out, "Content-Type", 12, "application/json", 16);
  if (allow) ml_resp_header(out, "Allow", 5, allow, strlen(allow));
  ml_resp_end(out, status, (size_t)n, keepalive);
  if (!head) ml_buf_add(out, body, (size_t)n);
}

/* 1 for the bytes a header name may hold (RFC 9110 tchar). */
static const unsigned char tchar[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 1, 0, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 1, 1, 0,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0,
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 1, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
};

int ml_header_name_ok(const char *s, size_t len) {
  if (len == 0) return 0;
  for (size_t i = 0; i < len; i++)
    if (!tchar[(unsigned char)s[i]]) return 0;
  return 1;
}

/* RFC 9110 5.5: a field value is visible characters, obs-text, spaces and tabs; any other
 * control character (not only CR and LF) makes the response unreadable to a strict client
 * (llhttp refuses it). */
int ml_header_value_ok(const char *s, size_t len) {
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if ((c < 0x20 && c != '\t') || c == 0x7f) return 0;
  }
  return 1;
}
