/* OpenSSL for the HTTP client and the server (see tls.h), over one BIO of our own
 * (BIO_meth_new) instead of two memory BIOs: reading it takes ciphertext from the buffer
 * ml_tls_feed was given (the caller's read buffer, borrowed: no copy while OpenSSL consumes
 * it whole, the common case), writing it appends records to the session's output buffer,
 * which ml_tls_take hands over by swapping buffers (no copy either). Nothing else: no
 * BUF_MEM, no pending counts through BIO_ctrl (callgrind, a keep-alive HTTPS request of the
 * server: 25.7k instructions with memory BIOs, 23.9k with this one, 23.5k without looks at
 * the error queue; plain HTTP 9.3k).
 *
 * An empty input means "retry later", never end of file: the socket's end is the caller's
 * business. The borrowed input never outlives the call that consumes it: every operation
 * ends by copying what OpenSSL left of it into `kept`, read next time before new input.
 * OpenSSL's error queue is per thread: failures are turned into text at once, and the
 * per-request paths do not depend on it (see clear_errors). */
#include "tls.h"
#include "mem.h"
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>

struct ml_tls_s {
  SSL *ssl;
  const char *in;            /* ciphertext fed and not yet read: borrowed, or in kept */
  size_t in_len;
  ml_buf_t kept;             /* ciphertext that outlived its feed (in points into it) */
  ml_buf_t out;              /* records to send, taken by ml_tls_take */
  char err[256];
};

/* --- the BIO ------------------------------------------------------------------------ */

static int bio_read(BIO *b, char *dst, int cap) {
  ml_tls_t *t = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  if (t->in_len == 0) {
    BIO_set_retry_read(b);
    return -1;
  }
  size_t n = t->in_len < (size_t)cap ? t->in_len : (size_t)cap;
  memcpy(dst, t->in, n);
  t->in += n;
  t->in_len -= n;
  return (int)n;
}

static int bio_write(BIO *b, const char *src, int len) {
  ml_tls_t *t = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  ml_buf_add(&t->out, src, (size_t)len);
  return len;
}

/* Only the questions OpenSSL asks of every BIO get an answer: a flush succeeds, the rest
 * (kTLS, datagram, pending counts) are "no" */
static long bio_ctrl(BIO *b, int cmd, long num, void *ptr) {
  (void)b, (void)num, (void)ptr;
  return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int bio_create(BIO *b) {
  BIO_set_init(b, 1);
  return 1;
}

static BIO_METHOD *bio_method;
static CRYPTO_ONCE bio_once = CRYPTO_ONCE_STATIC_INIT;

static void bio_method_init(void) {
  BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "moonlet");
  if (!m) return;
  BIO_meth_set_read(m, bio_read);
  BIO_meth_set_write(m, bio_write);
  BIO_meth_set_ctrl(m, bio_ctrl);
  BIO_meth_set_create(m, bio_create);
  bio_method = m;   /* for the life of the process, as OpenSSL's own */
}

static int in_kept(const ml_tls_t *t) {
  return t->kept.data && t->in >= t->kept.data && t->in <= t->kept.data + t->kept.len;
}

/* What OpenSSL left of a borrowed input is copied into kept before the caller's buffer
 * goes; an input already in kept stays where it is (the reads go on from there: moving
 * the rest after each record would cost a client of tiny records quadratic time). */
static void keep_rest(ml_tls_t *t) {
  if (t->in_len == 0) {
    t->kept.len = 0;
    if (t->kept.cap > 64 * 1024) ml_buf_reset(&t->kept, 0);
    return;
  }
  if (in_kept(t)) return;
  t->kept.len = 0;
  ml_buf_add(&t->kept, t->in, t->in_len);
  t->in = t->kept.data;
}

/* Either end's context: TLS 1.2 and 1.3 only. NULL with err on out of memory. */
static SSL_CTX *ctx_new(const SSL_METHOD *method, char *err, size_t errlen) {
  ERR_clear_error();
  SSL_CTX *ctx = SSL_CTX_new(method);
  if (!ctx) {
    snprintf(err, errlen, "cannot create a TLS context");
    return NULL;
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  return ctx;
}

SSL_CTX *ml_tls_ctx_new(int verify, const char *ca_file, char *err, size_t errlen) {
  SSL_CTX *ctx = ctx_new(TLS_client_method(), err, errlen);
  if (!ctx) return NULL;
  if (!verify) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    return ctx;
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
  if (ca_file) {
    if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
      unsigned long e = ERR_get_error();
      const char *why = e ? ERR_reason_error_string(e) : NULL;
      snprintf(err, errlen, "cannot load ca_file %s: %s", ca_file, why ? why : "unreadable");
      ERR_clear_error();
      SSL_CTX_free(ctx);
      return NULL;
    }
  } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
    ERR_clear_error();   /* no system store: every verification then fails, with a reason */
  }
  return ctx;
}

