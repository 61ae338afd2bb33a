/* OpenSSL over memory BIOs for the HTTP client (see tls.h). The read BIO holds ciphertext
 * that arrived and OpenSSL has not consumed; the write BIO collects what it produced. An
 * empty read BIO means "retry later" (BIO_set_mem_eof_return -1), never end of file: the
 * socket's end is the caller's business. OpenSSL's error queue is per thread, so every
 * operation starts by clearing it and failures are turned into text at once. */
#include "tls.h"
#include "mem.h"
#include <arpa/inet.h>
#include <ctype.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>

struct ml_tls_s {
  SSL *ssl;
  BIO *rbio;                 /* network -> OpenSSL (owned by ssl) */
  BIO *wbio;                 /* OpenSSL -> network (owned by ssl) */
  char err[256];
};

SSL_CTX *ml_tls_ctx_new(int verify, const char *ca_file, char *err, size_t errlen) {
  ERR_clear_error();
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) {
    snprintf(err, errlen, "cannot create a TLS context");
    return NULL;
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
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

ml_tls_t *ml_tls_new(SSL_CTX *ctx, const char *host, int verify) {
  ml_tls_t *t = ml_xcalloc(1, sizeof *t);
  ERR_clear_error();
  t->ssl = SSL_new(ctx);
  t->rbio = BIO_new(BIO_s_mem());
  t->wbio = BIO_new(BIO_s_mem());
  if (!t->ssl || !t->rbio || !t->wbio) goto err;
  BIO_set_mem_eof_return(t->rbio, -1);
  BIO_set_mem_eof_return(t->wbio, -1);
  SSL_set_bio(t->ssl, t->rbio, t->wbio);   /* ssl owns both from here */
  SSL_set_connect_state(t->ssl);
  int ip = is_ip_literal(host);
  if (!ip && SSL_set_tlsext_host_name(t->ssl, host) != 1) goto err_owned;   /* SNI */
  if (verify) {
    int ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), host)
                : SSL_set1_host(t->ssl, host);
    if (ok != 1) goto err_owned;
  }
  return t;
err:
  BIO_free(t->rbio);
  BIO_free(t->wbio);
  t->rbio = t->wbio = NULL;
err_owned:
  SSL_free(t->ssl);
  ERR_clear_error();
  free(t);
  return NULL;
}

void ml_tls_free(ml_tls_t *t) {
  if (!t) return;
  SSL_free(t->ssl);
  free(t);
}

void ml_tls_feed(ml_tls_t *t, const char *data, size_t len) {
  while (len > 0) {   /* a memory BIO grows as needed: every write is taken whole */
    int chunk = len > 1 << 30 ? 1 << 30 : (int)len;
    BIO_write(t->rbio, data, chunk);
    data += chunk;
    len -= (size_t)chunk;
  }
}

size_t ml_tls_take(ml_tls_t *t, ml_buf_t *out) {
  size_t pending = BIO_ctrl_pending(t->wbio);
  if (pending == 0) return 0;
  ml_buf_reserve(out, pending);
  int n = BIO_read(t->wbio, out->data + out->len, (int)pending);
  if (n <= 0) return 0;
  out->len += (size_t)n;
  return (size_t)n;
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

int ml_tls_handshake(ml_tls_t *t) {
  ERR_clear_error();
  int r = SSL_do_handshake(t->ssl);
  if (r == 1) return 0;
  int e = SSL_get_error(t->ssl, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 1;
  set_error(t, "handshake failed");
  return -1;
}

int ml_tls_write(ml_tls_t *t, const char *data, size_t len) {
  while (len > 0) {
    ERR_clear_error();
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
  ERR_clear_error();
  int r = SSL_read(t->ssl, buf, cap > 1 << 30 ? 1 << 30 : (int)cap);
  if (r > 0) return r;
  int e = SSL_get_error(t->ssl, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 0;
  if (e == SSL_ERROR_ZERO_RETURN) return ML_TLS_CLOSED;
  set_error(t, "read failed");
  return -1;
}

const char *ml_tls_error(const ml_tls_t *t) {
  return t->err;
}
