/* TLS sessions for the HTTP client and the server: OpenSSL driven through a BIO of our own
 * over buffers, so the socket stays a plain libuv stream. Ciphertext that arrives is handed
 * to ml_tls_feed; whatever OpenSSL wants to send (handshake records, encrypted requests or
 * responses, alerts) is collected with ml_tls_take and written by the caller. A session never
 * touches a socket or a loop; both ends share everything but their making.
 *
 * Client contexts (ml_tls_ctx_new) hold the trust settings: the system CAs by default
 * (SSL_CTX_set_default_verify_paths), or only the certificates of `ca_file`, or no
 * verification at all. A client session checks the peer's name against the host it was
 * made for (a DNS name or an IP literal) and sends SNI for DNS names.
 *
 * Server contexts (ml_tls_server_ctx_new) hold a certificate chain and its key. A server
 * session (ml_tls_accept) keeps a reference to its context: replacing the server's
 * context (a certificate reload) leaves the sessions made from the old one as they are. */
#ifndef ML_TLS_H
#define ML_TLS_H
#include "buf.h"
#include <openssl/ssl.h>

typedef struct ml_tls_s ml_tls_t;

/* A client context. verify = 0 accepts any certificate. ca_file (may be NULL) replaces
 * the system CAs. Returns NULL with a one-line message in err when ca_file cannot be
 * loaded. The caller owns the context (SSL_CTX_free). */
SSL_CTX *ml_tls_ctx_new(int verify, const char *ca_file, char *err, size_t errlen);

/* A client session for `host` (copied). Returns NULL on out of memory. */
ml_tls_t *ml_tls_new(SSL_CTX *ctx, const char *host, int verify);

/* A server context: the PEM certificate chain in cert_file (the server's certificate
 * first, then the intermediates) and the PEM private key in key_file, which must match.
 * TLS 1.2 and 1.3 only; ciphers and groups are the system's policy (OpenSSL's
 * configuration file, as every other program on the machine); ALPN offers http/1.1 (a
 * client that offers ALPN without http/1.1 is refused, RFC 7301); session tickets and a
 * session cache as OpenSSL sets them by default (resumption works within one context).
 * Returns NULL with a one-line message in err ("cannot load --tls-key FILE: ...").
 * The caller owns the context (SSL_CTX_free). Any thread. */
SSL_CTX *ml_tls_server_ctx_new(const char *cert_file, const char *key_file, char *err,
                               size_t errlen);
/* A server session: it waits for the client's hello. Returns NULL on out of memory. */
ml_tls_t *ml_tls_accept(SSL_CTX *ctx);
void ml_tls_free(ml_tls_t *t);

/* Ciphertext from the network. The session borrows data (no copy) until the next
 * ml_tls_handshake, ml_tls_read or ml_tls_shutdown returns, which keeps a copy of what it
 * leaves unread: call one of them before data goes (a read returning 0 has taken it all). */
void ml_tls_feed(ml_tls_t *t, const char *data, size_t len);
/* Appends the ciphertext waiting to be sent to out; returns how many bytes. When out is
 * empty the buffers are swapped instead (no copy): out then holds the records and the
 * session out's former memory. */
size_t ml_tls_take(ml_tls_t *t, ml_buf_t *out);

/* Failures (err.h): a session fails inside the read and write paths, where no caller
 * waits with a buffer, so it keeps the one-line reason itself: the functions below return
 * -1 and ml_tls_error says why ("certificate verify failed: ..."). */

/* Advances the handshake. Returns 0 when it is complete, 1 while it needs more input, -1
 * on failure. */
int ml_tls_handshake(ml_tls_t *t);
/* Encrypts len bytes (after the handshake). Returns 0 or -1. */
int ml_tls_write(ml_tls_t *t, const char *data, size_t len);
/* Decrypts into buf. Returns the number of bytes (> 0), 0 when more input is needed,
 * ML_TLS_CLOSED when the peer closed the session (close_notify), -1 on failure. */
int ml_tls_read(ml_tls_t *t, char *buf, size_t cap);
#define ML_TLS_CLOSED (-2)

/* Gives the session's record buffers back to the allocator (OpenSSL allocates them again
 * on the next read or write): for a connection that idles. Does nothing while a record is
 * partly read. */
void ml_tls_release(ml_tls_t *t);

/* Queues a close_notify alert (take it with ml_tls_take), once the handshake is done;
 * nothing before. */
void ml_tls_shutdown(ml_tls_t *t);

/* The reason of the last failure, in lower case. */
const char *ml_tls_error(const ml_tls_t *t);
#endif