static int is_ip_literal(const char *host) {
  unsigned char tmp[16];
  return inet_pton(AF_INET, host, tmp) == 1 || inet_pton(AF_INET6, host, tmp) == 1;
}

/* A session of ctx over our BIO, neither end yet. NULL on out of memory. */
static ml_tls_t *session_new(SSL_CTX *ctx) {
  CRYPTO_THREAD_run_once(&bio_once, bio_method_init);
  ml_tls_t *t = ml_xcalloc(1, sizeof *t);
  ERR_clear_error();
  t->ssl = SSL_new(ctx);
  BIO *bio = bio_method ? BIO_new(bio_method) : NULL;
  if (!t->ssl || !bio) {
    BIO_free(bio);
    SSL_free(t->ssl);
    ERR_clear_error();
    free(t);
    return NULL;
  }
  BIO_set_data(bio, t);
  SSL_set_bio(t->ssl, bio, bio);   /* ssl owns it from here (one reference for both ends) */
  return t;
}

ml_tls_t *ml_tls_new(SSL_CTX *ctx, const char *host, int verify) {
  ml_tls_t *t = session_new(ctx);
  if (!t) return NULL;
  SSL_set_connect_state(t->ssl);
  int ip = is_ip_literal(host);
  if (!ip && SSL_set_tlsext_host_name(t->ssl, host) != 1) goto err;   /* SNI */
  if (verify) {
    int ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), host)
                : SSL_set1_host(t->ssl, host);
    if (ok != 1) goto err;
  }
  return t;
err:
  ERR_clear_error();
  ml_tls_free(t);
  return NULL;
}

ml_tls_t *ml_tls_accept(SSL_CTX *ctx) {
  ml_tls_t *t = session_new(ctx);
  if (t) SSL_set_accept_state(t->ssl);
  return t;
}

/* ALPN: http/1.1 or nothing. A client that offers only other protocols (h2) gets the
 * no_application_protocol alert RFC 7301 asks for, as from nginx. */
static int alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                          const unsigned char *in, unsigned int inlen, void *arg) {
  (void)ssl, (void)arg;
  static const unsigned char ours[] = "\x08http/1.1";
  unsigned char *sel;
  if (SSL_select_next_proto(&sel, outlen, ours, sizeof ours - 1, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  *out = sel;
  return SSL_TLSEXT_ERR_OK;
}

/* "cannot load the TLS certificate FILE: why": the file's own error (ENOENT, EACCES)
 * when it cannot be opened, else what it should have been and OpenSSL's first reason (the
 * cause: "bad base64 decode", not the "PEM lib" that follows it). */
static SSL_CTX *server_ctx_fail(SSL_CTX *ctx, const char *what, const char *file, char *err,
                                size_t errlen) {
  FILE *f = fopen(file, "r");
  if (!f) {
    snprintf(err, errlen, "cannot load the TLS %s %s: %s", what, file, strerror(errno));
  } else {
    fclose(f);
    unsigned long e = ERR_peek_error();
    const char *why = e ? ERR_reason_error_string(e) : NULL;
    snprintf(err, errlen, "cannot load the TLS %s %s: not a PEM %s (%s)", what, file,
             strcmp(what, "key") == 0 ? "private key" : "certificate chain",
             why ? why : "invalid");
  }
  ERR_clear_error();
  SSL_CTX_free(ctx);
  return NULL;
}

SSL_CTX *ml_tls_server_ctx_new(const char *cert_file, const char *key_file, char *err,
                               size_t errlen) {
  SSL_CTX *ctx = ctx_new(TLS_server_method(), err, errlen);
  if (!ctx) return NULL;
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
  /* A session keeps its record buffers while requests come (SSL_MODE_RELEASE_BUFFERS, as
   * nginx sets it, would free and allocate them again around every request: ~1.2k
   * instructions of a keep-alive request's 23.2k, callgrind); the server gives them back
   * once a connection idles (ml_tls_release). Read-ahead: OpenSSL takes all the
   * ciphertext fed in one BIO read instead of a header and a body per record (~0.25k). */
  SSL_CTX_set_read_ahead(ctx, 1);
  /* a session resumed must come from this program's cache (required with client
   * certificates, harmless without) */
  static const unsigned char sid_ctx[] = "moonlet";
  SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof sid_ctx - 1);
  SSL_CTX_set_alpn_select_cb(ctx, alpn_select_cb, NULL);
  if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1)
    return server_ctx_fail(ctx, "certificate", cert_file, err, errlen);
  int key_ok = SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) == 1;
  /* a key of another certificate is read fine, then refused by this check */
  if (!key_ok && ERR_GET_REASON(ERR_peek_last_error()) != X509_R_KEY_VALUES_MISMATCH)
    return server_ctx_fail(ctx, "key", key_file, err, errlen);
  if (!key_ok || SSL_CTX_check_private_key(ctx) != 1) {
    snprintf(err, errlen, "the TLS key %s does not match the certificate %s", key_file,
             cert_file);
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return NULL;
  }
  return ctx;
}

