/* The WebSocket opening handshake (see ws_handshake.h). The accept value is
 * base64(SHA-1(key + GUID)) (RFC 6455 4.2.2), with OpenSSL's SHA-1 and base64. */
#include "ws_handshake.h"
#include <openssl/evp.h>
#include <strings.h>

static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

static int is_ows(char c) { return c == ' ' || c == '\t'; }

/* Calls fn on each element of a comma-separated header list (RFC 9110 5.6.1), OWS trimmed,
 * empty ones skipped, over every header named `name`; stops when fn returns 1, and returns 1
 * then. */
static int each_token(const ml_http_t *h, const char *name,
                      int (*fn)(const char *s, size_t len, void *arg), void *arg) {
  int at = 0;
  size_t vlen;
  const char *v;
  while ((v = ml_headers_next(&h->headers, name, &at, &vlen))) {
    const char *end = v + vlen;
    while (v < end) {
      const char *comma = memchr(v, ',', (size_t)(end - v));
      const char *stop = comma ? comma : end;
      while (v < stop && is_ows(*v)) v++;
      const char *e = stop;
      while (e > v && is_ows(e[-1])) e--;
      if (e > v && fn(v, (size_t)(e - v), arg)) return 1;
      v = comma ? comma + 1 : end;
    }
  }
  return 0;
}

static int token_is(const char *s, size_t len, void *word) {
  return strlen(word) == len && strncasecmp(s, word, len) == 0;
}

static int has_token(const ml_http_t *h, const char *name, const char *word) {
  return each_token(h, name, token_is, (void *)word);
}

/* A Sec-WebSocket-Key is the base64 of 16 bytes: 22 characters and "==". */
static int key_ok(const char *k, size_t len) {
  if (len != 24 || k[22] != '=' || k[23] != '=') return 0;
  for (size_t i = 0; i < 22; i++) {
    char c = k[i];
    int b64 = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '/';
    if (!b64) return 0;
  }
  return 1;
}

int ml_ws_handshake_check(const ml_http_t *h, const char **detail) {
  if (!has_token(h, "upgrade", "websocket")) {
    *detail = "Upgrade Required: this is a WebSocket endpoint";
    return 426;
  }
  if (h->parser.http_major == 1 && h->parser.http_minor == 0) {
    *detail = "A WebSocket handshake needs HTTP/1.1";
    return 400;
  }
  if (!has_token(h, "connection", "upgrade")) {
    *detail = "A WebSocket handshake needs Connection: Upgrade";
    return 400;
  }
  size_t len;
  const char *v = ml_http_header(h, "sec-websocket-version", &len);
  if (!v || len != 2 || memcmp(v, "13", 2) != 0) {
    *detail = "Unsupported WebSocket version (13 is supported)";
    return 426;
  }
  int at = 0;
  v = ml_headers_next(&h->headers, "sec-websocket-key", &at, &len);
  if (!v || !key_ok(v, len) || ml_headers_next(&h->headers, "sec-websocket-key", &at, &len)) {
    *detail = "Missing or invalid Sec-WebSocket-Key";
    return 400;
  }
  return 0;
}

int ml_ws_handshake_origin_ok(const ml_http_t *h, const char *const *origins, int n) {
  size_t len;
  const char *v = ml_http_header(h, "origin", &len);
  if (!v) return 0;
  for (int i = 0; i < n; i++)
    if (strlen(origins[i]) == len && strncasecmp(origins[i], v, len) == 0) return 1;
  return 0;
}

typedef struct {
  const char *const *accepted;
  int n;
  const char *found;
  size_t len;
} proto_pick_t;

static int pick(const char *s, size_t len, void *arg) {
  proto_pick_t *p = arg;
  for (int i = 0; i < p->n; i++) {
    if (strlen(p->accepted[i]) == len && memcmp(p->accepted[i], s, len) == 0) {
      p->found = s;
      p->len = len;
      return 1;
    }
  }
  return 0;
}

const char *ml_ws_handshake_protocol(const ml_http_t *h, const char *const *accepted, int n,
                                     size_t *len) {
  proto_pick_t p = {accepted, n, NULL, 0};
  each_token(h, "sec-websocket-protocol", pick, &p);
  *len = p.len;
  return p.found;
}

void ml_ws_handshake_response(const ml_http_t *h, const char *protocol, ml_buf_t *out) {
  size_t klen;
  const char *key = ml_http_header(h, "sec-websocket-key", &klen);
  unsigned char in[64], md[EVP_MAX_MD_SIZE], accept[32];
  unsigned mdlen = 0;
  if (key && klen == 24) memcpy(in, key, klen);
  else klen = 0;   /* checked before: cannot happen */
  memcpy(in + klen, guid, sizeof guid - 1);
  EVP_Digest(in, klen + sizeof guid - 1, md, &mdlen, EVP_sha1(), NULL);
  EVP_EncodeBlock(accept, md, (int)mdlen);   /* 28 characters and a NUL */
  ml_buf_addstr(out, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: ");
  ml_buf_addstr(out, (const char *)accept);
  if (protocol) {
    ml_buf_addstr(out, "\r\nSec-WebSocket-Protocol: ");
    ml_buf_addstr(out, protocol);
  }
  ml_buf_addstr(out, "\r\nServer: moonlet\r\n\r\n");
}
