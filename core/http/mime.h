/* Media types by file extension, for static files: the system's /etc/mime.types (Debian's
 * media-types package), read once per process, over a small built-in table for the types
 * the web needs when that file is missing. Read-only after loading: any thread may look up. */
#ifndef ML_MIME_H
#define ML_MIME_H
#include <stddef.h>

/* Loads the table once per process (later calls return at once; thread-safe). */
void ml_mime_init(void);
/* Loads `path` (mime.types format) into a table of its own, for tests; replaces the
 * process's table. Returns the number of extensions read, -1 if the file cannot be read. */
int ml_mime_load(const char *path);
/* The Content-Type for a file name: its type by extension (case-insensitive), with
 * "; charset=utf-8" for text; "application/octet-stream" when unknown. Writes a
 * NUL-terminated value into out and returns its length. */
size_t ml_mime_content_type(const char *name, size_t len, char *out, size_t cap);
#endif
