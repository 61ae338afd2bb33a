/* The file a static URL names, safely: the part of the path after the mount's prefix is
 * percent-decoded once and refused if it could name anything outside the mount's directory
 * (ml_static_path_decode, on the loop); then the file is resolved and opened, symlinks
 * followed only while they stay inside the directory (ml_static_path_open, blocking: it
 * runs on libuv's threadpool). */
#ifndef ML_STATIC_PATH_H
#define ML_STATIC_PATH_H
#include "buf.h"
#include <sys/stat.h>

/* Decodes rel (percent-encoded, without the leading '/') into out, NUL-terminated.
 * Returns 0, or -1 when the path is refused: a bad escape, a NUL, an encoded slash (%2F),
 * a backslash, a "." or ".." segment, an empty segment ("a//b") other than a trailing
 * slash. *dir is set to 1 when rel ends with '/' (or is empty). */
int ml_static_path_decode(const char *rel, size_t len, ml_buf_t *out, int *dir);

enum { ML_SPATH_FILE, ML_SPATH_NOT_FOUND, ML_SPATH_REDIRECT, ML_SPATH_ERROR };

/* Opens root/rel for reading (root: a realpath, without a trailing slash unless it is "/";
 * rel: as decoded above). A directory asked with a trailing slash gives its `index` file
 * (NULL: none); asked without one, ML_SPATH_REDIRECT (or NOT_FOUND when index is NULL). A
 * regular file asked with a trailing slash, anything that is neither a regular file nor a
 * directory, and anything whose real path leaves root: ML_SPATH_NOT_FOUND. ML_SPATH_FILE
 * with the open descriptor in *fd (the caller closes it), its stat in *st and *used_index
 * set when the index was opened. ML_SPATH_ERROR: another failure, errno in *errnum. */
int ml_static_path_open(const char *root, const char *rel, int dir, const char *index,
                        int *fd, struct stat *st, int *used_index, int *errnum);
#endif