void ml_tls_free(ml_tls_t *t) {
  if (!t) return;
  SSL_free(t->ssl);
  ml_buf_free(&t->kept);
  ml_buf_free(&t->out);
  free(t);
}

void ml_tls_feed(ml_tls_t *t, const char *data, size_t len) {
  if (len == 0) return;
  if (t->in_len == 0) {   /* the common case: borrowed until the next operation ends */
    t->in = data;
    t->in_len = len;
    return;
  }
  keep_rest(t);   /* older bytes first, at the front of kept (once per feed) */
  if (t->in != t->kept.data) memmove(t->kept.data, t->in, t->in_len);
  t->kept.len = t->in_len;
  ml_buf_add(&t->kept, data, len);
  t->in = t->kept.data;
  t->in_len = t->kept.len;
}

size_t ml_tls_take(ml_tls_t *t, ml_buf_t *out) {
  size_t n = t->out.len;
  if (n == 0) return 0;
  if (out->len == 0) {   /* hand the records over whole: the session keeps out's buffer */
    ml_buf_t tmp = *out;
    *out = t->out;
    t->out = tmp;
    if (t->out.cap > 256 * 1024) ml_buf_reset(&t->out, 0);
  } else {
    ml_buf_add(out, t->out.data, n);
    t->out.len = 0;
  }
  return n;
}

static void set_error(ml_tls_t *t, const char *fallback) {
  /* with verify = false the verify result still records a self-signed chain: only a
   * connection that verifies can fail for that reason */
  long vr = SSL_get_verify_mode(t->ssl) & SSL_VERIFY_PEER ? SSL_get_verify_result(t->ssl)
                                                         : X509_V_OK;
  unsigned long e = ERR_get_error();
  if (vr != X509_V_OK) {
    snprintf(t->err, sizeof t->err, "certificate verify failed: %s",
             X509_verify_cert_error_string(vr));
  } else if (e) {
    const char *why = ERR_reason_error_string(e);
    snprintf(t->err, sizeof t->err, "%s", why ? why : fallback);
  } else {
    snprintf(t->err, sizeof t->err, "%s", fallback);
  }
  ERR_clear_error();
  for (char *p = t->err; *p; p++) *p = (char)tolower((unsigned char)*p);
}

/* OpenSSL 3's error queue is costly to touch (ERR_peek_error ~200 instructions a call, two
 * a keep-alive request; ERR_clear_error more), so the per-request paths leave it alone: an
 * operation that returns <= 0 is asked whether it stopped for want of input
 * (SSL_want_read: the BIO ran dry) before SSL_get_error, which would call anything in this
 * thread's queue, someone else's included, a failure. The queue is emptied where failures
 * are turned into text (set_error) and around the handshake, once a connection, so that a
 * failure's reason is its own. */
static inline void clear_errors(void) {
  if (ERR_peek_error()) ERR_clear_error();
}

int ml_tls_handshake(ml_tls_t *t) {
  clear_errors();
  int r = SSL_do_handshake(t->ssl);
  keep_rest(t);
  if (r == 1) {
    clear_errors();   /* what OpenSSL left behind in a handshake that succeeded */
    return 0;
  }
  if (SSL_want_read(t->ssl)) return 1;
  set_error(t, "handshake failed");
  return -1;
}

int ml_tls_write(ml_tls_t *t, const char *data, size_t len) {
  while (len > 0) {   /* our BIO takes every byte: SSL_write never waits, only fails */
    int chunk = len > 1 << 30 ? 1 << 30 : (int)len;
    int r = SSL_write(t->ssl, data, chunk);
    if (r <= 0) {
      set_error(t, "write failed");
      return -1;
    }
    data += r;
    len -= (size_t)r;
  }
  return 0;
}

int ml_tls_read(ml_tls_t *t, char *buf, size_t cap) {
  /* nothing decrypted or read ahead waits and no ciphertext came: SSL_read could only say
   * "want read" */
  if (t->in_len == 0 && !SSL_has_pending(t->ssl)) return 0;
  int r = SSL_read(t->ssl, buf, cap > 1 << 30 ? 1 << 30 : (int)cap);
  keep_rest(t);
  if (r > 0) return r;
  if (SSL_want_read(t->ssl)) return 0;   /* a record is incomplete: more input is due */
  if (SSL_get_error(t->ssl, r) == SSL_ERROR_ZERO_RETURN) return ML_TLS_CLOSED;
  set_error(t, "read failed");
  return -1;
}

void ml_tls_release(ml_tls_t *t) {
  SSL_free_buffers(t->ssl);   /* refuses (harmlessly) while a record is partly read */
}

void ml_tls_shutdown(ml_tls_t *t) {
  clear_errors();
  if (SSL_is_init_finished(t->ssl)) SSL_shutdown(t->ssl);
  keep_rest(t);
  clear_errors();
}

const char *ml_tls_error(const ml_tls_t *t) {
  return t->err;
}
