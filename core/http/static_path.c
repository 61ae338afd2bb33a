/* Static paths (see static_path.h). */
#include "static_path.h"
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* A decoded segment that could leave the directory or hide a name: "", "." or "..". */
static int bad_segment(const char *s, size_t n) {
  return n == 0 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.');
}

int ml_static_path_decode(const char *rel, size_t len, ml_buf_t *out, int *dir) {
  out->len = 0;
  ml_buf_reserve(out, len + 1);
  size_t seg = 0;   /* where the current segment starts in out */
  for (size_t i = 0; i < len; i++) {
    char ch = rel[i];
    if (ch == '%') {
      int hi = i + 2 < len ? hexval(rel[i + 1]) : -1, lo = hi >= 0 ? hexval(rel[i + 2]) : -1;
      if (lo < 0) return -1;
      ch = (char)(hi * 16 + lo);
      i += 2;
      if (ch == '/' || ch == '\0') return -1;   /* an encoded slash never separates */
    } else if (ch == '/') {
      if (bad_segment(out->data + seg, out->len - seg)) return -1;
      ml_buf_addc(out, '/');
      seg = out->len;
      continue;
    }
    if (ch == '\\' || ch == '\0') return -1;
    ml_buf_addc(out, ch);
  }
  *dir = out->len == seg;   /* empty, or ends with '/' */
  if (!*dir && bad_segment(out->data + seg, out->len - seg)) return -1;
  out->data[out->len] = '\0';
  return 0;
}

static int not_found_errno(int e) {
  return e == ENOENT || e == ENOTDIR || e == ELOOP || e == EACCES || e == ENAMETOOLONG ||
         e == EPERM;
}

/* realpath(dir/name) if it stays inside root; NULL with *code set otherwise. */
static char *inside(const char *root, const char *dir, const char *name, int *code,
                    int *errnum) {
  size_t rlen = strlen(root), dlen = strlen(dir), nlen = strlen(name);
  char *full = malloc(dlen + nlen + 2);
  if (!full) {
    *code = ML_SPATH_ERROR;
    *errnum = ENOMEM;
    return NULL;
  }
  memcpy(full, dir, dlen);
  full[dlen] = '/';
  memcpy(full + dlen + 1, name, nlen + 1);
  char *real = realpath(full, NULL);
  int e = errno;
  free(full);
  if (!real) {
    *code = not_found_errno(e) ? ML_SPATH_NOT_FOUND : ML_SPATH_ERROR;
    *errnum = e;
    return NULL;
  }
  int ok = (rlen == 1 && root[0] == '/') ||
           (strncmp(real, root, rlen) == 0 && (real[rlen] == '\0' || real[rlen] == '/'));
  if (!ok) {   /* a symlink that leads out */
    free(real);
    *code = ML_SPATH_NOT_FOUND;
    return NULL;
  }
  return real;
}

/* Opens a resolved path without following a last symlink (realpath resolved them all; one
 * that appears since is refused) and without blocking on a FIFO. */
static int open_real(const char *real, struct stat *st, int *code, int *errnum) {
  int fd = open(real, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0 || fstat(fd, st) < 0) {
    int e = errno;
    if (fd >= 0) close(fd);
    *code = not_found_errno(e) ? ML_SPATH_NOT_FOUND : ML_SPATH_ERROR;
    *errnum = e;
    return -1;
  }
  return fd;
}

int ml_static_path_open(const char *root, const char *rel, int dir, const char *index,
                        int *fd, struct stat *st, int *used_index, int *errnum) {
  int code = ML_SPATH_NOT_FOUND;
  *used_index = 0;
  *errnum = 0;
  char *real = inside(root, root, rel, &code, errnum);
  if (!real) return code;
  *fd = open_real(real, st, &code, errnum);
  if (*fd < 0) goto done;
  if (S_ISREG(st->st_mode) && !dir) {
    code = ML_SPATH_FILE;
    goto done;
  }
  close(*fd);
  *fd = -1;
  code = ML_SPATH_NOT_FOUND;
  if (!S_ISDIR(st->st_mode) || !index) goto done;
  if (!dir) {
    code = ML_SPATH_REDIRECT;
    goto done;
  }
  char *file = inside(root, real, index, &code, errnum);
  if (!file) goto done;
  *fd = open_real(file, st, &code, errnum);
  free(file);
  if (*fd < 0) goto done;
  if (S_ISREG(st->st_mode)) {
    code = ML_SPATH_FILE;
    *used_index = 1;
  } else {
    close(*fd);
    *fd = -1;
    code = ML_SPATH_NOT_FOUND;
  }
done:
  free(real);
  return code;
}
