/* Responses written in pieces by a Lua producer (moonlet.stream, moonlet.sse): the head
 * first, then one chunk per send(data), then the end. The producer runs in the request's
 * own task, on the loop; the request stays in flight (the connection reads no next
 * request) until the stream ends. send waits while the connection's unsent output is
 * above the stream's high-water mark (server.h's backpressure). Framing: chunked on
 * HTTP/1.1; on HTTP/1.0 the body ends when the connection closes.
 *
 * Ownership: a stream belongs to its request record (request.h: r->stream), made by
 * stream_start, freed when the record is released (ml_stream_free). The Lua side is
 * lua/moonlet/stream.lua; its C functions (stream_start, stream_send, stream_end) are
 * installed by ml_stream_open (core.h). */
#ifndef ML_STREAM_H
#define ML_STREAM_H

typedef struct ml_stream_s ml_stream_t;
typedef struct ml_request_s ml_request_t;

/* The status the stream's head said (for the access log). */
int ml_stream_status(const ml_stream_t *s);
/* Ends r's stream: with ok, the last chunk (chunked); without, the response is cut (the
 * connection closes after what was sent, so the client sees an incomplete message).
 * Calling it again does nothing. */
void ml_stream_end(ml_request_t *r, int ok);
/* Frees a stream (NULL: nothing); its keep-alive timer closes first. */
void ml_stream_free(ml_stream_t *s);
#endif
